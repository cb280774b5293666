"""``--compile`` (torch.compile of each layer's dense computation) gives the eager path's losses,
step for step, with random-LTD dropping tokens (k < s, a ramp over several kept lengths):
TP=2 with sequence parallelism and two micro-batches of gradient accumulation in fp32 and bf16,
and PP=2 (1F1B) in fp32. Same initial weights in both runs of a pair, dropout off, CPU/gloo.

The compiled path must really run: each rank reports dynamo's counters (graphs captured, graph
breaks), and the kept length changing over the ramp must not recompile per length.
"""

from __future__ import annotations

import os

import pytest

from tests.multirank import run_multirank
from tests.training.test_loss_compare import BASE, _same_weights
from tests.training.trainer_utils import run_trainer

# k = 4, 8, 12 over the 3 steps (seq 16): three kept lengths, always k < s.
RUN = BASE + [
    "--random-ltd", "--random-ltd-min-seq", "4", "--random-ltd-seq-step", "4", "--random-ltd-require-steps", "3",
    "--random-ltd-strata", "4",
]
# Relative bound per step. fp32: measured 0 (the compiled graphs call the same matmul kernels and
# fuse only elementwise work); bf16: the fused elementwise ops round once instead of per op, so the
# bound is the bf16 layout bound of docs/testing.md.
TOLERANCE = {"fp32": 1e-6, "bf16": 2e-4}


def body_eager_vs_compiled(ctx, layout, precisions, tmp):
    import torch._dynamo
    from megatron.core import parallel_state
    from torch._dynamo.utils import counters

    out = {}
    for precision in precisions:
        extra = ["--bf16"] if precision == "bf16" else []
        for mode in ("eager", "compiled"):
            parallel_state.destroy_model_parallel()  # the Trainer makes this run's groups
            args = RUN + layout + extra + (["--compile"] if mode == "compiled" else [])
            before = counters["stats"]["unique_graphs"]
            res = run_trainer(args, os.path.join(tmp, f"{precision}-{mode}-{ctx.rank}.jsonl"), on_built=_same_weights)
            out[(precision, mode)] = {
                "losses": [r["loss"] for r in res["rows"]] if res["rows"] else None,
                "kept": [r["kept_length"] for r in res["rows"]] if res["rows"] else None,
                "graphs": counters["stats"]["unique_graphs"] - before,
            }
    out["graph_breaks"] = sum(counters["graph_break"].values())
    torch._dynamo.reset()
    return out


def _check(results, precisions, whole_graphs):
    for rank_out in results:
        for precision in precisions:
            assert rank_out[(precision, "eager")]["graphs"] == 0
            assert rank_out[(precision, "compiled")]["graphs"] >= 1
        if whole_graphs:
            # No tensor parallelism: each layer is whole graphs, shared by the layers of a kind (full
            # length / dropping), static then dynamic kept length: a few, not one per length and layer.
            assert rank_out["graph_breaks"] == 0, "a layer's forward broke into several graphs"
            for precision in precisions:
                assert rank_out[(precision, "compiled")]["graphs"] <= 4, rank_out[(precision, "compiled")]
    writer = [r for r in results if r[(precisions[0], "eager")]["losses"] is not None][0]
    for precision in precisions:
        eager, compiled = writer[(precision, "eager")], writer[(precision, "compiled")]
        assert eager["kept"] == compiled["kept"] == [4, 8, 12]
        assert len(eager["losses"]) == 3
        for a, b in zip(eager["losses"], compiled["losses"]):
            assert abs(a - b) <= TOLERANCE[precision] * abs(a), (precision, eager["losses"], compiled["losses"])


@pytest.mark.parametrize("name,layout,precisions,whole_graphs", [
    # megatron-core's sequence-parallel collectives cut each layer's graph (see megatron/models/compile.py)
    ("TP=2 sequence parallel, 2 micro-batches", ["--tensor-model-parallel-size", "2", "--sequence-parallel",
                                                  "--global-batch-size", "4"], ["fp32", "bf16"], False),
    ("PP=2 1F1B", ["--pipeline-model-parallel-size", "2", "--global-batch-size", "4"], ["fp32"], True),
])
def test_compiled_layers_give_the_eager_losses(tmp_path, name, layout, precisions, whole_graphs):
    results = run_multirank(body_eager_vs_compiled, world_size=2, kwargs={
        "layout": layout, "precisions": precisions, "tmp": str(tmp_path)}, timeout_s=600)
    _check(results, precisions, whole_graphs)


def test_compile_mode_needs_compile():
    from megatron.training.arguments import parse_pretrain_config

    with pytest.raises(ValueError, match="--compile-mode needs --compile"):
        parse_pretrain_config(RUN + ["--compile-mode", "reduce-overhead"], model_type="gpt", world_size=1)


def test_compile_on_cpu_without_a_compiler_is_refused_before_work(monkeypatch):
    import shutil

    from megatron.training.arguments import parse_pretrain_config

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="--compile on CPU needs a C\\+\\+ compiler"):
        parse_pretrain_config(RUN + ["--compile"], model_type="gpt", world_size=1)
