"""The curriculum sampler: each global batch drawn from the samples under the current limit.

Properties (tests/curriculum/test_sampler.py shows each):
  * a pure function of (seed, step): no state to checkpoint, a resume from ``consumed_samples``
    (= step x global batch) continues the exact stream;
  * layout-invariant: the *global* batch is drawn first, then cut into micro-batches of
    ``micro_batch x dp`` and DP rank ``r`` takes slice ``r`` of each, exactly as the plain
    :class:`megatron.data.loader.PretrainingSampler` does;
  * within a stretch of steps with the same pool, samples are taken without replacement along a
    seeded permutation of the pool (one epoch of the pool after another), so no sample repeats
    before the whole pool has been seen; when the limit grows, the larger pool starts afresh
    (samples of the smaller pool may then come again: that is what the pacing implies);
  * it never starves: a pool smaller than one global batch is an error at start-up, with the count.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Tuple

import numpy as np

__all__ = ["CurriculumStarved", "easiest_first", "CurriculumSampler"]


class CurriculumStarved(ValueError):
    """A difficulty limit admits fewer samples than one global batch."""


def easiest_first(values: np.ndarray) -> np.ndarray:
    """Sample indices ordered by difficulty, ties by index (a stable, layout-free order)."""
    return np.argsort(np.asarray(values), kind="stable").astype(np.int64)


class CurriculumSampler:
    """Yields this DP rank's micro-batches (lists of dataset indices), step after step.

    Args:
        order: dataset indices, easiest first (:func:`easiest_first`).
        pool_at: ``step -> number of leading entries of order`` that may be drawn (non-decreasing).
        constant_from: step from which ``pool_at`` no longer changes.
        global_batch, micro_batch, dp_rank, dp_size: the batch layout.
        seed: seed of the draws.
        start_step: the first step to yield (``consumed_samples // global_batch`` on a resume).
    """

    def __init__(self, order: np.ndarray, pool_at: Callable[[int], int], constant_from: int, global_batch: int,
                 micro_batch: int, dp_rank: int, dp_size: int, seed: int, start_step: int = 0) -> None:
        if global_batch % (micro_batch * dp_size):
            raise ValueError(f"global batch {global_batch} is not a multiple of micro-batch {micro_batch} x DP {dp_size}")
        self.order = np.asarray(order, dtype=np.int64)
        self.pool_at, self.constant_from = pool_at, int(constant_from)
        self.gbs, self.mbs, self.dp_rank, self.dp_size = int(global_batch), int(micro_batch), int(dp_rank), int(dp_size)
        self.seed, self.start_step = int(seed), int(start_step)
        self._perm: Dict[Tuple[int, int], np.ndarray] = {}
        check_pool(self.pool_at(0), self.gbs, len(self.order))

    # ------------------------------------------------------------------ pure draws
    def _pool_start(self, step: int, pool: int) -> int:
        """The first step whose pool is ``pool`` (binary search: the pool is non-decreasing)."""
        lo, hi = 0, min(step, self.constant_from)  # the pool is full from constant_from on
        while lo < hi:
            mid = (lo + hi) // 2
            if self.pool_at(mid) >= pool:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _permutation(self, pool: int, epoch: int) -> np.ndarray:
        key = (pool, epoch)
        if key not in self._perm:
            if len(self._perm) > 4:  # only the current and next epoch are ever needed
                self._perm.clear()
            self._perm[key] = np.random.default_rng([self.seed, pool, epoch]).permutation(pool)
        return self._perm[key]

    def global_batch(self, step: int) -> List[int]:
        """The dataset indices of step ``step``'s whole global batch (all DP ranks)."""
        pool = min(int(self.pool_at(step)), len(self.order))
        check_pool(pool, self.gbs, len(self.order), step)
        q = (step - self._pool_start(step, pool)) * self.gbs  # draws from this pool before this step
        out: List[int] = []
        while len(out) < self.gbs:
            epoch, offset = divmod(q, pool)
            take = min(self.gbs - len(out), pool - offset)
            out.extend(self.order[self._permutation(pool, epoch)[offset:offset + take]].tolist())
            q += take
        return out

    # ------------------------------------------------------------------ batch sampler protocol
    def __iter__(self) -> Iterator[List[int]]:
        step = self.start_step
        per_micro = self.mbs * self.dp_size
        while True:
            batch = self.global_batch(step)
            for beg in range(0, self.gbs, per_micro):
                part = batch[beg:beg + per_micro]
                yield part[self.dp_rank * self.mbs:(self.dp_rank + 1) * self.mbs]
            step += 1


def check_pool(pool: int, global_batch: int, num_samples: int, step: int = 0) -> None:
    if pool < global_batch:
        raise CurriculumStarved(
            f"the curriculum's limit at step {step} admits {pool} of the {num_samples} training samples, fewer than "
            f"one global batch ({global_batch}): raise --curriculum-min, lower --global-batch-size, or add data")
