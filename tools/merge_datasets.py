#!/usr/bin/env python
"""Merge several indexed datasets (.bin/.idx prefixes) into one, in the order given.

    python tools/merge_datasets.py --input data/a_text_document data/b_text_document \
        --output-prefix data/ab_text_document

    python tools/merge_datasets.py --input-dir data/parts --output-prefix data/all_text_document

The output appears atomically (.idx last); a missing prefix or a token dtype mismatch is an error.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import megatron.runtime  # noqa: E402,F401  (quiets megatron-core's optional-dependency notices)

from megatron.data import paths  # noqa: E402
from megatron.data.atomic import merge_indexed_datasets  # noqa: E402
from megatron.training.cli import OneLineErrorParser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="merge_datasets.py", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    paths.declare(src.add_argument("--input", nargs="+", help="Dataset prefixes (without .bin/.idx)."),
                  paths.INPUT_DATASET)
    paths.declare(src.add_argument("--input-dir", help="Merge every prefix with a .bin and .idx here (sorted)."),
                  paths.INPUT_DIR, "a directory holding .bin/.idx pairs")
    paths.declare(p.add_argument("--output-prefix", required=True), paths.OUTPUT_PREFIX,
                  "writes PREFIX.bin and PREFIX.idx")
    return p


@paths.exit_code
def main(argv=None) -> int:
    args = paths.parse_checked(build_parser(), argv)
    if args.input_dir:
        names = sorted(f[:-4] for f in os.listdir(args.input_dir) if f.endswith(".idx"))
        prefixes = [os.path.join(args.input_dir, n) for n in names]
    else:
        prefixes = args.input
    try:
        with paths.removed_on_failure(os.path.dirname(os.path.abspath(args.output_prefix))):
            counts = merge_indexed_datasets(prefixes, args.output_prefix)
    except (FileNotFoundError, ValueError) as e:
        print(f"merge_datasets.py: error: {e}", file=sys.stderr)
        return 1
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}: "
          f"{counts['documents']} documents, {counts['sequences']} sequences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
