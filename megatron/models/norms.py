"""LayerNorm / RMSNorm that work with sequence parallelism without apex or TransformerEngine.

Under sequence parallelism each TP rank normalises its own slice of the sequence, so the norm's
weight gradients are partial sums; megatron-core all-reduces them across the TP group for every
parameter tagged ``sequence_parallel=True`` (``finalize_model_grads``). megatron-core's
``WrappedTorchNorm`` refuses sequence parallelism only because it does not tag them; we do.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig


class TorchNorm:
    """Factory with megatron-core's norm signature, returning a tagged torch norm module."""

    def __new__(
        cls,
        config: TransformerConfig,
        hidden_size: int,
        eps: float = 1e-5,
        persist_layer_norm: bool = False,
        zero_centered_gamma: bool = False,
        normalization: str = "LayerNorm",
    ):
        if config.layernorm_zero_centered_gamma:
            raise ValueError("--apply-layernorm-1p (zero-centred gamma) needs TransformerEngine or apex.")
        kind = config.normalization
        if kind == "LayerNorm":
            norm = torch.nn.LayerNorm(hidden_size, eps=eps, dtype=config.params_dtype)
        elif kind == "RMSNorm":
            norm = torch.nn.RMSNorm(hidden_size, eps=eps, dtype=config.params_dtype)
        else:
            raise ValueError(f"--normalization {kind!r} is not supported (use LayerNorm or RMSNorm).")
        for param in norm.parameters():
            setattr(param, "sequence_parallel", bool(config.sequence_parallel))
        return norm
