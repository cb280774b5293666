"""Tokenizers behind one interface, selected with Megatron-LM's ``--tokenizer-type`` names.

Every tokenizer here is built from local files only (nothing is downloaded) and exposes:

* ``tokenize(text) -> list[int]`` and ``detokenize(ids) -> str``;
* ``vocab_size`` (including any special token appended beyond the model's own vocabulary),
  ``vocab`` (token -> id) and ``inv_vocab`` (id -> token);
* the special token ids ``eod, pad, cls, sep, mask, bos, eos, unk``. A role the vocabulary does not
  have raises :class:`MissingSpecialTokenError` (an ``AttributeError``, so
  ``getattr(tok, "pad", None)`` works and megatron-core's datasets fall back to their own pad id);
  ``special_tokens`` is the dict of the roles that exist;
* ``unique_identifiers`` (what megatron-core's dataset cache hashes).

The heavy lifting is done by the ``sentencepiece`` and ``tokenizers`` libraries; megatron-core's own
tokenizer classes need ``transformers`` for everything but SentencePiece, so they are not used.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

TOKENIZER_TYPES = (
    "SentencePieceTokenizer",
    "GPTSentencePieceTokenizer",
    "GPT2BPETokenizer",
    "BertWordPieceLowerCase",
    "BertWordPieceCase",
    "HuggingFaceTokenizer",
    "NullTokenizer",
    "ByteTokenizer",
)

SPECIAL_ROLES = ("eod", "pad", "cls", "sep", "mask", "bos", "eos", "unk")


class MissingSpecialTokenError(AttributeError):
    """Raised when a tokenizer is asked for a special token its vocabulary does not have."""


class TokenizerFileError(ValueError):
    """A tokenizer file that cannot be parsed as the kind of file it should be (one line naming the
    file, what kind of file was expected and where that comes from)."""


def _first_non_utf8(path: str) -> str:
    """Where the first byte that is not UTF-8 is: "line L, byte B" (both from 1)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return f"line {lineno}, byte {e.start + 1}"
    return "a byte"


def _first_line(error: BaseException) -> str:
    """The library's own reason, on one line (sentencepiece and tokenizers raise several)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------


@dataclass
class TokenizerConfig:
    """Which tokenizer to build and from which local files."""

    tokenizer_type: str = "SentencePieceTokenizer"
    tokenizer_model: Optional[str] = None  # .model file (SentencePiece) or a directory (HF)
    vocab_file: Optional[str] = None  # GPT-2 vocab.json or BERT vocab.txt
    merge_file: Optional[str] = None  # GPT-2 merges.txt
    vocab_size: Optional[int] = field(default=None, metadata={"ge": 1})  # NullTokenizer: ids are in [0, vocab_size); eod = vocab_size
    lower_case: Optional[bool] = None  # BERT: derived from the type name when None

    def __post_init__(self) -> None:
        if self.tokenizer_type not in TOKENIZER_TYPES:
            raise ValueError(
                f"tokenizer_type={self.tokenizer_type!r} is not one of {', '.join(TOKENIZER_TYPES)}"
            )
        needs = {
            "SentencePieceTokenizer": [("tokenizer_model", "--tokenizer-model")],
            "GPTSentencePieceTokenizer": [("tokenizer_model", "--tokenizer-model")],
            "GPT2BPETokenizer": [("vocab_file", "--vocab-file"), ("merge_file", "--merge-file")],
            "BertWordPieceLowerCase": [("vocab_file", "--vocab-file")],
            "BertWordPieceCase": [("vocab_file", "--vocab-file")],
            "HuggingFaceTokenizer": [("tokenizer_model", "--tokenizer-model")],
            "NullTokenizer": [("vocab_size", "--vocab-size")],
            "ByteTokenizer": [],
        }[self.tokenizer_type]
        for field_name, flag in needs:
            value = getattr(self, field_name)
            if value is None:
                raise ValueError(f"{self.tokenizer_type} needs {flag} ({field_name})")
            if field_name in ("tokenizer_model", "vocab_file", "merge_file"):
                if not os.path.exists(value):
                    raise FileNotFoundError(
                        f"{flag} {value!r} does not exist (needed by {self.tokenizer_type}; "
                        "nothing is downloaded, give a local path)"
                    )
        if self.tokenizer_type == "NullTokenizer" and int(self.vocab_size) <= 0:
            raise ValueError(f"vocab_size must be positive for NullTokenizer, got {self.vocab_size}")
        if self.lower_case is None and self.tokenizer_type.startswith("BertWordPiece"):
            self.lower_case = self.tokenizer_type == "BertWordPieceLowerCase"


def add_tokenizer_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add Megatron-LM's tokenizer flags to ``parser`` (one argument group)."""
    from megatron.data import paths

    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", type=str, default="SentencePieceTokenizer",
                       choices=TOKENIZER_TYPES, help="Which tokenizer to use.")
    paths.declare(group.add_argument("--tokenizer-model", type=str, default=None,
                                     help="SentencePiece .model file, or a local Hugging Face tokenizer directory."),
                  paths.INPUT_PATH, "a SentencePiece .model file or a Hugging Face tokenizer directory")
    paths.declare(group.add_argument("--vocab-file", type=str, default=None,
                                     help="GPT-2 vocab.json or BERT WordPiece vocab.txt."),
                  paths.INPUT_FILE, "a GPT-2 vocab.json or a BERT vocab.txt")
    paths.declare(group.add_argument("--merge-file", type=str, default=None, help="GPT-2 BPE merges.txt."),
                  paths.INPUT_FILE, "a GPT-2 merges.txt")
    group.add_argument("--vocab-size", type=int, default=None,
                       help="NullTokenizer only: number of ids before the eod id.")
    return parser


def tokenizer_config_from_args(args: argparse.Namespace) -> TokenizerConfig:
    """Build a :class:`TokenizerConfig` from parsed :func:`add_tokenizer_args` flags; its files are
    parsed once here (milliseconds), so a file of the wrong kind is refused before any work."""
    cfg = TokenizerConfig(
        tokenizer_type=args.tokenizer_type,
        tokenizer_model=getattr(args, "tokenizer_model", None),
        vocab_file=getattr(args, "vocab_file", None),
        merge_file=getattr(args, "merge_file", None),
        vocab_size=getattr(args, "vocab_size", None),
    )
    if cfg.tokenizer_model or cfg.vocab_file or cfg.merge_file:
        build_tokenizer(cfg)  # raises TokenizerFileError naming the file
    return cfg


def build_tokenizer(cfg: TokenizerConfig) -> "Tokenizer":
    """Instantiate the tokenizer described by ``cfg``."""
    t = cfg.tokenizer_type
    if t in ("SentencePieceTokenizer", "GPTSentencePieceTokenizer"):
        return SentencePieceTokenizer(cfg.tokenizer_model)
    if t == "GPT2BPETokenizer":
        return GPT2BPETokenizer(cfg.vocab_file, cfg.merge_file)
    if t.startswith("BertWordPiece"):
        return BertWordPieceTokenizer(cfg.vocab_file, lower_case=bool(cfg.lower_case))
    if t == "HuggingFaceTokenizer":
        return HuggingFaceTokenizer(cfg.tokenizer_model)
    if t == "NullTokenizer":
        return NullTokenizer(int(cfg.vocab_size))
    if t == "ByteTokenizer":
        return ByteTokenizer()
    raise ValueError(f"unknown tokenizer type {t!r}")  # unreachable: validated in the config


# ----------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------


class Tokenizer:
    """Common interface. Subclasses fill ``self._special`` (role -> id) and implement the codec."""

    name = "Tokenizer"

    def __init__(self, identity: Dict[str, str]) -> None:
        self._special: Dict[str, int] = {}
        self._identity = identity

    # -- codec --------------------------------------------------------------------------------
    def tokenize(self, text: str) -> List[int]:
        raise NotImplementedError

    def detokenize(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    @property
    def vocab(self) -> Dict[str, int]:
        raise NotImplementedError

    @property
    def inv_vocab(self) -> Dict[int, str]:
        """id -> token in id order (cached: megatron-core's BERT dataset looks it up per token).

        The order matters: megatron-core's BERT dataset draws its random replacement tokens as
        ``list(inv_vocab)[randint(...)]``. Hugging Face's ``get_vocab()`` order differs from one
        process to the next, which gave every process (each rank, each resumed run) other tokens."""
        cache = getattr(self, "_inv_vocab_cache", None)
        if cache is None:
            cache = {i: t for t, i in sorted(self.vocab.items(), key=lambda item: item[1])}
            self._inv_vocab_cache = cache
        return cache

    # -- special tokens -----------------------------------------------------------------------
    def _get_special(self, role: str) -> int:
        if role not in self._special:
            raise MissingSpecialTokenError(f"{self.name} has no {role} token")
        return self._special[role]

    @property
    def special_tokens(self) -> Dict[str, int]:
        """The special roles this tokenizer has, role -> id."""
        return dict(self._special)

    eod = property(lambda self: self._get_special("eod"))
    pad = property(lambda self: self._get_special("pad"))
    cls = property(lambda self: self._get_special("cls"))
    sep = property(lambda self: self._get_special("sep"))
    mask = property(lambda self: self._get_special("mask"))
    bos = property(lambda self: self._get_special("bos"))
    eos = property(lambda self: self._get_special("eos"))
    unk = property(lambda self: self._get_special("unk"))

    @property
    def unique_identifiers(self) -> "OrderedDict[str, str]":
        ident = OrderedDict(cls=type(self).__name__)
        ident.update(self._identity)
        return ident

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, special={self._special})"


def _first_present(vocab: Dict[str, int], candidates: Sequence[str]) -> Optional[int]:
    for c in candidates:
        if c in vocab:
            return vocab[c]
    return None


def _abs(path: Optional[str]) -> str:
    return os.path.abspath(path) if path else ""


# ----------------------------------------------------------------------------------------------
# SentencePiece
# ----------------------------------------------------------------------------------------------

# Candidate pieces per role, first match wins (ours from tools/train_tokenizer.py come first).
_SP_CANDIDATES = {
    "eod": ("<eod>", "<|endoftext|>", "[EOD]"),
    "cls": ("<cls>", "[CLS]", "<CLS>"),
    "sep": ("<sep>", "[SEP]", "<SEP>"),
    "mask": ("<mask>", "[MASK]", "<MASK>"),
    "pad": ("<pad>", "[PAD]", "<PAD>"),
}


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model. Roles come from the model (bos/eos/unk/pad ids, then the pieces in
    ``_SP_CANDIDATES``). eod falls back to eos; a role still missing is appended after the model's
    pieces (like Megatron-LM), so ``vocab_size`` may exceed the model's piece count."""

    name = "SentencePieceTokenizer"

    def __init__(self, model_path: str) -> None:
        import sentencepiece as spm

        if os.path.isdir(model_path):
            raise TokenizerFileError(f"--tokenizer-model {model_path} is a directory: {self.name} needs a SentencePiece "
                                     ".model file (a Hugging Face tokenizer directory needs --tokenizer-type "
                                     "HuggingFaceTokenizer)")
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"--tokenizer-model {model_path!r} is not a file")
        super().__init__({"tokenizer_model": _abs(model_path)})
        try:
            self._sp = spm.SentencePieceProcessor(model_file=model_path)
        except (RuntimeError, OSError) as e:
            raise TokenizerFileError(
                f"--tokenizer-model {model_path} is not a SentencePiece model ({_first_line(e)}): give the .model file "
                "written by tools/train_tokenizer.py (not its .vocab, nor a text file)") from None
        n = self._sp.get_piece_size()
        self._vocab = {self._sp.id_to_piece(i): i for i in range(n)}
        self._extra: Dict[int, str] = {}
        for role, getter in (("bos", self._sp.bos_id), ("eos", self._sp.eos_id),
                             ("unk", self._sp.unk_id), ("pad", self._sp.pad_id)):
            if getter() >= 0:
                self._special[role] = getter()
        for role, cands in _SP_CANDIDATES.items():
            if role in self._special:
                continue
            idx = _first_present(self._vocab, cands)
            if idx is not None:
                self._special[role] = idx
        if "eod" not in self._special and "eos" in self._special:
            self._special["eod"] = self._special["eos"]
        for role in ("eod", "cls", "sep", "mask", "pad"):
            if role not in self._special:
                idx = n + len(self._extra)
                self._extra[idx] = _SP_CANDIDATES[role][0]
                self._special[role] = idx

    def tokenize(self, text: str) -> List[int]:
        return self._sp.encode(text)

    def detokenize(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        if not self._extra:
            return self._sp.decode(ids)
        out, run = [], []
        for i in ids:
            if i in self._extra:
                out.append(self._sp.decode(run))
                out.append(self._extra[i])
                run = []
            else:
                run.append(i)
        out.append(self._sp.decode(run))
        return "".join(out)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size() + len(self._extra)

    @property
    def vocab(self) -> Dict[str, int]:
        v = dict(self._vocab)
        v.update({t: i for i, t in self._extra.items()})
        return v


# ----------------------------------------------------------------------------------------------
# Hugging Face `tokenizers` based: GPT-2 BPE, BERT WordPiece, any tokenizer.json
# ----------------------------------------------------------------------------------------------


class _HFBackedTokenizer(Tokenizer):
    """Shared codec for tokenizers built on a ``tokenizers.Tokenizer``."""

    def __init__(self, tok, identity: Dict[str, str]) -> None:
        super().__init__(identity)
        self._tok = tok

    def _ensure(self, role: str, token: str) -> None:
        """Make ``token`` the id of ``role``, appending it as a special token if absent."""
        idx = self._tok.token_to_id(token)
        if idx is None:
            from tokenizers import AddedToken

            self._tok.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            idx = self._tok.token_to_id(token)
            self._vocab_cache = None
            self._inv_vocab_cache = None
        self._special[role] = idx

    def tokenize(self, text: str) -> List[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def vocab(self) -> Dict[str, int]:
        cache = getattr(self, "_vocab_cache", None)
        if cache is None:
            cache = self._tok.get_vocab(with_added_tokens=True)
            self._vocab_cache = cache
        return cache


class GPT2BPETokenizer(_HFBackedTokenizer):
    """GPT-2 byte-level BPE from a local ``vocab.json`` + ``merges.txt``. eod is
    ``<|endoftext|>`` (appended if the vocabulary lacks it); GPT-2 has no pad/cls/sep/mask."""

    name = "GPT2BPETokenizer"

    def __init__(self, vocab_file: str, merge_file: str) -> None:
        from tokenizers import Tokenizer as HFTok, decoders, models, pre_tokenizers

        for flag, path in (("--vocab-file", vocab_file), ("--merge-file", merge_file)):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{flag} {path!r} is not a file")
        expect = "a GPT-2 vocab.json (a JSON object of token -> id)"
        try:
            with open(vocab_file, encoding="utf-8") as f:
                vocab = json.load(f)
        except (ValueError, OSError) as e:
            raise TokenizerFileError(f"--vocab-file {vocab_file} is not {expect} ({_first_line(e)})") from None
        if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
            raise TokenizerFileError(f"--vocab-file {vocab_file} is not {expect}: it holds a JSON "
                                     f"{type(vocab).__name__}" + (" with values other than ids" if isinstance(vocab, dict) else ""))
        try:
            tok = HFTok(models.BPE.from_file(vocab_file, merge_file))
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad merges file
            raise TokenizerFileError(f"--merge-file {merge_file} is not a GPT-2 merges.txt for --vocab-file {vocab_file} "
                                     f"(one 'left right' pair of vocabulary tokens per line; {_first_line(e)})") from None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        super().__init__(tok, {"vocab_file": _abs(vocab_file), "merge_file": _abs(merge_file)})
        self._ensure("eod", "<|endoftext|>")


class BertWordPieceTokenizer(_HFBackedTokenizer):
    """BERT WordPiece from a local ``vocab.txt`` (lower-cased or cased). Lossy by nature: the
    decoder rejoins ``##`` pieces and may change spacing around punctuation (and case when
    lower-casing). eod is ``[EOD]`` if present, else ``[SEP]`` (a document ends a segment)."""

    name = "BertWordPiece"

    def __init__(self, vocab_file: str, lower_case: bool) -> None:
        from tokenizers import Tokenizer as HFTok, decoders, models, normalizers, pre_tokenizers

        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"--vocab-file {vocab_file!r} is not a file")
        vocab = {}
        try:
            with open(vocab_file, encoding="utf-8") as f:
                for i, line in enumerate(f):
                    token = line.rstrip("\n")
                    if token:
                        vocab[token] = i
        except UnicodeDecodeError:
            raise TokenizerFileError(f"--vocab-file {vocab_file} is not a BERT WordPiece vocab.txt (one token per line, "
                                     f"UTF-8): {_first_non_utf8(vocab_file)} is not UTF-8") from None
        if "[UNK]" not in vocab:
            raise ValueError(f"--vocab-file {vocab_file!r} has no [UNK] token (not a BERT vocab?)")
        tok = HFTok(models.WordPiece(vocab, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lower_case
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        super().__init__(tok, {"vocab_file": _abs(vocab_file), "lower_case": str(lower_case)})
        self.name = "BertWordPieceLowerCase" if lower_case else "BertWordPieceCase"
        for role, token in (("unk", "[UNK]"), ("cls", "[CLS]"), ("sep", "[SEP]"),
                            ("mask", "[MASK]"), ("pad", "[PAD]")):
            self._ensure(role, token)
        eod = self._tok.token_to_id("[EOD]")
        self._special["eod"] = eod if eod is not None else self._special["sep"]
        self._special["bos"] = self._special["cls"]
        self._special["eos"] = self._special["sep"]

    def detokenize(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


_HF_ROLE_KEYS = {
    "bos": "bos_token", "eos": "eos_token", "unk": "unk_token", "pad": "pad_token",
    "cls": "cls_token", "sep": "sep_token", "mask": "mask_token",
}


class HuggingFaceTokenizer(_HFBackedTokenizer):
    """Any tokenizer saved as a local directory with a ``tokenizer.json``. Roles are read from
    ``special_tokens_map.json`` / ``tokenizer_config.json`` when present, else guessed from common
    token strings. eod is the eos token (or ``<|endoftext|>``), appended if nothing fits."""

    name = "HuggingFaceTokenizer"

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer as HFTok

        if os.path.isdir(path):
            tok_file = os.path.join(path, "tokenizer.json")
        else:
            tok_file, path = path, os.path.dirname(path)
        if not os.path.isfile(tok_file):
            raise FileNotFoundError(
                f"--tokenizer-model {path!r}: no tokenizer.json there (save the tokenizer with "
                "save_pretrained() or tokenizers.Tokenizer.save())"
            )
        try:
            backend = HFTok.from_file(tok_file)
        except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise TokenizerFileError(f"--tokenizer-model {tok_file} is not a Hugging Face tokenizer.json "
                                     f"({_first_line(e)}): give the directory written by save_pretrained()") from None
        super().__init__(backend, {"tokenizer_model": _abs(tok_file)})
        declared: Dict[str, str] = {}
        for fname in ("tokenizer_config.json", "special_tokens_map.json"):
            fpath = os.path.join(path, fname)
            if os.path.isfile(fpath):
                try:
                    with open(fpath, encoding="utf-8") as f:
                        data = json.load(f)
                except ValueError as e:
                    raise TokenizerFileError(f"--tokenizer-model {path}: {fpath} is not JSON ({_first_line(e)}); "
                                             f"fix it or remove it (the tokenizer.json is enough)") from None
                if not isinstance(data, dict):
                    raise TokenizerFileError(f"--tokenizer-model {path}: {fpath} holds a JSON {type(data).__name__}, "
                                             "not an object; fix it or remove it")
                for role, key in _HF_ROLE_KEYS.items():
                    value = data.get(key)
                    if isinstance(value, dict):
                        value = value.get("content")
                    if isinstance(value, str):
                        declared[role] = value
        guesses = {
            "bos": ("<s>", "<|begin_of_text|>", "[BOS]", "<bos>"),
            "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "[EOS]", "<eos>"),
            "unk": ("<unk>", "[UNK]"),
            "pad": ("<pad>", "[PAD]"),
            "cls": ("<cls>", "[CLS]"),
            "sep": ("<sep>", "[SEP]"),
            "mask": ("<mask>", "[MASK]"),
        }
        vocab = self.vocab
        for role, cands in guesses.items():
            token = declared.get(role)
            idx = vocab.get(token) if token is not None else _first_present(vocab, cands)
            if idx is not None:
                self._special[role] = idx
        eod = _first_present(vocab, ("<|endoftext|>", "<eod>", "[EOD]"))
        if eod is None:
            eod = self._special.get("eos")
        if eod is None:
            self._ensure("eod", "<|endoftext|>")
        else:
            self._special["eod"] = eod


# ----------------------------------------------------------------------------------------------
# Synthetic tokenizers for tests and benchmarks
# ----------------------------------------------------------------------------------------------


class NullTokenizer(Tokenizer):
    """Megatron-LM's NullTokenizer: the text is space-separated integer ids already; eod is
    ``vocab_size`` (so the reported vocab size is ``vocab_size + 1``)."""

    name = "NullTokenizer"

    def __init__(self, vocab_size: int) -> None:
        super().__init__({"vocab_size": str(vocab_size)})
        self._n = int(vocab_size)
        self._special = {"eod": self._n}

    def tokenize(self, text: str) -> List[int]:
        ids = [int(x) for x in text.split()]
        bad = [i for i in ids if not 0 <= i < self._n]
        if bad:
            raise ValueError(f"NullTokenizer: ids {bad[:5]} outside [0, {self._n})")
        return ids

    def detokenize(self, ids: Iterable[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    @property
    def vocab_size(self) -> int:
        return self._n + 1

    @property
    def vocab(self) -> Dict[str, int]:
        return {str(i): i for i in range(self._n + 1)}


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as ids 0..255, then the specials eod, pad, bos, cls, sep, mask, unk
    (256..262). Lossless for any text; handy for tests."""

    name = "ByteTokenizer"
    _ROLES = ("eod", "pad", "bos", "cls", "sep", "mask", "unk")

    def __init__(self) -> None:
        super().__init__({})
        self._special = {role: 256 + i for i, role in enumerate(self._ROLES)}
        self._special["eos"] = self._special["eod"]

    def tokenize(self, text: str) -> List[int]:
        return list(text.encode("utf-8"))

    def detokenize(self, ids: Iterable[int]) -> str:
        data = bytes(i for i in (int(x) for x in ids) if i < 256)
        return data.decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return 256 + len(self._ROLES)

    @property
    def vocab(self) -> Dict[str, int]:
        v = {f"<0x{i:02X}>": i for i in range(256)}
        v.update({f"<{r}>": 256 + i for i, r in enumerate(self._ROLES)})
        return v
