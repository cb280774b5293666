"""Token accounting and the LayerToken learning-rate schedule.

The schedule is megatron-core's ``OptimizerParamScheduler``: its ``step(increment)`` advances by
any amount, so feeding it each step's layer-tokens (or raw tokens, samples, iterations) gives the
paper's LayerToken LR without a new scheduler class. Warmup and decay lengths are expressed in
the same unit.

Ordering (an improvement on Megatron-DeepSpeed, whose LR lags one step): a step's work is known
before it runs (the kept length is a pure function of the step), so the scheduler is advanced by
the step's own amount *before* the optimizer update; the update of step i uses the LR at the
work consumed through step i. With this, the very first update already has a non-zero LR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from megatron.ltd.schedule import layer_averaged_tokens, layer_tokens, raw_tokens
from megatron.training.config import LRConfig, ModelConfig, TrainingConfig


@dataclass
class TokenCounters:
    """Work consumed so far; checkpointed with the run."""

    iteration: int = 0
    samples: int = 0
    raw_tokens: int = 0
    layer_tokens: int = 0
    layer_averaged_tokens: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, int(value))


@dataclass(frozen=True)
class StepWork:
    """What one optimizer step consumes."""

    samples: int
    raw_tokens: int
    layer_tokens: int
    layer_averaged_tokens: int
    kept_length: int

    @staticmethod
    def of(global_batch: int, seq_length: int, kept_length: int, num_layers: int, num_ltd_layers: int) -> "StepWork":
        args = (global_batch, seq_length, kept_length, num_layers, num_ltd_layers)
        return StepWork(
            samples=global_batch,
            raw_tokens=raw_tokens(global_batch, seq_length),
            layer_tokens=layer_tokens(*args),
            layer_averaged_tokens=layer_averaged_tokens(*args),  # Megatron-DeepSpeed's per-step floor
            kept_length=kept_length,
        )

    def amount(self, unit: str) -> int:
        return {
            "iterations": 1,
            "samples": self.samples,
            "tokens": self.raw_tokens,
            "layer-tokens": self.layer_tokens,
            "layer-averaged-tokens": self.layer_averaged_tokens,
        }[unit]


def add_step(counters: TokenCounters, work: StepWork) -> None:
    counters.iteration += 1
    counters.samples += work.samples
    counters.raw_tokens += work.raw_tokens
    counters.layer_tokens += work.layer_tokens
    counters.layer_averaged_tokens += work.layer_averaged_tokens


def schedule_lengths(lr: LRConfig, training: TrainingConfig, model: ModelConfig, full_step: StepWork,
                     max_iters: Optional[int] = None) -> tuple:
    """(warmup, decay) lengths in ``lr.lr_schedule_unit``.

    Decay defaults to the training length in that unit: an explicit budget in the unit when one
    is given, else the iteration/sample budget converted with a full-length (no-drop) step, the
    same conversion Megatron-LM uses for samples.
    """
    unit = lr.lr_schedule_unit
    if unit == "iterations":
        decay = lr.lr_decay_iters
        warmup = lr.lr_warmup_iters
    elif unit == "samples":
        decay = lr.lr_decay_samples
        warmup = lr.lr_warmup_samples
    else:
        decay = lr.lr_decay_tokens
        warmup = lr.lr_warmup_tokens or 0
    if decay is None:
        decay = _training_length(unit, training, model, full_step, max_iters)
    if lr.lr_warmup_fraction is not None:
        warmup = int(lr.lr_warmup_fraction * decay)
    if warmup >= decay:
        raise ValueError(f"the LR warmup ({warmup} {unit}) must be shorter than the decay ({decay} {unit})")
    return int(warmup), int(decay)


def _training_length(unit: str, t: TrainingConfig, m: ModelConfig, full_step: StepWork,
                     max_iters: Optional[int] = None) -> int:
    if unit == "tokens" and t.train_tokens is not None:
        return t.train_tokens
    if unit == "layer-tokens" and t.train_layer_tokens is not None:
        return t.train_layer_tokens
    if unit == "layer-averaged-tokens" and t.train_layer_averaged_tokens is not None:
        return t.train_layer_averaged_tokens
    if unit == "layer-averaged-tokens" and t.train_layer_tokens is not None:
        return t.train_layer_tokens // m.num_layers
    iters = train_iterations_upper_bound(t, full_step)
    if iters is None:
        iters = max_iters  # a budget in another unit, converted by the trainer (exact for the ramp)
    if iters is None:
        raise ValueError(f"cannot derive the LR decay length in {unit}: give --lr-decay-* or --train-iters/--train-samples")
    return iters * full_step.amount(unit)


def train_iterations_upper_bound(t: TrainingConfig, full_step: StepWork) -> Optional[int]:
    if t.train_iters is not None:
        return t.train_iters
    if t.train_samples is not None:
        return t.train_samples // full_step.samples
    return None


def build_scheduler(optimizer, lr: LRConfig, warmup: int, decay: int, weight_decay: float):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    return OptimizerParamScheduler(
        optimizer,
        init_lr=lr.lr_warmup_init,
        max_lr=lr.lr,
        min_lr=lr.min_lr,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay,
        lr_decay_style=lr.lr_decay_style,
        start_wd=weight_decay,
        end_wd=weight_decay,
        wd_incr_steps=decay,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True,
        override_opt_param_scheduler=False,
    )


def reached_budget(counters: TokenCounters, t: TrainingConfig) -> Optional[str]:
    """The name of the budget that stops training, or None."""
    if t.train_iters is not None and counters.iteration >= t.train_iters:
        return f"--train-iters {t.train_iters}"
    if t.train_samples is not None and counters.samples >= t.train_samples:
        return f"--train-samples {t.train_samples}"
    if t.train_tokens is not None and counters.raw_tokens >= t.train_tokens:
        return f"--train-tokens {t.train_tokens}"
    if t.train_layer_tokens is not None and counters.layer_tokens >= t.train_layer_tokens:
        return f"--train-layer-tokens {t.train_layer_tokens}"
    if t.train_layer_averaged_tokens is not None and counters.layer_averaged_tokens >= t.train_layer_averaged_tokens:
        return f"--train-layer-averaged-tokens {t.train_layer_averaged_tokens}"
    return None
