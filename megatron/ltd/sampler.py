"""The index plan: which ``k`` of the ``s`` tokens each (dropping layer, sample) keeps.

The plan is a PURE function of ``(seed, iteration, global sample id, layer number, k, strata)``.
It uses no torch RNG state and no communication, so every tensor-/context-parallel rank, a
recomputed forward, a resumed run and any TP/PP/DP layout compute the same indices on their own.
The number of strata is a setting of the run (``--random-ltd-strata``), never the TP size: a
sequence-parallel layer splits the sequence into ``tp`` shards, and any ``tp`` that divides the
number of strata finds whole strata in its shard, so TP=2 and TP=4 drop the same tokens. The plan
is also bit-identical on CPU and CUDA: only integer ops, on values kept below 2**49 (no int64
overflow), and the keys of one row are all distinct (no ties to break).

How: every (layer, sample, position) gets a 32-bit key ``mix32(P[pos] ^ row_base)``, where
``P = mix32(arange(s))`` and ``row_base`` hashes (seed, iteration, layer, sample id). ``mix32`` is
a bijection of 32-bit integers, so within a row the keys are distinct; the ``k`` smallest keys are a
uniform random subset of the positions (without replacement), which is then sorted.

The sampling distribution: with one stratum (the default without sequence parallelism, as in the
paper), each (layer, sample) keeps a uniformly random ``k``-subset of the ``s`` positions. With
``S`` strata the sequence is cut into ``S`` equal contiguous segments and each keeps a uniformly
random ``k/S``-subset of its own positions (independently per segment, layer and sample): every
position is still kept with probability ``k/s``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["IndexPlan", "make_index_plan", "build_index_plan", "local_shard_plan", "plan_needed", "check_plan_fits",
           "route_rows", "route_strata", "local_route_rows", "route_positions"]

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
# Multipliers of the "lowbias32" 32-bit integer hash (public-domain constants).
_C1 = 0x7FEB352D
_C2 = 0x846CA68B

IntLike = Union[int, torch.Tensor]


def _mul32(x: IntLike, c: int) -> IntLike:
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` without leaving int64 range (max ~2**49)."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix32(x: IntLike) -> IntLike:
    """A bijection on [0, 2**32) with good avalanche; works on Python ints and int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, _C1)
    x = x ^ (x >> 15)
    x = _mul32(x, _C2)
    return x ^ (x >> 16)


def _hash_ints(*values: int) -> int:
    """Chain 32-bit chunks of non-negative Python ints through ``_mix32`` (exact, host-side)."""
    h = _GOLDEN
    for v in values:
        v = int(v)
        if v < 0:
            raise ValueError(f"plan inputs must be non-negative, got {v}")
        n = 0
        while True:  # every value contributes all its 32-bit chunks, then their count
            h = (_mix32(h ^ (v & _M32)) + _GOLDEN) & _M32
            v >>= 32
            n += 1
            if v == 0:
                break
        h = _mix32(h ^ n)
    return h


def plan_needed(k: int, seq_length: int) -> bool:
    """False when every token is kept (``k >= s``): callers then skip gather/scatter entirely."""
    return int(k) < int(seq_length)


def _check_k(k: int, seq_length: int, strata: int) -> None:
    if not 0 < k <= seq_length:
        raise ValueError(f"kept length k={k} must be in [1, seq_length={seq_length}]")
    if strata <= 0 or seq_length % strata or k % strata:
        raise ValueError(
            f"a plan of {strata} strata needs seq_length ({seq_length}) and k ({k}) divisible by {strata}"
        )


def _to_device(values, device: torch.device) -> torch.Tensor:
    """Small host values -> device tensor without a blocking host-device synchronisation."""
    t = torch.as_tensor(values, dtype=torch.int64)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@functools.lru_cache(maxsize=64)
def _position_hashes(s: int, device: torch.device) -> torch.Tensor:
    """``mix32(arange(s))``: the same for every plan of this length, so made once per device."""
    return _mix32(torch.arange(s, dtype=torch.int64, device=device))


@functools.lru_cache(maxsize=64)
def _stratum_offsets(s: int, strata: int, device: torch.device) -> torch.Tensor:
    """``[1, 1, strata, 1]``: the first position of each stratum."""
    return torch.arange(0, s, s // strata, dtype=torch.int64, device=device).view(1, 1, strata, 1)


def _row_bases(salts, ids):
    """``[L, b]`` 32-bit row bases from per-layer salts ``[L]`` and sample ids ``[b]``: numpy uint64
    arrays on the host (no launches for a few hundred values) or int64 tensors on the device; the
    same integers either way."""
    id_lo, id_hi = ids & _M32, (ids >> 32) & _M32
    base = _mix32(salts[:, None] ^ id_lo[None, :])
    return _mix32(base ^ _mix32((id_hi + _GOLDEN) & _M32)[None, :])


def make_index_plan(
    seed: int,
    iteration: int,
    sample_ids: torch.Tensor,
    layer_numbers: Sequence[int],
    k: int,
    seq_length: int,
    device: Optional[Union[str, torch.device]] = None,
    strata: int = 1,
) -> torch.Tensor:
    """Kept positions, ``LongTensor[len(layer_numbers), b, k]``: sorted, unique, in ``[0, s)``.

    Args:
        seed, iteration: non-negative ints (the plan changes with both).
        sample_ids: ``LongTensor[b]`` of GLOBAL, non-negative sample ids (e.g. the sample's index in
            the whole training stream). Row ``j`` depends only on ``sample_ids[j]``, never on the
            other samples of the micro-batch.
        layer_numbers: GLOBAL layer numbers, one plan row each.
        k, seq_length: kept and full lengths (``0 < k <= s``).
        device: where to compute (default: ``sample_ids.device``).
        strata: the sequence is cut into ``strata`` equal contiguous segments and each keeps
            exactly ``k / strata`` of its own positions (for sequence parallelism: any TP size that
            divides ``strata`` finds ``k / tp`` kept tokens in its shard). Indices are still global
            and sorted. ``strata == 1`` is the plain plan.
    No torch RNG is touched, nothing is communicated, and no value is read back to the host.
    """
    k, s, n = int(k), int(seq_length), int(strata)
    _check_k(k, s, n)
    device = torch.device(device) if device is not None else sample_ids.device
    layers = [int(n) for n in layer_numbers]

    # Per-layer 32-bit salt from (seed, iteration, layer): exact host ints.
    salts = [_hash_ints(seed, iteration, n) for n in layers]
    if sample_ids.device.type == "cpu":
        # Host ids (the data loader's): the [L, b] row bases are made on the host and copied once.
        ids = sample_ids.reshape(-1).numpy().astype(np.int64, copy=False)
        if (ids < 0).any():
            raise ValueError(f"plan inputs must be non-negative, got sample id {int(ids.min())}")
        base = _to_device(_row_bases(np.asarray(salts, dtype=np.uint64), ids.astype(np.uint64)).astype(np.int64),
                          device)
    else:
        # Device ids: the same formula on the device, nothing read back to the host.
        ids = sample_ids.to(device=device, dtype=torch.int64, non_blocking=True).reshape(-1)  # [b]
        base = _row_bases(_to_device(salts, device), ids)
    b = base.shape[1]

    # Keys: a bijection of the position for each row, so all keys in a row differ. [L, b, s]
    keys = _mix32(_position_hashes(s, device)[None, None, :] ^ base[:, :, None])

    if n > 1:
        width = s // n
        keys = keys.view(len(layers), b, n, width)
        local = torch.topk(keys, k // n, dim=-1, largest=False, sorted=False).indices
        local = local.sort(dim=-1).values
        return (local + _stratum_offsets(s, n, device)).reshape(len(layers), b, k)
    idx = torch.topk(keys, k, dim=-1, largest=False, sorted=False).indices
    return idx.sort(dim=-1).values


def local_shard_plan(plan: torch.Tensor, tp_rank: int, tp_size: int, seq_length: int) -> torch.Tensor:
    """Positions of a stratified plan that fall in shard ``tp_rank``, made local to that shard.

    ``plan`` is ``[..., k]`` from ``make_index_plan(..., strata=S)`` with ``S`` a multiple of
    ``tp_size`` (so each shard holds ``S / tp_size`` whole strata and exactly ``k / tp_size`` kept
    positions, the shard's slice of the sorted plan); returns ``[..., k / tp_size]`` with values in
    ``[0, s / tp_size)``. The caller checks ``S % tp_size == 0`` (see :func:`check_plan_fits`).
    """
    tp, s = int(tp_size), int(seq_length)
    k = plan.shape[-1]
    if s % tp or k % tp or not 0 <= tp_rank < tp:
        raise ValueError(f"bad shard request: rank {tp_rank} of {tp}, seq_length {s}, k {k}")
    kl, shard = k // tp, s // tp
    return plan[..., tp_rank * kl:(tp_rank + 1) * kl] - tp_rank * shard


@dataclass(eq=False)
class IndexPlan:
    """The plan of one micro-batch; travels with the forward (and its recomputation).

    ``indices[row]`` is ``LongTensor[b, k]`` of positions for layer ``layer_numbers[row]``. What
    rides with the forward is :meth:`route_tensor`: the same plan as row numbers of the flattened
    ``[s*b, h]`` hidden states, made for every layer in one operation here, so a dropping layer
    gathers and scatters without index arithmetic of its own.
    """

    indices: torch.Tensor
    k: int
    seq_length: int
    layer_numbers: Tuple[int, ...]
    strata: int = 1
    rows: Dict[int, int] = field(init=False, repr=False)
    _route: Optional[torch.Tensor] = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self.layer_numbers = tuple(int(n) for n in self.layer_numbers)
        self.rows = {n: r for r, n in enumerate(self.layer_numbers)}
        if len(self.rows) != len(self.layer_numbers):
            raise ValueError(f"duplicate layer numbers in plan: {self.layer_numbers}")
        expected = (len(self.layer_numbers), self.k)
        if self.indices.dim() != 3 or (self.indices.shape[0], self.indices.shape[2]) != expected:
            raise ValueError(f"indices of shape {tuple(self.indices.shape)} do not match [{expected[0]}, b, {self.k}]")
        if self.strata <= 0 or self.k % self.strata or self.seq_length % self.strata:
            raise ValueError(f"{self.strata} strata do not divide k={self.k} and seq_length={self.seq_length}")

    def __contains__(self, layer_number: int) -> bool:
        return int(layer_number) in self.rows

    def for_layer(self, layer_number: int) -> torch.Tensor:
        """``LongTensor[b, k]`` of global kept positions for a GLOBAL layer number."""
        try:
            return self.indices[self.rows[int(layer_number)]]
        except KeyError:
            raise KeyError(f"layer {layer_number} is not a token-dropping layer of this plan "
                           f"(layers {list(self.layer_numbers)})") from None

    def route_tensor(self) -> torch.Tensor:
        """``LongTensor[rows, strata, k/strata, b]`` (see :func:`route_rows`): the plan as it travels."""
        if self._route is None:
            self._route = route_rows(self.indices, self.strata)
        return self._route

    def local_for_layer(self, layer_number: int, tp_rank: int, tp_size: int) -> torch.Tensor:
        """``LongTensor[b, k/tp]`` of shard-local positions (sequence parallel over ``tp_size`` ranks)."""
        check_plan_fits(self.strata, tp_size)
        return local_shard_plan(self.for_layer(layer_number), tp_rank, tp_size, self.seq_length)


# ---------------------------------------------------------------------- the travelling form
# A dropping layer works on the flattened ``[s*b, h]`` view of its ``[s, b, h]`` input, where
# token ``(pos, sample j)`` is row ``pos*b + j``. The plan travels as those row numbers, in
# ``[rows, strata, k/strata, b]`` order: for one layer, ``reshape(-1)`` is the gather order
# (kept tokens position-major, as the ``[k, b, h]`` kept states are laid out), and the strata
# axis leads so a sequence-parallel shard's rows are one contiguous slice.
def route_rows(indices: torch.Tensor, strata: int = 1) -> torch.Tensor:
    """``[L, b, k]`` sorted positions -> ``[L, strata, k/strata, b]`` flat row numbers (one op)."""
    L, b, k = indices.shape
    sample = torch.arange(b, dtype=torch.int64, device=indices.device)
    return torch.add(sample, indices.transpose(1, 2), alpha=b).view(L, strata, k // strata, b)


def route_strata(route: torch.Tensor) -> int:
    """Strata of a travelling route tensor ``[rows, strata, k/strata, b]``."""
    if route.dim() != 4:
        raise ValueError(f"random-LTD route of shape {tuple(route.shape)}: expected [rows, strata, k/strata, b] "
                         "(IndexPlan.route_tensor())")
    return int(route.shape[1])


def local_route_rows(route_row: torch.Tensor, tp_rank: int, tp_size: int, seq_length: int) -> torch.Tensor:
    """One layer's ``[strata, k/strata, b]`` global rows -> ``[k/tp * b]`` rows of shard ``tp_rank``'s
    ``[s/tp * b, h]`` states (its whole strata, shifted to the shard's origin)."""
    strata, _, b = route_row.shape
    if tp_size == 1:
        return route_row.reshape(-1)
    per_rank = strata // tp_size
    shard_rows = (seq_length // tp_size) * b
    return (route_row[tp_rank * per_rank:(tp_rank + 1) * per_rank] - tp_rank * shard_rows).reshape(-1)


def route_positions(route_row: torch.Tensor) -> torch.Tensor:
    """One layer's ``[strata, k/strata, b]`` rows -> ``[b, k]`` global positions (for masks)."""
    b = route_row.shape[-1]
    return route_row.reshape(-1, b).div(b, rounding_mode="floor").t()


def check_plan_fits(strata: int, tp_size: int) -> None:
    """A sequence-parallel layer over ``tp_size`` ranks needs whole strata in each shard."""
    if tp_size > 1 and strata % tp_size:
        raise ValueError(
            f"an index plan of {strata} strata does not fit sequence parallelism over {tp_size} ranks "
            f"(each rank's shard must hold whole strata): set --random-ltd-strata to a multiple of {tp_size}"
        )


def build_index_plan(
    seed: int,
    iteration: int,
    sample_ids: torch.Tensor,
    layer_numbers: Sequence[int],
    k: int,
    seq_length: int,
    device: Optional[Union[str, torch.device]] = None,
    strata: int = 1,
    force: bool = False,
) -> Optional[IndexPlan]:
    """:func:`make_index_plan` wrapped in an :class:`IndexPlan`; ``None`` when nothing is dropped
    (``k >= s`` or no dropping layers), in which case every layer runs on the full sequence.
    ``force=True`` returns the plan even at ``k == s`` (every index kept): the layers then run the
    gather/scatter path, which must equal the full-length path exactly (tests use it)."""
    if len(layer_numbers) == 0 or not (force or plan_needed(k, seq_length)):
        return None
    indices = make_index_plan(seed, iteration, sample_ids, layer_numbers, k, seq_length,
                              device=device, strata=strata)
    return IndexPlan(indices, int(k), int(seq_length), tuple(layer_numbers), int(strata))
