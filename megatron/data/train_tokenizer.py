"""Train a SentencePiece model from JSONL or text files (the library behind
tools/train_tokenizer.py).

Defaults aim at a lossless tokenizer for the sample corpus: identity normalization, whitespace kept,
byte fallback for characters outside the vocabulary, so ``detokenize(tokenize(text)) == text``.
Special ids: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<pad>`` 3, then the control symbols (by default
``<eod> <cls> <sep> <mask>``), which never come out of ordinary text.
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Iterator, List, Sequence

from megatron.data.sentence_splitter import split_sentences

DEFAULT_SPECIAL_TOKENS = ("<eod>", "<cls>", "<sep>", "<mask>")
_MAX_LINE_CHARS = 4000  # SentencePiece ignores training sentences over 4192 bytes


@dataclass
class SentencePieceTrainConfig:
    inputs: Sequence[str]
    model_prefix: str
    vocab_size: int = 4096
    model_type: str = "bpe"  # or "unigram"
    character_coverage: float = 1.0
    json_keys: Sequence[str] = ("text",)
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS
    byte_fallback: bool = True
    lossless: bool = True  # identity normalization, keep whitespace
    input_sentence_size: int = 2_000_000  # sample at most this many lines (0: all)
    max_input_chars: int = 0  # stop reading after this many characters (0: no limit)
    num_threads: int = max(1, min(os.cpu_count() or 1, 16))
    seed: int = 1234
    extra_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        for path in self.inputs:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"--input {path!r} does not exist")
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {self.model_type!r}")
        if self.num_threads < 1:
            raise ValueError(f"--num-threads must be >= 1, got {self.num_threads}")
        self.num_threads = min(self.num_threads, os.cpu_count() or 1)  # threads beyond the cores only cost memory
        if not 0 < self.character_coverage <= 1:
            raise ValueError(f"character_coverage must be in (0, 1], got {self.character_coverage}")
        reserved = 4 + len(self.special_tokens) + (256 if self.byte_fallback else 0)
        if self.vocab_size <= reserved:
            raise ValueError(
                f"vocab_size={self.vocab_size} leaves no room for learned pieces: {reserved} ids "
                "are reserved (4 base + special tokens + 256 byte-fallback pieces)")


def _is_json_file(path: str) -> bool:
    return path.endswith((".jsonl", ".json", ".jsonl.txt"))


def iter_training_lines(cfg: SentencePieceTrainConfig) -> Iterator[str]:
    """Lines of training text: paragraphs of each document, long ones cut at sentences."""
    budget = cfg.max_input_chars or float("inf")
    for path in cfg.inputs:
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                if _is_json_file(path):
                    try:
                        obj = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    if not isinstance(obj, dict):
                        continue
                    texts = [obj[k] for k in cfg.json_keys if isinstance(obj.get(k), str)]
                else:
                    texts = [raw]
                for text in texts:
                    for line in text.split("\n"):
                        if not line.strip():
                            continue
                        pieces = [line] if len(line) <= _MAX_LINE_CHARS else split_sentences(line)
                        for piece in pieces:
                            piece = piece[:_MAX_LINE_CHARS]
                            budget -= len(piece)
                            yield piece
                            if budget <= 0:
                                return


def _why_no_text(cfg: SentencePieceTrainConfig) -> str:
    """Why :func:`iter_training_lines` yields nothing: empty inputs, or JSON records without a
    string under any of ``--json-keys`` (naming the keys the records do have)."""
    keys_seen: List[str] = []
    records = 0
    for path in cfg.inputs:
        if not _is_json_file(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for raw in itertools.islice(f, 1000):
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(obj, dict):
                    records += 1
                    keys_seen += [k for k in obj if k not in keys_seen and isinstance(obj[k], str)]
    inputs = " ".join(cfg.inputs)
    if records and keys_seen:
        return (f"no training text in --input {inputs}: its JSON records have no text under --json-keys "
                f"{' '.join(cfg.json_keys)}; their text keys are {', '.join(keys_seen[:8])} (e.g. --json-keys {keys_seen[0]})")
    return f"no training text in --input {inputs}: the input is empty (no non-blank line" + \
        (" and no JSON record with a text field)" if any(map(_is_json_file, cfg.inputs)) else ")")


def train_sentencepiece(cfg: SentencePieceTrainConfig) -> str:
    """Train and write ``{model_prefix}.model`` / ``.vocab``; returns the .model path."""
    lines = iter_training_lines(cfg)
    first = next(lines, None)
    if first is None:  # SentencePiece would stop with "INTERNAL ... !sentences_.empty()"
        raise ValueError(_why_no_text(cfg))
    import sentencepiece as spm

    from megatron.data.paths import removed_on_failure

    out_dir = os.path.dirname(os.path.abspath(cfg.model_prefix))
    with removed_on_failure(out_dir):  # a failed training leaves no directory it made
        os.makedirs(out_dir, exist_ok=True)
        return _train(cfg, spm, first, lines)


def _train(cfg: SentencePieceTrainConfig, spm, first: str, lines: Iterator[str]) -> str:
    spm.set_random_generator_seed(cfg.seed)
    options = dict(
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", pad_piece="<pad>",
        control_symbols=list(cfg.special_tokens),
        byte_fallback=cfg.byte_fallback,
        split_digits=True,
        num_threads=cfg.num_threads,
        input_sentence_size=cfg.input_sentence_size,
        shuffle_input_sentence=True,
        train_extremely_large_corpus=False,
        minloglevel=2,
    )
    if cfg.lossless:
        options.update(normalization_rule_name="identity", remove_extra_whitespaces=False,
                       allow_whitespace_only_pieces=True)
    options.update(cfg.extra_options)
    # Write to a temporary prefix and rename, so a killed run leaves no half-written model.
    tmp_prefix = f"{cfg.model_prefix}.tmp-{os.getpid()}"
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=itertools.chain([first], lines), model_prefix=tmp_prefix, **options)
        os.replace(tmp_prefix + ".vocab", cfg.model_prefix + ".vocab")
        os.replace(tmp_prefix + ".model", cfg.model_prefix + ".model")
    finally:
        for ext in (".model", ".vocab"):
            if os.path.exists(tmp_prefix + ext):
                os.remove(tmp_prefix + ext)
    return cfg.model_prefix + ".model"


def parse_special_tokens(text: str) -> List[str]:
    return [t for t in (s.strip() for s in text.split(",")) if t]
