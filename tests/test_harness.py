"""The multi-rank harness itself: results per rank, failures with tracebacks, no hangs."""

import time

import pytest
import torch

from tests.multirank import MultiRankError, run_multirank


def body_layout(ctx):
    t = torch.tensor([float(ctx.rank)])
    torch.distributed.all_reduce(t)
    return {"rank": ctx.rank, "tp_rank": ctx.tp_rank, "pp_rank": ctx.pp_rank, "dp_rank": ctx.dp_rank, "sum": float(t)}


def test_tp2_pp2_layout_on_four_ranks():
    out = run_multirank(body_layout, world_size=4, tp=2, pp=2)
    assert [o["rank"] for o in out] == [0, 1, 2, 3]
    assert all(o["sum"] == 6.0 for o in out)
    assert sorted((o["tp_rank"], o["pp_rank"]) for o in out) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(o["dp_rank"] == 0 for o in out)


def body_fail_on_rank_one(ctx):
    if ctx.rank == 1:
        raise ValueError("deliberate failure on rank one")
    return ctx.rank


def test_failing_rank_reported_with_traceback():
    with pytest.raises(MultiRankError) as err:
        run_multirank(body_fail_on_rank_one, world_size=2, timeout_s=60)
    msg = str(err.value)
    assert "rank 1 failed" in msg and "deliberate failure on rank one" in msg and "Traceback" in msg
    assert "rank 0 failed" not in msg


def body_hang_on_rank_zero(ctx):
    if ctx.rank == 0:
        time.sleep(600)  # never reaches the collective rank 1 waits in
    torch.distributed.barrier()
    return ctx.rank


def test_hanging_ranks_are_killed_at_the_deadline():
    start = time.monotonic()
    with pytest.raises(MultiRankError) as err:
        run_multirank(body_hang_on_rank_zero, world_size=2, timeout_s=8)
    assert time.monotonic() - start < 40
    assert "did not finish" in str(err.value) or "failed" in str(err.value)
