"""Gather / scatter of kept tokens in megatron-core's ``[s, b, h]`` hidden-state layout.

``idx`` is always ``LongTensor[b, k]`` of sorted, unique positions in ``[0, s)`` (one row of an
index plan). Row ``j`` of ``idx`` picks tokens of sample ``j``.

Memory per dropping layer (``s*b*h`` = one full activation):
  * gather forward: one ``[k,b,h]`` output. Backward: one zeroed ``[s,b,h]`` grad (unavoidable:
    the input needs a full-size gradient).
  * scatter forward: ONE full-size allocation (a clone of ``full``, then the kept rows are copied
    in). Writing into ``full`` in place is not safe: other autograd nodes (the residual path, a
    pipeline send buffer, a recompute checkpoint) may still hold it.
  * scatter backward: ``grad_kept`` is a ``[k,b,h]`` row select; ``grad_full`` is ``grad`` with the
    kept rows zeroed, made as one full-size copy. We deliberately do NOT zero the incoming ``grad``
    in place: autograd hands the same grad tensor to several consumers (e.g. ``AddBackward`` passes
    its grad unchanged to both summands, which is exactly the residual connection around a layer),
    so mutating it could silently corrupt another branch's gradient.
All index work is done on the flattened ``[s*b, h]`` view with row indices ``pos*b + sample``, so
each op is a single ``index_select`` / ``index_copy_`` / ``index_fill_`` over contiguous rows.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["gather_tokens", "scatter_tokens", "gather_mask", "gather_rotary", "flat_rows"]


def flat_rows(idx: torch.Tensor, batch: int) -> torch.Tensor:
    """``[b, k]`` positions -> ``[k*b]`` row numbers of the flattened ``[s*b, ...]`` layout."""
    if idx.dim() != 2 or idx.shape[0] != batch:
        raise ValueError(f"idx must be [b={batch}, k], got {tuple(idx.shape)}")
    sample = torch.arange(batch, device=idx.device, dtype=torch.int64)
    return (idx.t().to(torch.int64) * batch + sample).reshape(-1)


def _check_hidden(x: torch.Tensor, name: str) -> None:
    if x.dim() != 3:
        raise ValueError(f"{name} must be [s, b, h], got {tuple(x.shape)}")


class _GatherTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        _check_hidden(hidden, "hidden")
        s, b, h = hidden.shape
        k = idx.shape[1]
        rows = flat_rows(idx, b)
        ctx.save_for_backward(rows)
        ctx.full_shape = (s, b, h)
        return hidden.reshape(s * b, h).index_select(0, rows).view(k, b, h)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        s, b, h = ctx.full_shape
        grad_hidden = grad.new_zeros(s * b, h)
        grad_hidden.index_copy_(0, rows, grad.reshape(-1, h))
        return grad_hidden.view(s, b, h), None


class _ScatterTokens(torch.autograd.Function):
    @staticmethod
    def forward(ctx, full: torch.Tensor, kept: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        _check_hidden(full, "full")
        _check_hidden(kept, "kept_out")
        s, b, h = full.shape
        k = idx.shape[1]
        if kept.shape != (k, b, h):
            raise ValueError(f"kept_out must be [k={k}, b={b}, h={h}], got {tuple(kept.shape)}")
        rows = flat_rows(idx, b)
        ctx.save_for_backward(rows)
        ctx.shapes = (s, b, h, k)
        out = full.clone(memory_format=torch.contiguous_format)  # the one full-size allocation
        out.view(s * b, h).index_copy_(0, rows, kept.reshape(k * b, h).to(out.dtype))
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        s, b, h, k = ctx.shapes
        flat = grad.reshape(s * b, h)
        grad_full = grad_kept = None
        if ctx.needs_input_grad[1]:
            grad_kept = flat.index_select(0, rows).view(k, b, h)
        if ctx.needs_input_grad[0]:
            # One copy; the incoming grad may be shared with other consumers (see module doc).
            grad_full = flat.clone()
            grad_full.index_fill_(0, rows, 0)
            grad_full = grad_full.view(s, b, h)
        return grad_full, grad_kept, None


def gather_tokens(hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``hidden[s, b, h]``, ``idx[b, k]`` -> ``[k, b, h]`` with ``out[i, j] = hidden[idx[j, i], j]``."""
    return _GatherTokens.apply(hidden, idx)


def scatter_tokens(full: torch.Tensor, kept_out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """New ``[s, b, h]``: ``kept_out[i, j]`` at ``(idx[j, i], j)``, ``full`` everywhere else.

    Dropped tokens bypass the layer: they come out exactly as they went in.
    """
    return _ScatterTokens.apply(full, kept_out, idx)


def gather_mask(mask: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Attention masks restricted to the kept tokens (any dtype, differentiable if float).

    * ``[b|1, m, s, s]`` (document/causal masks) -> ``[b, m, k, k]``:
      ``out[j, :, p, q] = mask[j, :, idx[j, p], idx[j, q]]``.
    * ``[b|1, m, 1, s]`` (padding masks) -> ``[b, m, 1, k]``.
    A mask with batch size 1 is broadcast to the ``b`` samples (they keep different tokens).
    """
    if mask.dim() != 4:
        raise ValueError(f"mask must be [b, m, s|1, s], got {tuple(mask.shape)}")
    b, k = idx.shape
    mb, m, sq, s = mask.shape
    if mb not in (1, b) or sq not in (1, s):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit idx {tuple(idx.shape)}")
    mask = mask.expand(b, m, sq, s)
    idx = idx.to(torch.int64)
    if sq != 1:
        mask = torch.gather(mask, 2, idx[:, None, :, None].expand(b, m, k, s))  # rows: [b, m, k, s]
    return torch.gather(mask, 3, idx[:, None, None, :].expand(b, m, mask.shape[2], k))


def gather_rotary(freqs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rotary angles of the kept tokens: ``[s, 1|b, 1, d]`` -> per-sample ``[k, b, 1, d]``.

    megatron-core's ``RotaryEmbedding`` returns ``[s, 1, 1, d]``; kept tokens of different samples
    sit at different positions, so the result is per sample. The non-fused
    ``apply_rotary_pos_emb`` broadcasts ``[k, b, 1, d]`` against ``t[k, b, heads, d]``.
    """
    if freqs.dim() != 4 or freqs.shape[2] != 1:
        raise ValueError(f"freqs must be [s, 1|b, 1, d], got {tuple(freqs.shape)}")
    b, k = idx.shape
    s, fb, _, d = freqs.shape
    if fb == 1:
        rows = idx.t().reshape(-1).to(torch.int64)
        return freqs.reshape(s, d).index_select(0, rows).view(k, b, 1, d)
    if fb != b:
        raise ValueError(f"freqs batch dim {fb} does not match idx batch {b}")
    return freqs.reshape(s * b, d).index_select(0, flat_rows(idx, b)).view(k, b, 1, d)
