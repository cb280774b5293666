"""Build megatron-core GPT and BERT models with our specs, with random-LTD layers when asked.

With random-LTD every layer of the block uses :class:`RandomLTDTransformerLayer`; each decides
from its global layer number whether it drops tokens, so any pipeline split works and the
state-dict keys stay those of the stock layers.
"""

from __future__ import annotations

from typing import Optional, Sequence

from megatron.core import parallel_state
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron.models.specs import bert_layer_spec, block_spec, gpt_layer_spec


def _layer_spec(base_spec_fn, ltd_layers: Optional[Sequence[int]], ltd_kernel: str = "auto") -> ModuleSpec:
    if ltd_layers is None:
        return base_spec_fn()
    from megatron.ltd.layer import RandomLTDTransformerLayer

    spec = base_spec_fn(layer_module=RandomLTDTransformerLayer)
    spec.params = dict(spec.params or {}, ltd_layer_numbers=tuple(int(n) for n in ltd_layers), ltd_kernel=ltd_kernel)
    return spec


def decoder_spec(config: TransformerConfig, base_spec_fn=gpt_layer_spec, ltd_layers=None, vp_stage=None, ltd_kernel="auto"):
    """Block spec for this pipeline stage; ``ltd_layers`` = global 0-based dropping layers or None."""
    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    return block_spec(config, [_layer_spec(base_spec_fn, ltd_layers, ltd_kernel)] * n)


def _stage_flags(pre_process, post_process, vp_stage):
    ignore_virtual = vp_stage is None
    if pre_process is None:
        pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=ignore_virtual, vp_stage=vp_stage)
    if post_process is None:
        post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=ignore_virtual, vp_stage=vp_stage)
    return pre_process, post_process


def build_gpt_model(
    config: TransformerConfig,
    vocab_size: int,
    max_sequence_length: int,
    position_embedding_type: str = "learned_absolute",
    share_embeddings_and_output_weights: bool = True,
    rotary_percent: float = 1.0,
    rotary_base: int = 10000,
    ltd_layers: Optional[Sequence[int]] = None,
    pre_process: Optional[bool] = None,
    post_process: Optional[bool] = None,
    vp_stage: Optional[int] = None,
    ltd_kernel: str = "auto",
) -> GPTModel:
    """A megatron-core GPTModel for this rank's pipeline stage (random-LTD if ``ltd_layers``)."""
    pre_process, post_process = _stage_flags(pre_process, post_process, vp_stage)
    return GPTModel(
        config=config,
        transformer_layer_spec=decoder_spec(config, gpt_layer_spec, ltd_layers, vp_stage, ltd_kernel),
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


class PaddingMaskBertModel(BertModel):
    """megatron-core's BertModel with its mask layout fixed to ``[b, 1, 1, s]``.

    BertModel picks the mask layout by inspecting the layer spec and, for any core attention other
    than its own, by asking TransformerEngine's version, which fails without TE; it also expects a
    layer spec where we give a block spec. Our SDPA core attention takes a broadcastable padding
    mask and the random-LTD layer gathers ``[b, 1, 1, s]`` to ``[b, 1, 1, k]``, so no
    ``[b, 1, s, s]`` mask is ever built. Parameters and state-dict keys are unchanged."""

    def _sanity_check_attention_and_get_attn_mask_dimension(self) -> str:
        return "b11s"


def build_bert_model(
    config: TransformerConfig,
    vocab_size: int,
    max_sequence_length: int,
    num_tokentypes: int = 2,
    add_binary_head: bool = True,
    position_embedding_type: str = "learned_absolute",
    ltd_layers: Optional[Sequence[int]] = None,
    pre_process: Optional[bool] = None,
    post_process: Optional[bool] = None,
    vp_stage: Optional[int] = None,
) -> BertModel:
    """A megatron-core BertModel for this rank's pipeline stage (random-LTD if ``ltd_layers``)."""
    if config.sequence_parallel:
        raise ValueError(
            "BERT with --sequence-parallel is not supported: megatron-core's BERT LM head norm needs "
            "TransformerEngine or apex for it. Drop --sequence-parallel for BERT."
        )
    pre_process, post_process = _stage_flags(pre_process, post_process, vp_stage)
    return PaddingMaskBertModel(
        config=config,
        num_tokentypes=num_tokentypes,
        transformer_layer_spec=decoder_spec(config, bert_layer_spec, ltd_layers, vp_stage),
        vocab_size=vocab_size,
        max_sequence_length=max_sequence_length,
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=True,
        position_embedding_type=position_embedding_type,
        add_binary_head=add_binary_head,
        vp_stage=vp_stage,
    )
