"""End-to-end pretraining on CPU: the entry script at TP=2 x PP=2 (sequence parallel) and at DP=2
(distributed optimizer) gives the one-process losses from the same seed checkpoint, the LayerToken LR
follows its formula, kill-and-resume reproduces the uninterrupted run exactly, and bad flags or
checkpoints are refused with messages that name what is wrong."""

import math
import os

import pytest

from tests.multirank import run_multirank
from tests.training.run_utils import TINY_GPT, read_metrics, run_pretrain

LTD = ["--random-ltd", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8", "--random-ltd-require-steps", "12"]


# Layout comparisons: dropout off, 8 strata (the default under --sequence-parallel, given to every
# run so all drop the same tokens), k = 8, 8, 8, 8, 16, 16 of 32 over the 6 steps.
COMPARE = TINY_GPT + LTD + ["--hidden-dropout", "0", "--attention-dropout", "0", "--random-ltd-strata", "8",
                            "--train-iters", "6", "--eval-iters", "0"]


def body_seed_and_reference(ctx, seed, metrics):
    from megatron.core import parallel_state

    from megatron.training.entry import save_seed_main
    from tests.training.trainer_utils import run_trainer

    save_seed_main(COMPARE + ["--save", seed])  # what tools/seed_checkpoint.py runs
    parallel_state.destroy_model_parallel()
    return run_trainer(COMPARE + ["--load", seed], metrics)["rows"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A seed checkpoint (initial weights, iteration 0) and the one-process run that starts from it,
    in a forked process (a subprocess would pay the imports again)."""
    d = tmp_path_factory.mktemp("seeded")
    seed = str(d / "seed")
    rows = run_multirank(body_seed_and_reference, world_size=1, kwargs={"seed": seed, "metrics": str(d / "one.jsonl")},
                         timeout_s=180)[0]
    return seed, rows


def _assert_same_run(rows, ref):
    """Loss for loss (fp32: layouts reorder sums, 1e-5 relative; docs/testing.md), with tokens
    dropped at every step and the same schedule."""
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in ref] == list(range(1, 7))
    assert [r["kept_length"] for r in ref] == [8, 8, 8, 8, 16, 16]
    for r, e in zip(rows, ref):
        assert r["kept_length"] == e["kept_length"] and r["layer_tokens"] == e["layer_tokens"], (r, e)
        assert r["lr"] == pytest.approx(e["lr"], rel=1e-9), (r, e)
    assert [r["loss"] for r in rows] == pytest.approx([e["loss"] for e in ref], rel=1e-5), (rows, ref)


def test_tp2_pp2_sequence_parallel_entry_gives_the_one_process_losses(tmp_path, seeded):
    seed, ref = seeded
    metrics = str(tmp_path / "m.jsonl")
    run_pretrain(COMPARE + ["--load", seed, "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                            "--sequence-parallel", "--metrics-file", metrics], nproc=4)
    _assert_same_run(read_metrics(metrics), ref)


def test_dp2_distributed_optimizer_entry_gives_the_one_process_losses(tmp_path, seeded):
    seed, ref = seeded
    metrics = str(tmp_path / "m.jsonl")
    run_pretrain(COMPARE + ["--load", seed, "--use-distributed-optimizer", "--metrics-file", metrics], nproc=2)
    _assert_same_run(read_metrics(metrics), ref)


def _expected_lr(consumed, warmup, decay, lr, min_lr):
    if consumed <= warmup:
        return lr * consumed / warmup
    ratio = (consumed - warmup) / (decay - warmup)
    return min_lr + 0.5 * (math.cos(math.pi * min(ratio, 1.0)) + 1.0) * (lr - min_lr)


def test_layer_token_lr_follows_its_formula_while_kept_length_changes(tmp_path):
    metrics = str(tmp_path / "m.jsonl")
    # 4 layers, layers 1..2 drop; gbs 8, s 32: full step = 8*32*4 = 1024 layer-tokens.
    warmup, decay = 3000, 12000
    run_pretrain(TINY_GPT + LTD + ["--train-iters", "14", "--lr-schedule-unit", "layer-tokens",
                                   "--lr-warmup-tokens", str(warmup), "--lr-decay-tokens", str(decay),
                                   "--metrics-file", metrics, "--tensorboard-dir", str(tmp_path / "tb")])
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tb"))
    rows = read_metrics(metrics)
    assert len({r["kept_length"] for r in rows}) >= 3  # the ramp really moves
    consumed = 0
    for r in rows:
        k = r["kept_length"]
        consumed += 8 * (32 * 2 + k * 2)  # this step's own layer-tokens: the LR uses them (no lag)
        assert r["layer_tokens"] == consumed
        assert r["lr"] == pytest.approx(_expected_lr(consumed, warmup, decay, 3e-3, 1e-4), rel=1e-9, abs=1e-12), r


CRASHES = ["iteration:6", "save-model:8", "save-before-rename:8", "save-before-tracker:8",
           "async:iteration:9",  # --async-save: killed at the step after the save of 8, before its commit
           "bf16:iteration:6"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The uninterrupted run's metrics per precision flags (computed once each, on demand)."""
    cache = {}

    def reference(precision):
        if precision not in cache:
            d = tmp_path_factory.mktemp("ref")
            metrics = str(d / "m.jsonl")
            run_pretrain(TINY_GPT + LTD + list(precision) + ["--train-iters", "12", "--save", str(d / "ck"),
                                                             "--save-interval", "4", "--hidden-dropout", "0.1",
                                                             "--metrics-file", metrics])
            cache[precision] = {r["iteration"]: r for r in read_metrics(metrics)}
        return cache[precision]

    return reference


@pytest.mark.parametrize("crash", CRASHES)
def test_killed_run_resumes_exactly(tmp_path, uninterrupted, crash):
    ck, metrics = str(tmp_path / "ck"), str(tmp_path / "m.jsonl")
    args = TINY_GPT + LTD + ["--train-iters", "12", "--save", ck, "--save-interval", "4", "--hidden-dropout", "0.1",
                             "--metrics-file", metrics]
    precision = ()
    if crash.startswith("async:"):
        args, crash = args + ["--async-save"], crash[len("async:"):]
    if crash.startswith("bf16:"):
        precision, crash = ("--bf16",), crash[len("bf16:"):]
        args += list(precision)
    reference = uninterrupted(precision)
    proc = run_pretrain(args, env={"MEGATRON_LTD_CRASH_AT": crash}, check=False)
    assert proc.returncode != 0  # SIGKILLed
    with open(os.path.join(ck, "latest_checkpointed_iteration.txt")) as f:
        resumed_from = int(f.read())
    assert resumed_from == 4  # a kill at 6 or during the save of 8 leaves 4 as the newest complete one
    run_pretrain(args + ["--load", ck])
    rows = read_metrics(metrics)
    after = [r for r in rows if r["iteration"] > resumed_from]
    # The resumed run writes iterations 5..12 again after the killed run's partial ones.
    last_by_iter = {r["iteration"]: r for r in after}
    assert sorted(last_by_iter) == list(range(resumed_from + 1, 13))
    for it, r in last_by_iter.items():
        ref = reference[it]
        assert r["loss"] == ref["loss"] and r["lr"] == ref["lr"] and r["kept_length"] == ref["kept_length"], (it, r, ref)
        assert r["layer_tokens"] == ref["layer_tokens"]
    assert not any(name.endswith(".partial") for name in os.listdir(ck))


def test_checkpoint_with_other_model_flags_is_refused(tmp_path):
    ck = str(tmp_path / "ck")
    run_pretrain(TINY_GPT + ["--train-iters", "2", "--save", ck])
    proc = run_pretrain(TINY_GPT + ["--train-iters", "4", "--load", ck, "--hidden-size", "64"], check=False)
    assert proc.returncode != 0
    assert "--hidden-size: checkpoint 32, this run 64" in proc.stderr + proc.stdout
    # Flags that do not change what the weights mean may differ (dropout), and random-LTD may be
    # switched on when resuming a baseline checkpoint.
    ok = run_pretrain(TINY_GPT + LTD + ["--train-iters", "3", "--load", ck, "--hidden-dropout", "0.2",
                                        "--override-opt_param-scheduler"])
    assert "loaded" in ok.stdout and "iteration 2" in ok.stdout
    # Another tensor-parallel layout is resharded (tests/training/test_checkpoint_reshard.py checks the losses).
    other = run_pretrain(TINY_GPT + ["--train-iters", "4", "--load", ck, "--tensor-model-parallel-size", "2",
                                     "--override-opt_param-scheduler"], nproc=2)
    assert "resharded to" in other.stdout and "iteration 2" in other.stdout


def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    ck = str(tmp_path / "ck")
    proc = run_pretrain(TINY_GPT + ["--train-iters", "40", "--lr", "1e6", "--min-lr", "1e6", "--lr-decay-style", "constant",
                                    "--clip-grad", "0", "--save", ck, "--save-interval", "1", "--init-method-std", "1.0"],
                        check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "loss is nan" in out.lower() or "loss is inf" in out.lower(), out[-3000:]
    assert "stopping without saving" in out
    with open(os.path.join(ck, "latest_checkpointed_iteration.txt")) as f:
        last = int(f.read())
    assert os.path.isdir(os.path.join(ck, f"iter_{last:07d}"))


def test_layer_averaged_token_budget_stops_where_it_is_reached(tmp_path):
    metrics = str(tmp_path / "m.jsonl")
    budget = 3000  # layer-averaged tokens: per step 8*(32*2 + k*2)//4 with k ramping 8 -> 32
    run_pretrain(TINY_GPT + LTD + ["--train-layer-averaged-tokens", str(budget), "--metrics-file", metrics])
    rows = read_metrics(metrics)
    assert rows[-1]["layer_averaged_tokens"] >= budget > rows[-2]["layer_averaged_tokens"]
    summary = read_metrics(metrics, kind="summary")[-1]
    assert summary["iterations"] == rows[-1]["iteration"]
