"""Pacing schedules (values, monotonicity, bounds, alignment), CurriculumConfig validation and flags."""

import argparse
import math

import pytest

from megatron.curriculum.config import CurriculumConfig, add_curriculum_args, curriculum_config_from_args
from megatron.curriculum.schedule import difficulty, pool_size, rows_per_sample, seq_length_at

S = 2048


def _cfg(**kw):
    base = dict(metric="seqlen_truncate", min_difficulty=64, max_difficulty=None, total_steps=1000, step_increment=8)
    base.update(kw)
    cfg = CurriculumConfig(**base)
    cfg.validate(S)
    return cfg


@pytest.mark.parametrize("schedule", ["fixed_linear", "fixed_root"])
def test_pacing_is_aligned_monotone_bounded_and_reaches_max_at_total_steps(schedule):
    cfg = _cfg(schedule=schedule, root_degree=3)
    values = [difficulty(t, cfg, S) for t in range(1301)]
    assert values[0] == 64
    assert all(v % 8 == 0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert all(64 <= v < S for v in values[:1000])
    assert all(v == S for v in values[1000:])
    assert len(set(values)) > 100


def test_linear_and_root_values_match_the_float_formulas():
    lin, root = _cfg(), _cfg(schedule="fixed_root", root_degree=2)
    for t in range(0, 1000, 7):
        want_lin = math.floor(64 + t / 1000 * (S - 64))
        assert difficulty(t, lin, S) == max(64, want_lin - want_lin % 8)
        want_root = 64 + math.floor(math.sqrt(t / 1000) * (S - 64) + 1e-9)
        assert difficulty(t, root, S) == max(64, want_root - want_root % 8), t
    # the root schedule front-loads growth: at 1/4 of the steps it is half way
    assert difficulty(250, root, S) == 64 + (S - 64) // 2 - (64 + (S - 64) // 2) % 8


def test_a_min_below_the_increment_is_clamped_never_zero():
    cfg = _cfg(min_difficulty=3, step_increment=16)
    assert [difficulty(t, cfg, S) for t in (0, 1, 2)] == [3, 3, 3]
    assert min(difficulty(t, cfg, S) for t in range(1000)) == 3


def test_discrete_schedule_steps_at_the_boundaries():
    cfg = _cfg(schedule="fixed_discrete", discrete_values=[128, 512, S], discrete_steps=[10, 30], min_difficulty=None)
    assert [difficulty(t, cfg, S) for t in (0, 9, 10, 29, 30, 10**6)] == [128, 128, 512, 512, S, S]
    assert cfg.constant_from() == 30


def test_seqlen_shapes_and_percentile_pools():
    trunc, resh = _cfg(), _cfg(metric="seqlen_reshape")
    assert seq_length_at(0, trunc, S) == 64 and rows_per_sample(0, trunc, S) == 1
    assert seq_length_at(0, resh, S) == 64 and rows_per_sample(0, resh, S) == S // 64
    assert seq_length_at(5000, resh, S) == S and rows_per_sample(5000, resh, S) == 1
    rar = _cfg(metric="vocab_rarity", min_difficulty=10, step_increment=1)
    assert seq_length_at(0, rar, S) == S  # a sample-selecting metric keeps full length
    assert difficulty(10**6, rar, S) == 100
    assert pool_size(10, 1000, 100) == 100 and pool_size(100, 1000, 100) == 1000
    off = CurriculumConfig()
    assert seq_length_at(0, off, S) == S and rows_per_sample(0, off, S) == 1


@pytest.mark.parametrize("kw, flag", [
    (dict(min_difficulty=0), "--curriculum-min"),
    (dict(min_difficulty=4096), "--curriculum-min"),
    (dict(max_difficulty=4096), "--curriculum-max"),
    (dict(step_increment=0), "--curriculum-step-increment"),
    (dict(total_steps=0), "--curriculum-steps"),
    (dict(total_steps=None), "--curriculum-steps"),
    (dict(schedule="fixed_root", root_degree=0), "--curriculum-root-degree"),
    (dict(schedule="fixed_discrete", discrete_values=[64, 32], discrete_steps=[5]), "non-decreasing"),
    (dict(schedule="fixed_discrete", discrete_values=[64, 128], discrete_steps=[]), "--curriculum-discrete-steps"),
    (dict(metric="vocab_rarity", min_difficulty=101, step_increment=1), "--curriculum-min"),
    (dict(metric="file"), "--curriculum-difficulty-file"),
    (dict(metric="nope"), "--curriculum-metric"),
])
def test_validation_names_the_flag(kw, flag):
    base = dict(metric="seqlen_truncate", min_difficulty=64, total_steps=100, step_increment=8)
    base.update(kw)
    with pytest.raises(ValueError, match=flag):
        CurriculumConfig(**base).validate(S)


def test_flags_build_the_config_with_seqlen_increment_default():
    p = add_curriculum_args(argparse.ArgumentParser())
    a = p.parse_args(["--curriculum-metric", "seqlen_truncate", "--curriculum-min", "16", "--curriculum-steps", "50"])
    a.seed = 9
    cfg = curriculum_config_from_args(a)
    assert (cfg.metric, cfg.min_difficulty, cfg.total_steps, cfg.step_increment, cfg.seed) == ("seqlen_truncate", 16, 50, 8, 9)
    a = p.parse_args(["--curriculum-metric", "vocab_rarity", "--curriculum-schedule", "fixed_discrete",
                      "--curriculum-discrete-values", "20", "60,100", "--curriculum-discrete-steps", "5", "9"])
    cfg = curriculum_config_from_args(a)
    assert cfg.discrete_values == [20, 60, 100] and cfg.discrete_steps == [5, 9] and cfg.step_increment == 1
    assert not curriculum_config_from_args(p.parse_args([])).enabled
