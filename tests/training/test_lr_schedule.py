"""The LR schedule's default length is the exact run: with no --lr-decay-*, the LR reaches --min-lr
at the iteration that ends the run, whichever budget ends it and whatever --lr-schedule-unit
(issue 10, section 2); and a skipped fp16 step does not move the schedule (section 4)."""

from __future__ import annotations

import os
import random

import pytest

from megatron.ltd.config import RandomLTDConfig
from megatron.ltd.schedule import kept_length
from megatron.training.config import TrainingConfig
from megatron.training.lr_schedule import StepWork, TokenCounters, add_step, exact_run, reached_budget
from tests.multirank import run_multirank
from tests.training.trainer_utils import TINY_GPT, run_trainer

LTD = ["--random-ltd", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8", "--random-ltd-require-steps", "6"]


def _walk(t: TrainingConfig, work_at):
    """Step by step, as the trainer's loop does."""
    c = TokenCounters()
    while reached_budget(c, t) is None:
        add_step(c, work_at(c.iteration))
    return c, reached_budget(c, t)


def test_exact_run_equals_a_step_by_step_walk():
    rng = random.Random(0)
    for trial in range(300):
        s = rng.choice([32, 64, 128])
        L, Lr = 6, rng.choice([0, 2, 4])
        ltd = RandomLTDConfig(enabled=True, min_seq=rng.choice([4, 8, 16]), seq_step=rng.choice([4, 8]),
                              require_steps=rng.randint(1, 40), constant_k=rng.choice([None, None, 8]))
        gbs = rng.choice([1, 4, 8])
        budgets = dict(train_iters=rng.choice([None, rng.randint(1, 80)]),
                       train_samples=rng.choice([None, rng.randint(1, 400)]),
                       train_tokens=rng.choice([None, rng.randint(1, 40000)]),
                       train_layer_tokens=rng.choice([None, rng.randint(1, 200000)]),
                       train_layer_averaged_tokens=rng.choice([None, rng.randint(1, 40000)]))
        if all(v is None for v in budgets.values()):
            budgets["train_layer_tokens"] = rng.randint(1, 200000)
        if budgets["train_iters"] is not None and budgets["train_samples"] is not None:
            budgets["train_samples"] = None
        t = TrainingConfig(global_batch_size=gbs, micro_batch_size=1, **budgets)

        def work_at(i):
            return StepWork.of(gbs, s, kept_length(i, ltd, s) if Lr else s, L, Lr)

        ramp_end = ltd.require_steps if (Lr and ltd.constant_k is None) else 0
        run = exact_run(t, work_at, ramp_end)
        c, stopped_by = _walk(t, work_at)
        assert run.iterations == c.iteration, (trial, budgets)
        assert run.stopped_by == stopped_by
        assert run.totals == {"iterations": c.iteration, "samples": c.samples, "tokens": c.raw_tokens,
                              "layer-tokens": c.layer_tokens, "layer-averaged-tokens": c.layer_averaged_tokens}


# The three runs the issue names, plus a samples budget ended by a tighter layer-averaged one.
CASES = {
    "iters, unit layer-tokens, ramp": LTD + ["--train-iters", "8", "--lr-schedule-unit", "layer-tokens"],
    "iters + tighter layer-tokens, unit iterations": LTD + ["--train-iters", "1000", "--train-layer-tokens", "6000",
                                                            "--lr-schedule-unit", "iterations"],
    "layer-averaged tokens, unit layer-tokens": LTD + ["--train-layer-averaged-tokens", "1500",
                                                       "--lr-schedule-unit", "layer-tokens"],
    "samples + tighter layer-averaged, unit samples": LTD + ["--train-samples", "4000", "--train-layer-averaged-tokens",
                                                             "1000", "--lr-schedule-unit", "samples",
                                                             "--lr-warmup-fraction", "0.2"],
}


def body_lr_cases(ctx, tmp):
    return {name: run_trainer(TINY_GPT + args, os.path.join(tmp, f"{i}.jsonl")) for i, (name, args) in enumerate(CASES.items())}


def test_lr_reaches_min_lr_exactly_at_the_last_iteration(tmp_path):
    out = run_multirank(body_lr_cases, world_size=1, kwargs={"tmp": str(tmp_path)}, timeout_s=240)[0]
    for name, r in out.items():
        rows = r["rows"]
        assert len(rows) == r["summary"]["iterations"] == r["run_length"].iterations, name
        assert len({row["kept_length"] for row in rows}) >= 2, name  # the ramp moves during the run
        assert rows[-1]["lr"] == 1e-4, (name, rows[-1]["lr"])  # --min-lr, exactly
        assert rows[-2]["lr"] > 1e-4, name  # ... and not before the last step
        assert [row["lr"] for row in rows[rows.index(max(rows, key=lambda x: x["lr"])):]] == sorted(
            [row["lr"] for row in rows[rows.index(max(rows, key=lambda x: x["lr"])):]], reverse=True), name
    # The tighter token budget ends the 1000-iteration run long before 1000 steps.
    assert out["iters + tighter layer-tokens, unit iterations"]["summary"]["stopped_by"] == "--train-layer-tokens 6000"
    assert out["iters + tighter layer-tokens, unit iterations"]["lr_lengths"][1] == 8
    assert out["samples + tighter layer-averaged, unit samples"]["summary"]["stopped_by"].startswith(
        "--train-layer-averaged-tokens")


def _overflow_at_first_step(trainer):
    """Make the first backward's gradients inf (a forced fp16 overflow); later steps are clean."""
    import torch

    param = next(p for m in trainer.models for p in m.parameters() if p.requires_grad)
    state = {"calls": 0}
    num_microbatches = trainer.num_microbatches

    def hook(grad):
        state["calls"] += 1
        return grad * float("inf") if state["calls"] <= num_microbatches else grad

    param.register_hook(hook)
    trainer._overflow_state = state


def body_fp16_overflow(ctx, tmp):
    args = TINY_GPT + LTD + ["--fp16", "--initial-loss-scale", "1024", "--train-iters", "6", "--lr-schedule-unit", "layer-tokens",
                             "--lr-warmup-tokens", "2000", "--lr-decay-tokens", "8000"]
    out = run_trainer(args, os.path.join(tmp, "fp16.jsonl"), on_built=_overflow_at_first_step)
    return out


def test_fp16_overflow_step_does_not_advance_the_lr_schedule(tmp_path):
    import math

    r = run_multirank(body_fp16_overflow, world_size=1, kwargs={"tmp": str(tmp_path)}, timeout_s=120)[0]
    rows = r["rows"]
    assert rows[0]["skipped_steps"] == 1 and all(row["skipped_steps"] == 0 for row in rows[1:]), rows
    applied = 0
    for i, row in enumerate(rows):
        step = 8 * (32 * 2 + row["kept_length"] * 2)
        assert row["layer_tokens"] == sum(8 * (32 * 2 + x["kept_length"] * 2) for x in rows[:i + 1])  # computed work
        if i > 0:
            applied += step
        # The LR follows the applied updates' work only: the skipped step moved nothing.
        lr = 3e-3 * applied / 2000 if applied <= 2000 else (
            1e-4 + 0.5 * (math.cos(math.pi * (applied - 2000) / 6000) + 1) * (3e-3 - 1e-4))
        assert row["lr"] == pytest.approx(lr, rel=1e-9, abs=1e-15), (i, row)
