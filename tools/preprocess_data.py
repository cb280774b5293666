#!/usr/bin/env python
"""Tokenize a JSONL corpus into megatron-core indexed datasets (.bin/.idx).

    python tools/preprocess_data.py --input corpus.jsonl --output-prefix data/corpus \
        --tokenizer-type SentencePieceTokenizer --tokenizer-model tok.model \
        --append-eod --workers 2

writes data/corpus_text_document.bin/.idx (``_sentence`` with --split-sentences), prints a summary
(documents, tokens, skipped lines with their line numbers) and a JSON report next to the output.
See docs/data.md.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import megatron.runtime  # noqa: E402,F401  (quiets megatron-core's optional-dependency notices)

from megatron.data import paths  # noqa: E402
from megatron.data.preprocess import PreprocessConfig, PreprocessError, preprocess  # noqa: E402
from megatron.data.tokenizers import add_tokenizer_args, tokenizer_config_from_args  # noqa: E402
from megatron.training.cli import OneLineErrorParser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="preprocess_data.py", description=__doc__.split("\n\n")[0])
    group = parser.add_argument_group("input data")
    paths.declare(group.add_argument("--input", required=True, help="JSONL file, one JSON object per line."),
                  paths.INPUT_FILE, "a JSONL file")
    paths.declare(group.add_argument("--json-keys", nargs="+", default=["text"],
                                     help="Keys to extract; each becomes its own dataset."), paths.TEXT)
    group.add_argument("--split-sentences", action="store_true",
                       help="One sequence per sentence (for BERT); output ends in _sentence.")
    group.add_argument("--strict", action="store_true",
                       help="Fail on the first bad line instead of skipping and reporting it.")
    add_tokenizer_args(parser)
    group = parser.add_argument_group("output data")
    paths.declare(group.add_argument("--output-prefix", required=True,
                                     help="Writes {prefix}_{key}_{document|sentence}.bin/.idx"),
                  paths.OUTPUT_PREFIX, "writes PREFIX_text_document.bin/.idx")
    group.add_argument("--append-eod", action="store_true",
                       help="Append the tokenizer's end-of-document token to each document.")
    group = parser.add_argument_group("runtime")
    group.add_argument("--workers", type=int, default=1, help="Tokenizer processes.")
    group.add_argument("--partitions", type=int, default=1,
                       help="Process the input in N parts, then merge (same output as 1).")
    group.add_argument("--log-interval", type=int, default=10000,
                       help="Documents between progress lines when stderr is not a terminal.")
    group.add_argument("--chunk-lines", type=int, default=64, help="Lines per worker task.")
    group.add_argument("--no-progress-bar", action="store_true", help="Never show the tqdm bar.")
    return parser


def get_args(argv=None):
    return paths.parse_checked(build_parser(), argv)


@paths.exit_code
def main(argv=None) -> int:
    args = get_args(argv)
    try:
        cfg = PreprocessConfig(
            input=args.input, output_prefix=args.output_prefix,
            tokenizer=tokenizer_config_from_args(args), json_keys=args.json_keys,
            append_eod=args.append_eod, split_sentences=args.split_sentences,
            workers=args.workers, partitions=args.partitions, chunk_lines=args.chunk_lines,
            log_interval=args.log_interval, strict=args.strict,
            progress=False if args.no_progress_bar else None,
        )
        if cfg.workers < args.workers:
            print(f"preprocess_data.py: --workers {args.workers} is more than the {cfg.workers} CPUs of this machine: "
                  f"using {cfg.workers} (the output does not depend on it)", file=sys.stderr)
        summary = preprocess(cfg)
    except (PreprocessError, FileNotFoundError, ValueError) as e:
        print(f"preprocess_data.py: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    report = f"{args.output_prefix}_preprocess_report.json"
    with open(report, "w", encoding="utf-8") as f:
        json.dump(summary.to_dict(), f, indent=1)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
