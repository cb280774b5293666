"""GPT pretraining: the model, datasets and loss that :class:`~megatron.training.trainer.Trainer`
needs (``pretrain_gpt.py`` only wires these together)."""

from __future__ import annotations

import logging
from functools import partial

import torch

from megatron.ltd.layer import gpt_forward_kwargs
from megatron.training.trainer import TaskSpec


def gpt_model_from_flags(m, tconfig, vocab_size, ltd_layers=None, pre_process=None, post_process=None, vp_stage=None,
                         ltd_kernel="auto"):
    """A GPT for this pipeline stage from the model flags (a ``ModelConfig``); shared by training
    and by inference loading, so both build exactly the same module."""
    from megatron.models.builders import build_gpt_model

    return build_gpt_model(
        tconfig,
        vocab_size=vocab_size,
        max_sequence_length=m.max_position_embeddings,
        position_embedding_type=m.position_embedding_type,
        share_embeddings_and_output_weights=not m.untie_embeddings_and_output_weights,
        rotary_percent=m.rotary_percent,
        rotary_base=m.rotary_base,
        ltd_layers=ltd_layers,
        pre_process=pre_process,
        post_process=post_process,
        vp_stage=vp_stage,
        ltd_kernel=ltd_kernel,
    )


def build_model(cfg, vocab_size, tconfig, pre_process, post_process, vp_stage, ltd_layers):
    return gpt_model_from_flags(cfg.model, tconfig, vocab_size, ltd_layers, pre_process, post_process, vp_stage,
                                cfg.random_ltd.kernel)


class _NoMockCacheNotice(logging.Filter):
    """megatron-core notes on every rank that mock datasets have no index cache; nothing to act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "because path_to_cache is None" not in record.getMessage()


def build_datasets(cfg, tokenizer, num_samples):
    from megatron.data.providers import build_gpt_datasets

    if cfg.data.mock_data:
        logging.getLogger("megatron.core.datasets.gpt_dataset").addFilter(_NoMockCacheNotice())

    return build_gpt_datasets(cfg.data, tokenizer, cfg.model.seq_length, num_samples, cfg.training.seed)


def masked_lm_loss(loss_mask: torch.Tensor, output_tensor: torch.Tensor):
    """Mean per-token loss over the tokens the loss mask keeps."""
    mask = loss_mask.float().view(-1)
    loss = (output_tensor.float().view(-1) * mask).sum() / mask.sum().clamp(min=1.0)
    return loss, {"lm loss": loss.detach().clone()}


def forward_step(batch, model, plan, use_attention_mask: bool = False):
    """One GPT micro-batch. A plain causal mask is applied by SDPA itself (no mask tensor); the
    per-sample mask is passed only with --reset-attention-mask (document masks)."""
    mask = batch.get("attention_mask") if use_attention_mask else None
    output = model(batch["tokens"], batch["position_ids"], mask, labels=batch["labels"], **gpt_forward_kwargs(plan))
    return output, partial(masked_lm_loss, batch["loss_mask"])


def gpt_task(cfg) -> TaskSpec:
    return TaskSpec(
        build_model=build_model,
        build_datasets=build_datasets,
        forward_step=partial(forward_step, use_attention_mask=bool(cfg.data.reset_attention_mask)),
    )
