"""fp16 end to end with a loss scale that backs off and recovers on its own (issue 18 §1): nothing
is forced. The run starts at a scale of 2**20, where the scaled gradients of the tiny GPT overflow
fp16 (max 65504) for real; with --hysteresis 1 every overflow halves the scale and with
--loss-scale-window 2 two clean steps double it again, so within 12 steps the scale goes down,
back up, and overflows again. Checked at every step: the scale follows the dynamic rule, a skipped
step leaves every weight unchanged and does not move the LayerToken LR, an applied step changes the
weights, and the counters count every computed step (docs/random_ltd.md: counters count computed
work, the LR only applied updates)."""

from __future__ import annotations

import math
import os

import pytest

from tests.multirank import run_multirank

LTD = ["--random-ltd", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8", "--random-ltd-require-steps", "12"]
INITIAL_SCALE, WINDOW, WARMUP, DECAY, LR, MIN_LR = 2.0 ** 20, 2, 2000, 12000, 3e-3, 1e-4


def body_fp16(ctx, tmp):
    import torch

    from tests.training.trainer_utils import TINY_GPT, run_trainer

    changed = []

    def watch(trainer):
        step = trainer.train_step

        def train_step(data_iterators):  # did this step change any weight?
            before = [p.detach().clone() for m in trainer.models for p in m.parameters()]
            out = step(data_iterators)
            after = [p.detach() for m in trainer.models for p in m.parameters()]
            changed.append(any(not torch.equal(a, b) for a, b in zip(after, before)))
            return out

        trainer.train_step = train_step
        dtypes = {p.dtype for m in trainer.models for p in m.parameters()}
        assert dtypes == {torch.float16}, dtypes

    args = TINY_GPT + LTD + ["--fp16", "--initial-loss-scale", str(INITIAL_SCALE), "--hysteresis", "1",
                             "--loss-scale-window", str(WINDOW), "--train-iters", "12",
                             "--lr", str(LR), "--min-lr", str(MIN_LR), "--lr-schedule-unit", "layer-tokens",
                             "--lr-warmup-tokens", str(WARMUP), "--lr-decay-tokens", str(DECAY)]
    run = run_trainer(args, os.path.join(tmp, "fp16.jsonl"), on_built=watch)
    return {"rows": run["rows"], "summary": run["summary"], "changed": changed}


def _lr(applied):
    if applied <= WARMUP:
        return LR * applied / WARMUP
    return MIN_LR + 0.5 * (math.cos(math.pi * min((applied - WARMUP) / (DECAY - WARMUP), 1.0)) + 1) * (LR - MIN_LR)


def test_fp16_loss_scale_backs_off_and_recovers(tmp_path):
    out = run_multirank(body_fp16, world_size=1, kwargs={"tmp": str(tmp_path)}, timeout_s=180)[0]
    rows, changed = out["rows"], out["changed"]
    assert [r["iteration"] for r in rows] == list(range(1, 13)) and out["summary"]["iterations"] == 12
    skipped = [r["skipped_steps"] == 1 for r in rows]
    assert all(r["skipped_steps"] in (0, 1) for r in rows)
    # A skipped step changed no weight (and reports no gradient norm); an applied one changed them.
    assert changed == [not s for s in skipped], (changed, skipped)
    assert all(math.isnan(r["grad_norm"]) == s for r, s in zip(rows, skipped))
    # The scale follows the dynamic rule: halve on an overflow, double after WINDOW clean steps.
    scale, clean = INITIAL_SCALE, 0
    for r, s in zip(rows, skipped):
        if s:
            scale, clean = scale / 2, 0
        else:
            clean += 1
            if clean == WINDOW:
                scale, clean = scale * 2, 0
        assert r["loss_scale"] == scale, (r["iteration"], r["loss_scale"], scale)
    # Backed off (the first step overflows), recovered (grew again), and overflowed again after growing.
    scales = [r["loss_scale"] for r in rows]
    assert skipped[0] and any(b > a for a, b in zip(scales, scales[1:]))
    grown_then_skipped = [i for i in range(1, len(rows)) if skipped[i] and scales[i - 1] > scales[max(i - 2, 0)]]
    assert grown_then_skipped, scales
    assert 2 <= sum(skipped) <= 8, skipped  # both kinds of step happen
    # Counters count every computed step; the LR only the applied ones (nothing from a skipped step).
    done, applied, last_lr = 0, 0, 0.0
    for r, s in zip(rows, skipped):
        work = 8 * (32 * 2 + r["kept_length"] * 2)
        done += work
        assert r["layer_tokens"] == done and r["samples"] == 8 * r["iteration"]
        if not s:
            applied += work
            last_lr = _lr(applied)
        assert r["lr"] == pytest.approx(last_lr, rel=1e-9, abs=1e-15), (r["iteration"], r["lr"], last_lr)
    assert all(math.isfinite(r["loss"]) for r in rows)
