"""Resume on another layout: a run that starts from a one-process seed checkpoint and saves at
TP=2 x PP=2 x DP=2 (distributed optimizer, random-LTD at k < s) continues at TP=1 x PP=1 x DP=4 and
at TP=2 x PP=1 x DP=1 with the uninterrupted run's losses (fp32, relative 1e-5)."""

import pytest

from tests.multirank import run_multirank
from tests.training.run_utils import read_metrics

ARGS = [
    "--mock-data", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "32", "--micro-batch-size", "1", "--global-batch-size", "8", "--vocab-size", "128",
    "--lr", "3e-3", "--min-lr", "1e-4", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "1",
    "--no-progress", "--cpu", "--hidden-dropout", "0", "--attention-dropout", "0", "--train-iters", "6",
    "--random-ltd", "--random-ltd-layers", "1", "2", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8",
    "--random-ltd-require-steps", "8", "--use-distributed-optimizer",
]


def body_train(ctx, args):
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    cfg = parse_pretrain_config(args, world_size=ctx.world_size)
    trainer = Trainer(cfg, gpt_task(cfg))
    try:
        return trainer.train()
    finally:
        trainer.close()


def body_seed(ctx, args):
    from megatron.training.entry import save_seed_main

    return save_seed_main(args)


def test_resume_on_other_layouts_continues_the_run(tmp_path):
    ck, seed = str(tmp_path / "ck"), str(tmp_path / "seed")
    ref = str(tmp_path / "ref.jsonl")
    run_multirank(body_seed, world_size=1, kwargs={"args": ARGS + ["--save", seed]})
    layout = ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"]
    run_multirank(body_train, world_size=8, tp=2, pp=2, timeout_s=400,
                  kwargs={"args": ARGS + layout + ["--load", seed, "--save", ck, "--save-interval", "3",
                                                   "--metrics-file", ref]})
    expected = {r["iteration"]: r for r in read_metrics(ref)}
    for world, tp in ((4, 1), (2, 2)):
        out = str(tmp_path / f"tp{tp}dp{world // tp}.jsonl")
        args = ARGS + ["--tensor-model-parallel-size", str(tp), "--load", f"{ck}/iter_0000003", "--metrics-file", out]
        run_multirank(body_train, world_size=world, tp=tp, timeout_s=400, kwargs={"args": args})
        rows = read_metrics(out)
        assert [r["iteration"] for r in rows] == [4, 5, 6]
        for r in rows:
            e = expected[r["iteration"]]
            assert r["loss"] == pytest.approx(e["loss"], rel=1e-5), (tp, world, r, e)
            assert r["lr"] == pytest.approx(e["lr"], rel=1e-9) and r["layer_tokens"] == e["layer_tokens"]
