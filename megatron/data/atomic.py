"""Write indexed datasets so that an interrupted run never leaves a complete-looking .bin/.idx pair.

Every file of a run is first written in a hidden staging directory next to the output
(``.{name}.staging-{pid}``). :meth:`StagedOutputs.commit` then moves the files into place with
``os.replace`` (atomic on one filesystem): first it removes any old ``.idx`` of the same prefix, then
moves every ``.bin``, and the ``.idx`` files last. At any instant a prefix therefore has either its
old pair, a ``.bin`` without ``.idx`` (which megatron-core refuses to open), or the new pair.
"""

from __future__ import annotations

import os
import shutil
import struct
from typing import Dict, List, Tuple

import numpy as np

from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StagedOutputs:
    """Staging area for the indexed datasets one run writes under ``output_dir``."""

    def __init__(self, output_dir: str, name: str) -> None:
        self.output_dir = os.path.abspath(output_dir or ".")
        os.makedirs(self.output_dir, exist_ok=True)
        self._clean_stale(name)
        self.staging = os.path.join(self.output_dir, f".{name}.staging-{os.getpid()}")
        os.makedirs(self.staging, exist_ok=True)
        self._finals: List[str] = []  # final prefixes, in creation order

    def _clean_stale(self, name: str) -> None:
        """Remove staging directories left by killed runs of the same output (dead pids only)."""
        marker = f".{name}.staging-"
        for entry in os.listdir(self.output_dir):
            if entry.startswith(marker) and entry[len(marker):].isdigit():
                if not _pid_alive(int(entry[len(marker):])):
                    shutil.rmtree(os.path.join(self.output_dir, entry), ignore_errors=True)

    def staged_prefix(self, final_prefix: str) -> str:
        """The prefix to write instead of ``final_prefix`` (registered for :meth:`commit`)."""
        self._finals.append(final_prefix)
        return os.path.join(self.staging, os.path.basename(final_prefix))

    def scratch_prefix(self, name: str) -> str:
        """A prefix for intermediate files that are discarded at the end."""
        return os.path.join(self.staging, "scratch", name)

    def commit(self) -> None:
        """Move every registered pair into place, all .bin files first and the .idx files last."""
        for final in self._finals:
            staged = self.staged_prefix_of(final)
            for ext in (".bin", ".idx"):
                if not os.path.isfile(staged + ext):
                    raise RuntimeError(f"internal error: {staged + ext} was not written")
        for final in self._finals:
            if os.path.exists(final + ".idx"):
                os.remove(final + ".idx")
        for final in self._finals:
            os.replace(self.staged_prefix_of(final) + ".bin", final + ".bin")
        for final in self._finals:
            os.replace(self.staged_prefix_of(final) + ".idx", final + ".idx")
        self.discard()

    def staged_prefix_of(self, final_prefix: str) -> str:
        return os.path.join(self.staging, os.path.basename(final_prefix))

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # commit() has already removed the staging area on success; on error drop everything.
        self.discard()


def check_prefix(prefix: str, flag: str = "prefix") -> None:
    """Raise FileNotFoundError naming both expected files when ``prefix`` is not a dataset."""
    missing = [p for p in (prefix + ".bin", prefix + ".idx") if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f"{flag} {prefix!r} is not an indexed dataset: missing {', '.join(missing)} "
            f"(a prefix names the pair {prefix}.bin and {prefix}.idx, without the extension)"
        )


def _index_shape(idx: str) -> Tuple[int, int, int]:
    """(token size in bytes, sequences, documents) from an .idx header; ValueError when the file is
    not a complete megatron-core index (checked before megatron-core opens it: its reader fails with
    a bare assert or numpy error, and a half-built IndexedDataset prints an error when collected)."""
    from megatron.core.datasets.indexed_dataset import _INDEX_HEADER, DType

    size = os.path.getsize(idx)
    with open(idx, "rb") as f:
        head = f.read(34)  # magic (9), version (8), dtype code (1), sequences (8), documents (8)
    if len(head) < 34 or head[:9] != _INDEX_HEADER:
        raise ValueError("not a megatron-core index (bad header)" if len(head) >= 9 else f"only {size} bytes")
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[9:])
    if version != 1:
        raise ValueError(f"index version {version}, expected 1")
    try:
        itemsize = DType.size(DType.dtype_from_code(code))
    except Exception:  # noqa: BLE001
        raise ValueError(f"unknown token dtype code {code}") from None
    expected = 34 + n_seq * (4 + 8) + n_doc * 8
    if size < expected:
        raise ValueError(f"truncated: {size:,} of at least {expected:,} bytes for {n_seq:,} sequences")
    return itemsize, n_seq, n_doc


def open_indexed_dataset(prefix: str, flag: str = "prefix") -> IndexedDataset:
    """Open ``prefix``'s .bin/.idx pair, or raise ValueError naming the file that is wrong: a
    missing, truncated or foreign ``.idx`` (one written for another ``.bin``), or a truncated ``.bin``."""
    check_prefix(prefix, flag)
    idx, bin_ = prefix + ".idx", prefix + ".bin"
    redo = "re-run tools/preprocess_data.py for it (a .bin and its .idx are written together)"
    try:
        itemsize, _, _ = _index_shape(idx)
        ds = IndexedDataset(prefix)
        lengths, pointers, doc_idx = ds.index.sequence_lengths, ds.index.sequence_pointers, ds.index.document_indices
        if len(doc_idx) < 1 or int(doc_idx[-1]) != len(lengths):
            raise ValueError("its sequence and document tables disagree")
    except Exception as e:  # noqa: BLE001 (anything megatron-core's reader raises)
        raise ValueError(f"{flag} {prefix}: {idx} cannot be read as an index ({e}); {redo}") from None
    expected = int(pointers[-1]) + int(lengths[-1]) * itemsize if len(lengths) else 0
    actual = os.path.getsize(bin_)
    if actual != expected:
        what = "is truncated" if actual < expected else "is longer than its index describes"
        raise ValueError(f"{flag} {prefix}: {bin_} has {actual:,} bytes but {idx} describes {expected:,}: the .bin "
                         f"{what}, or the .idx belongs to another dataset; {redo}")
    return ds


def merge_indexed_datasets(prefixes: List[str], output_prefix: str) -> Dict[str, int]:
    """Concatenate the datasets at ``prefixes`` (in order) into ``output_prefix``, atomically.

    Raises FileNotFoundError for a missing prefix and ValueError when the token dtypes differ.
    Returns counts of documents and sequences written.
    """
    if not prefixes:
        raise ValueError("nothing to merge: no input prefixes given")
    dtypes: Dict[str, type] = {}
    for prefix in prefixes:
        dtypes[prefix] = open_indexed_dataset(prefix, "input prefix").index.dtype
    distinct = sorted({np.dtype(d).name for d in dtypes.values()})
    if len(distinct) > 1:
        listing = ", ".join(f"{p} ({np.dtype(d).name})" for p, d in dtypes.items())
        raise ValueError(
            f"cannot merge datasets with different token dtypes: {listing}. Re-run "
            "preprocess_data.py for all inputs with the same tokenizer."
        )
    dtype = dtypes[prefixes[0]]
    out_dir = os.path.dirname(os.path.abspath(output_prefix))
    with StagedOutputs(out_dir, os.path.basename(output_prefix)) as staged:
        tmp = staged.staged_prefix(output_prefix)
        builder = IndexedDatasetBuilder(tmp + ".bin", dtype=dtype)
        for prefix in prefixes:
            builder.add_index(prefix)
        builder.finalize(tmp + ".idx")
        n_docs = len(builder.document_indices) - 1
        n_seqs = len(builder.sequence_lengths)
        staged.commit()
    return {"documents": n_docs, "sequences": n_seqs}
