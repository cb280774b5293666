"""A deterministic, resumable DataLoader for map-style datasets of dict samples.

Like Megatron-LM's pretraining sampler: indices are taken in order, ``micro_batch_size * dp_size``
at a time (one global micro-batch), and data-parallel rank ``r`` takes slice ``r`` of each. Starting
from ``consumed_samples`` (a multiple of the global micro-batch, counted over all DP ranks) resumes
exactly where a run stopped. Shuffling is the dataset's job (megatron-core's datasets are shuffled
by their seed already).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch


class PretrainingSampler:
    """Yields lists of indices: this DP rank's part of each global micro-batch."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 dp_rank: int, dp_size: int, drop_last: bool = True) -> None:
        if total_samples <= 0:
            raise ValueError(f"no samples to load (dataset of length {total_samples})")
        if micro_batch_size <= 0 or dp_size <= 0:
            raise ValueError(f"micro_batch_size ({micro_batch_size}) and dp_size ({dp_size}) "
                             "must be positive")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} not in [0, {dp_size})")
        if consumed_samples < 0:
            raise ValueError(f"consumed_samples must be >= 0, got {consumed_samples}")
        if consumed_samples >= total_samples:
            raise ValueError(
                f"consumed_samples={consumed_samples} but the dataset has only {total_samples} "
                "samples: nothing left to load (ask the dataset builder for more samples)")
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.global_micro_batch = micro_batch_size * dp_size
        self.drop_last = drop_last

    def __len__(self) -> int:
        remaining = self.total_samples - self.consumed_samples
        full = remaining // self.global_micro_batch
        if self.drop_last or remaining % self.global_micro_batch == 0:
            return full
        return full + 1

    def _slice(self, batch: List[int]) -> List[int]:
        beg = self.dp_rank * self.micro_batch_size
        return batch[beg:beg + self.micro_batch_size]

    def __iter__(self) -> Iterator[List[int]]:
        batch: List[int] = []
        for idx in range(self.consumed_samples, self.total_samples):
            batch.append(idx)
            if len(batch) == self.global_micro_batch:
                yield self._slice(batch)
                batch = []
        if batch and not self.drop_last:
            part = self._slice(batch)
            if part:
                yield part


def collate_samples(samples: Sequence[Dict]) -> Dict[str, torch.Tensor]:
    """Stack a list of dict samples into a dict of tensors (numpy arrays and ints included);
    ``sample_id`` is always int64."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    out: Dict[str, torch.Tensor] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        first = values[0]
        if isinstance(first, torch.Tensor):
            out[key] = torch.stack(values)
        elif isinstance(first, np.ndarray):
            out[key] = torch.from_numpy(np.stack(values))
        else:
            out[key] = torch.as_tensor(np.asarray(values))
    if "sample_id" in out:
        out["sample_id"] = out["sample_id"].to(torch.int64)
    return out


def build_data_loader(dataset, micro_batch_size: int, consumed_samples: int, dp_rank: int,
                      dp_size: int, num_workers: int = 0, drop_last: bool = True
                      ) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` for one DP rank, resuming after ``consumed_samples``."""
    if dataset is None:
        raise ValueError("build_data_loader got no dataset (this split was not built)")
    sampler = PretrainingSampler(len(dataset), consumed_samples, micro_batch_size, dp_rank,
                                 dp_size, drop_last)
    # Its own generator: creating a DataLoader iterator otherwise draws from the global torch RNG,
    # which would shift dropout masks between an uninterrupted and a resumed run.
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_samples,
        persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(consumed_samples))
