"""MSLG kept-length schedule, layer-token accounting, and RandomLTDConfig validation / flags."""

import argparse
import math

import pytest

from megatron.ltd.config import RandomLTDConfig, add_random_ltd_args, random_ltd_config_from_args
from megatron.ltd.schedule import kept_length, layer_averaged_tokens, layer_tokens, raw_tokens


def _cfg(**kw):
    base = dict(enabled=True, min_seq=128, max_seq=None, require_steps=1000, seq_step=16)
    base.update(kw)
    return RandomLTDConfig(**base)


def _reference_mslg(step, mn, mx, require_steps, seq_step):
    """The reference's float formula (without our clamp), to compare where both are defined."""
    if step >= require_steps:
        return mx
    v = math.floor(step / require_steps * (mx - mn) + mn)
    v -= v % seq_step
    return min(v, mx)


# ------------------------------------------------------------------ schedule
def test_ramp_aligned_monotone_reaches_max_exactly_at_require_steps():
    cfg = _cfg(min_seq=128, require_steps=1000, seq_step=16)
    s = 2048
    values = [kept_length(t, cfg, s) for t in range(0, 1201)]
    assert values[0] == 128
    assert all(v % 16 == 0 for v in values)
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert all(v < s for v in values[:1000]), "max must not be reached before require_steps"
    assert all(v == s for v in values[1000:])
    assert len(set(values)) > 100  # it really ramps


def test_matches_reference_formula_on_the_gpt_recipe():
    cfg = _cfg(min_seq=128, max_seq=2048, require_steps=200_000, seq_step=16)
    for t in list(range(0, 200_010, 997)) + [199_999, 200_000]:
        assert kept_length(t, cfg, 2048) == _reference_mslg(t, 128, 2048, 200_000, 16)


def test_max_not_a_multiple_of_the_increment_is_still_reached_exactly():
    cfg = _cfg(min_seq=16, max_seq=1000, require_steps=100, seq_step=16)
    assert kept_length(99, cfg, 1000) == 976
    assert kept_length(100, cfg, 1000) == 1000
    assert kept_length(10**9, cfg, 1000) == 1000


def test_min_below_increment_is_clamped_never_zero():
    cfg = _cfg(min_seq=8, max_seq=256, require_steps=100, seq_step=16)
    values = [kept_length(t, cfg, 256) for t in range(0, 101)]
    assert values[0] == 8  # the reference's formula gives 0 here
    assert _reference_mslg(0, 8, 256, 100, 16) == 0
    assert min(values) == 8 and 0 not in values
    assert all(v == 8 or v % 16 == 0 or v == 256 for v in values)


def test_never_above_seq_length_and_negative_step_is_start():
    cfg = _cfg(min_seq=32, max_seq=64, require_steps=10, seq_step=16)
    assert kept_length(-5, cfg, 64) == 32
    assert max(kept_length(t, cfg, 64) for t in range(50)) == 64


def test_constant_k_mode():
    cfg = _cfg(constant_k=96, require_steps=None)
    assert {kept_length(t, cfg, 512) for t in (0, 1, 10**6)} == {96}


def test_unvalidated_config_is_refused():
    with pytest.raises(ValueError):
        kept_length(0, _cfg(require_steps=None), 512)


# ------------------------------------------------------------------ accounting
def test_token_accounting_formulas():
    gbs, s, L, Lr = 512, 2048, 24, 22
    assert raw_tokens(gbs, s) == 512 * 2048
    assert layer_tokens(gbs, s, 128, L, Lr) == 512 * (2048 * 2 + 128 * 22)
    assert layer_averaged_tokens(gbs, s, 128, L, Lr) == 512 * (2048 * 2 + 128 * 22) // 24
    # k == s: layer-averaged tokens are exactly the raw tokens.
    assert layer_averaged_tokens(gbs, s, s, L, Lr) == raw_tokens(gbs, s)
    assert layer_tokens(gbs, s, s, L, Lr) == L * raw_tokens(gbs, s)
    # floor after the multiplication (not per sample): 3*(10*1+3*2)//3 = 16, per-sample floors give 15
    assert layer_averaged_tokens(3, 10, 3, 3, 2) == 16
    # Python ints: no overflow at huge budgets
    assert layer_tokens(10**12, 2048, 2048, 24, 22) == 10**12 * 2048 * 24
    with pytest.raises(ValueError):
        layer_tokens(1, 8, 4, 2, 3)


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "kw, seq, layers, tp, sp, flag",
    [
        (dict(min_seq=512, max_seq=256), 1024, 24, 1, False, "--random-ltd-min-seq"),
        (dict(max_seq=4096), 2048, 24, 1, False, "--random-ltd-max-seq"),
        (dict(seq_step=64, min_seq=16, max_seq=32), 2048, 24, 1, False, "--random-ltd-seq-step"),
        (dict(seq_step=0), 2048, 24, 1, False, "--random-ltd-seq-step"),
        (dict(require_steps=0), 2048, 24, 1, False, "--random-ltd-require-steps"),
        (dict(require_steps=-3), 2048, 24, 1, False, "--random-ltd-require-steps"),
        (dict(require_steps=None), 2048, 24, 1, False, "--random-ltd-require-steps"),
        (dict(min_seq=0), 2048, 24, 1, False, "--random-ltd-min-seq"),
        (dict(layers=[1, 24]), 2048, 24, 1, False, "--random-ltd-layers"),
        (dict(layers=[-1]), 2048, 24, 1, False, "--random-ltd-layers"),
        (dict(layers=[3, 3]), 2048, 24, 1, False, "--random-ltd-layers"),
        (dict(layers=[]), 2048, 24, 1, False, "--random-ltd-layers"),
        (dict(), 2048, 2, 1, False, "--random-ltd-layers"),
        (dict(constant_k=0), 2048, 24, 1, False, "--random-ltd-constant-k"),
        (dict(constant_k=4096), 2048, 24, 1, False, "--random-ltd-constant-k"),
        (dict(constant_k=100), 2048, 24, 8, True, "--random-ltd-constant-k"),
        (dict(min_seq=130), 2048, 24, 4, True, "--random-ltd-min-seq"),
        (dict(seq_step=6), 2048, 24, 4, True, "--random-ltd-seq-step"),
        (dict(max_seq=1026), 2048, 24, 4, True, "--random-ltd-max-seq"),
        (dict(strata=4), 2048, 24, 8, True, "--random-ltd-strata"),  # TP 8 cannot split 4 strata
        (dict(), 2048, 24, 16, True, "--random-ltd-strata"),  # the default 8 strata: TP 16 needs more
        (dict(strata=0), 2048, 24, 1, False, "--random-ltd-strata"),
        (dict(strata=32, min_seq=16), 2048, 24, 1, False, "--random-ltd-min-seq"),  # 16 tokens in 32 strata
        (dict(strata=3), 2048, 24, 1, False, "--seq-length"),
    ],
)
def test_invalid_settings_name_the_flag(kw, seq, layers, tp, sp, flag):
    with pytest.raises(ValueError, match=flag):
        _cfg(**kw).validate(seq, layers, tp, sp)


def test_valid_settings_pass_and_disabled_is_not_checked():
    _cfg().validate(2048, 24)
    _cfg(min_seq=128, seq_step=16).validate(2048, 24, 8, True)
    _cfg(min_seq=130).validate(2048, 24, 4, False)  # divisibility only matters under SP
    _cfg(constant_k=1024, require_steps=None).validate(2048, 24, 8, True)
    _cfg(strata=16, min_seq=128, seq_step=16).validate(2048, 24, 16, True)


def test_strata_never_depend_on_the_tp_size():
    """The plan's strata are a setting of the run: 1 without sequence parallelism (the paper's
    uniform subset), 8 with it, whatever the TP size; an explicit value wins."""
    cfg = _cfg()
    assert cfg.resolved_strata(False) == 1 and cfg.resolved_strata(True) == 8
    for tp in (1, 2, 4, 8):
        cfg.validate(2048, 24, tp, True)  # the same default fits every TP size that divides it
    assert _cfg(strata=4).resolved_strata(True) == _cfg(strata=4).resolved_strata(False) == 4
    RandomLTDConfig(enabled=False, min_seq=10**9).validate(16, 1)


def test_resolve_layers_default_and_explicit():
    assert RandomLTDConfig().resolve_layers(24) == list(range(1, 23))
    assert RandomLTDConfig(layers=[5, 1, 3]).resolve_layers(24) == [1, 3, 5]


def test_flags_roundtrip_and_seed_fallback():
    parser = add_random_ltd_args(argparse.ArgumentParser())
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(
        "--random-ltd --random-ltd-layers 1 2,3 4, --random-ltd-min-seq 64 --random-ltd-max-seq 512 "
        "--random-ltd-require-steps 100 --random-ltd-seq-step 32".split()
    )
    cfg = random_ltd_config_from_args(args)
    assert cfg == RandomLTDConfig(True, [1, 2, 3, 4], 64, 512, 100, 32, None, 1234)
    assert random_ltd_config_from_args(parser.parse_args(["--random-ltd-strata", "4"])).strata == 4
    cfg = random_ltd_config_from_args(parser.parse_args(["--random-ltd-seed", "7", "--random-ltd-constant-k", "8"]))
    assert (cfg.enabled, cfg.seed, cfg.constant_k, cfg.layers) == (False, 7, 8, None)
    with pytest.raises(ValueError, match="--random-ltd-layers"):
        random_ltd_config_from_args(parser.parse_args(["--random-ltd-layers", "1", "x"]))
