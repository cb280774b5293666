#!/usr/bin/env python
"""Merge a checkpoint saved at any TP x PP layout into one TP=1/PP=1 checkpoint (weights only).

    python tools/convert_checkpoint.py --load runs/gpt_tp2_pp2 --save runs/gpt_merged

The result has the same format (metadata.json, mp_rank_00_000/model_optim_rng.pt, tracker
written last) and loads for evaluation or for fine-tuning with --finetune / --no-load-optim.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.evaluation.cli import convert_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(convert_main())
