"""JSONL -> megatron-core indexed datasets (the library behind tools/preprocess_data.py).

Lines are read as bytes, cut into chunks and tokenized by a ``multiprocessing.Pool`` with
``imap`` (ordered), so the output is byte-for-byte the same for any ``--workers`` and
``--partitions``. Every line that cannot become a document is counted with its line number and
reason; ``strict=True`` turns the first one into a :class:`PreprocessError`. Files are written in a
staging directory and moved into place at the very end (see :mod:`megatron.data.atomic`).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from megatron.data.atomic import StagedOutputs
from megatron.data.paths import removed_on_failure
from megatron.data.sentence_splitter import split_sentences
from megatron.data.tokenizers import TokenizerConfig, build_tokenizer

# Skip reasons (the summary groups by these).
BLANK_LINE = "blank line"
INVALID_UTF8 = "invalid UTF-8"
MALFORMED_JSON = "malformed JSON"
NOT_AN_OBJECT = "not a JSON object"
MISSING_KEY = "missing key"
NON_STRING = "non-string value"
EMPTY_DOCUMENT = "empty document"
TOKENIZER_ERROR = "tokenizer error"


class PreprocessError(RuntimeError):
    """A bad input line under ``strict``, or an unusable input."""


@dataclass
class PreprocessConfig:
    input: str
    output_prefix: str
    tokenizer: TokenizerConfig
    json_keys: Sequence[str] = ("text",)
    append_eod: bool = False
    split_sentences: bool = False
    workers: int = 1
    partitions: int = 1
    chunk_lines: int = 64  # lines per task sent to a worker
    log_interval: int = 10000  # documents between progress lines when not on a terminal
    strict: bool = False
    progress: Optional[bool] = None  # None: a tqdm bar when stderr is a terminal

    def __post_init__(self) -> None:
        if not os.path.isfile(self.input):
            raise FileNotFoundError(f"--input {self.input!r} does not exist")
        if self.output_prefix.endswith(("/", os.sep)) or os.path.isdir(self.output_prefix):
            name = os.path.join(self.output_prefix, "corpus")
            raise ValueError(f"--output-prefix {self.output_prefix!r} names a directory; give a file prefix such as "
                             f"{name!r} (writes {name}_text_document.bin/.idx)")
        self.json_keys = list(self.json_keys)
        if not self.json_keys or len(set(self.json_keys)) != len(self.json_keys):
            raise ValueError(f"--json-keys must be distinct and non-empty, got {self.json_keys}")
        for name in ("workers", "partitions", "chunk_lines", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # More tokenizer processes than cores only cost memory (the output is the same for any
        # number): --workers 100000 forked thousands of processes.
        self.workers = min(self.workers, os.cpu_count() or 1)

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"

    def output_prefix_for(self, key: str) -> str:
        return f"{self.output_prefix}_{key}_{self.level}"


@dataclass
class PreprocessSummary:
    lines: int = 0
    documents: int = 0
    sentences: int = 0
    tokens: int = 0
    input_bytes: int = 0
    seconds: float = 0.0
    skipped: List[Tuple[int, str, str]] = field(default_factory=list)  # (line, reason, detail)
    outputs: Dict[str, str] = field(default_factory=dict)  # json key -> dataset prefix

    def skipped_by_reason(self) -> "OrderedDict[str, List[int]]":
        out: "OrderedDict[str, List[int]]" = OrderedDict()
        for line, reason, _ in self.skipped:
            out.setdefault(reason, []).append(line)
        return out

    def format(self, max_lines: int = 20) -> str:
        secs = max(self.seconds, 1e-9)
        rows = [
            f"input lines:     {self.lines}",
            f"documents:       {self.documents}",
            f"sentences:       {self.sentences}",
            f"tokens:          {self.tokens}",
            f"input size:      {self.input_bytes / 1e6:.2f} MB",
            f"time:            {self.seconds:.2f} s ({self.documents / secs:.0f} docs/s, "
            f"{self.input_bytes / 1e6 / secs:.2f} MB/s)",
            f"skipped lines:   {len(self.skipped)}",
        ]
        for reason, lines in self.skipped_by_reason().items():
            shown = ", ".join(map(str, lines[:max_lines]))
            more = f", ... ({len(lines) - max_lines} more)" if len(lines) > max_lines else ""
            rows.append(f"  {reason}: {len(lines)} (lines {shown}{more})")
        for key, prefix in self.outputs.items():
            rows.append(f"output [{key}]: {prefix}.bin / .idx")
        return "\n".join(rows)

    def to_dict(self) -> dict:
        return {
            "lines": self.lines, "documents": self.documents, "sentences": self.sentences,
            "tokens": self.tokens, "input_bytes": self.input_bytes, "seconds": self.seconds,
            "skipped": [{"line": l, "reason": r, "detail": d} for l, r, d in self.skipped],
            "outputs": dict(self.outputs),
        }


# ----------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------


class LineEncoder:
    """Turns one raw JSONL line into token arrays per key, or a skip reason."""

    def __init__(self, cfg: PreprocessConfig) -> None:
        self.tokenizer = build_tokenizer(cfg.tokenizer)
        self.keys = list(cfg.json_keys)
        self.append_eod = cfg.append_eod
        self.split = cfg.split_sentences
        from megatron.core.datasets.indexed_dataset import DType

        self.dtype = DType.optimal_dtype(self.tokenizer.vocab_size)

    def encode(self, raw: bytes):
        """Returns ``(None, {key: (ids, lengths)})`` or ``((reason, detail), None)``."""
        if not raw.strip():
            return (BLANK_LINE, ""), None
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return (INVALID_UTF8, f"bad byte at offset {e.start}"), None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            return (MALFORMED_JSON, f"{e.msg} at column {e.colno}"), None
        if not isinstance(obj, dict):
            return (NOT_AN_OBJECT, type(obj).__name__), None
        out = {}
        for key in self.keys:
            if key not in obj:
                return (MISSING_KEY, repr(key)), None
            text = obj[key]
            if not isinstance(text, str):
                return (NON_STRING, f"{key!r} is {type(text).__name__}"), None
            if not text.strip():
                return (EMPTY_DOCUMENT, f"{key!r} is blank"), None
            pieces = split_sentences(text) if self.split else [text]
            try:
                seqs = [ids for ids in (self.tokenizer.tokenize(p) for p in pieces) if len(ids)]
            except Exception as e:  # noqa: BLE001 - reported with the line number, never dropped
                return (TOKENIZER_ERROR, f"{key!r}: {type(e).__name__}: {e}"), None
            if not seqs:
                return (EMPTY_DOCUMENT, f"{key!r} has no tokens"), None
            if self.append_eod:
                seqs[-1] = list(seqs[-1]) + [self.tokenizer.eod]
            lengths = [len(s) for s in seqs]
            flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=sum(lengths))
            out[key] = (flat.astype(self.dtype), lengths)
        return None, out

    def encode_chunk(self, chunk: Tuple[int, List[bytes]]):
        first_line, lines = chunk
        return first_line, [self.encode(raw) for raw in lines], sum(len(r) + 1 for r in lines)


_WORKER_ENCODER: Optional[LineEncoder] = None


def _init_worker(cfg: PreprocessConfig) -> None:
    global _WORKER_ENCODER
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER_ENCODER = LineEncoder(cfg)


def _encode_chunk_in_worker(chunk):
    return _WORKER_ENCODER.encode_chunk(chunk)


# ----------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------


def _count_lines(path: str) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            n += block.count(b"\n")
            last = block[-1:]
    return n + (0 if last == b"\n" else 1)


def _read_chunks(path: str, first: int, last: int, chunk_lines: int) -> Iterator[Tuple[int, List[bytes]]]:
    """Chunks of raw lines with 1-based numbers in [first, last] (both inclusive)."""
    chunk: List[bytes] = []
    start = first
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno < first:
                continue
            if lineno > last:
                break
            if not chunk:
                start = lineno
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark (Windows editors): not part of the first document
            chunk.append(raw.rstrip(b"\r\n") if raw.endswith(b"\n") else raw)
            if len(chunk) == chunk_lines:
                yield start, chunk
                chunk = []
    if chunk:
        yield start, chunk


class _Progress:
    """A tqdm bar over input bytes on a terminal; otherwise a line every ``log_interval`` docs."""

    def __init__(self, total_bytes: int, log_interval: int, enabled: Optional[bool]) -> None:
        self.t0 = time.time()
        self.docs = 0
        self.bytes = 0
        self.log_interval = log_interval
        self._next_log = log_interval
        use_bar = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1000,
                            desc="preprocess", file=sys.stderr, mininterval=0.5)

    def update(self, docs: int, nbytes: int) -> None:
        self.docs += docs
        self.bytes += nbytes
        dt = max(time.time() - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(nbytes)
            self.bar.set_postfix_str(f"{self.docs} docs, {self.docs / dt:.0f} docs/s", refresh=False)
        elif self.docs >= self._next_log:
            print(f"[preprocess] {self.docs} documents ({self.docs / dt:.0f} docs/s, "
                  f"{self.bytes / 1e6 / dt:.2f} MB/s)", file=sys.stderr, flush=True)
            self._next_log = (self.docs // self.log_interval + 1) * self.log_interval

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def preprocess(cfg: PreprocessConfig) -> PreprocessSummary:
    """Tokenize ``cfg.input`` into ``{output_prefix}_{key}_{document|sentence}.bin/.idx``."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    t0 = time.time()
    summary = PreprocessSummary()
    encoder = LineEncoder(cfg)  # also validates the tokenizer before any worker starts
    total_lines = _count_lines(cfg.input)
    summary.lines = total_lines
    out_dir = os.path.dirname(os.path.abspath(cfg.output_prefix))
    # No more parts than lines: each part is a staged .bin/.idx pair (the output is the same for any number).
    cfg.partitions = max(1, min(cfg.partitions, total_lines))
    bounds = np.linspace(0, total_lines, cfg.partitions + 1).round().astype(int)
    progress = _Progress(os.path.getsize(cfg.input), cfg.log_interval, cfg.progress)
    pool = None
    try:
        with removed_on_failure(out_dir), StagedOutputs(out_dir, os.path.basename(cfg.output_prefix)) as staged:
            finals = {k: staged.staged_prefix(cfg.output_prefix_for(k)) for k in cfg.json_keys}
            if cfg.workers > 1:
                ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
                pool = ctx.Pool(cfg.workers, initializer=_init_worker, initargs=(cfg,))
            part_prefixes: Dict[str, List[str]] = {k: [] for k in cfg.json_keys}
            for p in range(cfg.partitions):
                first, last = int(bounds[p]) + 1, int(bounds[p + 1])
                if cfg.partitions == 1:
                    targets = finals
                else:
                    targets = {k: staged.scratch_prefix(f"{k}_part{p}") for k in cfg.json_keys}
                    os.makedirs(os.path.dirname(next(iter(targets.values()))), exist_ok=True)
                builders = {k: IndexedDatasetBuilder(targets[k] + ".bin", dtype=encoder.dtype)
                            for k in cfg.json_keys}
                chunks = _read_chunks(cfg.input, first, last, cfg.chunk_lines)
                results = (pool.imap(_encode_chunk_in_worker, chunks) if pool is not None
                           else map(encoder.encode_chunk, chunks))
                for first_line, encoded, nbytes in results:
                    docs = 0
                    for offset, (skip, out) in enumerate(encoded):
                        if skip is not None:
                            lineno = first_line + offset
                            if cfg.strict:
                                raise PreprocessError(
                                    f"{cfg.input}:{lineno}: {skip[0]} ({skip[1]}); "
                                    "fix the line or run without --strict to skip it")
                            summary.skipped.append((lineno, skip[0], skip[1]))
                            continue
                        for key in cfg.json_keys:
                            ids, lengths = out[key]
                            builders[key].add_document(ids, lengths)
                            if key == cfg.json_keys[0]:
                                summary.sentences += len(lengths)
                            summary.tokens += int(ids.size)
                        docs += 1
                    summary.documents += docs
                    summary.input_bytes += nbytes
                    progress.update(docs, nbytes)
                for key in cfg.json_keys:
                    builders[key].finalize(targets[key] + ".idx")
                    part_prefixes[key].append(targets[key])
            if cfg.partitions > 1:
                for key in cfg.json_keys:
                    merged = IndexedDatasetBuilder(finals[key] + ".bin", dtype=encoder.dtype)
                    for part in part_prefixes[key]:
                        merged.add_index(part)
                    merged.finalize(finals[key] + ".idx")
            if summary.documents == 0:
                raise PreprocessError(
                    f"no document in {cfg.input} could be used ({len(summary.skipped)} lines "
                    f"skipped): {summary.format(max_lines=10)}")
            staged.commit()
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    summary.seconds = time.time() - t0
    summary.outputs = {k: cfg.output_prefix_for(k) for k in cfg.json_keys}
    return summary
