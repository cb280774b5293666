"""What the multi-rank harness's forkserver imports before it forks any rank (see tests/multirank.py).

Ranks are forked from this server, so whatever the imports do to CUDA every rank inherits: a server
that initialised CUDA (or only asked the driver how many devices there are) poisons each fork, and
the rank's first CUDA call fails with "Cannot re-initialize CUDA in forked subprocess". So while
torch, megatron-core and the device layer load, every Python-level way into the CUDA runtime is
wrapped and recorded (``CALLS``: name and the frames that called it), and torch's availability check
asks NVML rather than the driver. Ranks read ``CALLS``; the CPU suite asserts it is empty
(tests/test_multirank_start.py). What a CUDA build of torch does inside C++, or Triton through the
driver, cannot be seen here; the harness therefore also probes a forked rank before it trusts the
server (tests/multirank.py).
"""

from __future__ import annotations

import os
import traceback
from typing import Callable, Dict, List, Tuple

import torch

# torch.cuda entry points that query or initialise the device. `_lazy_init` is the one every
# initialising path reaches, including C++ (a tensor created on "cuda" calls it by attribute).
CUDA_ENTRY_POINTS = (
    "is_available", "device_count", "_lazy_init", "init", "current_device", "set_device",
    "get_device_capability", "get_device_properties", "get_device_name", "is_bf16_supported",
    "mem_get_info", "synchronize", "current_stream", "default_stream", "get_rng_state", "set_rng_state",
)
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"

CALLS: List[Tuple[str, str]] = []
_SAVED: Dict[str, Callable] = {}


def _recorder(name: str, original: Callable) -> Callable:
    def wrapper(*args, **kwargs):
        CALLS.append((name, "".join(traceback.format_stack(limit=6)[:-1])))
        return original(*args, **kwargs)

    wrapper.__wrapped__ = original
    return wrapper


def install() -> None:
    """Wrap the CUDA entry points so each call is recorded (and still made)."""
    for name in CUDA_ENTRY_POINTS:
        original = getattr(torch.cuda, name, None)
        if original is not None and name not in _SAVED:
            _SAVED[name] = original
            setattr(torch.cuda, name, _recorder(name, original))


def uninstall() -> None:
    for name, original in _SAVED.items():
        setattr(torch.cuda, name, original)
    _SAVED.clear()


def _preload() -> None:
    set_nvml = NVML_CHECK not in os.environ
    if set_nvml:  # is_available() through NVML does not poison fork; the driver query does
        os.environ[NVML_CHECK] = "1"
    install()
    try:
        import megatron.core  # noqa: F401
        import megatron.runtime.device  # noqa: F401
    finally:
        uninstall()  # ranks start with the real functions and the user's environment
        if set_nvml:
            os.environ.pop(NVML_CHECK, None)


_preload()
