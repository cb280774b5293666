"""Loss-compare at the trainer level (torchtitan keeps one for every layout): the same random-LTD
run with tokens dropped (k < s), from the same initial weights, gives the same loss at every step
on one process and on TP=2, PP=2 (1F1B and interleaved), DP=2 with the distributed optimizer, TP=2
with sequence parallelism and TP=4 with sequence parallelism. fp32 on CPU, dropout off.

Identical initial weights on every layout: after the Trainer is built, every parameter is set to
values that depend only on (seed, global parameter name, full shape), and each rank keeps its TP
shard (:func:`tests.model_utils.fill_params_deterministically`); megatron-core's own init draws
RNG per pipeline stage, so it differs between layouts.

The tolerance (relative 1e-5 on the loss): layouts sum the same terms in a different order (TP
splits matmul reductions, DP all-reduces micro-batch gradients), which moves fp32 results in the
last bits. Measured (2026-12-01, 2-core CPU shared with other jobs,
`python -m tests.training.test_loss_compare`): at most 4.9e-8 relative over the three steps (the PP layouts and TP=4 are
bit-identical here). Dropping other tokens moves the loss far more: the same run with the plan cut
into 2 or 1 strata instead of 4 differs by 1.3e-3 and 3.6e-3 relative, 100x the bound.
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


def body_reference(ctx, tmp):
    """One process: the random-LTD run, and evaluation of the same initial weights with random-LTD
    on and off (evaluation runs every layer at full length)."""
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
    calls.clear()
    run = run_trainer(RUN, os.path.join(tmp, "ref.jsonl"), on_built=_same_weights)
    return {"losses": [r["loss"] for r in run["rows"]], "kept": [r["kept_length"] for r in run["rows"]],
            "gathers": len(calls), "evals": evals}


def body_layouts(ctx, tmp):
    from megatron.core import parallel_state

    _reuse_datasets()
    out = {}
    for i, (name, extra) in enumerate(LAYOUTS.items()):
        parallel_state.destroy_model_parallel()  # the Trainer makes this layout's groups
        run = run_trainer(RUN + extra, os.path.join(tmp, f"{i}.jsonl"), on_built=_same_weights)
        out[name] = None if run["rows"] is None else [r["loss"] for r in run["rows"]]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("loss_compare_ref"))
    return run_multirank(body_reference, world_size=1, kwargs={"tmp": tmp}, timeout_s=180)[0]


def test_every_layout_gives_the_single_process_loss_at_every_step(reference, tmp_path):
    ref = reference
    assert ref["kept"] == [4, 4, 8]  # tokens are dropped at every step
    assert ref["gathers"] > 0  # ... through the gather/scatter path
    results = run_multirank(body_layouts, world_size=4, kwargs={"tmp": str(tmp_path)}, timeout_s=300)
    for name in LAYOUTS:
        losses = [r[name] for r in results if r[name] is not None]
        assert len(losses) == 1, name  # one writer rank per layout
        assert losses[0] == pytest.approx(ref["losses"], rel=1e-5), (name, losses[0], ref["losses"])


def test_evaluation_drops_nothing(reference):
    (ltd_loss, ltd_gathers), (base_loss, base_gathers) = reference["evals"]["ltd"], reference["evals"]["baseline"]
    assert ltd_gathers == 0 and base_gathers == 0
    assert ltd_loss == base_loss  # the random-LTD model evaluates exactly like the baseline model


if __name__ == "__main__":  # python -m tests.training.test_loss_compare: print the measured differences
    import tempfile

    tmp = tempfile.mkdtemp()
    ref = run_multirank(body_reference, world_size=1, kwargs={"tmp": os.path.join(tmp, "ref")}, timeout_s=600)[0]
    out = run_multirank(body_layouts, world_size=4, kwargs={"tmp": tmp}, timeout_s=900)
    print("one process:", ref["losses"])
    for name in LAYOUTS:
        losses = next(r[name] for r in out if r[name] is not None)
        print(f"{name}: max relative difference {max(abs(a - b) / abs(b) for a, b in zip(losses, ref['losses'])):.2e}")
