#!/usr/bin/env python
"""Build the offline sample corpus (docstrings of the pinned packages, cleaned into prose).

    python tools/build_sample_corpus.py --output-dir data/sample            # corpus only
    python tools/build_sample_corpus.py --output-dir data/sample --prepare  # + tokenizer + .bin/.idx

writes train/valid/test.jsonl, test.txt (raw held-out text) and lambada_style.jsonl; with
--prepare also a SentencePiece model and the indexed datasets (steps already done are skipped).
Prints the corpus checksum and the source package versions it was read from.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data import paths  # noqa: E402
from megatron.data.sample_corpus import (  # noqa: E402
    CorpusConfig, build_sample_corpus, corpus_checksum, prepare_sample_data, source_versions)


def build_parser() -> argparse.ArgumentParser:
    from megatron.training.cli import OneLineErrorParser

    p = OneLineErrorParser(prog="build_sample_corpus.py", description=__doc__.split("\n\n")[0])
    paths.declare(p.add_argument("--output-dir", required=True), paths.OUTPUT_DIR,
                  "a directory for the corpus (created if missing; steps already done there are skipped)")
    p.add_argument("--max-bytes", type=int, default=CorpusConfig.max_bytes,
                   help="Stop collecting text after this many bytes.")
    p.add_argument("--valid-fraction", type=float, default=CorpusConfig.valid_fraction)
    p.add_argument("--test-fraction", type=float, default=CorpusConfig.test_fraction)
    p.add_argument("--include-stdlib", action="store_true",
                   help="Also read the Python standard library (more text, but the corpus then "
                        "changes with the Python patch release).")
    p.add_argument("--prepare", action="store_true",
                   help="Also train the tokenizer and preprocess (prepare_sample_data).")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    p.add_argument("--workers", type=int, default=2)
    return p


@paths.exit_code
def main(argv=None) -> int:
    args = paths.parse_checked(build_parser(), argv)
    cfg = CorpusConfig(max_bytes=args.max_bytes, valid_fraction=args.valid_fraction,
                       test_fraction=args.test_fraction, include_stdlib=args.include_stdlib)
    t0 = time.time()
    if args.prepare:
        written = prepare_sample_data(args.output_dir, vocab_size=args.vocab_size,
                                      model_type=args.model_type, corpus=cfg, workers=args.workers)
    else:
        written = build_sample_corpus(args.output_dir, cfg)
        written["corpus_sha256"] = corpus_checksum(written)
    print(json.dumps(written, indent=1))
    print("sources: " + ", ".join(f"{k} {v or 'missing'}" for k, v in source_versions(cfg).items()))
    print(f"done in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
