"""An offline sample corpus of real English text, and the one-call data preparation for the demo.

The text is the documentation already on every machine that runs this project: the docstrings of
the packages the project installs (torch, numpy, matplotlib, megatron-core, ... and their pinned
dependencies), read with ``ast`` from the source files (nothing is imported or executed), cleaned
into prose paragraphs (no code examples, parameter tables, directives or URLs) and de-duplicated.
Packages are read in a fixed order, files in sorted order, and documents are assigned to
train/valid/test by a hash of their text, so the corpus is a pure function of the source packages'
versions. By default only packages whose versions the constraints file fixes are read (not the
Python standard library, not pip or setuptools, which vary with the Python build): a machine that
installs the pinned versions gets the same corpus byte for byte. :func:`source_versions` names
those versions and :func:`corpus_checksum` fingerprints the result, so a run can tell whether its
corpus is the one the README's numbers came from.

:func:`prepare_sample_data` builds the corpus, trains a SentencePiece tokenizer on the train part
and preprocesses train/valid/test into indexed datasets, skipping every step whose outputs exist
with the same settings (a ``manifest.json`` records them).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import sysconfig
import time
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

# Module -> the distribution that ships it (whose version decides the text). Every one is a
# dependency of the project (direct, or of torch / matplotlib / tensorboard) and pinned by the
# constraints file; the order is the corpus order.
SOURCE_DISTRIBUTIONS = {
    "numpy": "numpy", "torch": "torch", "matplotlib": "matplotlib", "tqdm": "tqdm",
    "packaging": "packaging", "megatron.core": "megatron-core", "tensorboard": "tensorboard",
    "google.protobuf": "protobuf", "PIL": "pillow", "jinja2": "Jinja2", "sympy": "sympy",
    "networkx": "networkx",
}
DEFAULT_PACKAGES = tuple(SOURCE_DISTRIBUTIONS)
_SKIP_DIRS = {"test", "tests", "testing", "idle_test", "__pycache__", "_vendor", "vendor",
              "site-packages", "dist-packages", "lib2to3", "ensurepip", "turtledemo",
              "third_party", "_private"}

_BAD_PARAGRAPH = re.compile(
    r"(>>>|\.\.\.\s|::|^\s*\.\. |https?://|www\.|\{\{|\}\}|\bdef |\bimport |=>|->|"
    r"\b\w+\s*==?\s*\S|^\s*[-=~^*#]{3,}|\\[a-z]+\{|\|)", re.M)
_PARAM_LINE = re.compile(r"^\s*\*{0,2}\w+\s*:\s*\S", re.M)
# Inline markup, replaced by its text: :func:`name`, ``code``, `name`, *emphasis*.
_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]*)`")
_LITERAL = re.compile(r"``([^`]*)``|`([^`]*)`_?|\*\*?([^*\s][^*]*)\*\*?")
_WS = re.compile(r"\s+")


@dataclass
class CorpusConfig:
    max_bytes: int = 8_000_000  # stop collecting after this much text
    min_paragraph_chars: int = 80
    valid_fraction: float = 0.02
    test_fraction: float = 0.02
    packages: Sequence[str] = DEFAULT_PACKAGES
    include_stdlib: bool = False  # varies with the Python patch release: off for reproducibility


def _source_roots(cfg: CorpusConfig) -> List[Tuple[str, str]]:
    """(label, directory) pairs in a fixed order."""
    roots = []
    if cfg.include_stdlib:
        roots.append(("stdlib", sysconfig.get_paths()["stdlib"]))
    for name in cfg.packages:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        roots.append((name, sorted(spec.submodule_search_locations)[0]))
    return roots


def source_versions(cfg: CorpusConfig) -> Dict[str, Optional[str]]:
    """The version of each source the corpus is read from (None: not installed), in corpus order.

    Two machines with the same versions build the same corpus; the stdlib counts as the Python
    version."""
    from importlib import metadata
    import platform

    out: Dict[str, Optional[str]] = {}
    if cfg.include_stdlib:
        out["python-stdlib"] = platform.python_version()
    for name in cfg.packages:
        dist = SOURCE_DISTRIBUTIONS.get(name, name.split(".")[0])
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def corpus_checksum(paths: Dict[str, str]) -> str:
    """SHA-256 over the train/valid/test JSONL files (in that order): the corpus's fingerprint."""
    h = hashlib.sha256()
    for split in ("train", "valid", "test"):
        h.update(split.encode())
        with open(paths[f"{split}_jsonl"], "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tokenizer_fingerprint(model_path: str) -> str:
    """SHA-256 of a SentencePiece model's pieces and scores (the file itself also records the
    path it was trained under, so its bytes differ between directories)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    text = "\n".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i)}" for i in range(sp.get_piece_size()))
    return hashlib.sha256(text.encode()).hexdigest()


def compare_with_expected(checksum: str, versions: Dict[str, Optional[str]], expected: dict) -> List[str]:
    """Differences between this corpus and a recorded one (``{"corpus_sha256", "sources"}``), as
    readable lines; empty when the checksums agree."""
    if checksum == expected.get("corpus_sha256"):
        return []
    lines = [f"corpus checksum {checksum[:16]}... differs from the recorded {str(expected.get('corpus_sha256'))[:16]}..."]
    recorded = expected.get("sources", {})
    for dist in sorted(set(recorded) | set(versions)):
        have, want = versions.get(dist), recorded.get(dist)
        if have != want:
            lines.append(f"  {dist}: installed {have or 'not installed'}, recorded {want or 'not used'}")
    if len(lines) == 1:
        lines.append("  (same source versions: the corpus settings or the cleaning code differ)")
    return lines


def _iter_source_files(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for fname in sorted(filenames):
            if fname.endswith(".py") and not fname.startswith("test_"):
                yield os.path.join(dirpath, fname)


def _docstrings(path: str) -> Iterator[str]:
    try:
        with open(path, "rb") as f:
            tree = ast.parse(f.read(), filename=path)
    except (SyntaxError, ValueError, OSError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def clean_paragraphs(doc: str, min_chars: int = 120) -> List[str]:
    """Prose paragraphs of a docstring, each joined into one line."""
    out = []
    for block in re.split(r"\n\s*\n", doc):
        block = _ROLE.sub(r"\1", block)
        if _BAD_PARAGRAPH.search(block) or _PARAM_LINE.search(block):
            continue
        lines = block.splitlines()
        if any(line.startswith(("    ", "\t")) for line in lines[1:]) and len(lines) > 1 and \
                all(line.startswith(("    ", "\t")) for line in lines[1:]):
            continue  # a definition list ("name\n    description")
        text = _LITERAL.sub(lambda m: next(g for g in m.groups() if g is not None), block)
        text = _WS.sub(" ", text).strip()
        if len(text) < min_chars or not text[0].isupper() or text[-1] not in ".!?":
            continue
        letters = sum(c.isalpha() or c == " " for c in text)
        if letters / len(text) < 0.85 or not text.isascii() or "`" in text:
            continue
        if text.count("(") != text.count(")") or text.count("[") != text.count("]"):
            continue
        words = text.split()
        if len(words) < 12 or sum(w.islower() for w in words) / len(words) < 0.6:
            continue
        out.append(text)
    return out


def _file_paragraphs(args: Tuple[str, int]) -> List[List[str]]:
    """Cleaned paragraphs of each docstring of one file (run in worker processes)."""
    path, min_chars = args
    return [paras for paras in (clean_paragraphs(d, min_chars) for d in _docstrings(path)) if paras]


def collect_documents(cfg: CorpusConfig, workers: int = 0) -> List[str]:
    """Documents (paragraphs of one docstring joined by blank lines), de-duplicated by paragraph,
    in a fixed order. ``workers`` processes parse files (0: one per CPU, at most 4)."""
    import multiprocessing

    files = [(path, cfg.min_paragraph_chars)
             for _, root in _source_roots(cfg) for path in _iter_source_files(root)]
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    seen = set()
    docs: List[str] = []
    total = 0
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        results = (pool.imap(_file_paragraphs, files, chunksize=8) if pool is not None
                   else map(_file_paragraphs, files))
        for per_doc in results:
            for paragraphs in per_doc:
                kept = []
                for p in paragraphs:
                    h = hashlib.md5(p.encode()).digest()
                    if h not in seen:
                        seen.add(h)
                        kept.append(p)
                if kept:
                    text = "\n\n".join(kept)
                    docs.append(text)
                    total += len(text) + 1
            if total >= cfg.max_bytes:
                break
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    return docs


def _bucket(text: str) -> float:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big") / 2.0**64


def lambada_style_items(docs: Sequence[str], min_words: int = 30) -> List[Dict[str, str]]:
    """Passages whose last word is to be predicted: ``{"text", "context", "target"}``.

    The target is the final word of a paragraph (final punctuation removed); only alphabetic
    targets of 3+ letters are used. ``context + " " + target`` re-creates the passage text."""
    items = []
    for doc in docs:
        for para in doc.split("\n\n"):
            words = para.split()
            if len(words) < min_words:
                continue
            body = para.rstrip(".!?\"')")
            context, _, target = body.rpartition(" ")
            if len(target) >= 3 and target.isalpha():
                items.append({"text": f"{context} {target}", "context": context,
                              "target": target})
    return items


def build_sample_corpus(out_dir: str, cfg: Optional[CorpusConfig] = None) -> Dict[str, str]:
    """Write train/valid/test JSONL, a LAMBADA-style file and a raw held-out text file."""
    cfg = cfg or CorpusConfig()
    os.makedirs(out_dir, exist_ok=True)
    docs = collect_documents(cfg)
    if not docs:
        raise RuntimeError("found no documentation text to build a corpus from")
    splits: Dict[str, List[str]] = {"train": [], "valid": [], "test": []}
    for doc in docs:
        b = _bucket(doc)
        name = ("valid" if b < cfg.valid_fraction else
                "test" if b < cfg.valid_fraction + cfg.test_fraction else "train")
        splits[name].append(doc)
    paths = {}

    def _write(path: str, lines: Sequence[str]) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")
        os.replace(tmp, path)

    for name, split_docs in splits.items():
        paths[f"{name}_jsonl"] = os.path.join(out_dir, f"{name}.jsonl")
        _write(paths[f"{name}_jsonl"], [json.dumps({"text": d}) for d in split_docs])
    paths["test_txt"] = os.path.join(out_dir, "test.txt")
    _write(paths["test_txt"], ["\n\n".join(splits["test"])])
    paths["lambada_jsonl"] = os.path.join(out_dir, "lambada_style.jsonl")
    _write(paths["lambada_jsonl"],
           [json.dumps(x) for x in lambada_style_items(splits["test"])])
    return paths


# ----------------------------------------------------------------------------------------------
# One-call preparation for the main job
# ----------------------------------------------------------------------------------------------


def _load_manifest(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return {}


def _save_manifest(path: str, manifest: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def prepare_sample_data(out_dir: str, vocab_size: int = 4096, model_type: str = "bpe",
                        corpus: Optional[CorpusConfig] = None, workers: int = 2,
                        tokenizer_train_chars: int = 4_000_000, verbose: bool = True
                        ) -> Dict[str, str]:
    """Build (or reuse) the sample corpus, a SentencePiece tokenizer and the indexed datasets.

    Returns paths: ``train_jsonl valid_jsonl test_jsonl test_txt lambada_jsonl tokenizer_model
    train_prefix valid_prefix test_prefix`` plus ``tokenizer_type`` ("SentencePieceTokenizer")
    and ``corpus_sha256`` (:func:`corpus_checksum`).
    Each step is skipped when its outputs exist and were made with the same settings."""
    from megatron.data.preprocess import PreprocessConfig, preprocess
    from megatron.data.tokenizers import TokenizerConfig
    from megatron.data.train_tokenizer import SentencePieceTrainConfig, train_sentencepiece

    corpus = corpus or CorpusConfig()
    os.makedirs(out_dir, exist_ok=True)
    manifest_path = os.path.join(out_dir, "manifest.json")
    manifest = _load_manifest(manifest_path)
    log = (lambda msg: print(f"[sample-data] {msg}", flush=True)) if verbose else (lambda m: None)

    def _done(step: str, settings: dict, files: Sequence[str]) -> bool:
        return manifest.get(step) == settings and all(os.path.exists(f) for f in files)

    # 1. corpus
    corpus_settings = {k: list(v) if isinstance(v, (tuple, list)) else v
                       for k, v in asdict(corpus).items()}
    corpus_settings["sources"] = source_versions(corpus)  # an upgraded package rebuilds the corpus
    names = ("train_jsonl", "valid_jsonl", "test_jsonl", "test_txt", "lambada_jsonl")
    files = {"train_jsonl": "train.jsonl", "valid_jsonl": "valid.jsonl", "test_jsonl": "test.jsonl",
             "test_txt": "test.txt", "lambada_jsonl": "lambada_style.jsonl"}
    paths = {n: os.path.join(out_dir, files[n]) for n in names}
    if _done("corpus", corpus_settings, list(paths.values())):
        log("corpus: up to date")
    else:
        t0 = time.time()
        build_sample_corpus(out_dir, corpus)
        manifest = {"corpus": corpus_settings}  # later steps depend on it: redo them
        _save_manifest(manifest_path, manifest)
        log(f"corpus: built in {time.time() - t0:.1f} s "
            f"({os.path.getsize(paths['train_jsonl']) / 1e6:.1f} MB train)")
    paths["corpus_sha256"] = corpus_checksum(paths)

    # 2. tokenizer
    prefix = os.path.join(out_dir, f"spm_{model_type}{vocab_size}")
    tok_settings = {"vocab_size": vocab_size, "model_type": model_type,
                    "max_input_chars": tokenizer_train_chars}
    paths["tokenizer_model"] = prefix + ".model"
    paths["tokenizer_type"] = "SentencePieceTokenizer"
    if _done("tokenizer", tok_settings, [paths["tokenizer_model"]]):
        log("tokenizer: up to date")
    else:
        t0 = time.time()
        train_sentencepiece(SentencePieceTrainConfig(
            inputs=[paths["train_jsonl"]], model_prefix=prefix, vocab_size=vocab_size,
            model_type=model_type, max_input_chars=tokenizer_train_chars))
        manifest = {k: v for k, v in manifest.items() if k == "corpus"}
        manifest["tokenizer"] = tok_settings
        _save_manifest(manifest_path, manifest)
        log(f"tokenizer: trained in {time.time() - t0:.1f} s")

    # 3. indexed datasets
    tok_cfg = TokenizerConfig("SentencePieceTokenizer", tokenizer_model=paths["tokenizer_model"])
    for split in ("train", "valid", "test"):
        out_prefix = os.path.join(out_dir, f"{split}_spm{vocab_size}")
        paths[f"{split}_prefix"] = f"{out_prefix}_text_document"
        step = f"preprocess_{split}"
        settings = {"tokenizer": paths["tokenizer_model"], "append_eod": True}
        if _done(step, settings, [paths[f"{split}_prefix"] + ".idx"]):
            log(f"{split} dataset: up to date")
            continue
        t0 = time.time()
        summary = preprocess(PreprocessConfig(
            input=paths[f"{split}_jsonl"], output_prefix=out_prefix, tokenizer=tok_cfg,
            append_eod=True, workers=workers, progress=False, log_interval=10**9))
        manifest[step] = settings
        _save_manifest(manifest_path, manifest)
        log(f"{split} dataset: {summary.documents} documents, {summary.tokens} tokens in "
            f"{time.time() - t0:.1f} s")
    return paths
