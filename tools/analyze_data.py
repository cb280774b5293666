#!/usr/bin/env python
"""Write per-sequence curriculum difficulty next to megatron-core indexed datasets.

    python tools/analyze_data.py --data-path 0.7 data/a_text_document 0.3 data/b_text_document \
        --metric vocab_rarity seqlen --workers 2

writes, for each prefix of the blend, {prefix}.difficulty.{metric}.npy (one float per sequence)
and {prefix}.token_counts.npy (the blend's token counts), which --curriculum-metric vocab_rarity
reads. Parallel over --workers processes; rerun after an interruption to resume (finished chunks
are kept in {prefix}.analyze_parts/ until the end). Prints sequences/s. See docs/curriculum.md.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import megatron.runtime  # noqa: E402,F401  (quiets megatron-core's optional-dependency notices)

from megatron.curriculum.analyzer import ANALYZER_METRICS, analyze  # noqa: E402
from megatron.data import paths  # noqa: E402
from megatron.data.config import parse_blend  # noqa: E402
from megatron.training.cli import OneLineErrorParser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineErrorParser(prog="analyze_data.py", description=__doc__.split("\n\n")[0])
    paths.declare(ap.add_argument("--data-path", nargs="+", required=True,
                                  help="Prefix, or blend 'w1 prefix1 w2 prefix2 ...'."), paths.INPUT_DATASET)
    ap.add_argument("--metric", nargs="+", choices=ANALYZER_METRICS, default=list(ANALYZER_METRICS))
    ap.add_argument("--workers", type=int, default=1, help="Worker processes.")
    ap.add_argument("--chunk-sequences", type=int, default=4096, help="Sequences per work item (and per resume unit).")
    ap.add_argument("--vocab-size", type=int, default=None, help="Token-count table size (default: largest id + 1).")
    ap.add_argument("--keep-parts", action="store_true", help="Keep the per-chunk results after finishing.")
    return ap


def main(argv=None) -> None:
    ap = build_parser()
    a = paths.parse_checked(ap, argv)
    try:
        prefixes, _ = parse_blend(a.data_path)
        for p in prefixes:  # the results are written next to each dataset
            paths.check_output_prefix("--data-path", p, "the results go next to the dataset")
    except ValueError as e:
        paths.fail(ap.prog, e)
    from megatron.curriculum.analyzer import _index

    n = sum(len(_index(p)[0]) for p in prefixes)
    tokens = sum(int(_index(p)[0].sum()) for p in prefixes)
    t0 = time.time()
    written = analyze(prefixes, a.metric, a.workers, a.chunk_sequences, a.vocab_size, a.keep_parts)
    dt = time.time() - t0
    for p, files in written.items():
        for metric, path in files.items():
            print(f"[analyze] {metric}: {path}")
    print(f"[analyze] {n:,} sequences ({tokens:,} tokens) in {dt:.2f}s ({n / max(dt, 1e-9):,.0f} sequences/s, "
          f"{tokens / max(dt, 1e-9) / 1e6:,.1f}M tokens/s, {a.workers} worker(s))")


if __name__ == "__main__":
    main()
