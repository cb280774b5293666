"""The kept-length schedule (MSLG) and layer-token accounting, as pure integer functions.

Everything here is exact Python-int arithmetic: no floats, so the same step gives the same value on
every rank, every machine and after a resume.
"""

from __future__ import annotations

from .config import RandomLTDConfig

__all__ = ["kept_length", "raw_tokens", "layer_tokens", "layer_averaged_tokens"]


def kept_length(step: int, cfg: RandomLTDConfig, seq_length: int) -> int:
    """Tokens each dropping layer keeps per sample at optimizer step ``step`` (0-based).

    MSLG ramp: ``v = floor(step / require_steps * (max - min) + min)``, aligned DOWN to a multiple
    of ``seq_step``, then clamped to ``[min, max]``; ``max`` from ``step >= require_steps`` on.
    Differences from the reference, on purpose:
      * the floor is computed in exact integers (``min + step*(max-min) // require_steps``), so no
        float rounding can put a step one increment low;
      * a ``min`` below the increment is clamped up to ``min`` (the reference aligns it to 0 and
        drops every token);
      * the result never exceeds ``seq_length``.
    With ``cfg.constant_k`` set, that value is returned at every step.
    Call with ``cfg`` already validated (``cfg.validate(...)``).
    """
    if cfg.constant_k is not None:
        return int(cfg.constant_k)
    s = int(seq_length)
    mx = min(cfg.resolved_max_seq(s), s)
    mn = min(int(cfg.min_seq), mx)
    if mn <= 0 or cfg.seq_step is None or cfg.seq_step <= 0 or not cfg.require_steps or cfg.require_steps <= 0:
        raise ValueError("kept_length needs a validated RandomLTDConfig (see RandomLTDConfig.validate)")
    step = max(int(step), 0)
    if step >= cfg.require_steps:
        return mx
    v = mn + (step * (mx - mn)) // int(cfg.require_steps)
    v -= v % int(cfg.seq_step)
    return max(mn, min(v, mx))


def raw_tokens(global_batch: int, seq_length: int) -> int:
    """Tokens that enter the model in one step: ``gbs * s``."""
    return int(global_batch) * int(seq_length)


def layer_tokens(global_batch: int, seq_length: int, k: int, num_layers: int, num_ltd_layers: int) -> int:
    """Token-layers processed in one step: ``gbs * (s*(L - Lr) + k*Lr)`` (exact)."""
    gbs, s, k, L, Lr = int(global_batch), int(seq_length), int(k), int(num_layers), int(num_ltd_layers)
    if not 0 <= Lr <= L:
        raise ValueError(f"num_ltd_layers ({Lr}) must be in [0, num_layers={L}]")
    return gbs * (s * (L - Lr) + k * Lr)


def layer_averaged_tokens(global_batch: int, seq_length: int, k: int, num_layers: int, num_ltd_layers: int) -> int:
    """Layer-averaged tokens of one step: ``layer_tokens(...) // L``.

    This is exactly Megatron-DeepSpeed's per-step increment ``samples * (s*(L-Lr) + k*Lr) // L``
    (multiply first, then floor-divide once). Summing these per-step floors can fall short of
    ``sum(layer_tokens) / L`` by under one token per step; it equals ``gbs * s`` when ``k == s``.
    A counter that must be exact should accumulate :func:`layer_tokens` and divide when read.
    """
    return layer_tokens(global_batch, seq_length, k, num_layers, num_ltd_layers) // int(num_layers)
