"""Command line of ``tools/evaluate_zeroshot.py`` (native tasks) and ``tools/convert_checkpoint.py``.

Model flags (``--num-layers`` ...) are optional: the checkpoint records its own. Any flag given is
checked against the checkpoint, and a difference is refused with the flags named.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Dict, Optional, Sequence

from megatron.data import paths

__all__ = ["build_eval_parser", "build_convert_parser", "given_model_flags", "run_eval", "main", "convert_main"]

TASKS = ("lambada", "wikitext", "perplexity")


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    from megatron.training.cli import add_dataclass_args
    from megatron.training.config import ModelConfig

    add_dataclass_args(parser, ModelConfig, "model (optional: checked against the checkpoint)")
    # Absent unless given, so only the flags the user typed are compared.
    _suppress_defaults(parser, {f.name for f in dataclasses.fields(ModelConfig)})


def _suppress_defaults(parser: argparse.ArgumentParser, dests) -> None:
    """Leave these arguments out of the namespace unless given (``set_defaults(x=SUPPRESS)``
    would store the SUPPRESS marker itself)."""
    for action in parser._actions:
        if action.dest in dests:
            action.default = argparse.SUPPRESS


def given_model_flags(args: argparse.Namespace) -> Dict[str, Any]:
    from megatron.training.config import ModelConfig

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelConfig) if hasattr(args, f.name)}


def build_eval_parser() -> argparse.ArgumentParser:
    from megatron.training.cli import OneLineErrorParser

    p = OneLineErrorParser(
        prog="evaluate_zeroshot.py",
        description="Zero-shot evaluation of a Megatron-LTD GPT checkpoint (any TP/PP layout, run at TP=1/PP=1).",
        allow_abbrev=False,
    )
    g = p.add_argument_group("evaluation")
    g.add_argument("--task", required=True, choices=TASKS,
                   help="lambada: last-word accuracy from JSONL; wikitext: perplexity of WikiText-tokenized "
                        "text (detokenized first); perplexity: perplexity of plain text.")
    paths.declare(g.add_argument("--load", required=True, help="Checkpoint directory (its latest complete iteration)."),
                  paths.INPUT_DIR, "a checkpoint directory written by --save")
    g.add_argument("--iteration", type=int, default=None, help="Evaluate this iteration instead of the latest.")
    paths.declare(g.add_argument("--data-path", "--valid-data", dest="data_path", required=True,
                                 help="LAMBADA JSONL (one {\"text\": ...} per line) or a raw text file."),
                  paths.INPUT_FILE, "a LAMBADA .jsonl or a text file")
    g.add_argument("--eval-seq-length", type=int, default=None,
                   help="Evaluation window in tokens (default: the checkpoint's --seq-length).")
    g.add_argument("--overlapping-eval", "--stride", dest="stride", type=int, default=None,
                   help="Perplexity: window stride in tokens (default: the window, i.e. no overlap).")
    g.add_argument("--micro-batch-size", "--batch-size", dest="batch_size", type=int, default=8,
                   help="Sequences per forward pass.")
    g.add_argument("--strict-lambada", action="store_true",
                   help="LAMBADA: report only the strict (whole-word) variant. Default: both variants.")
    paths.declare(g.add_argument("--lambada-text-key", default="text", help="JSON field holding the passage."), paths.TEXT)
    g.add_argument("--limit", type=int, default=None, help="LAMBADA: evaluate only the first N examples.")
    g.add_argument("--max-tokens", type=int, default=None, help="Perplexity: evaluate only the first N tokens.")
    paths.declare(g.add_argument("--results-dir", default="eval_results", help="Where the JSON result file goes."),
                  paths.OUTPUT_DIR)
    paths.declare(g.add_argument("--results-json", default=None, help="Exact JSON result path (overrides --results-dir)."),
                  paths.OUTPUT_FILE, "a .json file path")
    g.add_argument("--cpu", action="store_true", help="Run on CPU even when a GPU is visible.")
    g.add_argument("--bf16", action="store_true", help="Evaluate in bfloat16 (GPU).")
    g.add_argument("--no-progress", action="store_true", help="No progress bar.")
    from megatron.data.tokenizers import add_tokenizer_args

    add_tokenizer_args(p)
    # Tokenizer flags override the checkpoint's only when given.
    _suppress_defaults(p, {"tokenizer_type", "tokenizer_model", "vocab_file", "merge_file", "vocab_size"})
    _add_model_flags(p)
    return p


def _tokenizer_override(args: argparse.Namespace, meta_tok: Optional[dict]):
    from megatron.data.tokenizers import TokenizerConfig

    keys = ("tokenizer_type", "tokenizer_model", "vocab_file", "merge_file", "vocab_size")
    given = {k: getattr(args, k) for k in keys if hasattr(args, k)}
    if not given:
        return None
    base = dict(meta_tok or {})
    base.update(given)
    return TokenizerConfig(**{k: v for k, v in base.items() if k in {f.name for f in dataclasses.fields(TokenizerConfig)}})


def run_eval(args: argparse.Namespace) -> Dict[str, Any]:
    """Run one native task from parsed arguments; returns the result dict (also written as JSON)."""
    import torch

    from megatron.evaluation.checkpoint_loader import load_for_inference, read_metadata, resolve_iteration
    from megatron.evaluation.results import format_table, write_json
    from megatron.evaluation.tasks import EvalDataError, evaluate_lambada, evaluate_perplexity

    if not os.path.exists(args.data_path):
        raise EvalDataError(f"--data-path {args.data_path!r} does not exist")
    it = resolve_iteration(args.load, args.iteration)
    tok_cfg = _tokenizer_override(args, read_metadata(args.load, it).get("tokenizer"))
    if tok_cfg is not None:
        from megatron.data.tokenizers import build_tokenizer

        build_tokenizer(tok_cfg)  # a tokenizer file of the wrong kind is named before the model is loaded
    t0 = time.time()
    loaded = load_for_inference(
        args.load, it, model_flags=given_model_flags(args), tokenizer_config=tok_cfg,
        seq_length=args.eval_seq_length, dtype=torch.bfloat16 if args.bf16 else torch.float32, force_cpu=args.cpu,
    )
    load_s = time.time() - t0
    progress = not args.no_progress
    t0 = time.time()
    if args.task == "lambada":
        variants = ("strict",) if args.strict_lambada else ("strict", "non-strict")
        res = evaluate_lambada(loaded, args.data_path, args.batch_size, variants, args.limit,
                               args.lambada_text_key, progress)
    else:
        res = evaluate_perplexity(loaded, args.data_path, args.stride, args.batch_size,
                                  detokenize=args.task == "wikitext", max_tokens=args.max_tokens, progress=progress)
    res.update(checkpoint=os.path.abspath(args.load), iteration=loaded.iteration, device=str(loaded.device),
               load_seconds=round(load_s, 3), eval_seconds=round(time.time() - t0, 3))
    path = args.results_json or os.path.join(args.results_dir, f"{args.task}_iter_{loaded.iteration:07d}.json")
    write_json(path, res)
    res["results_json"] = path
    print(format_table([res]))
    print(f"results written to {path}")
    return res


def check_eval_args(args) -> Optional[str]:
    """A flag the user can fix, named, before the checkpoint is loaded (None when all are fine)."""
    for flag, value, least in (("--micro-batch-size", args.batch_size, 1), ("--eval-seq-length", args.eval_seq_length, 1),
                               ("--overlapping-eval", args.stride, 1), ("--limit", args.limit, 1),
                               ("--max-tokens", args.max_tokens, 1)):
        if value is not None and value < least:
            return f"{flag} must be >= {least}, got {value}"
    return None


@paths.exit_code
def main(argv: Optional[Sequence[str]] = None) -> int:
    from megatron.evaluation.checkpoint_loader import CheckpointError
    from megatron.evaluation.tasks import EvalDataError

    from megatron.data.tokenizers import TokenizerFileError

    parser = build_eval_parser()
    args = paths.parse_checked(parser, argv, skip_when_given={"results_dir": "results_json"})
    problem = check_eval_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        run_eval(args)
    except (CheckpointError, EvalDataError, TokenizerFileError, FileNotFoundError) as e:
        # FileNotFoundError: a tokenizer file the checkpoint records that is gone (its message names the flag)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def build_convert_parser() -> argparse.ArgumentParser:
    from megatron.training.cli import OneLineErrorParser

    p = OneLineErrorParser(
        prog="convert_checkpoint.py",
        description="Convert a checkpoint saved at any TP/PP layout (either format) into one TP=1/PP=1 checkpoint of "
                    "the current format (weights only).",
        allow_abbrev=False,
    )
    paths.declare(p.add_argument("--load", required=True, help="Source checkpoint directory."),
                  paths.INPUT_DIR, "a checkpoint directory written by --save")
    paths.declare(p.add_argument("--save", required=True,
                                 help="Destination directory, new or empty (written atomically, tracker last)."),
                  paths.OUTPUT_NEW_DIR, "a new or empty directory for the converted checkpoint")
    p.add_argument("--iteration", type=int, default=None, help="Convert this iteration (default: the latest).")
    return p


@paths.exit_code
def convert_main(argv: Optional[Sequence[str]] = None) -> int:
    from megatron.evaluation.checkpoint_loader import CheckpointError, write_merged_checkpoint

    p = build_convert_parser()
    args = paths.parse_checked(p, argv)  # every path checked (one line, exit 2) before any work
    if os.path.abspath(args.load) == os.path.abspath(args.save):
        print("error: --save must differ from --load", file=sys.stderr)
        return 2
    try:
        out = write_merged_checkpoint(args.load, args.save, args.iteration)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote TP=1/PP=1 checkpoint {out}")
    return 0

