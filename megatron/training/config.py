"""Per-area typed configuration for pretraining, with Megatron-LM's flag names.

Every numeric field declares its range where it is declared, in its metadata
(``_m("Adam beta2.", ge=0.0, lt=1.0)``; keys ``ge``/``gt``/``le``/``lt``, ``off`` for a value that
turns the feature off, ``hint`` printed with the error): :func:`megatron.training.cli.check_ranges`
enforces them all right after parsing, and a test fails for a numeric flag without a range. Each
dataclass checks its cross-field rules in ``__post_init__`` (naming the flags at fault); checks that
span areas live in :func:`megatron.training.arguments.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

from megatron.curriculum.config import CurriculumConfig

LR_UNITS = ("iterations", "samples", "tokens", "layer-tokens", "layer-averaged-tokens")


def _m(help_text: str, **kw):
    return dict(help=help_text, **kw)


@dataclass
class ModelConfig:
    num_layers: int = field(default=12, metadata=_m("Transformer layers.", ge=1))
    hidden_size: int = field(default=768, metadata=_m("Hidden size.", ge=1))
    ffn_hidden_size: Optional[int] = field(default=None, metadata=_m("MLP hidden size (default 4 x hidden).", ge=1))
    num_attention_heads: int = field(default=12, metadata=_m("Attention heads.", ge=1))
    num_query_groups: Optional[int] = field(default=None, metadata=_m("Query groups for grouped-query attention.", ge=1))
    kv_channels: Optional[int] = field(default=None, metadata=_m("Head dimension (default hidden / heads).", ge=1))
    seq_length: int = field(default=1024, metadata=_m("Sequence length.", ge=1))
    max_position_embeddings: Optional[int] = field(default=None, metadata=_m("Learned positions (default: seq length).", ge=1))
    position_embedding_type: str = field(default="learned_absolute", metadata=_m("Position embeddings.", choices=["learned_absolute", "rope"]))
    rotary_percent: float = field(default=1.0, metadata=_m("Fraction of the head dimension rotated (RoPE).", gt=0.0, le=1.0))
    rotary_base: int = field(default=10000, metadata=_m("RoPE base.", gt=0))
    normalization: str = field(default="LayerNorm", metadata=_m("Norm type.", choices=["LayerNorm", "RMSNorm"]))
    layernorm_epsilon: float = field(default=1e-5, metadata=_m("Norm epsilon.", gt=0.0))
    swiglu: bool = field(default=False, metadata=_m("SwiGLU MLP."))
    disable_bias_linear: bool = field(default=False, metadata=_m("No biases in linear layers."))
    init_method_std: float = field(default=0.02, metadata=_m("Std of the normal weight init.", gt=0.0))
    hidden_dropout: float = field(default=0.1, metadata=_m("Dropout after attention/MLP.", ge=0.0, lt=1.0))
    attention_dropout: float = field(default=0.1, metadata=_m("Attention-probability dropout.", ge=0.0, lt=1.0))
    untie_embeddings_and_output_weights: bool = field(default=False, metadata=_m("Separate output layer weights."))
    make_vocab_size_divisible_by: int = field(default=128, metadata=_m("Pad the vocabulary to a multiple of this (x TP).", ge=1))

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads and self.kv_channels is None:
            raise ValueError(
                f"--hidden-size {self.hidden_size} is not divisible by --num-attention-heads "
                f"{self.num_attention_heads}; change one or set --kv-channels"
            )
        if self.max_position_embeddings is None:
            self.max_position_embeddings = self.seq_length
        if self.position_embedding_type == "learned_absolute" and self.seq_length > self.max_position_embeddings:
            raise ValueError(
                f"--seq-length {self.seq_length} exceeds --max-position-embeddings {self.max_position_embeddings}"
            )


@dataclass
class ParallelConfig:
    tensor_model_parallel_size: int = field(default=1, metadata=_m("Tensor-parallel size.", ge=1))
    pipeline_model_parallel_size: int = field(default=1, metadata=_m("Pipeline-parallel size.", ge=1))
    num_layers_per_virtual_pipeline_stage: Optional[int] = field(default=None, metadata=_m("Layers per virtual stage (interleaved 1F1B).", ge=1))
    sequence_parallel: bool = field(default=False, metadata=_m("Shard activations along the sequence between TP regions."))
    use_distributed_optimizer: bool = field(default=False, metadata=_m("Shard optimizer state across data-parallel ranks."))
    overlap_grad_reduce: bool = field(default=False, metadata=_m("Overlap the DP gradient reduce with backward."))
    cpu: bool = field(default=False, metadata=_m("Run on CPU (gloo) even when a GPU is visible."))

    def __post_init__(self) -> None:
        if self.sequence_parallel and self.tensor_model_parallel_size == 1:
            raise ValueError("--sequence-parallel needs --tensor-model-parallel-size > 1")


@dataclass
class PrecisionConfig:
    bf16: bool = field(default=False, metadata=_m("bfloat16 mixed precision."))
    fp16: bool = field(default=False, metadata=_m("float16 mixed precision with loss scaling."))
    loss_scale: Optional[float] = field(default=None, metadata=_m("Static loss scale (fp16); default: dynamic.", gt=0.0))
    initial_loss_scale: float = field(default=2.0**32, metadata=_m("Initial dynamic loss scale.", gt=0.0))
    min_loss_scale: float = field(default=1.0, metadata=_m("Minimum dynamic loss scale.", gt=0.0))
    loss_scale_window: int = field(default=1000, metadata=_m("Steps without overflow before the scale grows.", ge=1))
    hysteresis: int = field(default=2, metadata=_m("Overflows tolerated before the scale shrinks.", ge=1))

    def __post_init__(self) -> None:
        if self.bf16 and self.fp16:
            raise ValueError("--bf16 and --fp16 are mutually exclusive: pick one")
        if self.loss_scale is not None and not self.fp16:
            raise ValueError("--loss-scale only applies with --fp16")


@dataclass
class TrainingConfig:
    micro_batch_size: int = field(default=1, metadata=_m("Samples per micro-batch per data-parallel rank.", ge=1))
    global_batch_size: Optional[int] = field(default=None, metadata=_m("Samples per step (default micro x DP).", ge=1, hint="leave it out for --micro-batch-size x data-parallel size"))
    train_iters: Optional[int] = field(default=None, metadata=_m("Stop after this many iterations.", ge=1))
    train_samples: Optional[int] = field(default=None, metadata=_m("Stop after this many samples.", ge=1))
    train_tokens: Optional[int] = field(default=None, metadata=_m("Stop after this many raw tokens.", ge=1))
    train_layer_tokens: Optional[int] = field(default=None, metadata=_m("Stop after this many layer-tokens (random-LTD budget).", ge=1))
    train_layer_averaged_tokens: Optional[int] = field(
        default=None, metadata=_m("Stop after this many layer-averaged tokens (layer-tokens / L): Megatron-DeepSpeed's random-LTD --train-tokens.", ge=1))
    exit_interval: Optional[int] = field(default=None, metadata=_m("Save and exit when the iteration is a multiple of this.", ge=1))
    seed: int = field(default=1234, metadata=_m("Random seed.", ge=0, lt=2**32))
    optimizer: str = field(default="adam", metadata=_m("Optimizer.", choices=["adam", "sgd"]))
    weight_decay: float = field(default=0.01, metadata=_m("Weight decay.", ge=0.0))
    adam_beta1: float = field(default=0.9, metadata=_m("Adam beta1.", ge=0.0, lt=1.0))
    adam_beta2: float = field(default=0.999, metadata=_m("Adam beta2.", ge=0.0, lt=1.0))
    adam_eps: float = field(default=1e-8, metadata=_m("Adam epsilon.", gt=0.0))
    sgd_momentum: float = field(default=0.9, metadata=_m("SGD momentum.", ge=0.0, lt=1.0))
    clip_grad: float = field(default=1.0, metadata=_m("Gradient clipping by global norm (0 = off).", ge=0.0, hint="0 = no clipping"))
    recompute_granularity: Optional[str] = field(default=None, metadata=_m("Activation recompute.", choices=["full", "selective"]))
    recompute_method: Optional[str] = field(default=None, metadata=_m("Full recompute method.", choices=["uniform", "block"]))
    recompute_num_layers: Optional[int] = field(default=None, metadata=_m("Layers per recompute chunk / recomputed layers.", ge=1))
    compile: bool = field(default=False, metadata=_m("torch.compile each transformer layer (a dropping layer's gather, "
                                                     "layer and scatter as one graph; the kept length is a dynamic size)."))
    compile_mode: Optional[str] = field(default=None, metadata=_m(
        "torch.compile mode for --compile (default 'default'; 'reduce-overhead' adds CUDA graphs, one per kept length, GPU only).",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"]))
    eval_interval: int = field(default=1000, metadata=_m("Evaluate on the validation split every this many iterations.", ge=1))
    eval_iters: int = field(default=100, metadata=_m("Validation iterations (global batches) per evaluation (0 = none).", ge=0, hint="0 = no evaluation"))

    def __post_init__(self) -> None:
        lengths = (self.train_iters, self.train_samples, self.train_tokens, self.train_layer_tokens, self.train_layer_averaged_tokens)
        if all(v is None for v in lengths):
            raise ValueError("give a training length: --train-iters, --train-samples, --train-tokens, --train-layer-tokens "
                             "or --train-layer-averaged-tokens")
        if self.train_iters is not None and self.train_samples is not None:
            raise ValueError("--train-iters and --train-samples are mutually exclusive")
        if self.recompute_method is not None and self.recompute_granularity != "full":
            raise ValueError("--recompute-method needs --recompute-granularity full")
        if self.recompute_granularity == "full" and (self.recompute_method is None or not self.recompute_num_layers):
            raise ValueError("--recompute-granularity full needs --recompute-method {uniform,block} and --recompute-num-layers N")
        if self.compile_mode is not None and not self.compile:
            raise ValueError("--compile-mode needs --compile")


@dataclass
class LRConfig:
    lr: float = field(default=1e-4, metadata=_m("Peak learning rate.", gt=0.0))
    min_lr: float = field(default=0.0, metadata=_m("Learning-rate floor after decay.", ge=0.0))
    lr_warmup_init: float = field(default=0.0, metadata=_m("Learning rate at the start of warmup.", ge=0.0))
    lr_decay_style: str = field(default="cosine", metadata=_m("Decay shape.", choices=["constant", "linear", "cosine", "inverse-square-root"]))
    lr_schedule_unit: str = field(
        default="iterations",
        metadata=_m(
            "What advances warmup and decay: iterations, samples, raw tokens, layer-tokens "
            "(gbs*(s*(L-Lr)+k*Lr)), or layer-averaged tokens (layer-tokens / L; Megatron-DeepSpeed's counter).",
            choices=list(LR_UNITS),
        ),
    )
    lr_warmup_iters: int = field(default=0, metadata=_m("Warmup length in iterations; with another --lr-schedule-unit, the work of the first that many iterations (exact, kept-length ramp included).", ge=0))
    lr_warmup_samples: int = field(default=0, metadata=_m("Warmup length in samples (unit: samples).", ge=0))
    lr_warmup_tokens: Optional[int] = field(default=None, metadata=_m("Warmup length in the token unit chosen by --lr-schedule-unit.", ge=0))
    lr_warmup_fraction: Optional[float] = field(default=None, metadata=_m("Warmup as a fraction of the decay length (any unit).", ge=0.0, lt=1.0))
    lr_decay_iters: Optional[int] = field(default=None, metadata=_m("Decay length in iterations (default: the exact run, whichever budget ends it).", ge=1))
    lr_decay_samples: Optional[int] = field(default=None, metadata=_m("Decay length in samples.", ge=1))
    lr_decay_tokens: Optional[int] = field(default=None, metadata=_m("Decay length in the token unit chosen by --lr-schedule-unit (default: the exact run).", ge=1))

    def __post_init__(self) -> None:
        if self.min_lr > self.lr:
            raise ValueError(f"need --min-lr ({self.min_lr}) <= --lr ({self.lr})")
        token_unit = self.lr_schedule_unit in ("tokens", "layer-tokens", "layer-averaged-tokens")
        if not token_unit and (self.lr_warmup_tokens is not None or self.lr_decay_tokens is not None):
            raise ValueError(
                f"--lr-warmup-tokens/--lr-decay-tokens need --lr-schedule-unit tokens, layer-tokens or "
                f"layer-averaged-tokens (got {self.lr_schedule_unit})"
            )
        if self.lr_schedule_unit != "iterations" and self.lr_decay_iters:
            raise ValueError(f"--lr-decay-iters needs --lr-schedule-unit iterations (got {self.lr_schedule_unit}); "
                             "without --lr-decay-* the decay spans the whole run in any unit")
        if self.lr_warmup_iters and (self.lr_warmup_tokens or self.lr_warmup_samples or self.lr_warmup_fraction is not None):
            raise ValueError("give one LR warmup length: --lr-warmup-iters, --lr-warmup-samples, --lr-warmup-tokens "
                             "or --lr-warmup-fraction")
        if self.lr_schedule_unit != "samples" and (self.lr_warmup_samples or self.lr_decay_samples):
            raise ValueError(f"--lr-warmup-samples/--lr-decay-samples need --lr-schedule-unit samples (got {self.lr_schedule_unit})")


@dataclass
class CheckpointConfig:
    save: Optional[str] = field(default=None, metadata=_m("Directory to save checkpoints to.", path="output-dir"))
    load: Optional[str] = field(default=None, metadata=_m("Directory to resume from (its latest complete checkpoint).",
                                                     path=("input-dir", "a directory written by --save")))
    save_interval: Optional[int] = field(default=None, metadata=_m("Save every this many iterations.", ge=1))
    load_optim: bool = field(default=True, metadata=_m("Do not load optimizer state.", negate="--no-load-optim"))
    load_rng: bool = field(default=True, metadata=_m("Do not load RNG state.", negate="--no-load-rng"))
    finetune: bool = field(default=False, metadata=_m("Load weights only and start counters at zero."))
    keep_last_checkpoints: Optional[int] = field(
        default=None, metadata=_m("After each save, delete older complete checkpoints so that this many remain, the "
                                  "one just written included (default: keep all).", ge=1, hint="leave it out to keep every checkpoint"))
    override_opt_param_scheduler: bool = field(
        default=False, metadata=_m("On --load, take the LR schedule (LR, warmup, decay) from this run's flags; the "
                                   "position comes from the checkpoint.", flag="--override-opt_param-scheduler"))
    use_checkpoint_opt_param_scheduler: bool = field(
        default=False, metadata=_m("On --load, take the LR schedule (LR, warmup, decay) from the checkpoint.",
                                   flag="--use-checkpoint-opt_param-scheduler"))
    random_ltd_allow_change: bool = field(
        default=False, metadata=_m("On --load, accept random-LTD settings (seed, layers, ramp) that differ from the "
                                   "checkpoint's (the dropped tokens change from then on)."))
    async_save: bool = field(
        default=False, metadata=_m("Write checkpoints in the background while training goes on; each is committed "
                                   "(tracker, manifest) once its write is complete on every rank."))

    def __post_init__(self) -> None:
        if self.async_save and self.save is None:
            raise ValueError("--async-save needs --save DIR")
        if self.save_interval is not None and self.save is None:
            raise ValueError("--save-interval needs --save DIR")
        if self.override_opt_param_scheduler and self.use_checkpoint_opt_param_scheduler:
            raise ValueError("--override-opt_param-scheduler and --use-checkpoint-opt_param-scheduler are mutually "
                             "exclusive: pick one")


@dataclass
class FaultConfig:
    """Preemption, hangs and runs that go wrong: stop cleanly, with the cause named."""

    exit_signal_handler: bool = field(
        default=False, metadata=_m("On SIGTERM or SIGUSR1 (what SLURM sends before a job ends), finish the current "
                                   "step, save a checkpoint and exit 0, on every rank together."))
    exit_duration_in_mins: Optional[float] = field(
        default=None, metadata=_m("Save and exit 0 once the run has lasted this many minutes.", gt=0.0))
    distributed_timeout_minutes: float = field(
        default=10.0, metadata=_m("A collective that does not complete within this many minutes stops the run with "
                                  "the step named.", gt=0.0))
    loss_spike_factor: Optional[float] = field(
        default=10.0, metadata=_m("Stop without saving when the loss exceeds this many times its mean over the last "
                                  "--loss-spike-window iterations (0 = off), so every saved checkpoint predates it.", gt=1.0, off=0.0))
    loss_spike_window: int = field(default=20, metadata=_m("Iterations in the loss-spike guard's running mean.", ge=2))
    max_consecutive_skipped_steps: int = field(
        default=100, metadata=_m("Stop when this many consecutive fp16 steps overflow (no update at all); 0 = never.", ge=0, hint="0 = never stop"))


@dataclass
class LoggingConfig:
    log_interval: int = field(default=100, metadata=_m("Print/log metrics every this many iterations.", ge=1))
    tensorboard_dir: Optional[str] = field(default=None, metadata=_m("Write TensorBoard events here.", path="output-dir"))
    metrics_file: Optional[str] = field(default=None, metadata=_m("Append one JSON line of metrics per log/eval event.",
                                                                  path="output-file"))
    no_progress: bool = field(default=False, metadata=_m("Disable the progress bar."))


@dataclass
class PretrainConfig:
    """Everything a pretraining run needs; built once from the command line."""

    model: ModelConfig
    parallel: ParallelConfig
    precision: PrecisionConfig
    training: TrainingConfig
    lr: LRConfig
    checkpoint: CheckpointConfig
    logging: LoggingConfig
    data: object  # megatron.data.config.DataConfig
    tokenizer: object  # megatron.data.tokenizers.TokenizerConfig
    random_ltd: object  # megatron.ltd.config.RandomLTDConfig
    fault: FaultConfig = field(default_factory=FaultConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)  # off unless --curriculum-metric
    model_type: str = "gpt"
    extra: dict = field(default_factory=dict)

    # Fields whose change makes a checkpoint's weights meaningless for this run.
    MODEL_FLAGS_THAT_MUST_MATCH: ClassVar[tuple] = (
        "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups",
        "kv_channels", "max_position_embeddings", "position_embedding_type", "normalization", "swiglu",
        "disable_bias_linear", "untie_embeddings_and_output_weights",
    )
