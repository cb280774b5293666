"""``DataConfig``: where the training data comes from, with Megatron-LM's flag names."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

Blend = Tuple[List[str], Optional[List[float]]]

# Upper bound for flags that start processes or threads (--num-workers, ...): a typo such as
# 100000 would otherwise fork until the machine runs out of memory.
MAX_PROCESSES = 256


def parse_blend(values: Optional[Sequence[str]], flag: str = "--data-path") -> Optional[Blend]:
    """Megatron-LM's blend syntax: ``[prefix]`` or ``[w1, prefix1, w2, prefix2, ...]``.

    Also accepts a single string with spaces (``"0.3 a 0.7 b"``). Returns ``(prefixes, weights)``
    with ``weights=None`` for an unweighted list of prefixes."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    items = [tok for v in values for tok in str(v).split()]
    if not items:
        return None

    def _is_number(s: str) -> bool:
        try:
            float(s)
            return True
        except ValueError:
            return False

    if not _is_number(items[0]):
        if any(_is_number(x) for x in items):
            raise ValueError(f"{flag}: mix of weights and prefixes must be 'w1 p1 w2 p2 ...': {items}")
        return list(items), None
    if len(items) % 2:
        raise ValueError(f"{flag}: expected weight/prefix pairs, got an odd count: {items}")
    weights, prefixes = items[0::2], items[1::2]
    for w, p in zip(weights, prefixes):
        if not _is_number(w) or _is_number(p):
            raise ValueError(f"{flag}: expected 'weight prefix' pairs, got {w!r} {p!r}")
    weights_f = [float(w) for w in weights]
    if any(w < 0 for w in weights_f) or sum(weights_f) <= 0:
        raise ValueError(f"{flag}: weights must be non-negative with a positive sum: {weights_f}")
    return prefixes, weights_f


def check_split(split: str) -> None:
    """``--split``: up to three non-negative train,valid,test weights (``,`` or ``/``) with a positive sum."""
    items = [x.strip() for x in split.replace("/", ",").split(",")]
    try:
        weights = [float(x) for x in items]
    except ValueError:
        weights = []
    if not 1 <= len(weights) <= 3 or any(not 0 <= w < float("inf") for w in weights):
        raise ValueError(f"--split {split!r} is not like '969,30,1': give up to three non-negative train,valid,test weights")
    if sum(weights) <= 0:
        raise ValueError(f"--split {split!r} gives every split a weight of 0: the training split needs a positive weight, "
                         "e.g. --split 969,30,1")


@dataclass
class DataConfig:
    """Data sources and dataset options (sequence length and seed are passed to the builders).

    Numeric fields declare the range of their flag in their metadata (``ge``/``gt``/``le``/``lt``),
    enforced when the command line is parsed (:func:`megatron.training.cli.check_ranges`)."""

    data_path: Optional[List[str]] = None  # one blend split by `split`
    split: str = "969,30,1"
    train_data_path: Optional[List[str]] = None  # or a separate blend per split
    valid_data_path: Optional[List[str]] = None
    test_data_path: Optional[List[str]] = None
    mock_data: bool = False
    data_cache_path: Optional[str] = None  # default: {prefix-dir}/cache
    mmap_bin_files: bool = True
    num_dataset_builder_threads: int = field(default=1, metadata={"ge": 1, "le": MAX_PROCESSES})
    num_workers: int = field(default=0, metadata={"ge": 0, "le": MAX_PROCESSES})  # DataLoader worker processes
    # GPT
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    create_attention_mask: bool = True
    # BERT
    mask_prob: float = field(default=0.15, metadata={"gt": 0.0, "lt": 1.0})
    short_seq_prob: float = field(default=0.1, metadata={"ge": 0.0, "le": 1.0})
    bert_binary_head: bool = True  # sentence-order / next-sentence target
    masking_max_ngram: int = field(default=3, metadata={"ge": 1})
    masking_do_full_word: bool = True

    def __post_init__(self) -> None:
        per_split = [self.train_data_path, self.valid_data_path, self.test_data_path]
        sources = sum([bool(self.mock_data), bool(self.data_path), any(map(bool, per_split))])
        if sources == 0:
            raise ValueError("no data: give --data-path, or --train-data-path (with optional "
                             "--valid-data-path/--test-data-path), or --mock-data")
        if sources > 1:
            raise ValueError("give only one of --data-path, --train/valid/test-data-path and "
                             "--mock-data")
        self.blend = parse_blend(self.data_path, "--data-path")
        self.blend_per_split = [
            parse_blend(p, f"--{name}-data-path")
            for p, name in zip(per_split, ("train", "valid", "test"))
        ]
        check_split(self.split)
        if self.reset_attention_mask and not self.create_attention_mask:
            # Without the per-sample masks the model would attend across documents silently.
            raise ValueError("--reset-attention-mask needs the per-sample document masks that the data loader "
                             "builds: drop --no-create-attention-mask-in-dataloader (or drop --reset-attention-mask)")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0 <= self.short_seq_prob <= 1:
            raise ValueError(f"short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")

    @property
    def uses_per_split_paths(self) -> bool:
        return any(b is not None for b in self.blend_per_split)


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the data flags (Megatron-LM names) to ``parser`` as one argument group."""
    g = parser.add_argument_group("data")
    g.add_argument("--data-path", nargs="*", default=None,
                   help="Prefix, or weighted blend 'w1 prefix1 w2 prefix2 ...', split by --split.")
    g.add_argument("--split", type=str, default="969,30,1",
                   help="Train,valid,test weights for --data-path (e.g. 969,30,1).")
    g.add_argument("--train-data-path", nargs="*", default=None, help="Separate train blend.")
    g.add_argument("--valid-data-path", nargs="*", default=None, help="Separate valid blend.")
    g.add_argument("--test-data-path", nargs="*", default=None, help="Separate test blend.")
    g.add_argument("--mock-data", action="store_true", help="Synthetic GPT data, no corpus.")
    g.add_argument("--data-cache-path", type=str, default=None,
                   help="Where dataset index caches go (default: next to the data).")
    g.add_argument("--no-mmap-bin-files", dest="mmap_bin_files", action="store_false",
                   help="Read .bin files with file reads instead of mmap.")
    g.add_argument("--num-dataset-builder-threads", type=int, default=1)
    g.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes.")
    g.add_argument("--reset-position-ids", action="store_true",
                   help="GPT: restart position ids after each end-of-document token.")
    g.add_argument("--reset-attention-mask", action="store_true",
                   help="GPT: block attention across documents (document masks).")
    g.add_argument("--eod-mask-loss", action="store_true", help="GPT: no loss on eod tokens.")
    g.add_argument("--no-create-attention-mask-in-dataloader", dest="create_attention_mask",
                   action="store_false", help="GPT: do not build [1,s,s] masks per sample.")
    g.add_argument("--mask-prob", type=float, default=0.15, help="BERT: masking probability.")
    g.add_argument("--short-seq-prob", type=float, default=0.1,
                   help="BERT: probability of a sample shorter than the sequence length.")
    g.add_argument("--bert-no-binary-head", dest="bert_binary_head", action="store_false",
                   help="BERT: no sentence-order/next-sentence target.")
    return parser


def data_config_from_args(args: argparse.Namespace) -> DataConfig:
    """Build a :class:`DataConfig` from parsed :func:`add_data_args` flags."""
    return DataConfig(
        data_path=args.data_path or None,
        split=args.split,
        train_data_path=args.train_data_path or None,
        valid_data_path=args.valid_data_path or None,
        test_data_path=args.test_data_path or None,
        mock_data=args.mock_data,
        data_cache_path=args.data_cache_path,
        mmap_bin_files=args.mmap_bin_files,
        num_dataset_builder_threads=args.num_dataset_builder_threads,
        num_workers=args.num_workers,
        reset_position_ids=args.reset_position_ids,
        reset_attention_mask=args.reset_attention_mask,
        eod_mask_loss=args.eod_mask_loss,
        create_attention_mask=args.create_attention_mask,
        mask_prob=args.mask_prob,
        short_seq_prob=args.short_seq_prob,
        bert_binary_head=args.bert_binary_head,
    )
