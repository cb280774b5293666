#!/usr/bin/env python
"""Pretrain GPT, with or without random-LTD, on megatron-core.

    python pretrain_gpt.py --mock-data --num-layers 2 --hidden-size 64 ... --train-iters 20
    torchrun --nproc-per-node 2 pretrain_gpt.py --tensor-model-parallel-size 2 ... --random-ltd ...

Flags follow Megatron-LM; ``--help`` lists them. GPU with NCCL when one is visible, else CPU/gloo.
"""

from megatron.training.gpt import gpt_task
from megatron.training.entry import main

if __name__ == "__main__":
    main("gpt", gpt_task, "pretrain_gpt.py")
