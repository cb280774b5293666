#!/usr/bin/env python
"""Pretrain GPT, with or without random-LTD, on megatron-core.

    python pretrain_gpt.py --mock-data --num-layers 2 --hidden-size 64 ... --train-iters 20
    torchrun --nproc-per-node 2 pretrain_gpt.py --tensor-model-parallel-size 2 ... --random-ltd ...

Flags follow Megatron-LM; ``--help`` lists them. GPU with NCCL when one is visible, else CPU/gloo.
"""

import sys

from megatron.training.arguments import ConfigError, parse_pretrain_config
from megatron.training.gpt import gpt_task
from megatron.training.trainer import pretrain

if __name__ == "__main__":
    try:
        cfg = parse_pretrain_config(model_type="gpt")
    except ConfigError as e:
        sys.exit(f"pretrain_gpt.py: error: {e}")
    pretrain(cfg, gpt_task(cfg))
