"""The ``pretrain_*.py`` entry point: parse, train, and turn every error the user can act on into
one message and an exit code (2: a flag or checkpoint to fix; 1: the run stopped itself), without
a traceback. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import os
import sys
from typing import Callable, NoReturn, Optional, Sequence

from megatron.data.providers import DataError
from megatron.training.arguments import ConfigError, parse_pretrain_config
from megatron.training.checkpointing import CheckpointError
from megatron.training.guards import TrainingStopped
from megatron.training.preemption import CollectiveFailed


def _fail(prog: str, error: BaseException, code: int, every_rank: bool = False) -> NoReturn:
    rank = os.environ.get("RANK", "0")
    if every_rank or rank == "0":
        prefix = f"{prog}: error" + (f" (rank {rank})" if every_rank and os.environ.get("WORLD_SIZE", "1") != "1" else "")
        print(f"{prefix}: {error}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(model_type: str, make_task: Callable, prog: str, argv: Optional[Sequence[str]] = None) -> None:
    from megatron.training.trainer import pretrain

    try:
        cfg = parse_pretrain_config(argv, model_type=model_type)
        task = make_task(cfg)
    except ConfigError as e:
        _fail(prog, e, 2)
    try:
        pretrain(cfg, task)
    except (ConfigError, CheckpointError, DataError) as e:
        _fail(prog, e, 2)
    except TrainingStopped as e:
        _fail(prog, e, 1)
    except CollectiveFailed as e:
        _fail(prog, e, 1, every_rank=True)


def save_seed_main(argv: Sequence[str], prog: str = "seed_checkpoint.py") -> str:
    """One process (TP=PP=DP=1) builds the model from pretrain_gpt.py's flags and saves iteration 0."""
    from megatron.runtime.device import destroy_distributed
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    try:
        cfg = parse_pretrain_config(argv, model_type="gpt", world_size=1)
        if cfg.checkpoint.save is None or cfg.checkpoint.load is not None:
            raise ConfigError("give --save DIR (and no --load): the seed checkpoint is written there")
        p = cfg.parallel
        if p.tensor_model_parallel_size != 1 or p.pipeline_model_parallel_size != 1:
            raise ConfigError("a seed checkpoint is saved at --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1; "
                              "every layout loads it")
        p.use_distributed_optimizer = False  # nothing to shard: there is no optimizer state yet
        trainer = Trainer(cfg, gpt_task(cfg))
    except (ConfigError, CheckpointError, DataError) as e:
        _fail(prog, e, 2)
    try:
        trainer.save()
        return trainer.cfg.checkpoint.save
    finally:
        trainer.close()
        destroy_distributed()
