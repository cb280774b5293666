"""Pacing: the curriculum's difficulty limit as a pure integer function of the step.

Same discipline as random-LTD's kept-length schedule (:mod:`megatron.ltd.schedule`): exact Python
ints (no float, so every rank, machine and resume agrees), aligned down to the increment, clamped
to ``[min, max]`` (never 0, even when ``min`` is below the increment), ``max`` from the pacing's
last step on.
"""

from __future__ import annotations

import bisect

from .config import CurriculumConfig

__all__ = ["difficulty", "seq_length_at", "rows_per_sample", "pool_size"]


def _iroot_floor(num: int, den: int, degree: int, hi: int) -> int:
    """Largest integer ``x`` in [0, hi] with ``x**degree * den <= num`` (exact)."""
    lo = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if mid ** degree * den <= num:
            lo = mid
        else:
            hi = mid - 1
    return lo


def difficulty(step: int, cfg: CurriculumConfig, seq_length: int) -> int:
    """The difficulty limit at optimizer step ``step`` (0-based). Call with ``cfg`` validated.

    * ``fixed_linear``: ``min + floor(step/steps * (max-min))``;
    * ``fixed_root``: ``min + floor((step/steps) ** (1/degree) * (max-min))`` (an exact integer
      root: the largest ``x`` with ``x**degree * steps <= step * (max-min)**degree``): fast early
      growth, as Megatron-DeepSpeed's ``fixed_root``;
    * ``fixed_discrete``: ``values[i]`` where ``i`` = how many of ``steps`` are ``<= step``;
    then aligned down to ``step_increment`` and clamped to ``[min, max]``.
    """
    step = max(int(step), 0)
    if cfg.schedule == "fixed_discrete":
        values, steps = cfg.discrete_values, cfg.discrete_steps or []
        return int(values[bisect.bisect_right(steps, step)])
    mx = cfg.resolved_max(seq_length)
    mn = min(int(cfg.min_difficulty), mx)
    inc, total = int(cfg.step_increment), int(cfg.total_steps)
    if mn <= 0 or inc <= 0 or total <= 0:
        raise ValueError("difficulty() needs a validated CurriculumConfig (see CurriculumConfig.validate)")
    if step >= total:
        return mx
    span = mx - mn
    if cfg.schedule == "fixed_linear":
        v = mn + step * span // total
    elif cfg.schedule == "fixed_root":
        d = int(cfg.root_degree)
        v = mn + _iroot_floor(step * span ** d, total, d, span)
    else:
        raise ValueError(f"unknown curriculum schedule {cfg.schedule!r}")
    v -= v % inc
    return max(mn, min(v, mx))


def seq_length_at(step: int, cfg: CurriculumConfig, seq_length: int) -> int:
    """Tokens per row the model sees at ``step``: the limit for ``seqlen_*`` metrics, else the full
    length (also when the curriculum is off)."""
    if not cfg.enabled or not cfg.truncates:
        return int(seq_length)
    return min(difficulty(step, cfg, seq_length), int(seq_length))


def rows_per_sample(step: int, cfg: CurriculumConfig, seq_length: int) -> int:
    """Rows each sample becomes at ``step``: ``seq_length // L`` for ``seqlen_reshape`` (the tail
    that does not fill a row is dropped), else 1."""
    if cfg.enabled and cfg.metric == "seqlen_reshape":
        return int(seq_length) // seq_length_at(step, cfg, seq_length)
    return 1


def pool_size(limit: int, num_samples: int, full: int) -> int:
    """Samples the sampler may draw from at a percentile limit: the easiest ``limit/full`` share."""
    return int(num_samples) * int(limit) // int(full)
