"""What a training step costs the host: dispatched operators, host time, and on a GPU the device
time and kernel launches, so a step that is bound by the host is visible as such.

Random-LTD shrinks the GPU work of a dropping layer; it must not add host work, or a GPU step that
is already close to host-bound gets no faster. Two measures, both usable on CPU:

* :class:`OpCounter` counts the ATen operators dispatched below autograd (forward and backward
  alike; every one is at least one kernel launch on a GPU). Counts are deterministic, so tests can
  guard them (``tests/ltd/test_host_cost.py``) where timing could not be asserted.
* :func:`gpu_step_profile` runs a step under ``torch.profiler`` with CUDA activity and returns
  kernel time, launches and host time (``tools/benchmark_train_step.py``).
"""

from __future__ import annotations

import collections
import time
from typing import Callable, Dict, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCounter", "count_ops", "gpu_step_profile"]

# Operators that only describe tensors (no kernel, no data touched).
_METADATA_OPS = frozenset({
    "aten.view", "aten._unsafe_view", "aten.t", "aten.transpose", "aten.permute", "aten.expand",
    "aten.reshape", "aten.select", "aten.slice", "aten.unsqueeze", "aten.squeeze", "aten.as_strided",
    "aten.alias", "aten.detach", "aten.split", "aten.unbind", "aten.split_with_sizes", "aten.narrow",
    "aten.unflatten", "aten.flatten", "aten._reshape_alias", "aten.lift_fresh", "aten.numpy_T",
})


class OpCounter(TorchDispatchMode):
    """Counts dispatched ATen operators while active: ``total`` and ``compute`` (those that are
    not pure view/metadata changes, i.e. would launch work on a GPU); ``by_op`` per overload packet."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Dict[str, int] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.by_op[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    @property
    def compute(self) -> int:
        return sum(n for op, n in self.by_op.items() if op not in _METADATA_OPS)


def count_ops(fn: Callable[[], object]) -> OpCounter:
    """Run ``fn()`` once under an :class:`OpCounter` and return the counter."""
    with OpCounter() as counter:
        fn()
    return counter


def gpu_step_profile(step: Callable[[], object], repeats: int = 3) -> Optional[Dict[str, float]]:
    """Per-step GPU kernel ms, kernel launches, host ms (issue time until the step returns, before
    waiting on the device) and wall ms, averaged over ``repeats`` profiled steps. None without CUDA.

    ``host_bound`` is true when the device was busy for less than 90% of the wall time: the GPU
    waited on the host for the rest.
    """
    if not torch.cuda.is_available():
        return None
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    host = 0.0
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            h0 = time.perf_counter()
            step()
            host += time.perf_counter() - h0
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    kernel_us, launches = 0.0, 0
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            kernel_us += evt.device_time
            launches += 1
    out = {"kernel_ms": kernel_us / 1000.0 / repeats, "launches": launches / repeats,
           "host_ms": host * 1000.0 / repeats, "wall_ms": wall * 1000.0 / repeats}
    out["device_busy"] = out["kernel_ms"] / out["wall_ms"] if out["wall_ms"] > 0 else 0.0
    out["host_bound"] = out["device_busy"] < 0.9
    return out
