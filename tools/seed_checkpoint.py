#!/usr/bin/env python
"""Save a seed checkpoint: the initial weights (iteration 0), from one process, that every layout can
start from with --load (so runs on different layouts begin from the same weights).

    python tools/seed_checkpoint.py --save runs/seed <the model flags of pretrain_gpt.py> --train-iters 1
    torchrun --nproc-per-node 8 pretrain_gpt.py --load runs/seed --save runs/gpt --tensor-model-parallel-size 2 ...

It takes pretrain_gpt.py's flags (the model flags and --seed matter; the length flag is required but
unused). A run loading it takes its LR schedule from its own flags (nothing of the seed's is kept).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.training.entry import save_seed_main  # noqa: E402

if __name__ == "__main__":
    save_seed_main(sys.argv[1:])
