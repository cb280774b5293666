"""Run the trainer inside the test process (one rank, CPU/gloo): well under a second per tiny run,
where a subprocess pays several seconds of imports."""

from __future__ import annotations

import contextlib
import io
import os
from typing import List, Tuple

import pytest

TINY = [
    "--mock-data", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "4", "--vocab-size", "128",
    "--lr", "3e-3", "--min-lr", "1e-4", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "1",
    "--no-progress", "--cpu", "--hidden-dropout", "0.1",
]


@pytest.fixture(scope="module")
def trainer_runtime():
    """Undo the process group and CPU mode after the module, so later tests start clean."""
    import torch
    from megatron.runtime import cpu_compat

    was_initialized, was_cpu_mode = torch.distributed.is_initialized(), cpu_compat.is_enabled()
    os.environ["MEGATRON_LTD_FORCE_CPU"] = "1"
    yield
    from megatron.runtime.device import destroy_distributed

    destroy_distributed()
    if not was_initialized and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if not was_cpu_mode:
        cpu_compat.disable()


def build(args: List[str]):
    """Parse and build a Trainer (this loads --load); returns (trainer, printed text)."""
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    out = io.StringIO()
    cfg = parse_pretrain_config(args, world_size=1)
    with contextlib.redirect_stdout(out):
        trainer = Trainer(cfg, gpt_task(cfg))
    return trainer, out


def train(args: List[str]) -> Tuple[dict, str]:
    """Build, train and close; returns (summary, everything printed). Exceptions propagate after
    the trainer is closed."""
    from megatron.runtime.device import destroy_distributed

    trainer = None
    out = io.StringIO()
    try:
        trainer, out = build(args)
        with contextlib.redirect_stdout(out):
            summary = trainer.train()
        return summary, out.getvalue()
    finally:
        if trainer is not None:
            trainer.close()
        destroy_distributed()


def open_trainer(args: List[str]):
    """Context manager: a built (and loaded) trainer, closed afterwards; yields (trainer, printed)."""

    @contextlib.contextmanager
    def cm():
        from megatron.runtime.device import destroy_distributed

        trainer = None
        try:
            trainer, out = build(args)
            yield trainer, out.getvalue()
        finally:
            if trainer is not None:
                trainer.close()
            destroy_distributed()

    return cm()
