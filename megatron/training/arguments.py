"""The pretraining command line: Megatron-LM's flag names, built into a :class:`PretrainConfig`.

Per-area flags come from the dataclasses (:mod:`megatron.training.config`), the data and
tokenizer flags from :mod:`megatron.data`, the ``--random-ltd*`` flags from :mod:`megatron.ltd`.
Cross-area checks are in :func:`validate`; each names the flags at fault.
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence

from megatron.curriculum.config import add_curriculum_args, curriculum_config_from_args
from megatron.data.config import add_data_args, data_config_from_args
from megatron.data.tokenizers import add_tokenizer_args, tokenizer_config_from_args
from megatron.ltd.config import add_random_ltd_args, random_ltd_config_from_args
from megatron.training.cli import NEGATIVE_NUMBER, HelpFormatter, add_dataclass_args, dataclass_from_args
from megatron.training.config import (
    CheckpointConfig,
    FaultConfig,
    LoggingConfig,
    LRConfig,
    ModelConfig,
    ParallelConfig,
    PrecisionConfig,
    PretrainConfig,
    TrainingConfig,
)

_AREAS = (
    ("model", ModelConfig, "model"),
    ("parallel", ParallelConfig, "parallelism"),
    ("precision", PrecisionConfig, "mixed precision"),
    ("training", TrainingConfig, "training"),
    ("lr", LRConfig, "learning rate"),
    ("checkpoint", CheckpointConfig, "checkpointing"),
    ("logging", LoggingConfig, "logging"),
    ("fault", FaultConfig, "fault tolerance"),
)


class ConfigError(ValueError):
    """A bad flag or flag combination, reported before any work starts."""


def build_parser(description: str = "Megatron-LTD pretraining", extra_args=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False, formatter_class=HelpFormatter)
    parser._negative_number_matcher = NEGATIVE_NUMBER  # `--lr -1e-3` reaches the value check
    for _, cls, title in _AREAS:
        add_dataclass_args(parser, cls, title)
    add_data_args(parser)
    add_tokenizer_args(parser)
    add_random_ltd_args(parser)
    add_curriculum_args(parser)
    if extra_args is not None:
        extra_args(parser)
    return parser


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def parse_pretrain_config(
    argv: Optional[Sequence[str]] = None,
    model_type: str = "gpt",
    world_size: Optional[int] = None,
    extra_args=None,
) -> PretrainConfig:
    """Parse and validate; raise :class:`ConfigError` with a message that names the flags."""
    parser = build_parser(extra_args=extra_args)
    args = parser.parse_args(argv)
    try:
        areas = {name: dataclass_from_args(cls, args) for name, cls, _ in _AREAS}
        data = data_config_from_args(args)
        if args.mock_data and args.tokenizer_model is None and args.vocab_file is None and args.tokenizer_type == "SentencePieceTokenizer":
            # Mock data needs no real tokenizer: ids in [0, --vocab-size).
            args.tokenizer_type, args.vocab_size = "NullTokenizer", args.vocab_size or 1024
        tokenizer = tokenizer_config_from_args(args)
        random_ltd = random_ltd_config_from_args(args)
        curriculum = curriculum_config_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from e
    known = {f for _, cls, _ in _AREAS for f in cls.__dataclass_fields__}
    extra = {k: v for k, v in vars(args).items() if k not in known}
    cfg = PretrainConfig(data=data, tokenizer=tokenizer, random_ltd=random_ltd, curriculum=curriculum, model_type=model_type, extra=extra, **areas)
    validate(cfg, world_size if world_size is not None else world_size_from_env(), argv_flags=_given_flags(argv))
    return cfg


def _given_flags(argv: Optional[Sequence[str]]) -> List[str]:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def validate(cfg: PretrainConfig, world_size: int, argv_flags: Sequence[str] = ()) -> None:
    m, p, t = cfg.model, cfg.parallel, cfg.training
    tp, pp = p.tensor_model_parallel_size, p.pipeline_model_parallel_size
    if world_size % (tp * pp):
        raise ConfigError(
            f"{world_size} processes cannot be split into --tensor-model-parallel-size {tp} x "
            f"--pipeline-model-parallel-size {pp}; launch a multiple of {tp * pp} processes"
        )
    dp = world_size // (tp * pp)
    if m.num_attention_heads % tp:
        raise ConfigError(f"--num-attention-heads {m.num_attention_heads} is not divisible by --tensor-model-parallel-size {tp}")
    if m.num_query_groups is not None and m.num_query_groups % tp:
        raise ConfigError(f"--num-query-groups {m.num_query_groups} is not divisible by --tensor-model-parallel-size {tp}")
    if m.num_layers % pp:
        raise ConfigError(f"--num-layers {m.num_layers} is not divisible by --pipeline-model-parallel-size {pp}")
    if p.num_layers_per_virtual_pipeline_stage is not None:
        if pp < 2:
            raise ConfigError("--num-layers-per-virtual-pipeline-stage needs --pipeline-model-parallel-size > 1")
        if (m.num_layers // pp) % p.num_layers_per_virtual_pipeline_stage:
            raise ConfigError(
                f"--num-layers-per-virtual-pipeline-stage {p.num_layers_per_virtual_pipeline_stage} must divide "
                f"the {m.num_layers // pp} layers of each pipeline stage"
            )
    if p.sequence_parallel and m.seq_length % tp:
        raise ConfigError(f"--seq-length {m.seq_length} must be divisible by --tensor-model-parallel-size {tp} with --sequence-parallel")
    if t.global_batch_size is None:
        t.global_batch_size = t.micro_batch_size * dp
    if t.global_batch_size % (t.micro_batch_size * dp):
        raise ConfigError(
            f"--global-batch-size {t.global_batch_size} is not divisible by --micro-batch-size "
            f"{t.micro_batch_size} x data-parallel size {dp}"
        )
    num_microbatches = t.global_batch_size // (t.micro_batch_size * dp)
    if pp > 1 and p.num_layers_per_virtual_pipeline_stage is not None and num_microbatches % pp:
        raise ConfigError(
            f"interleaved pipelining needs the number of micro-batches ({num_microbatches}) to be a multiple of "
            f"--pipeline-model-parallel-size {pp}"
        )
    if t.train_samples is not None and t.train_samples < t.global_batch_size:
        raise ConfigError(f"--train-samples {t.train_samples} is less than one --global-batch-size {t.global_batch_size}")
    if cfg.data.mock_data is False and cfg.model_type == "gpt" and cfg.tokenizer is None:
        raise ConfigError("a tokenizer is needed with real data: give --tokenizer-type and --tokenizer-model / --vocab-file")

    ltd = cfg.random_ltd
    ltd_flags = [f for f in argv_flags if f.startswith("--random-ltd-")]
    if not ltd.enabled and ltd_flags:
        raise ConfigError(f"{', '.join(sorted(set(ltd_flags)))} given without --random-ltd; add --random-ltd or drop them")
    if ltd.enabled:
        try:
            ltd.validate(m.seq_length, m.num_layers, tp, p.sequence_parallel)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if ltd.seed is None:
            ltd.seed = t.seed
    validate_curriculum(cfg, tp, [f for f in argv_flags if f.startswith("--curriculum-")])
    for name in ("train_tokens", "train_layer_tokens", "train_layer_averaged_tokens", "train_samples", "train_iters"):
        value = getattr(t, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    # Any training length gives the LR decay length in any unit: the trainer computes the exact run
    # (megatron.training.lr_schedule.exact_run), so no unit needs a matching budget.
    ck = cfg.checkpoint
    if ck.load is not None and not os.path.isdir(ck.load):
        raise ConfigError(f"--load {ck.load}: no such directory (give a directory written by --save)")
    if ck.save is not None:
        check_writable_dir("--save", ck.save)
    for flag, path in (("--metrics-file", cfg.logging.metrics_file),):
        if path is not None:
            check_writable_file(flag, path)
    if cfg.logging.tensorboard_dir is not None:
        check_writable_dir("--tensorboard-dir", cfg.logging.tensorboard_dir)
    if t.exit_interval is not None and t.exit_interval < 1:
        raise ConfigError("--exit-interval must be >= 1")
    if cfg.model_type == "bert" and p.sequence_parallel:
        raise ConfigError("--sequence-parallel is not supported for BERT (its LM-head norm needs TransformerEngine/apex)")


def validate_curriculum(cfg: PretrainConfig, tp: int, given: Sequence[str]) -> None:
    """The curriculum's own checks, and how it composes with the model, random-LTD and the layout."""
    cur, m, p = cfg.curriculum, cfg.model, cfg.parallel
    if not cur.enabled:
        if given:
            raise ConfigError(f"{', '.join(sorted(set(given)))} given without --curriculum-metric; add it or drop them")
        return
    try:
        cur.validate(m.seq_length)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if cfg.model_type != "gpt":
        raise ConfigError(f"--curriculum-metric {cur.metric} is implemented for GPT pretraining only")
    if cur.seed is None:
        cur.seed = cfg.training.seed
    if not cur.truncates:
        return
    if cur.metric == "seqlen_reshape" and cfg.data.reset_attention_mask:
        raise ConfigError("--curriculum-metric seqlen_reshape cannot keep per-document masks: drop --reset-attention-mask "
                          "or use seqlen_truncate")
    # Every curriculum length must split like the full one: into random-LTD's strata (the kept
    # length is capped at the curriculum length) and across TP ranks under sequence parallelism.
    ltd = cfg.random_ltd
    needs = []
    if ltd.enabled:
        needs.append((ltd.resolved_strata(p.sequence_parallel), "the random-LTD strata"))
    if p.sequence_parallel:
        needs.append((tp, "--tensor-model-parallel-size under --sequence-parallel"))
    for value in cur.possible_values(m.seq_length):
        for n, what in needs:
            if value % n:
                raise ConfigError(f"curriculum lengths must be multiples of {what} ({n}): --curriculum-min/-max/"
                                  f"-step-increment (or -discrete-values) give {value}")


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def check_writable_dir(flag: str, path: str) -> None:
    """Refuse, before any work, a directory that cannot be written (not after the first iteration)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a file, not a directory: give a directory (it is created if missing)")
    base = _nearest_existing(path)
    if not os.path.isdir(base):
        raise ConfigError(f"{flag} {path}: {base} is a file, so the directory cannot be created")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {base} is not writable; choose a directory you can write to")


def check_writable_file(flag: str, path: str) -> None:
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a directory: give a file path")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{flag} {path} is not writable; choose another file or fix its permissions")
        return
    check_writable_dir(flag, os.path.dirname(os.path.abspath(path)))
