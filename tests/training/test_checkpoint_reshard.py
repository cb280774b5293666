"""Resume on other layouts (megatron-core dist_checkpointing, fp32, dropout off): a random-LTD run
(k < s) with the distributed optimizer saved at TP=2 x PP=2 x DP=2 continues at TP=1 x DP=4, at
TP=4 and on one process with the uninterrupted run's losses (relative 1e-5), for the default GPT
and for a RoPE + SwiGLU + GQA + RMSNorm model with untied output layer and a vocabulary of 50257,
whose padded size differs per TP (50432 at TP=2, 50304 at TP=1): the resumed run keeps the
checkpoint's padding."""

import pytest

from tests.multirank import run_multirank
from tests.training.run_utils import read_metrics

ARGS = [
    "--mock-data", "--num-layers", "4", "--hidden-size", "32", "--seq-length", "32", "--micro-batch-size", "1",
    "--global-batch-size", "8", "--lr", "3e-3", "--min-lr", "1e-4", "--log-interval", "1", "--eval-interval", "1000",
    "--eval-iters", "1", "--no-progress", "--cpu", "--hidden-dropout", "0", "--attention-dropout", "0",
    "--train-iters", "5", "--random-ltd", "--random-ltd-layers", "1", "2", "--random-ltd-min-seq", "8",
    "--random-ltd-seq-step", "8", "--random-ltd-require-steps", "8", "--use-distributed-optimizer",
]
MODELS = {
    "gpt": ["--num-attention-heads", "4", "--vocab-size", "128"],
    "rope-swiglu-gqa-rmsnorm": ["--num-attention-heads", "8", "--num-query-groups", "4", "--swiglu", "--normalization",
                                "RMSNorm", "--position-embedding-type", "rope", "--untie-embeddings-and-output-weights",
                                "--vocab-size", "50257"],
}


def body_train(ctx, args):
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    cfg = parse_pretrain_config(args, world_size=ctx.world_size)
    trainer = Trainer(cfg, gpt_task(cfg))
    try:
        return trainer.train(), trainer.vocab_size
    finally:
        trainer.close()


@pytest.mark.parametrize("model", sorted(MODELS))
def test_resume_on_other_layouts_continues_the_run(tmp_path, model):
    args = ARGS + MODELS[model]
    ck, ref = str(tmp_path / "ck"), str(tmp_path / "ref.jsonl")
    saved = run_multirank(body_train, world_size=8, tp=2, pp=2, timeout_s=400,
                          kwargs={"args": args + ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                                                  "--save", ck, "--save-interval", "2", "--metrics-file", ref]})
    expected = {r["iteration"]: r for r in read_metrics(ref)}
    for world, tp in ((4, 1), (4, 4), (1, 1)):
        out = str(tmp_path / f"tp{tp}dp{world // tp}.jsonl")
        resumed = run_multirank(body_train, world_size=world, tp=tp, timeout_s=400,
                                kwargs={"args": args + ["--tensor-model-parallel-size", str(tp), "--load",
                                                        f"{ck}/iter_0000002", "--metrics-file", out]})
        assert resumed[0][1] == saved[0][1]  # the checkpoint's padded vocabulary
        rows = read_metrics(out)
        assert [r["iteration"] for r in rows] == [3, 4, 5]
        for r in rows:
            e = expected[r["iteration"]]
            assert r["loss"] == pytest.approx(e["loss"], rel=1e-5), (tp, world, r, e)
            assert r["lr"] == pytest.approx(e["lr"], rel=1e-9) and r["layer_tokens"] == e["layer_tokens"]
