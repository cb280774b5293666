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
from typing import Dict, List

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


def merge_indexed_datasets(prefixes: List[str], output_prefix: str) -> Dict[str, int]:
    """Concatenate the datasets at ``prefixes`` (in order) into ``output_prefix``, atomically.

    Raises FileNotFoundError for a missing prefix and ValueError when the token dtypes differ.
    Returns counts of documents and sequences written.
    """
    if not prefixes:
        raise ValueError("nothing to merge: no input prefixes given")
    dtypes: Dict[str, type] = {}
    for prefix in prefixes:
        check_prefix(prefix, "input prefix")
        dtypes[prefix] = IndexedDataset(prefix).index.dtype
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
