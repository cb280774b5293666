#!/usr/bin/env python
"""Convert a checkpoint saved at any TP x PP layout, in the current format or the retired per-rank one.

    # a TP=1/PP=1 checkpoint of the current format (weights only): the one-time conversion of
    # per-rank checkpoints; --save must be new or empty (never another run's checkpoints)
    python tools/convert_checkpoint.py --load runs/gpt_tp2_pp2 --save runs/gpt_merged
    # export a Hugging Face transformers model directory (GPT-2 or LLaMA architecture); the
    # directory must be new or empty
    python tools/convert_checkpoint.py --load runs/gpt_tp2_pp2 --to-hf runs/gpt_hf

The converted checkpoint loads for evaluation or for fine-tuning with --finetune / --no-load-optim.
The Hugging Face directory (config.json, model.safetensors, tokenizer.json) loads with
``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained`` (needs ``.[hf]``).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data import paths  # noqa: E402


def build_hf_parser():
    from megatron.training.cli import OneLineErrorParser

    p = OneLineErrorParser(prog="convert_checkpoint.py",
                           description="Export a checkpoint as a Hugging Face transformers model directory.",
                           allow_abbrev=False)
    paths.declare(p.add_argument("--load", required=True, help="Source checkpoint directory (any TP/PP layout)."),
                  paths.INPUT_DIR, "a checkpoint directory written by --save")
    paths.declare(p.add_argument("--to-hf", required=True, metavar="OUT",
                                 help="Destination directory (new or empty; written atomically)."),
                  paths.OUTPUT_NEW_DIR, "a new or empty directory for the transformers model")
    p.add_argument("--iteration", type=int, default=None, help="Export this iteration (default: the latest).")
    paths.declare(p.add_argument("--tokenizer-model", default=None,
                                 help="SentencePiece model to export instead of the path recorded in the checkpoint."),
                  paths.INPUT_FILE, "a SentencePiece .model file")
    p.add_argument("--no-tokenizer", action="store_true", help="Write the model only.")
    return p


def hf_main(argv) -> int:
    p = build_hf_parser()
    args = paths.parse_checked(p, argv)  # every path checked (one line, exit 2) before any work
    if os.path.abspath(args.load) == os.path.abspath(args.to_hf):
        paths.fail(p.prog, "--to-hf must differ from --load")
    if args.tokenizer_model is not None:
        from megatron.data.tokenizers import SentencePieceTokenizer

        try:
            SentencePieceTokenizer(args.tokenizer_model)
        except ValueError as e:
            paths.fail(p.prog, e)
    try:
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"error: --to-hf needs transformers and safetensors ({e}); pip install -e .[hf]", file=sys.stderr)
        return 2
    from megatron.evaluation.checkpoint_loader import CheckpointError
    from megatron.evaluation.hf_export import export_to_hf

    try:
        out = export_to_hf(args.load, args.to_hf, args.iteration, tokenizer_model=args.tokenizer_model,
                           write_tokenizer=not args.no_tokenizer)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out['architecture']} model ({out['parameters']:,} parameters, iteration {out['iteration']}, "
          f"tokenizer: {out['tokenizer'] or 'none'}) to {out['out_dir']}")
    return 0


@paths.exit_code
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--to-hf" or a.startswith("--to-hf=") for a in argv):
        return hf_main(argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__.strip() + "\n\n--to-hf options: see --to-hf OUT --help.\n")
    from megatron.evaluation.cli import convert_main

    return convert_main(argv)


if __name__ == "__main__":
    sys.exit(main())
