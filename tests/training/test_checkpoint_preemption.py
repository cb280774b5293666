"""Preemption and hangs on several ranks: a SIGTERM that reaches one rank mid-step makes every rank
finish the step, save and exit 0, and the resume is exact; a stuck rank makes the others time out
with the step named, and the launcher takes the job down."""

import os
import time

from tests.multirank import run_multirank
from tests.training.run_utils import read_metrics, run_pretrain

ARGS = [
    "--mock-data", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "8", "--vocab-size", "128",
    "--lr", "3e-3", "--min-lr", "1e-4", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "1",
    "--no-progress", "--cpu", "--hidden-dropout", "0.1", "--train-iters", "8",
    "--random-ltd", "--random-ltd-layers", "1", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8",
    "--random-ltd-require-steps", "6", "--use-distributed-optimizer", "--exit-signal-handler",
]


def body_reference_and_resume(ctx, ref_metrics, resume_args):
    """The uninterrupted run, then the resume of the interrupted one, in the same gloo processes."""
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    out = []
    for args in (ARGS + ["--metrics-file", ref_metrics], resume_args):
        cfg = parse_pretrain_config(args, world_size=ctx.world_size)
        trainer = Trainer(cfg, gpt_task(cfg))
        try:
            out.append(trainer.train())
        finally:
            trainer.close()
    return out


def test_sigterm_on_one_rank_saves_exits_0_and_resumes_exactly(tmp_path):
    ck, metrics = str(tmp_path / "ck"), str(tmp_path / "m.jsonl")
    # Rank 1 alone receives SIGTERM at the start of step 4; both ranks finish it, save, exit 0.
    proc = run_pretrain(ARGS + ["--save", ck, "--metrics-file", metrics], nproc=2,
                        env={"MEGATRON_LTD_SIGNAL_AT": "4:1"})
    assert proc.returncode == 0
    assert "stopped by a signal (SIGTERM/SIGUSR1) with --exit-signal-handler at iteration 4" in proc.stdout
    assert open(os.path.join(ck, "latest_checkpointed_iteration.txt")).read() == "4"
    assert [r["iteration"] for r in read_metrics(metrics)] == [1, 2, 3, 4]
    resumed = str(tmp_path / "resumed.jsonl")
    summaries = run_multirank(body_reference_and_resume, world_size=2, timeout_s=300,
                              kwargs={"ref_metrics": str(tmp_path / "ref.jsonl"),
                                      "resume_args": ARGS + ["--load", ck, "--metrics-file", resumed]})
    assert summaries[0][1]["iterations"] == 8
    ref = {r["iteration"]: r for r in read_metrics(str(tmp_path / "ref.jsonl"))}
    first = read_metrics(metrics)
    after = read_metrics(resumed)
    assert [r["iteration"] for r in after] == [5, 6, 7, 8]
    for r in first + after:
        assert r["loss"] == ref[r["iteration"]]["loss"] and r["lr"] == ref[r["iteration"]]["lr"], (r, ref[r["iteration"]])


def test_stuck_rank_times_out_with_the_step_named_and_the_job_goes_down(tmp_path):
    t0 = time.time()
    args = [a for a in ARGS if a != "--exit-signal-handler"]  # the launcher's SIGTERM must end the stuck rank
    proc = run_pretrain(args + ["--train-iters", "1000", "--distributed-timeout-minutes", "0.1"], nproc=2,
                        env={"MEGATRON_LTD_HANG_AT": "3:1"}, check=False)
    wall = time.time() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "pretrain_gpt.py: error (rank 0): iteration 3: a collective did not complete" in out, out[-3000:]
    assert "--distributed-timeout-minutes 0.1" in out
    # Rank 1 sleeps for 600 s: the launcher took it down as soon as rank 0 failed.
    assert wall < 200, wall
