"""Triton kernels for the random-LTD layer's gather/scatter pair (:class:`megatron.ltd.ops.TokenRoute`).

Two row kernels over the flattened ``[s*b, h]`` layout cover the four directions:

* :func:`select_rows` -- ``out[i] = src[rows[i]]``: the gather forward, and the scatter backward
  (the kept rows of the output gradient).
* :func:`merge_rows` -- ``out[r] = kept[slot[r]]`` where ``slot[r] >= 0``, else ``base[r]`` (or 0):
  the scatter forward (the layer's input with its kept rows replaced, in one pass instead of a
  full clone followed by an index copy) and the gather backward (the output gradient on the
  dropped rows and the kept-input gradient on the kept rows in one write, instead of a zeroed
  full tensor, an index copy, a full copy with the kept rows filled, and autograd's sum).

The torch ops in :mod:`megatron.ltd.ops` are the CPU fallback and the test oracle. On CPU the
kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set before Triton is imported),
which is how the tests check them without a GPU.
"""

from __future__ import annotations

import functools
import os
from typing import Optional

import torch

__all__ = ["available", "require", "select_rows", "merge_rows"]


@functools.lru_cache(maxsize=None)
def _triton():
    try:
        import triton
        import triton.language as tl
    except Exception:  # not installed, or a build that does not load here
        return None
    return triton, tl


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available(device: Optional[torch.device] = None) -> bool:
    """Triton imports and can run on ``device`` (CUDA, or any device under the interpreter)."""
    if _triton() is None:
        return False
    if device is None or interpreted():
        return True
    return device.type == "cuda"


def require(device: torch.device) -> None:
    if _triton() is None:
        raise RuntimeError("--random-ltd-kernel triton: Triton is not installed; `pip install triton` "
                           "(it comes with torch's CUDA wheels) or use --random-ltd-kernel torch")
    if not available(device):
        raise RuntimeError(f"--random-ltd-kernel triton needs a CUDA device (this run is on {device}); "
                           "use --random-ltd-kernel auto or torch, or TRITON_INTERPRET=1 for testing")


@functools.lru_cache(maxsize=None)
def _kernels():
    triton, tl = _triton()

    @triton.jit
    def select_kernel(src, rows, out, h, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < h
        src_row = tl.load(rows + r)
        values = tl.load(src + src_row * h + cols, mask=mask)
        tl.store(out + r * h + cols, values, mask=mask)

    @triton.jit
    def merge_kernel(base, kept, slots, out, h, HAS_BASE: tl.constexpr, BLOCK: tl.constexpr):
        r = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < h
        slot = tl.load(slots + r)
        if slot >= 0:
            values = tl.load(kept + slot * h + cols, mask=mask).to(out.dtype.element_ty)
        else:
            if HAS_BASE:
                values = tl.load(base + r * h + cols, mask=mask)
            else:
                values = tl.zeros([BLOCK], dtype=out.dtype.element_ty)
        tl.store(out + r * h + cols, values, mask=mask)

    return select_kernel, merge_kernel


def _block(h: int) -> int:
    triton, _ = _triton()
    return min(triton.next_power_of_2(h), 1024)


def _grid(n_rows: int, h: int, block: int):
    return (n_rows, (h + block - 1) // block)


def select_rows(src: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``src[rows]`` for a 2-D ``src`` and int64 ``rows``."""
    src = src.contiguous()
    n, h = rows.numel(), src.shape[1]
    out = src.new_empty(n, h)
    if n and h:
        select_kernel, _ = _kernels()
        block = _block(h)
        select_kernel[_grid(n, h, block)](src, rows.contiguous(), out, h, BLOCK=block)
    return out


def merge_rows(base: Optional[torch.Tensor], kept: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``[len(slots), h]``: ``kept[slots[r]]`` where ``slots[r] >= 0``, else ``base[r]`` (zeros
    when ``base`` is None). The result has ``base``'s dtype (``kept``'s without a base)."""
    kept = kept.contiguous()
    n, h = slots.numel(), kept.shape[1]
    if base is not None:
        base = base.contiguous()
        if base.shape != (n, h):
            raise ValueError(f"base must be [{n}, {h}], got {tuple(base.shape)}")
    out = torch.empty(n, h, dtype=kept.dtype if base is None else base.dtype, device=kept.device)
    if n and h:
        _, merge_kernel = _kernels()
        block = _block(h)
        merge_kernel[_grid(n, h, block)](out if base is None else base, kept, slots.contiguous(), out, h,
                                         HAS_BASE=base is not None, BLOCK=block)
    return out
