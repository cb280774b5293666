"""Run the real :class:`~megatron.training.trainer.Trainer` inside a test process (a rank of
:func:`tests.multirank.run_multirank`), without a subprocess per run."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

TINY_GPT = [
    "--mock-data", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "32", "--micro-batch-size", "4", "--global-batch-size", "8", "--vocab-size", "128",
    "--lr", "3e-3", "--min-lr", "1e-4", "--lr-decay-style", "cosine", "--log-interval", "1",
    "--eval-interval", "1000", "--eval-iters", "0", "--no-progress", "--cpu",
]


def build_trainer(args: List[str], model_type: str = "gpt"):
    """A Trainer for ``args`` on the process groups this rank already has (or makes)."""
    import torch

    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.trainer import Trainer

    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    cfg = parse_pretrain_config(args, model_type=model_type, world_size=world)
    if model_type == "gpt":
        from megatron.training.gpt import gpt_task

        task = gpt_task(cfg)
    else:
        from megatron.training.bert import bert_task

        task = bert_task(cfg)
    return Trainer(cfg, task)


def run_trainer(args: List[str], metrics_file: str, model_type: str = "gpt",
                on_built: Optional[Callable] = None) -> Dict:
    """Build a Trainer, let ``on_built(trainer)`` adjust it (e.g. set weights), run
    ``Trainer.train`` (its own loop, stop rule and logging), and return the summary, the trainer's
    exact run length and, on the rank that writes metrics, the per-step metric rows."""
    from tests.training.run_utils import read_metrics

    trainer = build_trainer(args + ["--metrics-file", metrics_file], model_type)
    if on_built is not None:
        on_built(trainer)
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    return {"summary": summary, "run_length": trainer.run_length, "lr_lengths": trainer.lr_lengths,
            "rows": read_metrics(metrics_file) if trainer.is_writer else None,
            "valid": read_metrics(metrics_file, "valid") if trainer.is_writer else None}
