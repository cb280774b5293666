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

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hf_main(argv) -> int:
    p = argparse.ArgumentParser(description="Export a checkpoint as a Hugging Face transformers model directory.",
                                allow_abbrev=False)
    p.add_argument("--load", required=True, help="Source checkpoint directory (any TP/PP layout).")
    p.add_argument("--to-hf", required=True, metavar="OUT", help="Destination directory (new or empty; written atomically).")
    p.add_argument("--iteration", type=int, default=None, help="Export this iteration (default: the latest).")
    p.add_argument("--tokenizer-model", default=None,
                   help="SentencePiece model to export instead of the path recorded in the checkpoint.")
    p.add_argument("--no-tokenizer", action="store_true", help="Write the model only.")
    args = p.parse_args(argv)
    try:
        import safetensors  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"error: --to-hf needs transformers and safetensors ({e}); pip install -e .[hf]", file=sys.stderr)
        return 2
    from megatron.evaluation.checkpoint_loader import CheckpointError
    from megatron.evaluation.hf_export import export_to_hf

    if os.path.abspath(args.load) == os.path.abspath(args.to_hf):
        print("error: --to-hf must differ from --load", file=sys.stderr)
        return 2
    try:
        out = export_to_hf(args.load, args.to_hf, args.iteration, tokenizer_model=args.tokenizer_model,
                           write_tokenizer=not args.no_tokenizer)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out['architecture']} model ({out['parameters']:,} parameters, iteration {out['iteration']}, "
          f"tokenizer: {out['tokenizer'] or 'none'}) to {out['out_dir']}")
    return 0


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
