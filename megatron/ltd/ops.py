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

:class:`TokenRoute` is what the random-LTD layer uses: the gather into the layer and the scatter
out of it as one pair. The dropped tokens bypass the layer, so the gradient of the layer's input
is the output's gradient on the dropped rows and the kept-input gradient on the kept rows. The
pair computes it in one write (the scatter's backward hands the output gradient to the gather's
backward by reference), where the two functions above produce two full-size tensors (one
zeroed, one copied) that autograd then adds: backward traffic about ``2s + 4k`` rows instead of
``6s + 5k``. With ``kernel="triton"`` (:mod:`megatron.ltd.triton_ops`) the scatter's clone and
copy, and the gather backward's copy and fill, are single passes. These functions stay the
reference the route and the kernels are tested against.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

__all__ = ["gather_tokens", "scatter_tokens", "gather_mask", "gather_rotary", "gather_rotary_rows", "flat_rows",
           "TokenRoute", "KERNELS", "resolve_kernel"]

KERNELS = ("auto", "torch", "triton")


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


def gather_rotary_rows(freqs: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    """:func:`gather_rotary` from the route's flat rows (``[k*b]``, global, position-major): the
    per-sample ``[k, b, 1, d]`` angles in one ``index_select`` (plus one division for the shared
    ``[s, 1, 1, d]`` table)."""
    s, fb, _, d = freqs.shape
    k = rows.shape[0] // batch
    if fb == 1:
        return freqs.reshape(s, d).index_select(0, rows.div(batch, rounding_mode="floor")).view(k, batch, 1, d)
    if fb != batch:
        raise ValueError(f"freqs batch dim {fb} does not match the route's batch {batch}")
    return freqs.reshape(s * batch, d).index_select(0, rows).view(k, batch, 1, d)


# ---------------------------------------------------------------------- the layer's gather/scatter pair
def resolve_kernel(kernel: str, device: torch.device) -> str:
    """``auto`` -> ``torch``: the route's torch ops (one operator per direction).

    On the one GPU measured (H200, 2026-12-04, docs/performance.md) the Triton kernels were slower
    per layer than the route (0.80-0.90 ms against 0.48-0.64 ms, gather + scatter forward and
    backward at the 1.3B shape) and behind it in the model at keep 0.25, so ``auto`` no longer picks
    them; ``triton`` asks for them explicitly (``tools/gpu_check.sh``'s ``ops`` step compares both).
    """
    if kernel not in KERNELS:
        raise ValueError(f"--random-ltd-kernel {kernel!r}: choose one of {', '.join(KERNELS)}")
    if kernel == "auto":
        return "torch"
    if kernel == "triton":
        from megatron.ltd import triton_ops

        triton_ops.require(device)
    return kernel


class TokenRoute:
    """The kept tokens of one dropping layer in one forward: :meth:`gather` them from the layer's
    input, run the layer on them, :meth:`scatter` its output back over that same input.

    ``rows`` are the kept tokens' row numbers in the flattened ``[s*b, h]`` input, position-major
    (:func:`flat_rows`; the plan travels in this form, :meth:`IndexPlan.route_tensor`, so the
    layer does no index arithmetic). Made fresh for every forward (a recomputed forward makes its
    own), and holds, between the scatter's backward and the gather's backward, only a reference
    to the output gradient that autograd would otherwise have kept as a full-size copy.

    Host cost is part of the design: each direction is one operator (gather: ``index_select``;
    scatter: one out-of-place ``index_copy``; their backwards the same two), so a dropping layer
    dispatches four more operators than a plain one and computes nothing else per call.
    """

    __slots__ = ("rows", "kernel", "kept_tokens", "full_shape", "_slots", "grad_out", "_full")

    def __init__(self, rows: torch.Tensor, kernel: str = "torch", kept_tokens: int | None = None,
                 full_shape: tuple | None = None) -> None:
        self.rows = rows
        self.kernel = kernel
        # k per sample and the input's [s, b, h], when the caller knows them (the layer does): the
        # forward then asks no tensor for its shape (each such question is a dispatched call).
        self.kept_tokens = kept_tokens
        self.full_shape = full_shape
        self._slots: torch.Tensor | None = None
        self.grad_out: torch.Tensor | None = None
        self._full: torch.Tensor | None = None

    @classmethod
    def from_positions(cls, idx: torch.Tensor, batch: int, kernel: str = "torch") -> "TokenRoute":
        """A route from ``[b, k]`` positions (tests, tools); the layer gets rows from the plan."""
        return cls(flat_rows(idx, batch), kernel)

    def positions(self, batch: int) -> torch.Tensor:
        """``[b, k]`` positions of the kept tokens (in the layout the route gathers from)."""
        return self.rows.view(-1, batch).div(batch, rounding_mode="floor").t()

    def slots(self, n_rows: int) -> torch.Tensor:
        """``[s*b]`` int64: the kept slot of each row of the full layout, -1 where dropped."""
        if self._slots is None:
            slots = torch.full((n_rows,), -1, dtype=torch.int64, device=self.rows.device)
            slots[self.rows] = torch.arange(self.rows.numel(), dtype=torch.int64, device=self.rows.device)
            self._slots = slots
        return self._slots

    def gather(self, hidden: torch.Tensor) -> torch.Tensor:
        return _RouteGather.apply(hidden, self)

    def scatter(self, hidden: torch.Tensor, kept_out: torch.Tensor) -> torch.Tensor:
        # ``hidden`` is handed over outside the autograd inputs (so no edge, and no detach to
        # dispatch): its gradient (dropped rows) reaches it through the gather's backward, in
        # the same write as the kept rows'. The route drops it once the forward has used it.
        self._full = hidden
        return _RouteScatter.apply(kept_out, self)

    # -- the two primitives, per kernel
    def _select(self, flat: torch.Tensor) -> torch.Tensor:
        if self.kernel == "triton":
            from megatron.ltd.triton_ops import select_rows

            return select_rows(flat, self.rows)
        return flat.index_select(0, self.rows)

    def _merge(self, base: torch.Tensor | None, kept: torch.Tensor, n_rows: int) -> torch.Tensor:
        """``[n_rows, h]``: ``kept`` rows at the kept positions, ``base`` (or zeros) elsewhere."""
        if self.kernel == "triton":
            from megatron.ltd.triton_ops import merge_rows

            return merge_rows(base, kept, self.slots(n_rows))
        if base is None:
            return kept.new_zeros(n_rows, kept.shape[-1]).index_copy_(0, self.rows, kept)
        return base.index_copy(0, self.rows, kept)  # one pass: the copy of base and the kept rows


def _route_shape(route: TokenRoute, x: torch.Tensor, name: str) -> tuple:
    """``(s, b, h, k)`` of the route's full input; from the route when known, else from ``x``."""
    if route.full_shape is None:
        shape = x.shape
        if len(shape) != 3:
            raise ValueError(f"{name} must be [s, b, h], got {tuple(shape)}")
        route.full_shape = tuple(shape)
    s, b, h = route.full_shape
    k = route.kept_tokens if route.kept_tokens is not None else route.rows.shape[0] // b
    return s, b, h, k


class _RouteGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, route: TokenRoute) -> torch.Tensor:
        s, b, h, k = _route_shape(route, hidden, "hidden")
        ctx.route = route
        return route._select(hidden.reshape(s * b, h)).view(k, b, h)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_kept: torch.Tensor):
        route = ctx.route
        s, b, h = route.full_shape
        grad_out, route.grad_out = route.grad_out, None
        base = None if grad_out is None else grad_out.reshape(s * b, h)
        grad = route._merge(base, grad_kept.reshape(-1, h), s * b)
        return grad.view(s, b, h), None


class _RouteScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kept: torch.Tensor, route: TokenRoute) -> torch.Tensor:
        full, route._full = route._full, None
        s, b, h, k = _route_shape(route, full, "full")
        ctx.route = route
        # A kept_out of the wrong size fails in the merge (index_copy checks its rows against the
        # index), so no shape is asked for here.
        return route._merge(full.reshape(s * b, h), kept.reshape(k * b, h), s * b).view(s, b, h)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        route = ctx.route
        s, b, h = route.full_shape
        # The dropped rows' gradient is the gather's to write (see TokenRoute.scatter): hand over
        # the incoming gradient by reference, never mutating it (autograd may share it).
        route.grad_out = grad
        grad_kept = route._select(grad.reshape(s * b, h)).view(-1, b, h)
        return grad_kept, None
