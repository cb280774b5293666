"""How the multi-rank harness starts ranks (tests/multirank.py): never in a fork whose parent touched CUDA.

On a GPU machine the forkserver's preload once initialised CUDA, and every rank died with "Cannot
re-initialize CUDA in forked subprocess". These tests keep that from coming back unseen: the preload
makes no CUDA call (the recorder around torch.cuda's entry points sees none, and that recorder does
see such calls), a rank starts with CUDA untouched, a poisoned server sends the harness to spawn,
and spawned ranks work.
"""

import pytest
import torch

from tests import multirank
from tests.multirank import choose_start, run_multirank


def _start_body(ctx):
    out = dict(multirank.RANK_START)
    if torch.cuda.is_available():  # a GPU rank (the CPU device layer says no CUDA in CPU ranks)
        out["cuda_usable"] = torch.ones(1, device="cuda").item() == 1.0
    t = torch.tensor([float(ctx.rank + 1)])
    torch.distributed.all_reduce(t)
    out["sum"] = float(t)
    return out


def test_ranks_start_with_cuda_untouched_by_the_preload():
    r = run_multirank(_start_body, world_size=1)[0]
    assert r["cuda_initialized"] is False and r["bad_fork"] is False and r["parent_cuda_initialized"] is False
    probe = multirank.START["probe"]
    if multirank.START["method"] == "forkserver":
        # The server imported torch, megatron-core and the device layer before forking, CUDA-free.
        assert r["preloaded"] == ["megatron.core", "megatron.runtime.device", "tests.multirank_preload", "torch"]
        assert r["preload_cuda_calls"] == [] and not multirank.poisoned(probe)
    if not torch.cuda.is_available():
        # Without CUDA nothing can poison a fork: the fast path must be the one taken.
        assert multirank.START["method"] == "forkserver" and probe["preload_cuda_calls"] == []
        assert probe["cuda_usable"] is None  # no GPU: the probe did not try CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_rank_initialises_cuda_itself():
    r = run_multirank(_start_body, world_size=1, cpu=False)[0]
    assert r["bad_fork"] is False and r["cuda_usable"] is True and r["sum"] == 1.0


def test_the_recorder_sees_cuda_queries_and_initialisation():
    from tests import multirank_preload as preload

    before = len(preload.CALLS)
    originals = {n: getattr(torch.cuda, n) for n in preload.CUDA_ENTRY_POINTS if hasattr(torch.cuda, n)}
    preload.install()
    try:
        torch.cuda.is_available()
        torch.cuda.device_count()
        for touch in (torch.cuda.current_device, lambda: torch.zeros(1, device="cuda")):
            try:
                touch()
            except (AssertionError, RuntimeError):  # no CUDA here: the attempt is what counts
                pass
    finally:
        preload.uninstall()
        seen = [name for name, _ in preload.CALLS[before:]]
        del preload.CALLS[before:]
    # The tensor on "cuda" reaches torch.cuda._lazy_init from C++: the recorder catches that too.
    assert seen[:2] == ["is_available", "device_count"]
    assert seen.count("_lazy_init") >= 1 and "current_device" in seen
    assert all(getattr(torch.cuda, n) is f for n, f in originals.items())


def test_a_poisoned_server_sends_ranks_to_spawn():
    clean = {"bad_fork": False, "parent_cuda_initialized": False, "preload_cuda_calls": []}
    poisoned = dict(clean, bad_fork=True, preload_cuda_calls=["is_available"])
    assert choose_start(None, lambda: clean) == ("forkserver", clean)
    assert choose_start(None, lambda: poisoned) == ("spawn", poisoned)
    assert choose_start(None, lambda: dict(clean, parent_cuda_initialized=True))[0] == "spawn"
    # The driver fails in the fork (a raw cuInit in the server) though torch's flag is clear.
    assert choose_start(None, lambda: dict(clean, cuda_usable=False))[0] == "spawn"
    assert choose_start(None, lambda: dict(clean, cuda_usable=True))[0] == "forkserver"
    assert choose_start("spawn", lambda: pytest.fail("spawn needs no probe")) == ("spawn", None)
    assert choose_start("forkserver", lambda: poisoned) == ("forkserver", poisoned)  # forced: ranks refuse
    with pytest.raises(ValueError, match="MEGATRON_LTD_MULTIRANK_START='fork'"):
        choose_start("fork", lambda: clean)


def test_spawned_ranks_run_a_collective(monkeypatch):
    """The start method a poisoned GPU machine falls back to, on CPU: one rank, as each spawned rank
    imports everything again (several seconds)."""
    monkeypatch.setattr(multirank, "_CTX", multirank.mp.get_context("spawn"))
    r = run_multirank(_start_body, world_size=1)[0]
    assert r["sum"] == 1.0 and "tests.multirank_preload" not in r["preloaded"] and r["bad_fork"] is False


def test_the_probe_tries_cuda_only_where_a_gpu_exists(monkeypatch):
    """The probe's CUDA check, with torch.cuda told it is a CUDA build (runs on CPU)."""
    from tests.multirank import _cuda_usable_in_this_fork as usable

    tried = []
    monkeypatch.setattr(torch.cuda, "_is_compiled", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "init", lambda: tried.append("init"))
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: 0)
    assert usable() is None and not tried  # no GPU (NVML sees none): nothing to initialise
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: 1)
    assert usable() is True and tried == ["init"]

    def poisoned_init():
        raise RuntimeError("Cannot re-initialize CUDA in forked subprocess")

    monkeypatch.setattr(torch.cuda, "init", poisoned_init)
    assert usable() is False
