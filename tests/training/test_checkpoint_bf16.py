"""bf16 checkpoints (in-process, one rank): a resume continues the uninterrupted run's losses
exactly, and every path that loads weights without optimizer state (--finetune, --no-load-optim,
with and without the distributed optimizer) keeps the loaded weights: the optimizer's fp32 main
copies are refreshed from them, so one step at a tiny LR moves no weight by more than 1e-6."""

import pytest
import torch

from megatron.checkpoint.state import unwrap
from tests.training.inprocess import TINY, open_trainer, trainer_runtime  # noqa: F401 (fixture)
from tests.training.run_utils import read_metrics

pytestmark = pytest.mark.usefixtures("trainer_runtime")

LTD = ["--random-ltd", "--random-ltd-layers", "1", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8",
       "--random-ltd-require-steps", "6"]
BF16 = TINY + LTD + ["--bf16", "--train-iters", "6", "--use-distributed-optimizer"]


def _weights(trainer):
    return {n: p.detach().clone() for n, p in unwrap(trainer.models[0]).named_parameters()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """An uninterrupted bf16 run of 6 steps that saves at 3 and 6; the weights saved at 6."""
    d = tmp_path_factory.mktemp("bf16")
    ck, metrics = str(d / "ck"), str(d / "ref.jsonl")
    with open_trainer(BF16 + ["--save", ck, "--save-interval", "3", "--metrics-file", metrics]) as (trainer, _):
        trainer.train()
        saved = _weights(trainer)
    return {"ck": ck, "dir": d, "saved": saved, "ref": {r["iteration"]: r for r in read_metrics(metrics)}}


def test_resume_continues_the_uninterrupted_run_exactly(run):
    metrics = str(run["dir"] / "resumed.jsonl")
    with open_trainer(BF16 + ["--load", f"{run['ck']}/iter_0000003", "--metrics-file", metrics]) as (trainer, _):
        assert trainer.counters.iteration == 3
        trainer.train()
        assert all(torch.equal(a, run["saved"][n]) for n, a in _weights(trainer).items())
    rows = read_metrics(metrics)
    assert [r["iteration"] for r in rows] == [4, 5, 6]
    for r in rows:
        assert r["loss"] == run["ref"][r["iteration"]]["loss"] and r["lr"] == run["ref"][r["iteration"]]["lr"], r


@pytest.mark.parametrize("flags,distributed_optimizer", [
    (["--finetune"], True),
    (["--no-load-optim", "--override-opt_param-scheduler"], True),
    (["--no-load-optim", "--override-opt_param-scheduler"], False),
], ids=["finetune", "no-load-optim", "no-load-optim-plain-optimizer"])
def test_weights_loaded_without_optimizer_state_survive_the_first_step(run, flags, distributed_optimizer):
    args = [a for a in BF16 if distributed_optimizer or a != "--use-distributed-optimizer"]
    with open_trainer(args + ["--train-iters", "8", "--lr", "1e-9", "--min-lr", "1e-9", "--load", run["ck"]] + flags) as (trainer, _):
        loaded = _weights(trainer)
        for n, w in loaded.items():
            assert torch.equal(w, run["saved"][n]), n  # the load itself is exact
        trainer.train_step(trainer._iterators(trainer.train_ds, trainer.counters.samples))
        moved = max(float((a.float() - loaded[n].float()).abs().max()) for n, a in _weights(trainer).items())
    assert moved <= 1e-6, moved  # the optimizer's random initial main copies would move them by ~0.1
