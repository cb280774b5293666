"""Run megatron-core's CUDA-only code paths on CPU (gloo), in one contained place.

megatron-core 0.16.1 hard-codes CUDA in a handful of spots that a CPU run reaches: buffers
created with ``device="cuda"`` or ``device=torch.cuda.current_device()`` (pipeline schedules,
p2p shape exchange, DDP grad buffers, optimizer scalars, gradient clipping), type-string checks
(``param.type() == 'torch.cuda.FloatTensor'`` in clipping and the optimizers), and calls into
``torch.cuda`` (streams, events, ``synchronize``, the RNG tracker's generator state).

Instead of forking those modules, :func:`enable` installs

* a :class:`~torch.overrides.TorchFunctionMode` that rewrites CUDA device arguments to CPU,
  makes ``Tensor.cuda()`` / ``Tensor.to("cuda")`` no-ops, and reports CPU tensors' legacy type
  string with the ``cuda`` infix megatron-core expects;
* inert stand-ins for ``torch.cuda`` streams, events and synchronisation, and a mapping of the
  "device" RNG (``torch.cuda.get_rng_state`` etc.) onto the CPU generator, so megatron's
  tensor-parallel RNG tracker forks real states on CPU.

It is only ever enabled when no GPU is used (see :mod:`megatron.runtime.device`); on a GPU run
nothing here is touched. With it on, ``torch.cuda`` reports no device (``is_available()`` False,
``device_count()`` 0) even where GPUs exist, so ``--cpu`` on a GPU machine runs the path a CPU-only
machine runs. Everything is reversible with :func:`disable` (used by tests).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Dict, Optional

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["enable", "disable", "is_enabled"]

_LOCK = threading.Lock()
_STATE: Dict[str, Any] = {"mode": None, "saved": {}}

# Functions whose device argument may arrive positionally (Tensor.to(device), .cuda(device)).
_CPU = torch.device("cpu")
_TO = torch.Tensor.to
_CUDA = torch.Tensor.cuda
_TYPE = torch.Tensor.type
_PIN = torch.Tensor.pin_memory
_IS_PINNED = torch.Tensor.is_pinned
_RECORD_STREAM = torch.Tensor.record_stream


def _is_accelerator_device(device: Any) -> bool:
    if isinstance(device, bool):
        return False
    if isinstance(device, int):  # a bare ordinal means an accelerator in torch
        return True
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return False


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites CUDA placements to CPU for every torch call made while it is active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _CUDA:
            return args[0]
        if func is _TYPE and len(args) == 1 and not kwargs:
            name = func(*args)
            # 'torch.FloatTensor' -> 'torch.cuda.FloatTensor': what megatron-core asserts on.
            return name.replace("torch.", "torch.cuda.", 1) if "cuda" not in name else name
        if func is _PIN:
            return args[0]
        if func is _IS_PINNED:
            return False
        if func is _RECORD_STREAM:
            return None
        dev = kwargs.get("device")
        if dev is not None and _is_accelerator_device(dev):
            kwargs = dict(kwargs, device="cpu")
        if func is _TO and len(args) > 1 and _is_accelerator_device(args[1]):
            args = (args[0], "cpu") + tuple(args[2:])
        return func(*args, **kwargs)


class _InertStream:
    """Stand-in for torch.cuda.Stream on CPU: work is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        return None

    def wait_event(self, *args, **kwargs):
        return None

    def synchronize(self):
        return None

    def record_event(self, event=None):
        return event or _InertEvent()

    def query(self):
        return True


class _InertEvent:
    """Stand-in for torch.cuda.Event; elapsed_time is not meaningful on CPU."""

    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        return None

    def wait(self, *args, **kwargs):
        return None

    def synchronize(self):
        return None

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


@contextlib.contextmanager
def _null_context(*args, **kwargs):
    yield


def _cuda_overrides() -> Dict[str, Any]:
    """Attributes of torch.cuda replaced while CPU mode is on."""
    return {
        # A device object rather than the ordinal 0: megatron-core's custom autograd backwards
        # allocate with device=torch.cuda.current_device(), and backward runs outside the
        # function mode (the mode is suspended while it handles the .backward() call itself).
        "current_device": lambda: _CPU,
        # No CUDA while CPU mode is on, also on a machine that has GPUs (--cpu there): code that
        # asks is_available() then takes the path a CPU-only machine takes, which the suite tests.
        "is_available": lambda: False,
        "device_count": lambda: 0,
        "set_device": lambda *a, **k: None,
        "synchronize": lambda *a, **k: None,
        "empty_cache": lambda: None,
        "Stream": _InertStream,
        "Event": _InertEvent,
        "current_stream": lambda *a, **k: _InertStream(),
        "default_stream": lambda *a, **k: _InertStream(),
        "stream": _null_context,
        "device": _null_context,
        "memory_allocated": lambda *a, **k: 0,
        "max_memory_allocated": lambda *a, **k: 0,
        "memory_reserved": lambda *a, **k: 0,
        "reset_peak_memory_stats": lambda *a, **k: None,
        # The "device" generator is the CPU generator: megatron's RNG tracker then forks and
        # restores real states (dropout inside tensor-parallel regions stays reproducible).
        "get_rng_state": lambda *a, **k: torch.get_rng_state(),
        "set_rng_state": lambda state, *a, **k: torch.set_rng_state(state),
        # (torch.manual_seed itself calls torch.cuda.manual_seed_all: leave that one alone.)
        "manual_seed": lambda seed: torch.default_generator.manual_seed(int(seed)),
    }


def _megatron_rng_overrides() -> Dict[tuple, Any]:
    """megatron's tensor_parallel.random bypasses torch.cuda.{get,set}_rng_state in places."""
    from megatron.core.tensor_parallel import random as mp_random

    def _get(device="cuda", clone=False, graph_safe=False):
        return torch.get_rng_state()

    def _set(new_state, device=-1, graph_safe=False):
        torch.set_rng_state(new_state)

    return {(mp_random, "_get_cuda_rng_state"): _get, (mp_random, "_set_cuda_rng_state"): _set}


class _ExpectedOnCpu(logging.Filter):
    """megatron's RNG tracker warns when the CPU generator moves inside a fork; in CPU mode the
    CPU generator *is* the device generator, so that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


_FILTER = _ExpectedOnCpu()
_RNG_LOGGER = "megatron.core.tensor_parallel.random"


def is_enabled() -> bool:
    return _STATE["mode"] is not None


def enable() -> None:
    """Turn CPU mode on for this process (idempotent). Refuses when CUDA is in use."""
    with _LOCK:
        if _STATE["mode"] is not None:
            return
        saved: Dict[tuple, Optional[Any]] = {}
        for name, value in _cuda_overrides().items():
            saved[(torch.cuda, name)] = getattr(torch.cuda, name, None)
            setattr(torch.cuda, name, value)
        for (module, name), value in _megatron_rng_overrides().items():
            saved[(module, name)] = getattr(module, name)
            setattr(module, name, value)
        logging.getLogger(_RNG_LOGGER).addFilter(_FILTER)
        mode = _CudaToCpuMode()
        mode.__enter__()
        _STATE["mode"] = mode
        _STATE["saved"] = saved


def disable() -> None:
    """Undo :func:`enable` (restores every replaced attribute)."""
    with _LOCK:
        mode = _STATE["mode"]
        if mode is None:
            return
        mode.__exit__(None, None, None)
        logging.getLogger(_RNG_LOGGER).removeFilter(_FILTER)
        for (module, name), value in _STATE["saved"].items():
            if value is None:
                delattr(module, name)
            else:
                setattr(module, name, value)
        _STATE["mode"] = None
        _STATE["saved"] = {}
