#!/usr/bin/env python
"""Train a SentencePiece tokenizer (BPE or unigram) from JSONL or plain-text files.

    python tools/train_tokenizer.py --input corpus.jsonl --json-keys text \
        --model-prefix tok/spm4k --vocab-size 4096 --model-type bpe

writes tok/spm4k.model and .vocab; use them with
``--tokenizer-type SentencePieceTokenizer --tokenizer-model tok/spm4k.model``. See docs/data.md.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data import paths  # noqa: E402
from megatron.data.train_tokenizer import (  # noqa: E402
    DEFAULT_SPECIAL_TOKENS, SentencePieceTrainConfig, parse_special_tokens, train_sentencepiece)
from megatron.training.cli import OneLineErrorParser  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="train_tokenizer.py", description=__doc__.split("\n\n")[0])
    paths.declare(p.add_argument("--input", nargs="+", required=True,
                                 help="Files: *.jsonl/*.json are read as JSON lines, anything else as text."),
                  paths.INPUT_FILE, "a JSONL or text file")
    paths.declare(p.add_argument("--json-keys", nargs="+", default=["text"], help="Keys to read from JSONL."), paths.TEXT)
    paths.declare(p.add_argument("--model-prefix", required=True, help="Writes {prefix}.model and .vocab"),
                  paths.OUTPUT_PREFIX, "writes PREFIX.model and PREFIX.vocab")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    p.add_argument("--character-coverage", type=float, default=1.0,
                   help="Fraction of characters covered (0.9995 for large alphabets).")
    p.add_argument("--special-tokens", type=parse_special_tokens,
                   default=list(DEFAULT_SPECIAL_TOKENS),
                   help="Comma-separated control symbols after <unk> <s> </s> <pad> "
                        "(default: <eod>,<cls>,<sep>,<mask>).")
    p.add_argument("--no-byte-fallback", action="store_true",
                   help="Map unknown characters to <unk> instead of UTF-8 byte pieces.")
    p.add_argument("--normalize", action="store_true",
                   help="Use SentencePiece's NFKC normalization and whitespace folding (lossy).")
    p.add_argument("--input-sentence-size", type=int, default=2_000_000,
                   help="Sample at most this many lines for training (0: all).")
    p.add_argument("--max-input-chars", type=int, default=0,
                   help="Read at most this many characters (0: everything).")
    p.add_argument("--num-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=1234)
    return p


def get_args(argv=None):
    return paths.parse_checked(build_parser(), argv)


@paths.exit_code
def main(argv=None) -> int:
    args = get_args(argv)
    try:
        cfg = SentencePieceTrainConfig(
            inputs=args.input, model_prefix=args.model_prefix, vocab_size=args.vocab_size,
            model_type=args.model_type, character_coverage=args.character_coverage,
            json_keys=args.json_keys, special_tokens=args.special_tokens,
            byte_fallback=not args.no_byte_fallback, lossless=not args.normalize,
            input_sentence_size=args.input_sentence_size, max_input_chars=args.max_input_chars,
            num_threads=args.num_threads, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"train_tokenizer.py: error: {e}", file=sys.stderr)
        return 1
    t0 = time.time()
    try:
        model = train_sentencepiece(cfg)
    except ValueError as e:  # no training text (empty input, wrong --json-keys)
        print(f"train_tokenizer.py: error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # sentencepiece reports e.g. a vocab too large for the corpus
        print(f"train_tokenizer.py: error: SentencePiece training failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {model} (vocab {cfg.vocab_size}, {cfg.model_type}) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
