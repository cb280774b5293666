"""Every collective the project itself issues goes through here (megatron-core issues its own).

A process group accepts tensors only on the device types its backend registered: NCCL takes CUDA
tensors, gloo host tensors, a mixed group (``cpu:gloo,cuda:nccl``) both. Code that only ever ran
under gloo on CPU can pass a host tensor to what is an NCCL group on a cluster and crash there
(``No backend type associated with device type cpu``). Here each call asks the group which device
types it takes and moves the tensor to one of them (and the result back), or refuses with a
message naming the group's backend, so the CPU suite exercises the same rule a cluster enforces.
``tests/test_collectives.py`` fails when project code calls ``torch.distributed`` collectives
anywhere else.
"""

from __future__ import annotations

from typing import Any, List

import torch
import torch.distributed as dist

from megatron.runtime import cpu_compat

ReduceOp = dist.ReduceOp


class CollectiveDeviceError(RuntimeError):
    """A tensor on a device the process group cannot take, and no device it can take is here."""


def _group_or_world(group):
    return group if group is not None else dist.group.WORLD


def group_device_types(group=None) -> List[str]:
    """Device types ('cpu', 'cuda', ...) the group's backend accepts tensors on."""
    group = _group_or_world(group)
    types = getattr(group, "_device_types", None)
    if types:
        return sorted({torch.device(t).type for t in types})
    # Older torch: read the backend name ("gloo", "nccl", "cpu:gloo,cuda:nccl").
    backend = str(dist.get_backend(group)).lower()
    out = set()
    for part in backend.split(","):
        if ":" in part:
            out.add(part.split(":", 1)[0])
        elif part == "nccl":
            out.add("cuda")
        elif part == "gloo":
            out.update({"cpu", "cuda"})
        else:
            out.add("cpu")
    return sorted(out)


def _cuda_in_use() -> bool:
    # A process in CPU mode (--cpu, also on a machine with GPUs) has no CUDA device to move to:
    # the CPU device layer owns torch.cuda there (current_device() is the host device).
    return not cpu_compat.is_enabled() and torch.cuda.is_available()


def collective_device(tensor: torch.Tensor, group=None) -> torch.device:
    """Where ``tensor`` must be for a collective over ``group``: its own device when the group takes
    it, otherwise the current CUDA device for a CUDA-only group (when this process uses CUDA);
    refused when neither is possible."""
    types = group_device_types(group)
    if tensor.device.type in types:
        return tensor.device
    if "cuda" in types and _cuda_in_use():
        return torch.device("cuda", torch.cuda.current_device())
    if "cpu" in types:
        return torch.device("cpu")
    backend = dist.get_backend(_group_or_world(group))
    raise CollectiveDeviceError(
        f"a collective over a process group with backend {backend!r} (takes tensors on {types}) got a "
        f"tensor on {tensor.device.type}, and no such device is available here; use a gloo group for "
        "host-side collectives or run where the group's device exists")


def _staged(tensor: torch.Tensor, group) -> torch.Tensor:
    device = collective_device(tensor, group)
    return tensor if device == tensor.device else tensor.to(device)


def all_reduce(tensor: torch.Tensor, op=ReduceOp.SUM, group=None) -> torch.Tensor:
    """In place on ``tensor`` (whatever its device); returns it."""
    work = _staged(tensor, group)
    dist.all_reduce(work, op=op, group=group)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def _check_object_group(group) -> None:
    # Object collectives pickle into a tensor on the group's device: host for gloo, the current
    # CUDA device for NCCL (torch picks it). A CUDA-only group without CUDA cannot work.
    types = group_device_types(group)
    if "cpu" not in types and not _cuda_in_use():
        raise CollectiveDeviceError(
            f"an object collective over a process group with backend {dist.get_backend(_group_or_world(group))!r} "
            "needs CUDA, which is not available here")


def all_gather_object(obj: Any, group=None) -> List[Any]:
    _check_object_group(group)
    out: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def barrier(group=None) -> None:
    dist.barrier(group=group)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0
