#!/usr/bin/env python
"""Time tools/preprocess_data.py with 1 and 2 (or more) workers on a ~100 MB JSONL file.

    python tools/benchmark_preprocess.py --work-dir /tmp/bench --size-mb 100 --workers 1 2

Without --input it generates the file from real text (standard-library docstrings, paragraphs
drawn at random into 1-4 KB documents). Without a tokenizer flag it trains a 4096-piece
SentencePiece BPE model on the first MBs of the file. Prints documents/s and MB/s per run and checks
that every run wrote identical bytes.
"""

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import megatron.runtime  # noqa: E402,F401  (quiets megatron-core's optional-dependency notices)

from megatron.data.preprocess import PreprocessConfig, preprocess  # noqa: E402
from megatron.data.tokenizers import TokenizerConfig  # noqa: E402


def generate(path: str, size_mb: float, seed: int = 0) -> None:
    from megatron.data.sample_corpus import CorpusConfig, collect_documents

    paragraphs = [p for d in collect_documents(CorpusConfig(max_bytes=3_000_000, packages=(), include_stdlib=True))
                  for p in d.split("\n\n")]
    rng = random.Random(seed)
    target = int(size_mb * 1e6)
    written = 0
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        while written < target:
            n_chars = rng.randint(1000, 4000)
            doc, length = [], 0
            while length < n_chars:
                p = rng.choice(paragraphs)
                doc.append(p)
                length += len(p) + 2
            line = json.dumps({"text": "\n\n".join(doc)}) + "\n"
            f.write(line)
            written += len(line.encode())
    os.replace(path + ".tmp", path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", default="/tmp/megatron_ltd_preprocess_bench")
    p.add_argument("--input", default=None, help="Use this JSONL instead of generating one.")
    p.add_argument("--size-mb", type=float, default=100.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tokenizer-type", default=None)
    p.add_argument("--tokenizer-model", default=None)
    p.add_argument("--vocab-file", default=None)
    p.add_argument("--merge-file", default=None)
    args = p.parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    inp = args.input or os.path.join(args.work_dir, f"bench_{args.size_mb:g}mb.jsonl")
    if not os.path.exists(inp):
        t0 = time.time()
        generate(inp, args.size_mb)
        print(f"generated {inp} ({os.path.getsize(inp) / 1e6:.1f} MB) in {time.time() - t0:.1f} s")
    if args.tokenizer_type:
        tok = TokenizerConfig(args.tokenizer_type, tokenizer_model=args.tokenizer_model,
                              vocab_file=args.vocab_file, merge_file=args.merge_file)
    else:
        from megatron.data.train_tokenizer import SentencePieceTrainConfig, train_sentencepiece

        model = os.path.join(args.work_dir, "bench_spm4096.model")
        if not os.path.exists(model):
            train_sentencepiece(SentencePieceTrainConfig(
                inputs=[inp], model_prefix=model[:-6], vocab_size=4096,
                max_input_chars=5_000_000))
        tok = TokenizerConfig("SentencePieceTokenizer", tokenizer_model=model)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"tokenizer: {tok.tokenizer_type} {tok.tokenizer_model or tok.vocab_file or ''}")
    digests = {}
    print(f"{'workers':>7} {'docs':>8} {'tokens':>11} {'MB':>7} {'seconds':>8} {'docs/s':>8} "
          f"{'MB/s':>6}")
    for w in args.workers:
        prefix = os.path.join(args.work_dir, f"bench_w{w}")
        s = preprocess(PreprocessConfig(input=inp, output_prefix=prefix, tokenizer=tok,
                                        append_eod=True, workers=w, progress=False,
                                        log_interval=10**9))
        h = hashlib.sha256()
        for ext in (".bin", ".idx"):
            with open(s.outputs["text"] + ext, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
        digests[w] = h.hexdigest()
        print(f"{w:>7} {s.documents:>8} {s.tokens:>11} {s.input_bytes / 1e6:>7.1f} "
              f"{s.seconds:>8.2f} {s.documents / s.seconds:>8.0f} "
              f"{s.input_bytes / 1e6 / s.seconds:>6.2f}", flush=True)
    same = len(set(digests.values())) == 1
    print(f"outputs identical across worker counts: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
