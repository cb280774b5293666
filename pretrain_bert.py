#!/usr/bin/env python
"""Pretrain BERT (masked LM + sentence order), with or without random-LTD, on megatron-core.

    python pretrain_bert.py --data-path corpus_text_sentence --tokenizer-type BertWordPieceLowerCase \
        --vocab-file vocab.txt --num-layers 2 --hidden-size 64 ... --train-iters 20 [--random-ltd ...]
    python pretrain_bert.py --mock-data ...      # synthetic masked samples, no corpus
    torchrun --nproc-per-node 2 pretrain_bert.py --tensor-model-parallel-size 2 ...

Flags follow Megatron-LM; ``--help`` lists them. GPU with NCCL when one is visible, else CPU/gloo.
"""

from megatron.training.bert import bert_task
from megatron.training.entry import main

if __name__ == "__main__":
    main("bert", bert_task, "pretrain_bert.py")
