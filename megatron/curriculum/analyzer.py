"""The data analyzer behind ``tools/analyze_data.py``: per-sequence difficulty of megatron-core
indexed datasets, parallel over worker processes and resumable.

Two sweeps over the tokens of a blend (``--data-path``):
  1. token counts per prefix (the frequencies are the whole blend's: their sum);
  2. per sequence, the mean ``-log p`` of its tokens under those frequencies (vocabulary rarity).
Sequence length needs no sweep (the ``.idx`` holds it). Each sweep is cut into chunks of
consecutive sequences; a worker reads its chunk's contiguous token span once from the ``.bin``
(memory-mapped) and writes its result to ``{prefix}.analyze_parts/`` atomically. A restarted run
skips the chunks already there, so an interrupted analysis resumes; the final files
(:func:`megatron.curriculum.metrics.difficulty_path`) are written atomically and the parts
removed. Results do not depend on the number of workers or the chunk size.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .metrics import difficulty_path, token_cost, token_counts_path

__all__ = ["analyze", "ANALYZER_METRICS"]

ANALYZER_METRICS = ("vocab_rarity", "seqlen")


def _index(prefix: str):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(prefix, mmap=True)
    # Copies: the index arrays are views of an mmap that closes with the dataset.
    return (np.array(ds.index.sequence_lengths, dtype=np.int64), np.array(ds.index.sequence_pointers, dtype=np.int64),
            np.dtype(ds.index.dtype))


def _span(prefix: str, beg: int, end: int) -> Tuple[np.ndarray, np.ndarray]:
    """Tokens of sequences [beg, end) as one array, and their lengths."""
    lengths, pointers, dtype = _index(prefix)
    lens = lengths[beg:end]
    if end <= beg:
        return np.zeros(0, dtype=np.int64), lens
    start = int(pointers[beg])
    stop = int(pointers[end - 1]) + int(lengths[end - 1]) * dtype.itemsize
    data = np.memmap(prefix + ".bin", dtype=np.uint8, mode="r")[start:stop]
    return np.frombuffer(data.tobytes(), dtype=dtype).astype(np.int64), lens


def _save_atomic(path: str, array: np.ndarray) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


def _count_chunk(job) -> str:
    prefix, beg, end, vocab, out = job
    if not os.path.exists(out):
        tokens, _ = _span(prefix, beg, end)
        _save_atomic(out, np.bincount(tokens, minlength=vocab)[:vocab] if vocab else np.bincount(tokens))
    return out


def _rarity_chunk(job) -> str:
    prefix, beg, end, cost_path, out = job
    if not os.path.exists(out):
        cost = np.load(cost_path)
        tokens, lens = _span(prefix, beg, end)
        sums = np.zeros(len(lens))
        nonempty = lens > 0
        if tokens.size:
            starts = np.concatenate([[0], np.cumsum(lens)[:-1]])[nonempty]
            sums[nonempty] = np.add.reduceat(cost[tokens], starts)
        _save_atomic(out, np.where(nonempty, sums / np.maximum(lens, 1), 0.0))
    return out


def _chunks(n: int, size: int) -> List[Tuple[int, int]]:
    return [(b, min(b + size, n)) for b in range(0, n, size)] or [(0, 0)]


def _run(fn, jobs, workers: int) -> List[str]:
    if workers <= 1:
        return [fn(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, jobs, chunksize=1))


def analyze(prefixes: Sequence[str], metrics: Sequence[str] = ANALYZER_METRICS, workers: int = 1,
            chunk_sequences: int = 4096, vocab_size: Optional[int] = None, keep_parts: bool = False) -> Dict[str, Dict[str, str]]:
    """Write the per-sequence difficulty files of every prefix of a blend; returns
    ``{prefix: {metric: path}}``. See the module docstring."""
    for m in metrics:
        if m not in ANALYZER_METRICS:
            raise ValueError(f"--metric {m!r}: choose from {', '.join(ANALYZER_METRICS)}")
    out: Dict[str, Dict[str, str]] = {p: {} for p in prefixes}
    parts = {p: p + ".analyze_parts" for p in prefixes}
    for p in prefixes:
        os.makedirs(parts[p], exist_ok=True)
    lengths = {p: _index(p)[0] for p in prefixes}
    if "seqlen" in metrics:
        for p in prefixes:
            _save_atomic(difficulty_path(p, "seqlen"), lengths[p].astype(np.float64))
            out[p]["seqlen"] = difficulty_path(p, "seqlen")
    if "vocab_rarity" in metrics:
        # Sweep 1: counts. vocab unknown: each chunk's own length; summed with padding below.
        jobs = [(p, b, e, vocab_size, os.path.join(parts[p], f"counts_{b:012d}_{e:012d}.npy"))
                for p in prefixes for b, e in _chunks(len(lengths[p]), chunk_sequences)]
        results = [np.load(f) for f in _run(_count_chunk, jobs, workers)]
        counts = np.zeros(max(len(r) for r in results), dtype=np.int64)
        for r in results:
            counts[:len(r)] += r
        cost = token_cost(counts)
        # Sweep 2 depends on the blend's counts: its parts are keyed by them, so a changed blend
        # never reuses rarities computed under other frequencies.
        key = hashlib.sha1(counts.tobytes()).hexdigest()[:12]
        cost_path = os.path.join(parts[prefixes[0]], f"cost_{key}.npy")
        if not os.path.exists(cost_path):
            _save_atomic(cost_path, cost)
        jobs = [(p, b, e, cost_path, os.path.join(parts[p], f"rarity_{key}_{b:012d}_{e:012d}.npy"))
                for p in prefixes for b, e in _chunks(len(lengths[p]), chunk_sequences)]
        files = _run(_rarity_chunk, jobs, workers)
        for p in prefixes:
            mine = [np.load(f) for (q, *_), f in zip(jobs, files) if q == p]
            _save_atomic(difficulty_path(p, "vocab_rarity"), np.concatenate(mine)[:len(lengths[p])])
            _save_atomic(token_counts_path(p), counts)
            out[p]["vocab_rarity"] = difficulty_path(p, "vocab_rarity")
    if not keep_parts:
        for p in prefixes:
            shutil.rmtree(parts[p], ignore_errors=True)
    return out
