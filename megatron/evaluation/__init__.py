"""Zero-shot evaluation of saved checkpoints: loading any layout at TP=1/PP=1, LAMBADA and
WikiText-style perplexity natively, and any lm-evaluation-harness task through an adapter.

Nothing here imports the trainer's loop; checkpoints are read through the format described in
:mod:`megatron.training.checkpointing`.
"""
