"""Resume on another layout (megatron-core dist_checkpointing, fp32, dropout off) continues the
uninterrupted run loss for loss, and the loaded state is the saved state tensor for tensor.

Two models, between them every model option of the CLI:

- "llama": SwiGLU (fused gate/up linear_fc1), GQA (4 heads, 2 query groups: one group per TP rank),
  RoPE, RMSNorm, untied output layer, no biases, vocabulary 50257, whose padding depends on TP
  (50304 at TP=1, 50432 at TP=2): the resumed run keeps the checkpoint's;
- "gpt": the defaults (LayerNorm, GELU, learned positions, tied embeddings, biases), an odd
  vocabulary (1001) and random-LTD with k < s.

Layout changes TP2 -> 1, TP2 -> DP2, 1 -> TP2 and PP2 -> 1, with the distributed optimizer on and
off (the parameter). CI runs a covering set (``COVERING``): every change with each optimizer
setting, each model with every change once, plus TP2 x PP2 -> DP2 (all three at once);
``MEGATRON_LTD_FULL_RESHARD=1`` runs every model with every change (2 min 15 s against 53 s, both on a
busy 2-core machine; 44 s quiet).

Each source run is the uninterrupted reference: it saves at iteration 2 and trains to 4. Each
resumed run saves again right after loading; that checkpoint must equal the source's iteration 2
bit for bit (every weight, Adam moment and main copy, read whole), and its losses must match the
reference's within 1e-6 relative (measured over the full product: at most 6.9e-8; fused gate/up
split per TP rank instead of swiglu-aware moves them by 1e-4, see docs/checkpoints.md). Runs on
the same number of processes share one launch: four launches with the distributed optimizer,
three without.
"""

import os

import pytest

from tests.multirank import run_multirank
from tests.training.run_utils import read_metrics

COMMON = [
    "--mock-data", "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--lr", "3e-3",
    "--min-lr", "1e-4", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "1", "--no-progress", "--cpu",
    "--hidden-dropout", "0", "--attention-dropout", "0", "--train-iters", "4",
]
MODELS = {
    "llama": ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--num-query-groups", "2",
              "--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
              "--untie-embeddings-and-output-weights", "--disable-bias-linear", "--vocab-size", "50257"],
    "gpt": ["--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--vocab-size", "1001",
            "--random-ltd", "--random-ltd-layers", "1", "2", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8",
            "--random-ltd-require-steps", "8"],
}
LAYOUTS = {"1": (1, 1, 1), "tp2": (2, 1, 2), "pp2": (1, 2, 2), "dp2": (1, 1, 2), "tp2pp2": (2, 2, 4)}  # (TP, PP, world)
CHANGES = [("tp2", "1"), ("tp2", "dp2"), ("1", "tp2"), ("pp2", "1")]
# The covering set: per optimizer setting, one model for the changes out of TP2, the other for the
# rest, swapped between the settings; plus all three dimensions at once (TP2 x PP2 -> DP2).
COVERING = {True: [("llama", "tp2", "1"), ("llama", "tp2", "dp2"), ("gpt", "1", "tp2"), ("gpt", "pp2", "1"),
                   ("gpt", "tp2pp2", "dp2")],
            False: [("gpt", "tp2", "1"), ("gpt", "tp2", "dp2"), ("llama", "1", "tp2"), ("llama", "pp2", "1")]}
TENSOR_SKIP = ("rng_state", "_extra_state")  # per-rank RNG (layout-bound) and empty TE placeholders


def cases(distributed_optimizer: bool):
    """MEGATRON_LTD_FULL_RESHARD=1: every model with every change (about twice the time)."""
    if os.environ.get("MEGATRON_LTD_FULL_RESHARD") == "1":
        return [(m, s, d) for s, d in CHANGES + [("tp2pp2", "dp2")] for m in sorted(MODELS)]
    return COVERING[distributed_optimizer]


def _vocab(model):
    return int(MODELS[model][MODELS[model].index("--vocab-size") + 1])


def _args(model, layout, distributed_optimizer):
    tp, pp, _ = LAYOUTS[layout]
    return (COMMON + MODELS[model] + ["--tensor-model-parallel-size", str(tp), "--pipeline-model-parallel-size", str(pp)]
            + (["--use-distributed-optimizer"] if distributed_optimizer else []))


def body_runs(ctx, runs):
    """Several trainer runs in one launch, each on its own TP x PP layout over the same ranks. A run
    with ``resave`` saves right after loading (the loaded state, for the tensor comparison)."""
    from megatron.core import parallel_state

    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    from megatron.checkpoint import CheckpointError

    vocab = []
    for args, resave in runs:
        parallel_state.destroy_model_parallel()  # the trainer builds this run's groups
        cfg = parse_pretrain_config(args, world_size=ctx.world_size)
        if resave is None:  # a run that must be refused: its message
            try:
                Trainer(cfg, gpt_task(cfg)).close()
            except CheckpointError as e:
                vocab.append(str(e))
                continue
            raise AssertionError(f"not refused: {args}")
        trainer = Trainer(cfg, gpt_task(cfg))
        try:
            if resave:
                trainer.save()
            trainer.train()
            vocab.append(trainer.vocab_size)
        finally:
            trainer.close()
    return vocab


def launches(runs):
    """Group (key, world, needs, run) into as few launches as the dependencies allow: runs on one
    number of processes go together, in order, once what they load exists or comes earlier."""
    pending, done, out = list(runs), set(), []
    while pending:
        world = next(w for _, w, needs, _ in pending if needs is None or needs in done)
        batch = []
        for item in list(pending):
            key, w, needs, _ = item
            if w == world and (needs is None or needs in done or needs in [k for k, *_ in batch]):
                batch.append(item)
                pending.remove(item)
        done.update(k for k, *_ in batch)
        out.append((world, batch))
    return out


def full_tensors(directory):
    """Every tensor of a torch_dist checkpoint, whole, read in this process."""
    import torch
    import torch.distributed.checkpoint as dcp

    metadata = dcp.FileSystemReader(directory).read_metadata()
    out = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in metadata.state_dict_metadata.items()
           if hasattr(m, "size") and not any(s in k for s in TENSOR_SKIP)}
    dcp.load(out, checkpoint_id=directory, no_dist=True)
    return out


@pytest.mark.parametrize("distributed_optimizer", [True, False], ids=["distopt", "no-distopt"])
def test_resume_on_another_layout_continues_the_run(tmp_path, distributed_optimizer):
    import torch

    from megatron.checkpoint import resume_vocab_size

    todo = cases(distributed_optimizer)

    def ck(model, layout):
        return str(tmp_path / f"{model}-{layout}")

    runs = []
    # One-process sources first, then the widest: the two-process launch can then run every resume it hosts.
    for model, src in sorted({(m, s) for m, s, _ in todo}, key=lambda k: (LAYOUTS[k[1]][2] != 1, -LAYOUTS[k[1]][2], k)):
        runs.append((("src", model, src), LAYOUTS[src][2], None, (_args(model, src, distributed_optimizer) + [
            "--save", ck(model, src), "--save-interval", "2", "--metrics-file", ck(model, src) + ".jsonl"], False)))
    for model, src, dst in todo:
        out = ck(model, f"{src}-to-{dst}")
        runs.append((("res", model, src, dst), LAYOUTS[dst][2], ("src", model, src), (_args(model, dst, distributed_optimizer) + [
            "--load", f"{ck(model, src)}/iter_0000002", "--save", out, "--metrics-file", out + ".jsonl"], True)))
    # Switching the distributed optimizer with its state is refused (megatron-core reads neither
    # optimizer's state into the other), naming the flag and the way out.
    model, src, _ = todo[-1]
    runs.append((("switch",), 1, ("src", model, src), (_args(model, "1", not distributed_optimizer) + [
        "--load", f"{ck(model, src)}/iter_0000002"], None)))
    vocab = {}
    for world, batch in launches(runs):
        sizes = run_multirank(body_runs, world_size=world, timeout_s=300, kwargs={"runs": [r for *_, r in batch]})[0]
        vocab.update(zip([key for key, *_ in batch], sizes))

    assert "--use-distributed-optimizer: the checkpoint was saved with" in vocab[("switch",)]
    assert "--no-load-optim" in vocab[("switch",)]
    failures, worst = [], 0.0
    for model, src, dst in todo:
        name = f"{model} {src} -> {dst}"
        assert vocab[("res", model, src, dst)] == vocab[("src", model, src)], name  # the checkpoint's padding
        expected = {r["iteration"]: r for r in read_metrics(ck(model, src) + ".jsonl")}
        rows = read_metrics(ck(model, f"{src}-to-{dst}") + ".jsonl")
        assert [r["iteration"] for r in rows] == [3, 4], name
        for r in rows:
            e = expected[r["iteration"]]
            worst = max(worst, abs(r["loss"] - e["loss"]) / abs(e["loss"]))
            if r["loss"] != pytest.approx(e["loss"], rel=1e-6, abs=0):
                failures.append(f"{name}: iteration {r['iteration']} loss {r['loss']:.7f}, uninterrupted {e['loss']:.7f}")
            assert r["lr"] == e["lr"] and r["layer_tokens"] == e["layer_tokens"], name
        # A later resume of the resumed run keeps that padding too, on either TP size (a run resumed
        # from TP=2 on one process saves 50432 at TP=1).
        for tp in (1, 2):
            assert resume_vocab_size(ck(model, f"{src}-to-{dst}"), _vocab(model), 128, tp) == vocab[("src", model, src)]
        saved = full_tensors(f"{ck(model, src)}/iter_0000002")
        loaded = full_tensors(f"{ck(model, f'{src}-to-{dst}')}/iter_0000002")
        assert sorted(saved) == sorted(loaded), name
        assert any(k.startswith("optimizer.state.exp_avg.") for k in saved), name
        for key in sorted(saved):
            if saved[key].shape != loaded[key].shape or not torch.equal(saved[key], loaded[key]):
                failures.append(f"{name}: {key} differs after the load"
                                + (f" (max {(saved[key] - loaded[key]).abs().max().item():.3g})"
                                   if saved[key].shape == loaded[key].shape else f" {tuple(loaded[key].shape)}"))
    print(f"largest relative loss difference: {worst:.2e}")
    assert not failures, "\n".join(failures)
