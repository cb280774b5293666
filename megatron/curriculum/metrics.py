"""Difficulty metrics, per sequence of an indexed dataset and per training sample.

Where the numbers live: ``tools/analyze_data.py`` writes, next to each prefix of a blend,
``{prefix}.difficulty.{metric}.npy`` (float64, one value per sequence of the indexed dataset) and
``{prefix}.token_counts.npy`` (the blend's token frequencies, int64 per token id). A user's own
metric is the same kind of file (``--curriculum-metric file``).

A GPT training sample is a window over consecutive (shuffled) documents, so its difficulty is the
token-weighted mean of the per-sequence values over exactly the tokens the window holds
(:func:`gpt_sample_values`): for vocab rarity that is the window's own mean rarity when every
document is wholly inside it, and the weighted mean of its documents' rarities otherwise.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np

__all__ = ["difficulty_path", "token_counts_path", "token_cost", "sequence_rarity", "gpt_sample_values",
           "dataset_sample_values", "load_sequence_values"]


def difficulty_path(prefix: str, metric: str) -> str:
    return f"{prefix}.difficulty.{metric}.npy"


def token_counts_path(prefix: str) -> str:
    return f"{prefix}.token_counts.npy"


def token_cost(counts: np.ndarray) -> np.ndarray:
    """``-log p(token)`` from token counts; an unseen token counts as seen once (finite cost)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.log(max(counts.sum(), 1.0)) - np.log(np.maximum(counts, 1.0))


def sequence_rarity(tokens: np.ndarray, cost: np.ndarray) -> float:
    """Vocabulary rarity of one sequence: the mean ``-log p`` of its tokens (0.0 when empty)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    return float(cost[tokens].mean()) if tokens.size else 0.0


def gpt_sample_values(per_sequence: np.ndarray, sequence_lengths: np.ndarray, document_index: np.ndarray,
                      sample_index: np.ndarray, shuffle_index: np.ndarray) -> np.ndarray:
    """Token-weighted mean of ``per_sequence`` over each sample of a megatron-core GPTDataset.

    Sample ``j`` reads documents ``document_index[beg..end]`` from token ``off_b`` of the first to
    token ``off_e`` (inclusive) of the last, where ``(beg, off_b), (end, off_e) = sample_index[i],
    sample_index[i + 1]`` and ``i = shuffle_index[j]``. With ``C`` the token offset of each
    document position and ``V`` the running integral of value x length, the sum over a token
    range is ``F(end) - F(beg)`` with ``F(p, off) = V[p] + value[p] * off``: exact, vectorized.
    """
    docs = np.asarray(document_index, dtype=np.int64)
    lengths = np.asarray(sequence_lengths, dtype=np.int64)[docs]
    values = np.asarray(per_sequence, dtype=np.float64)[docs]
    C = np.concatenate([[0], np.cumsum(lengths)])
    V = np.concatenate([[0.0], np.cumsum(values * lengths)])
    si = np.asarray(sample_index, dtype=np.int64)
    idx = np.asarray(shuffle_index, dtype=np.int64)
    beg, off_b = si[idx, 0], si[idx, 1]
    end, off_e = si[idx + 1, 0], si[idx + 1, 1] + 1
    a = C[beg] + off_b
    b = C[end] + off_e
    total = (V[end] + values[end] * off_e) - (V[beg] + values[beg] * off_b)
    return total / np.maximum(b - a, 1)


def _gpt_indices(ds):
    if getattr(ds, "shuffle_index", None) is None:
        ds[0]  # megatron-core loads its index arrays lazily on a cache hit
    return ds.document_index, ds.sample_index, ds.shuffle_index


def dataset_sample_values(dataset, per_sequence: Callable[[object], np.ndarray]) -> np.ndarray:
    """Per-sample difficulty of a training dataset: our ``SampleIdDataset`` around megatron-core's
    ``BlendedDataset`` or ``GPTDataset``. ``per_sequence(low_level_indexed_dataset)`` gives the
    per-sequence values of one blend member."""
    inner = getattr(dataset, "dataset", dataset)
    if hasattr(inner, "dataset_index") and hasattr(inner, "datasets"):  # a blend
        out = np.empty(len(inner), dtype=np.float64)
        di, dsi = np.asarray(inner.dataset_index), np.asarray(inner.dataset_sample_index, dtype=np.int64)
        for k, member in enumerate(inner.datasets):
            sel = di == k
            if sel.any():
                out[sel] = dataset_sample_values(member, per_sequence)[dsi[sel]]
        return out
    if not hasattr(inner, "sample_index"):
        raise ValueError(f"a sample-selecting curriculum needs a megatron-core GPT dataset, got {type(inner).__name__}")
    low = inner.dataset
    return gpt_sample_values(per_sequence(low), low.sequence_lengths, *_gpt_indices(inner))


def load_sequence_values(low_level_dataset, metric: str, difficulty_file: Optional[str] = None) -> np.ndarray:
    """Per-sequence values of one indexed dataset: from the analyzer's file next to the data (or
    ``difficulty_file``). Mock data (no files) gets vocab rarity computed here, from its tokens."""
    prefix = getattr(low_level_dataset, "path_prefix", None)
    n = len(low_level_dataset.sequence_lengths)
    if prefix is None:
        if metric != "vocab_rarity":
            raise ValueError(f"--curriculum-metric {metric} needs real data (a prefix to read values for)")
        counts = np.zeros(1, dtype=np.int64)
        for i in range(n):  # two sweeps, one sequence at a time: mock corpora are large
            c = np.bincount(np.asarray(low_level_dataset[i], dtype=np.int64))
            counts = np.pad(counts, (0, max(len(c) - len(counts), 0)))
            counts[:len(c)] += c
        cost = token_cost(counts)
        return np.array([sequence_rarity(low_level_dataset[i], cost) for i in range(n)])
    from megatron.data.providers import DataError  # the entry points report it in one line (exit 2)

    path = (difficulty_file.replace("{prefix}", prefix) if difficulty_file else difficulty_path(prefix, metric))
    if not os.path.isfile(path):
        raise DataError(f"--curriculum-metric {metric}: {path} is missing; write it with "
                        f"python tools/analyze_data.py --data-path {prefix} --metric {metric}"
                        if metric != "file" else f"--curriculum-difficulty-file: {path} is missing")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a .npy array ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}): "
                        f"give one value per sequence of {prefix}, as tools/analyze_data.py writes") from None
    if getattr(values, "shape", None) != (n,):
        raise DataError(f"{path} holds {getattr(values, 'shape', type(values).__name__)} values; {prefix} has {n} "
                        "sequences (one value each)")
    return values
