"""Build megatron-core GPT and BERT models with our specs (random-LTD layers when asked)."""

from __future__ import annotations

from typing import Optional

from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron.models.specs import gpt_layer_spec


def gpt_block_or_layer_spec(config: TransformerConfig, vp_stage: Optional[int] = None):
    """The decoder spec for this pipeline stage (plain layers)."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    from megatron.models.specs import block_spec

    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    return block_spec(config, [gpt_layer_spec()] * n)


def build_gpt_model(
    config: TransformerConfig,
    vocab_size: int,
    max_sequence_length: int,
    position_embedding_type: str = "learned_absolute",
    share_embeddings_and_output_weights: bool = True,
    rotary_percent: float = 1.0,
    rotary_base: int = 10000,
    pre_process: Optional[bool] = None,
    post_process: Optional[bool] = None,
    vp_stage: Optional[int] = None,
    decoder_spec=None,
) -> GPTModel:
    """A megatron-core GPTModel for this rank's pipeline stage."""
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage)
    if decoder_spec is None:
        decoder_spec = gpt_block_or_layer_spec(config, vp_stage)
    return GPTModel(
        config=config,
        transformer_layer_spec=decoder_spec,
        vocab_size=vocab_size,
        max_sequence_length=max_sequence_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=share_embeddings_and_output_weights,
        position_embedding_type=position_embedding_type,
        rotary_percent=rotary_percent,
        rotary_base=rotary_base,
        vp_stage=vp_stage,
    )
