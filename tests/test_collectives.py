"""The collective layer (megatron/runtime/collectives.py): host and device tensors never mix.

NCCL takes CUDA tensors only. On CPU a gloo group registered for CUDA alone (``cuda:gloo``) has
the same rule, so these tests see on CPU what a GPU cluster would: a host tensor handed to such a
group directly fails with torch's cryptic error, while through the layer it is refused clearly (or
moved, in a process that uses CUDA; a process in CPU mode never moves it, also where GPUs exist).
The project's own collective call sites are run against a group that reports NCCL's device rule: a
call site that bypassed the layer would succeed over gloo instead of being refused, and the test
would fail.
"""

from __future__ import annotations

import os
import re
import types

import pytest
import torch

from tests.multirank import run_multirank

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYER = os.path.join("megatron", "runtime", "collectives.py")
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "all_gather_into_tensor", "broadcast",
               "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor", "gather",
               "gather_object", "scatter", "scatter_object_list", "all_to_all", "all_to_all_single",
               "barrier", "send", "recv", "isend", "irecv", "monitored_barrier")
_CALL = re.compile(r"\b(?:torch\.distributed|dist)\.(" + "|".join(COLLECTIVES) + r")\s*\(")


def _project_python_files():
    for top in ("megatron", "tools", "examples"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    yield os.path.join(dirpath, name)
    for name in os.listdir(ROOT):
        if name.endswith(".py"):
            yield os.path.join(ROOT, name)


def test_no_collective_outside_the_layer():
    offenders = []
    for path in _project_python_files():
        rel = os.path.relpath(path, ROOT)
        if rel == LAYER:
            continue
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if _CALL.search(line.split("#", 1)[0]):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "collectives outside megatron/runtime/collectives.py:\n" + "\n".join(offenders)


def test_the_grep_sees_a_direct_call():
    assert _CALL.search("    torch.distributed.all_reduce(buf, group=g)")
    assert _CALL.search("dist.barrier()")
    assert not _CALL.search("collectives.all_reduce(buf)")


def _cuda_only_group_body(ctx):
    import torch.distributed as dist

    from megatron.runtime import collectives

    group = dist.new_group(list(range(ctx.world_size)), backend="cuda:gloo")
    out = {"types": collectives.group_device_types(group)}
    try:
        dist.all_reduce(torch.ones(2), group=group)
        out["direct"] = "ok"
    except RuntimeError as e:
        out["direct"] = str(e)
    try:
        collectives.all_reduce(torch.ones(2), group=group)
        out["layer"] = "ok"
    except collectives.CollectiveDeviceError as e:
        out["layer"] = str(e)
    # The default (cpu+cuda gloo) group takes host tensors and gives the sum in place.
    t = torch.full((3,), float(ctx.rank + 1))
    collectives.all_reduce(t)
    out["sum"] = t.tolist()
    out["objects"] = collectives.all_gather_object({"rank": ctx.rank})
    return out


def _assert_refused_clearly(r):
    assert r["types"] == ["cuda"]
    assert "No backend type associated with device type cpu" in r["direct"]
    # The ranks are in CPU mode (also on a machine with GPUs): there is no CUDA device to move to.
    assert "cuda:gloo" in r["layer"] and "tensor on cpu" in r["layer"], r["layer"]
    assert r["sum"] == [3.0, 3.0, 3.0]
    assert r["objects"] == [{"rank": 0}, {"rank": 1}]


def test_host_tensor_on_a_cuda_only_group_is_refused_clearly():
    for r in run_multirank(_cuda_only_group_body, world_size=2):
        _assert_refused_clearly(r)


def _project_call_sites_body(ctx):
    """Every project call site, with the layer told that the groups take CUDA tensors only."""
    from megatron.runtime import collectives
    from megatron.training import preemption
    from megatron.training.trainer import Trainer

    collectives.group_device_types = lambda group=None: ["cuda"]  # NCCL's rule, on this rank only
    refused = {}

    def attempt(name, fn):
        try:
            fn()
            refused[name] = False
        except collectives.CollectiveDeviceError:
            refused[name] = True

    stops = preemption.StopRequests(signal_handler=False, duration_mins=60.0, device=torch.device("cpu"))
    attempt("preemption.agreed_stop", stops.agreed_stop)
    fake = types.SimpleNamespace(device=torch.device("cpu"))
    losses = [{"lm loss": torch.tensor(2.0)}]
    attempt("Trainer._reduce_loss", lambda: Trainer._reduce_loss(fake, losses))
    attempt("Trainer._reduce_all_keys", lambda: Trainer._reduce_all_keys(fake, losses))
    return refused


def _assert_all_refused(refused):
    assert len(refused) == 3, refused
    bypassed = [name for name, ok in refused.items() if not ok]
    assert not bypassed, f"these call sites did not go through megatron/runtime/collectives.py: {bypassed}"


def test_project_call_sites_go_through_the_layer():
    for refused in run_multirank(_project_call_sites_body, world_size=2):
        _assert_all_refused(refused)


def _cpu_mode_on_a_cuda_machine_body(ctx):
    """`--cpu` where torch sees GPUs: the CPU device layer is on while torch.cuda.is_available() is
    true. First as such a machine starts (CUDA seen before the layer comes on), then with
    is_available() forced true under the layer, as code holding the original function sees it."""
    from megatron.runtime import cpu_compat

    cpu_compat.disable()
    torch.cuda.is_available = lambda: True  # what torch says on a GPU machine
    cpu_compat.enable()
    out = {"layer_sees_cuda": torch.cuda.is_available(), "layer_device_count": torch.cuda.device_count()}
    torch.cuda.is_available = lambda: True  # now forced true with the layer on
    out["group"] = _cuda_only_group_body(ctx)
    out["call_sites"] = _project_call_sites_body(ctx)
    return out


def test_cpu_mode_on_a_cuda_machine_keeps_collectives_on_the_host():
    for r in run_multirank(_cpu_mode_on_a_cuda_machine_body, world_size=2):
        assert r["layer_sees_cuda"] is False and r["layer_device_count"] == 0
        _assert_refused_clearly(r["group"])
        _assert_all_refused(r["call_sites"])


def _nccl_body(ctx):
    """On a GPU the multi-rank harness initialises NCCL (a world of one still rejects host tensors)."""
    import torch.distributed as dist

    from megatron.runtime import collectives
    from megatron.training import preemption
    from megatron.training.trainer import Trainer

    out = {"backend": str(dist.get_backend()), "types": collectives.group_device_types()}
    try:
        dist.all_reduce(torch.ones(1))
        out["direct"] = "ok"
    except RuntimeError as e:
        out["direct"] = str(e)
    host = torch.full((2,), 3.0)
    collectives.all_reduce(host)
    out["host_sum"] = (host.device.type, host.tolist())
    fake = types.SimpleNamespace(device=torch.device("cpu"))
    out["loss"] = Trainer._reduce_loss(fake, [{"lm loss": torch.tensor(2.5)}])
    stops = preemption.StopRequests(signal_handler=False, duration_mins=60.0, device=torch.device("cpu"))
    out["stop"] = stops.agreed_stop()
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (NCCL)")
def test_host_tensors_through_the_layer_on_real_nccl():
    r = run_multirank(_nccl_body, world_size=1, cpu=False)[0]
    assert r["backend"] == "nccl" and "cpu" not in r["types"], r
    assert r["direct"] != "ok", "NCCL took a host tensor: this test no longer shows the hazard"
    assert r["host_sum"] == ("cpu", [3.0, 3.0])
    assert r["loss"] == 2.5 and r["stop"] is None
