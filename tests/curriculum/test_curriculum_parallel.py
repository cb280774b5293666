"""Loss-compare with curriculum learning and random-LTD both on: TP=2 x DP=2 (with and without
sequence parallelism) and PP=2 x DP=2 give the single-process loss at every step, from the same initial weights
(tests/training/test_loss_compare.py's method and tolerance), for seqlen_truncate and
seqlen_reshape. Every step is shortened by the curriculum and drops tokens (k < L < s)."""

from __future__ import annotations

import os

import pytest

from tests.multirank import run_multirank
from tests.training.test_loss_compare import BASE, _reuse_datasets, _same_weights
from tests.training.trainer_utils import run_trainer

# seq 16; curriculum lengths 8, 12, 16 (increment 4, over 2 steps); kept 4, 4, 8 (min with L).
LTD = ["--random-ltd", "--random-ltd-min-seq", "4", "--random-ltd-seq-step", "4", "--random-ltd-require-steps", "4",
       "--random-ltd-strata", "4"]
RUNS = {
    metric: BASE + LTD + ["--curriculum-metric", metric, "--curriculum-min", "8", "--curriculum-step-increment", "4",
                          "--curriculum-steps", "2"]
    for metric in ("seqlen_truncate", "seqlen_reshape")
}
LAYOUTS = {
    "TP=2 DP=2": ["--tensor-model-parallel-size", "2"],
    "TP=2 DP=2, sequence parallel, distributed optimizer": ["--tensor-model-parallel-size", "2", "--sequence-parallel",
                                                           "--use-distributed-optimizer"],
    # the pipeline's activation shapes follow the curriculum's length (and reshape's rows)
    "PP=2 DP=2, 1F1B": ["--pipeline-model-parallel-size", "2"],
}


def body_reference(ctx, tmp):
    _reuse_datasets()
    out = {}
    for metric, args in RUNS.items():
        run = run_trainer(args, os.path.join(tmp, f"ref_{metric}.jsonl"), on_built=_same_weights)
        out[metric] = {k: [r[k] for r in run["rows"]] for k in ("loss", "kept_length", "seq_length")}
    return out


def body_layouts(ctx, tmp):
    from megatron.core import parallel_state

    _reuse_datasets()
    out = {}
    for i, (name, extra) in enumerate(LAYOUTS.items()):
        for metric, args in RUNS.items():
            parallel_state.destroy_model_parallel()
            run = run_trainer(args + extra, os.path.join(tmp, f"{i}_{metric}.jsonl"), on_built=_same_weights)
            out[(name, metric)] = None if run["rows"] is None else [r["loss"] for r in run["rows"]]
    return out


def test_curriculum_and_random_ltd_give_the_single_process_losses_at_tp2_pp2_dp2(tmp_path):
    ref = run_multirank(body_reference, world_size=1, kwargs={"tmp": str(tmp_path)}, timeout_s=180)[0]
    for metric in RUNS:
        assert ref[metric]["seq_length"] == [8, 12, 16]
        assert ref[metric]["kept_length"] == [4, 4, 8]
    results = run_multirank(body_layouts, world_size=4, kwargs={"tmp": str(tmp_path)}, timeout_s=300)
    for name in LAYOUTS:
        for metric in RUNS:
            losses = [r[(name, metric)] for r in results if r[(name, metric)] is not None]
            assert len(losses) == 1, (name, metric)
            assert losses[0] == pytest.approx(ref[metric]["loss"], rel=1e-5), (name, metric, losses[0], ref[metric]["loss"])
