"""GPT and BERT train/valid/test datasets through megatron-core's BlendedMegatronDatasetBuilder.

Every item gets ``"sample_id"``: the dataset-level sample index plus a per-split offset
(train 0, valid 2**40, test 2**41). It depends only on the data, the split and the seed, never on
the parallel layout, which is what the random-LTD index plan needs.

Before handing over to megatron-core, the providers check what it would otherwise fail on
obscurely (or loop on): a missing prefix, an empty split, a split too small for one sample.
megatron-core asks torch.distributed for the rank in places even when it is not initialized; in a
single process that question is answered with rank 0 for the duration of the build.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from megatron.data.atomic import open_indexed_dataset
from megatron.data.config import DataConfig

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")
SAMPLE_ID_SPLIT_STRIDE = 1 << 40  # sample ids of split i lie in [i * stride, (i + 1) * stride)
_BERT_LONG_SENTENCE = 512  # megatron-core's helpers skip documents with a longer sentence


class DataError(ValueError):
    """The data cannot give the datasets that were asked for."""


class SampleIdDataset(torch.utils.data.Dataset):
    """Adds ``"sample_id"`` (int64) = ``offset + idx`` to each item of a map-style dataset."""

    def __init__(self, dataset, offset: int) -> None:
        self.dataset = dataset
        self.offset = int(offset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> Dict:
        item = dict(self.dataset[idx])
        item["sample_id"] = np.int64(self.offset + int(idx))
        return item


@contextlib.contextmanager
def _rank_zero_if_not_distributed():
    """megatron-core calls torch.distributed.get_rank() on some cache-miss paths even without an
    initialized process group; answer 0 there (and only while building)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        yield
        return
    original = torch.distributed.get_rank
    torch.distributed.get_rank = lambda group=None: 0
    try:
        yield
    finally:
        torch.distributed.get_rank = original


def _split_ranges(cfg: DataConfig, n: int) -> List[Optional[Tuple[int, int]]]:
    """Element ranges per split, computed exactly as megatron-core's builder does."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix, parse_and_normalize_split)

    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(cfg.split))
    return [None if m is None else (int(round(m[0] * n)), int(round(m[1] * n))) for m in matrix]


def _plans(cfg: DataConfig) -> List[Tuple[Optional[int], str]]:
    """(split index or None for a --data-path blend, prefix) pairs to pre-check."""
    out = []
    if cfg.blend is not None:
        for prefix in cfg.blend[0]:
            out.append((None, prefix))
    else:
        for i, blend in enumerate(cfg.blend_per_split):
            if blend is not None:
                for prefix in blend[0]:
                    out.append((i, prefix))
    return out


def _precheck(cfg: DataConfig, sizes: Sequence[Optional[int]], kind: str, seq_length: int,
              binary_head: bool = True) -> None:
    """Raise DataError for missing prefixes, empty splits and splits too small for one sample."""

    for split_i, prefix in _plans(cfg):
        flag = "--data-path" if split_i is None else f"--{SPLIT_NAMES[split_i]}-data-path"
        try:
            ds = open_indexed_dataset(prefix, flag)
        except (FileNotFoundError, ValueError) as e:
            raise DataError(str(e)) from None
        doc_idx = np.asarray(ds.document_indices)
        seq_lens = np.asarray(ds.sequence_lengths)
        n_docs = len(doc_idx) - 1
        # GPT splits by sequence (= document when preprocessed without --split-sentences),
        # BERT by document.
        n = len(seq_lens) if kind == "gpt" else n_docs
        ranges = _split_ranges(cfg, n) if split_i is None else [
            (0, n) if j == split_i else None for j in range(3)]
        for j, rng in enumerate(ranges):
            if rng is None or not sizes[j]:
                continue
            name = SPLIT_NAMES[j]
            beg, end = rng
            how = (f"--split {cfg.split} gives the {name} split elements [{beg}, {end}) of {n}"
                   if split_i is None else f"it is the whole {name} data")
            if end <= beg:
                raise DataError(
                    f"the {name} split of {prefix} is empty: {how}. Give the {name} split a "
                    f"larger share in --split, use a larger corpus, or ask for 0 {name} samples.")
            if kind == "gpt":
                tokens = int(seq_lens[beg:end].sum())
                if tokens < seq_length + 1:
                    raise DataError(
                        f"the {name} split of {prefix} has {tokens} tokens, fewer than one sample "
                        f"needs (seq_length + 1 = {seq_length + 1}); {how}. Use a shorter "
                        f"--seq-length, a larger share for {name} in --split, or more data.")
            else:
                counts = doc_idx[beg + 1:end + 1] - doc_idx[beg:end]
                lens = seq_lens[doc_idx[beg]:doc_idx[end]]
                starts = doc_idx[beg:end] - doc_idx[beg]
                longest = np.zeros(end - beg, dtype=np.int64)
                nonempty = counts > 0
                if nonempty.any():
                    longest[nonempty] = np.maximum.reduceat(lens, starts[nonempty])
                need = 2 if binary_head else 1
                usable = int(((counts >= need) & (longest <= _BERT_LONG_SENTENCE)).sum())
                if usable == 0:
                    raise DataError(
                        f"the {name} split of {prefix} has no document usable for BERT samples "
                        f"({end - beg} documents; each needs >= {need} sentences of at most "
                        f"{_BERT_LONG_SENTENCE} tokens); {how}. Preprocess with "
                        "--split-sentences, use more data, or --bert-no-binary-head.")


def _check_lengths(datasets, sizes: Sequence[Optional[int]]) -> None:
    for name, ds, want in zip(SPLIT_NAMES, datasets, sizes):
        if ds is not None and want and len(ds) < want:
            raise DataError(
                f"the {name} dataset has {len(ds)} samples but {want} were asked for; lower the "
                f"number of {name} iterations/samples or add data.")


def _common_kwargs(cfg: DataConfig, tokenizer, seq_length: int, seed: int) -> dict:
    kw = dict(
        random_seed=seed,
        sequence_length=seq_length,
        path_to_cache=cfg.data_cache_path,
        mmap_bin_files=cfg.mmap_bin_files,
        num_dataset_builder_threads=cfg.num_dataset_builder_threads,
        tokenizer=tokenizer,
    )
    if cfg.blend is not None:
        kw.update(blend=cfg.blend, split=cfg.split)
    elif cfg.uses_per_split_paths:
        kw.update(blend_per_split=cfg.blend_per_split)
    return kw


def _build(cls, config, sizes, is_built_on_rank) -> List:
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder)

    builder = BlendedMegatronDatasetBuilder(
        cls, list(sizes), is_built_on_rank or (lambda: True), config)
    with _rank_zero_if_not_distributed():
        datasets = builder.build()
    _check_lengths(datasets, sizes)
    return [None if ds is None else SampleIdDataset(ds, i * SAMPLE_ID_SPLIT_STRIDE)
            for i, ds in enumerate(datasets)]


def _normalize_sizes(sizes: Sequence[Optional[int]]) -> List[Optional[int]]:
    sizes = list(sizes)
    if len(sizes) != 3:
        raise ValueError(f"train_valid_test_num_samples needs 3 entries, got {sizes}")
    return [None if s is None else int(s) for s in sizes]


def build_gpt_datasets(data_cfg: DataConfig, tokenizer, seq_length: int,
                       train_valid_test_num_samples: Sequence[Optional[int]], seed: int,
                       is_built_on_rank: Optional[Callable[[], bool]] = None) -> List:
    """[train, valid, test] GPT datasets (None where a split is absent), or mock ones.

    Items: ``tokens, labels, loss_mask, position_ids``, ``sample_id``, and ``attention_mask``
    (``[1, s, s]``) only with document masks (``--reset-attention-mask``): a plain causal mask is
    applied by the attention itself, so building, collating and copying one per sample would be
    work nothing reads."""
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, MockGPTDataset

    sizes = _normalize_sizes(train_valid_test_num_samples)
    if not data_cfg.mock_data:
        _precheck(data_cfg, sizes, "gpt", seq_length)
    config = GPTDatasetConfig(
        **_common_kwargs(data_cfg, tokenizer, seq_length, seed),
        reset_position_ids=data_cfg.reset_position_ids,
        reset_attention_mask=data_cfg.reset_attention_mask,
        eod_mask_loss=data_cfg.eod_mask_loss,
        create_attention_mask=data_cfg.create_attention_mask and data_cfg.reset_attention_mask,
    )
    cls = MockGPTDataset if data_cfg.mock_data else GPTDataset
    return _build(cls, config, sizes, is_built_on_rank)


def build_bert_datasets(data_cfg: DataConfig, tokenizer, seq_length: int,
                        train_valid_test_num_samples: Sequence[Optional[int]], seed: int,
                        is_built_on_rank: Optional[Callable[[], bool]] = None) -> List:
    """[train, valid, test] BERT masked-LM datasets over a ``_sentence`` indexed dataset.

    Items: ``text, types, labels, is_random, padding_mask, loss_mask, truncated, sample_id``
    (megatron-core's BERTMaskedWordPieceDataset, 80/10/10 mask/random/keep)."""
    from megatron.core.datasets.bert_dataset import (
        BERTMaskedWordPieceDataset, BERTMaskedWordPieceDatasetConfig)

    if data_cfg.mock_data:
        raise DataError("--mock-data is for GPT only; BERT needs a --split-sentences corpus")
    for role in ("cls", "sep", "mask"):
        if getattr(tokenizer, role, None) is None:
            raise DataError(f"BERT needs a tokenizer with a {role} token; {tokenizer!r} has none")
    sizes = _normalize_sizes(train_valid_test_num_samples)
    _precheck(data_cfg, sizes, "bert", seq_length, data_cfg.bert_binary_head)
    config = BERTMaskedWordPieceDatasetConfig(
        **_common_kwargs(data_cfg, tokenizer, seq_length, seed),
        masking_probability=data_cfg.mask_prob,
        short_sequence_probability=data_cfg.short_seq_prob,
        masking_max_ngram=data_cfg.masking_max_ngram,
        masking_do_full_word=data_cfg.masking_do_full_word,
        masking_do_permutation=False,
        masking_use_longer_ngrams=False,
        masking_use_geometric_distribution=False,
        classification_head=data_cfg.bert_binary_head,
    )
    return _build(BERTMaskedWordPieceDataset, config, sizes, is_built_on_rank)
