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

from megatron.data.atomic import merge_indexed_datasets  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", help="Dataset prefixes (without .bin/.idx).")
    src.add_argument("--input-dir", help="Merge every prefix with a .bin and .idx here (sorted).")
    p.add_argument("--output-prefix", required=True)
    args = p.parse_args(argv)
    if args.input_dir:
        if not os.path.isdir(args.input_dir):
            print(f"merge_datasets.py: error: --input-dir {args.input_dir!r} is not a directory",
                  file=sys.stderr)
            return 1
        names = sorted(f[:-4] for f in os.listdir(args.input_dir) if f.endswith(".idx"))
        prefixes = [os.path.join(args.input_dir, n) for n in names]
    else:
        prefixes = args.input
    try:
        counts = merge_indexed_datasets(prefixes, args.output_prefix)
    except (FileNotFoundError, ValueError) as e:
        print(f"merge_datasets.py: error: {e}", file=sys.stderr)
        return 1
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}: "
          f"{counts['documents']} documents, {counts['sequences']} sequences")
    return 0


if __name__ == "__main__":
    sys.exit(main())
