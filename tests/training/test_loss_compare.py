"""Loss-compare at the trainer level (torchtitan keeps one for every layout): the same random-LTD
run with tokens dropped (k < s), from the same initial weights, gives the same loss at every step
on one process and on TP=2, PP=2 (1F1B and interleaved), DP=2 with the distributed optimizer, TP=2
with sequence parallelism and TP=4 with sequence parallelism; in fp32 and in bf16 on every layout,
and in fp16 with the dynamic loss scaler on TP=2 x DP=2 with the distributed optimizer. CPU,
dropout off.

Identical initial weights on every layout: after the Trainer is built, every parameter is set to
values that depend only on (seed, global parameter name, full shape), and each rank keeps its TP
shard (:func:`tests.model_utils.fill_params_deterministically`); megatron-core's own init draws
RNG per pipeline stage, so it differs between layouts.

The tolerances (relative, on each step's loss; see TOLERANCE and docs/testing.md): layouts sum
the same terms in a different order (TP splits matmul reductions and, in bf16/fp16, rounds each
partial sum before the all-reduce adds them; DP all-reduces micro-batch gradients), which moves
the result by a few rounding units of the precision. Dropping other tokens moves the loss far more:
the same run with the plan cut into 2 or 1 strata instead of 4 differs by 1.3e-3 and 3.6e-3.
"""

from __future__ import annotations

import os

import pytest

from tests.multirank import run_multirank
from tests.training.trainer_utils import run_trainer

# 4 layers (1 and 2 drop tokens), seq 16; kept length 4, 4, 8 over the 3 steps (always k < s).
# 4 strata: every layout below, TP=4 with sequence parallelism included, drops the same tokens.
BASE = [
    "--mock-data", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
    "--max-position-embeddings", "16", "--micro-batch-size", "2", "--global-batch-size", "8", "--vocab-size", "127",
    "--make-vocab-size-divisible-by", "32",  # 127 ids + eod = 128: no padding on any TP size
    "--lr", "1e-3", "--min-lr", "1e-4", "--lr-decay-style", "cosine", "--train-iters", "3", "--log-interval", "1",
    "--eval-interval", "1000", "--eval-iters", "0", "--no-progress", "--cpu", "--hidden-dropout", "0.0",
    "--attention-dropout", "0.0", "--seed", "7",
]
RUN = BASE + [
    "--random-ltd", "--random-ltd-min-seq", "4", "--random-ltd-seq-step", "4", "--random-ltd-require-steps", "4",
    "--random-ltd-strata", "4",
]
LAYOUTS = {
    "TP=2 DP=2, distributed optimizer": ["--tensor-model-parallel-size", "2", "--use-distributed-optimizer"],
    "PP=2 DP=2, 1F1B": ["--pipeline-model-parallel-size", "2"],
    "PP=2 DP=2, interleaved": ["--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "1"],
    "TP=2 DP=2, sequence parallel": ["--tensor-model-parallel-size", "2", "--sequence-parallel"],
    "TP=4, sequence parallel": ["--tensor-model-parallel-size", "4", "--sequence-parallel"],
}


def _same_weights(trainer):
    from tests.model_utils import fill_params_deterministically

    for chunk in trainer.models:
        fill_params_deterministically(chunk, seed=5)
    # bf16/fp16: the optimizer's fp32 main copy was taken when it was built; refresh it from the
    # new weights (in fp32 the distributed optimizer's shards are views, and this is a no-op).
    trainer.optimizer.reload_model_params()


def _reuse_datasets():
    """Build the mock datasets once per process: they depend only on the seed and the sizes (not on
    the layout), and megatron-core's shuffle-index build is most of a tiny Trainer's start-up."""
    import megatron.training.gpt as gpt

    built = {}
    original = gpt.build_datasets

    def cached(cfg, tokenizer, num_samples):
        key = tuple(num_samples)
        if key not in built:
            built[key] = original(cfg, tokenizer, num_samples)
        return built[key]

    gpt.build_datasets = cached


def _count_gathers():
    import megatron.ltd.layer as layer_mod

    calls = []

    class CountingRoute(layer_mod.TokenRoute):  # the layer's gather/scatter pair, counting its gathers
        def gather(self, hidden):
            calls.append(1)
            return super().gather(hidden)

    layer_mod.TokenRoute = CountingRoute
    return calls


# Mixed precision: bf16 as users train; fp16 with the dynamic loss scaler on one layout (its
# initial scale is low enough that no step overflows here, so every step is applied on every layout).
PRECISIONS = {"fp32": [], "bf16": ["--bf16"], "fp16": ["--fp16", "--initial-loss-scale", "4096"]}
CASES = [(p, name) for p in ("fp32", "bf16") for name in LAYOUTS] + [("fp16", "TP=2 DP=2, distributed optimizer")]
# Relative bound on each step's loss against the one-process run of the same precision, measured
# with `python -m tests.training.test_loss_compare` (docs/testing.md has the table and the reasoning).
# Largest measured difference over the layouts and steps: fp32 4.9e-8, bf16 5.4e-5, fp16 7.3e-6; the
# bounds hold each about 4x above it. Dropping other tokens (the plan cut into 2 strata instead of
# 4) moves the loss by 1.3e-3 in every precision: 6.7x the bf16 bound, 44x the fp16 one.
TOLERANCE = {"fp32": 1e-5, "bf16": 2e-4, "fp16": 3e-5}


def body_reference(ctx, tmp, sensitivity=False):
    """One process: the random-LTD run in every precision, and evaluation of the same initial
    weights with random-LTD on and off (evaluation runs every layer at full length)."""
    from tests.training.trainer_utils import build_trainer

    _reuse_datasets()
    calls = _count_gathers()
    evals = {}
    for name, args in (("ltd", RUN), ("baseline", BASE)):
        trainer = build_trainer(args + ["--eval-iters", "1"])
        _same_weights(trainer)
        calls.clear()
        evals[name] = (trainer.evaluate(), len(calls))
        trainer.close()
    out = {"evals": evals}
    for precision, extra in PRECISIONS.items():
        calls.clear()
        run = run_trainer(RUN + extra, os.path.join(tmp, f"ref-{precision}.jsonl"), on_built=_same_weights)
        out[precision] = {"losses": [r["loss"] for r in run["rows"]], "kept": [r["kept_length"] for r in run["rows"]],
                          "skipped": [r["skipped_steps"] for r in run["rows"]], "gathers": len(calls),
                          "loss_scale": [r.get("loss_scale") for r in run["rows"]]}
    if sensitivity:  # what dropping other tokens does to the loss: the same run with fewer strata
        for precision, extra in PRECISIONS.items():
            for strata in ("2", "1"):
                run = run_trainer(RUN + extra + ["--random-ltd-strata", strata],
                                  os.path.join(tmp, f"strata{strata}-{precision}.jsonl"), on_built=_same_weights)
                out[precision][f"strata {strata}"] = [r["loss"] for r in run["rows"]]
    return out


def body_layouts(ctx, tmp, cases):
    from megatron.core import parallel_state

    _reuse_datasets()
    out = {}
    for i, (precision, name) in enumerate(cases):
        parallel_state.destroy_model_parallel()  # the Trainer makes this layout's groups
        run = run_trainer(RUN + LAYOUTS[name] + PRECISIONS[precision], os.path.join(tmp, f"{i}.jsonl"),
                          on_built=_same_weights)
        out[(precision, name)] = None if run["rows"] is None else (
            [r["loss"] for r in run["rows"]], [r["skipped_steps"] for r in run["rows"]])
    return out


def max_rel_diff(losses, ref):
    return max(abs(a - b) / abs(b) for a, b in zip(losses, ref))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("loss_compare_ref"))
    return run_multirank(body_reference, world_size=1, kwargs={"tmp": tmp}, timeout_s=240)[0]


def test_every_layout_gives_the_single_process_loss_at_every_step(reference, tmp_path):
    for precision in PRECISIONS:
        ref = reference[precision]
        assert ref["kept"] == [4, 4, 8], precision  # tokens are dropped at every step
        assert ref["gathers"] > 0, precision  # ... through the gather/scatter path
        assert ref["skipped"] == [0, 0, 0], precision  # every step applied (fp16: no overflow)
    # The low-precision runs really are: bf16 leaves the fp32 losses by more than fp32's own bound,
    # fp16 differs from fp32 and runs under the loss scaler.
    assert max_rel_diff(reference["bf16"]["losses"], reference["fp32"]["losses"]) > 10 * TOLERANCE["fp32"]
    assert reference["fp16"]["losses"] != reference["fp32"]["losses"]
    assert reference["fp16"]["loss_scale"] == [4096, 4096, 4096] and reference["fp32"]["loss_scale"] == [None] * 3
    results = run_multirank(body_layouts, world_size=4, kwargs={"tmp": str(tmp_path), "cases": CASES}, timeout_s=420)
    for case in CASES:
        got = [r[case] for r in results if r[case] is not None]
        assert len(got) == 1, case  # one writer rank per layout
        losses, skipped = got[0]
        ref = reference[case[0]]
        assert skipped == ref["skipped"], case
        assert losses == pytest.approx(ref["losses"], rel=TOLERANCE[case[0]]), (
            case, max_rel_diff(losses, ref["losses"]), losses, ref["losses"])


def test_evaluation_drops_nothing(reference):
    (ltd_loss, ltd_gathers), (base_loss, base_gathers) = reference["evals"]["ltd"], reference["evals"]["baseline"]
    assert ltd_gathers == 0 and base_gathers == 0
    assert ltd_loss == base_loss  # the random-LTD model evaluates exactly like the baseline model


if __name__ == "__main__":  # python -m tests.training.test_loss_compare: print the measured differences
    import tempfile
    import time

    tmp = tempfile.mkdtemp()
    t0 = time.time()
    ref = run_multirank(body_reference, world_size=1, kwargs={"tmp": os.path.join(tmp, "ref"), "sensitivity": True},
                        timeout_s=600)[0]
    t1 = time.time()
    out = run_multirank(body_layouts, world_size=4, kwargs={"tmp": tmp, "cases": CASES}, timeout_s=900)
    print(f"reference {t1 - t0:.1f}s, layouts {time.time() - t1:.1f}s")
    for precision in PRECISIONS:
        print(f"one process {precision}:", ref[precision]["losses"], "loss scale", ref[precision]["loss_scale"])
        for strata in ("2", "1"):
            print(f"  {precision} with {strata} strata instead of 4 (other tokens dropped): "
                  f"{max_rel_diff(ref[precision][f'strata {strata}'], ref[precision]['losses']):.2e}")
    for p in ("bf16", "fp16"):
        print(f"{p} vs fp32, one process: {max_rel_diff(ref[p]['losses'], ref['fp32']['losses']):.2e}")
    for case in CASES:
        losses, skipped = next(r[case] for r in out if r[case] is not None)
        per_step = [abs(a - b) / abs(b) for a, b in zip(losses, ref[case[0]]["losses"])]
        print(f"{case[0]} {case[1]}: max relative difference {max(per_step):.2e} per step "
              + " ".join(f"{d:.1e}" for d in per_step) + f" skipped {skipped}")
