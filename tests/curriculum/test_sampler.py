"""The curriculum sampler: draws under the limit, determinism in (seed, step), DP-layout invariance,
no repeats within a pool's epoch, starvation error with the count, and exact resume."""

import itertools

import numpy as np
import pytest

from megatron.curriculum.config import CurriculumConfig
from megatron.curriculum.sampler import CurriculumSampler, CurriculumStarved, easiest_first
from megatron.curriculum.schedule import difficulty, pool_size

N, GBS, MBS = 400, 16, 2
CFG = CurriculumConfig(metric="vocab_rarity", min_difficulty=10, total_steps=40, step_increment=5)
CFG.validate(64)


def _values(seed=0):
    return np.random.default_rng(seed).random(N)


def _sampler(dp_rank=0, dp_size=1, start_step=0, seed=3, values=None, cfg=CFG, gbs=GBS, mbs=MBS):
    order = easiest_first(_values() if values is None else values)
    return CurriculumSampler(order, lambda t: pool_size(difficulty(t, cfg, 64), N, 100), cfg.constant_from(),
                             gbs, mbs, dp_rank, dp_size, seed, start_step)


def _steps(sampler, n_steps, gbs=GBS, mbs=MBS, dp=1):
    per_step = gbs // (mbs * dp)
    it = iter(sampler)
    return [sum((next(it) for _ in range(per_step)), []) for _ in range(n_steps)]


def test_every_drawn_sample_is_under_the_current_limit():
    values = _values()
    rank = np.empty(N, dtype=np.int64)
    rank[easiest_first(values)] = np.arange(N)
    for t, batch in enumerate(_steps(_sampler(), 60)):
        pool = pool_size(difficulty(t, CFG, 64), N, 100)
        assert len(batch) == GBS and len(set(batch)) == GBS
        assert max(rank[batch]) < pool, (t, pool)
    # the first steps really are restricted to the easiest 10%
    assert max(values[_steps(_sampler(), 1)[0]]) <= np.sort(values)[N // 10 - 1]


def test_deterministic_in_seed_and_step_and_seeds_differ():
    a, b = _steps(_sampler(seed=3), 30), _steps(_sampler(seed=3), 30)
    assert a == b
    assert a != _steps(_sampler(seed=4), 30)
    s = _sampler()
    assert s.global_batch(25) == a[25] and s.global_batch(3) == a[3]  # random access = the stream


@pytest.mark.parametrize("dp", [2, 4])
def test_any_dp_layout_sees_the_same_global_batches(dp):
    ref = _steps(_sampler(), 20)
    per_rank = [iter(_sampler(dp_rank=r, dp_size=dp)) for r in range(dp)]
    for t in range(20):
        got = []
        for _ in range(GBS // (MBS * dp)):  # micro-batch by micro-batch, rank r takes slice r
            for it in per_rank:
                got.extend(next(it))
        assert got == ref[t]


def test_no_sample_repeats_before_its_pool_is_exhausted():
    cfg = CurriculumConfig(metric="file", difficulty_file="x.npy", min_difficulty=20, max_difficulty=20,
                           total_steps=1, step_increment=1)
    cfg.validate(64)
    steps = _steps(_sampler(cfg=cfg), 10)  # pool 80 = 5 steps of 16: two full epochs
    for epoch in (steps[:5], steps[5:]):
        drawn = list(itertools.chain(*epoch))
        assert len(set(drawn)) == 80


def test_a_starving_limit_is_an_error_at_start_up_with_the_count():
    with pytest.raises(CurriculumStarved, match=r"admits 8 of the 400 .* one global batch \(16\)"):
        _sampler(cfg=CurriculumConfig(metric="vocab_rarity", min_difficulty=2, total_steps=10, step_increment=1))


@pytest.mark.parametrize("stop", [1, 7, 23, 45])
def test_resume_from_consumed_samples_continues_the_exact_stream(stop):
    full = _steps(_sampler(), 50)
    consumed = stop * GBS
    resumed = _steps(_sampler(start_step=consumed // GBS), 50 - stop)
    assert resumed == full[stop:]
