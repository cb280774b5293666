"""The pretraining command line: Megatron-LM's flag names, built into a :class:`PretrainConfig`.

Per-area flags come from the dataclasses (:mod:`megatron.training.config`), the data and
tokenizer flags from :mod:`megatron.data`, the ``--random-ltd*`` flags from :mod:`megatron.ltd`.
Every numeric flag's range is declared with its dataclass field and enforced by
:func:`megatron.training.cli.check_ranges` right after parsing, before anything else is built;
cross-area checks are in :func:`validate`; each names the flags at fault.
"""

from __future__ import annotations

import argparse
import os
from typing import List, Optional, Sequence

from megatron.curriculum.config import FLAG_FIELDS as CURRICULUM_FLAG_FIELDS
from megatron.curriculum.config import CurriculumConfig, add_curriculum_args, curriculum_config_from_args
from megatron.data import paths
from megatron.data.config import DataConfig, add_data_args, data_config_from_args
from megatron.data.tokenizers import TokenizerConfig, add_tokenizer_args, tokenizer_config_from_args
from megatron.ltd.config import RandomLTDConfig, add_random_ltd_args, random_ltd_config_from_args
from megatron.training.cli import (NEGATIVE_NUMBER, HelpFormatter, OneLineErrorParser, add_dataclass_args, attach_ranges,
                                   check_ranges, dataclass_from_args)
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


# What the string flags that megatron.data / .curriculum / .ltd add by hand take (checked by
# megatron.data.paths.check_paths right after parsing; the tokenizer flags declare their own).
_HAND_ADDED_PATH_KINDS = {
    **{dest: paths.INPUT_DATASET for dest in ("data_path", "train_data_path", "valid_data_path", "test_data_path")},
    "data_cache_path": paths.OUTPUT_DIR,
    "curriculum_difficulty_file": (paths.INPUT_FILE, "a .npy written for the dataset (tools/analyze_data.py)"),
    **{dest: paths.TEXT for dest in ("split", "random_ltd_layers", "curriculum_discrete_values", "curriculum_discrete_steps")},
}


def build_parser(description: str = "Megatron-LTD pretraining", extra_args=None) -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=description, allow_abbrev=False, formatter_class=HelpFormatter)
    parser._negative_number_matcher = NEGATIVE_NUMBER  # `--lr -1e-3` reaches the value check
    for _, cls, title in _AREAS:
        add_dataclass_args(parser, cls, title)
    add_data_args(parser)
    add_tokenizer_args(parser)
    add_random_ltd_args(parser)
    attach_ranges(parser, DataConfig)
    attach_ranges(parser, TokenizerConfig)
    attach_ranges(parser, RandomLTDConfig, dest_prefix="random_ltd_")
    add_curriculum_args(parser)
    attach_ranges(parser, CurriculumConfig, dest_to_field=CURRICULUM_FLAG_FIELDS)
    paths.declare_all(parser, _HAND_ADDED_PATH_KINDS)  # the dataclass flags declare theirs in metadata
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
        check_ranges(parser, args)  # every numeric flag, before anything reads the values
        paths.check_paths(parser, args)  # every path flag, before anything is read or written
        areas = {name: dataclass_from_args(cls, args) for name, cls, _ in _AREAS}
        data = data_config_from_args(args)
        if args.mock_data and args.tokenizer_model is None and args.vocab_file is None and args.tokenizer_type == "SentencePieceTokenizer":
            # Mock data needs no real tokenizer: ids in [0, --vocab-size).
            args.tokenizer_type, args.vocab_size = "NullTokenizer", args.vocab_size or 1024
        tokenizer = tokenizer_config_from_args(args)
        for name in ("tokenizer_model", "vocab_file", "merge_file"):
            # Absolute, so that the path a checkpoint records works from any directory.
            if getattr(tokenizer, name, None):
                setattr(tokenizer, name, os.path.abspath(getattr(tokenizer, name)))
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
        if (m.num_layers // pp) // p.num_layers_per_virtual_pipeline_stage < 2:
            raise ConfigError(
                f"--num-layers-per-virtual-pipeline-stage {p.num_layers_per_virtual_pipeline_stage} gives each pipeline "
                f"stage ({m.num_layers // pp} of --num-layers {m.num_layers}) only 1 virtual stage; the interleaved "
                "schedule needs 2 or more: give a smaller divisor, or drop the flag for the plain 1F1B schedule"
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
    ramp_flags = sorted(set(ltd_flags) & set(RAMP_FLAGS))
    if ltd.constant_k is not None and ramp_flags:
        raise ConfigError(f"--random-ltd-constant-k keeps a fixed length, so the ramp flags {', '.join(ramp_flags)} would be "
                          "ignored: give either --random-ltd-constant-k or the ramp")
    if ltd.enabled:
        try:
            ltd.validate(m.seq_length, m.num_layers, tp, p.sequence_parallel)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        if ltd.seed is None:
            ltd.seed = t.seed
    check_run_size(cfg)
    validate_curriculum(cfg, tp, [f for f in argv_flags if f.startswith("--curriculum-")])
    # Any training length gives the LR decay length in any unit: the trainer computes the exact run
    # (megatron.training.lr_schedule.exact_run), so no unit needs a matching budget.
    ck = cfg.checkpoint
    check_load(cfg)
    if ck.save is not None:
        check_writable_dir("--save", ck.save)
    for flag, path in (("--metrics-file", cfg.logging.metrics_file),):
        if path is not None:
            check_writable_file(flag, path)
    if cfg.logging.tensorboard_dir is not None:
        check_writable_dir("--tensorboard-dir", cfg.logging.tensorboard_dir)
    if cfg.model_type == "bert" and p.sequence_parallel:
        raise ConfigError("--sequence-parallel is not supported for BERT (its LM-head norm needs TransformerEngine/apex)")
    if t.compile:
        from megatron.models.compile import check_compiler
        from megatron.runtime.device import gpu_requested

        try:
            check_compiler(gpu_requested(p.cpu))
        except ValueError as e:
            raise ConfigError(str(e)) from None


RAMP_FLAGS = ("--random-ltd-min-seq", "--random-ltd-max-seq", "--random-ltd-require-steps", "--random-ltd-seq-step")

# Most samples a run may ask of its datasets: the index megatron-core builds holds a few bytes per
# sample, so a budget beyond this (a typo such as 1e30 tokens) would only hang in dataset building.
MAX_SAMPLES = 10**11


def check_run_size(cfg: PretrainConfig) -> None:
    """Refuse, before any dataset is built, a run that needs more samples than can be indexed."""
    from megatron.training.lr_schedule import run_length

    t = cfg.training
    gbs = t.global_batch_size
    run = run_length(cfg)
    samples = run.iterations * gbs
    if samples > MAX_SAMPLES:
        raise ConfigError(
            f"{run.stopped_by} means {run.iterations:.3g} iterations = {samples:.3g} samples of --global-batch-size "
            f"{gbs}, more than the {MAX_SAMPLES:.0e} samples a dataset index can hold: lower the budget"
            + ("" if run.stopped_by.startswith("--train-iters") else
               " (or add --train-iters: the first budget reached ends the run)"))
    if t.eval_iters * gbs > MAX_SAMPLES:
        raise ConfigError(f"--eval-iters {t.eval_iters} x --global-batch-size {gbs} = {t.eval_iters * gbs:.3g} samples, "
                          f"more than the {MAX_SAMPLES:.0e} samples a dataset index can hold: lower --eval-iters")


def check_load(cfg: PretrainConfig) -> None:
    """--load: a directory; with --finetune it must hold a checkpoint, and its model type must be this run's."""
    from megatron.checkpoint.files import CheckpointError, iter_dir, read_manifest
    from megatron.checkpoint.resume import plan_load

    ck = cfg.checkpoint
    if ck.load is None:
        if ck.finetune:
            raise ConfigError("--finetune needs --load DIR, the checkpoint to finetune from")
        return
    if not os.path.isdir(ck.load):
        raise ConfigError(f"--load {ck.load}: no such directory (give a directory written by --save)")
    try:
        plan = plan_load(ck.load)
        meta = read_manifest(plan.root, plan.candidates[0]) if plan.candidates else None
    except CheckpointError:
        return  # the loader names what is wrong with the directory
    if meta is None:
        if ck.finetune:
            raise ConfigError(f"--finetune --load {ck.load}: the directory holds no complete checkpoint, so there is "
                              "nothing to finetune from (point --load at a directory written by --save, or drop "
                              "--finetune to train from scratch)")
        return
    saved_type = meta.get("model_type")
    if saved_type is not None and saved_type != cfg.model_type:
        raise ConfigError(
            f"--load {iter_dir(plan.root, plan.candidates[0])} holds a {saved_type.upper()} model, but this run builds "
            f"{cfg.model_type.upper()}: load it with pretrain_{saved_type}.py, or give a {cfg.model_type.upper()} "
            "checkpoint")


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


def check_writable_dir(flag: str, path: str) -> None:
    """Refuse, before any work, a directory that cannot be written (not after the first iteration)."""
    try:
        paths.check_output_dir(flag, path)
    except paths.PathError as e:
        raise ConfigError(str(e)) from None


def check_writable_file(flag: str, path: str) -> None:
    try:
        paths.check_output_file(flag, path)
    except paths.PathError as e:
        raise ConfigError(str(e)) from None
