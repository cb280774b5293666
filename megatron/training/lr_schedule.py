"""Token accounting and the LayerToken learning-rate schedule.

The schedule is megatron-core's ``OptimizerParamScheduler``: its ``step(increment)`` advances by
any amount, so feeding it each step's layer-tokens (or raw tokens, samples, iterations) gives the
paper's LayerToken LR without a new scheduler class. Warmup and decay lengths are expressed in
the same unit.

Ordering (an improvement on Megatron-DeepSpeed, whose LR lags one step): a step's work is known
before it runs (the kept length is a pure function of the step), so the scheduler is advanced by
the step's own amount *before* the optimizer update; the update of step i uses the LR at the
work consumed through step i. With this, the very first update already has a non-zero LR. A
skipped update (fp16 overflow) is taken back (:func:`rewind_scheduler`): the schedule's position is
the work of the *applied* updates, while the token counters count all computed work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Tuple

from megatron.curriculum.schedule import rows_per_sample, seq_length_at
from megatron.ltd.schedule import kept_length, layer_averaged_tokens, layer_tokens, raw_tokens
from megatron.training.config import TrainingConfig


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
    seq_length: Optional[int] = None  # tokens per row the model sees (the curriculum's length)
    rows: Optional[int] = None  # rows in the step (more than samples under seqlen_reshape)

    @staticmethod
    def of(global_batch: int, seq_length: int, kept_length: int, num_layers: int, num_ltd_layers: int,
           rows: Optional[int] = None) -> "StepWork":
        """The work of a step of ``global_batch`` samples seen as ``rows`` rows (default: one per
        sample) of ``seq_length`` tokens: tokens are counted as the work actually done, so a
        curriculum-truncated row counts its truncated length."""
        rows = global_batch if rows is None else rows
        args = (rows, seq_length, kept_length, num_layers, num_ltd_layers)
        return StepWork(
            samples=global_batch,
            raw_tokens=raw_tokens(rows, seq_length),
            layer_tokens=layer_tokens(*args),
            layer_averaged_tokens=layer_averaged_tokens(*args),  # Megatron-DeepSpeed's per-step floor
            kept_length=kept_length,
            seq_length=seq_length,
            rows=rows,
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


UNITS = ("iterations", "samples", "tokens", "layer-tokens", "layer-averaged-tokens")


@dataclass(frozen=True)
class RunLength:
    """The exact run a budget gives: the iteration that ends it, which budget ends it, and the
    total work of the whole run in every unit (the counters' values after its last step)."""

    iterations: int
    stopped_by: str
    totals: Dict[str, int]

    def amount(self, unit: str) -> int:
        return self.totals[unit]


def exact_run(t: TrainingConfig, work_at: Callable[[int], StepWork], constant_from: int) -> RunLength:
    """Walk the kept-length schedule to the step that ends the run, whichever budget ends it.

    ``work_at(i)`` is the work of step ``i`` (0-based): a pure function of the step that changes
    only at the kept-length schedule's increments (MSLG is non-decreasing) and is constant from
    ``constant_from`` on. The walk jumps over each stretch of equal steps, so it costs one
    iteration per distinct kept length, not per step. The stop rule is :func:`reached_budget`'s
    (a counter at or past its budget after a step), so the result is what the trainer will run.
    """
    budgets = _budgets(t)
    if not budgets:
        raise ValueError("no training length: give --train-iters, --train-samples, --train-tokens, "
                         "--train-layer-tokens or --train-layer-averaged-tokens")
    done = TokenCounters()
    while True:
        it = done.iteration
        work = work_at(it)
        end = _stretch_end(work_at, it, work, constant_from)
        stretch = None if end is None else end - it  # steps with this same work (None: unbounded)
        # Steps of this work each budget still allows before it is reached (at least one).
        steps = {name: max(-(-(budget - _counter(done, unit)) // work.amount(unit)), 1)
                 for name, (unit, budget) in budgets.items()}
        need = min(steps.values())
        if stretch is not None and stretch < need:
            _add_steps(done, work, stretch)
            continue
        _add_steps(done, work, need)
        stopped_by = next(name for name, n in steps.items() if n == need)
        return RunLength(done.iteration, stopped_by, {u: _counter(done, u) for u in UNITS})


def _budgets(t: TrainingConfig) -> Dict[str, tuple]:
    given = {
        f"--train-iters {t.train_iters}": ("iterations", t.train_iters),
        f"--train-samples {t.train_samples}": ("samples", t.train_samples),
        f"--train-tokens {t.train_tokens}": ("tokens", t.train_tokens),
        f"--train-layer-tokens {t.train_layer_tokens}": ("layer-tokens", t.train_layer_tokens),
        f"--train-layer-averaged-tokens {t.train_layer_averaged_tokens}": ("layer-averaged-tokens",
                                                                             t.train_layer_averaged_tokens),
    }
    return {name: (unit, int(budget)) for name, (unit, budget) in given.items() if budget is not None}


def _counter(c: TokenCounters, unit: str) -> int:
    return {"iterations": c.iteration, "samples": c.samples, "tokens": c.raw_tokens, "layer-tokens": c.layer_tokens,
            "layer-averaged-tokens": c.layer_averaged_tokens}[unit]


def _add_steps(c: TokenCounters, work: StepWork, n: int) -> None:
    c.iteration += n
    c.samples += n * work.samples
    c.raw_tokens += n * work.raw_tokens
    c.layer_tokens += n * work.layer_tokens
    c.layer_averaged_tokens += n * work.layer_averaged_tokens


def _stretch_end(work_at: Callable[[int], StepWork], it: int, work: StepWork, constant_from: int) -> Optional[int]:
    """First step after ``it`` whose work differs from ``work`` (None: never). Binary search:
    the work is monotone in the step and constant from ``constant_from`` on."""
    if it >= constant_from:
        return None
    lo, hi = it, constant_from  # work_at(lo) == work; the answer is in (lo, hi]
    if work_at(hi) == work:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if work_at(mid) == work:
            lo = mid
        else:
            hi = mid
    return hi


def step_work_fn(cfg) -> Tuple[Callable[[int], StepWork], int]:
    """``(work_at, constant_from)`` for a :class:`PretrainConfig`: the work of step ``i`` (a pure
    function of the step: the kept length follows the MSLG schedule, the row length the
    curriculum's pacing) and the step from which it no longer changes (the end of both ramps).
    Random-LTD's kept length never exceeds the curriculum's row length."""
    m, t, ltd = cfg.model, cfg.training, cfg.random_ltd
    cur = getattr(cfg, "curriculum", None)
    n_ltd = len(ltd.resolve_layers(m.num_layers)) if ltd.enabled else 0
    s = m.seq_length

    def work_at(step: int) -> StepWork:
        s_t = seq_length_at(step, cur, s) if cur is not None else s
        rows = t.global_batch_size * (rows_per_sample(step, cur, s) if cur is not None else 1)
        k = min(kept_length(step, ltd, s), s_t) if n_ltd else s_t
        return StepWork.of(t.global_batch_size, s_t, k, m.num_layers, n_ltd, rows=rows)

    constant_from = (ltd.require_steps or 0) if n_ltd and ltd.constant_k is None else 0
    if cur is not None and cur.truncates:
        constant_from = max(constant_from, cur.constant_from())
    return work_at, constant_from


def run_length(cfg) -> RunLength:
    """The exact run a :class:`PretrainConfig` describes (see :func:`exact_run`)."""
    return exact_run(cfg.training, *step_work_fn(cfg))


def schedule_lengths(cfg, run: RunLength) -> tuple:
    """(warmup, decay) lengths in ``--lr-schedule-unit``.

    Decay defaults to the exact length of the run in that unit (:func:`exact_run`), so the LR
    reaches ``--min-lr`` at the iteration that ends the run, whichever budget ends it. Warmup may
    be given in iterations whatever the unit (``--lr-warmup-iters``): it is then the work of the
    first that many iterations in the unit, walked the same way.
    """
    lr = cfg.lr
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
    if unit != "iterations" and lr.lr_warmup_iters:
        only_iters = dataclasses.replace(cfg.training, train_iters=lr.lr_warmup_iters, train_samples=None,
                                         train_tokens=None, train_layer_tokens=None, train_layer_averaged_tokens=None)
        warmup = exact_run(only_iters, *step_work_fn(cfg)).amount(unit)
    if decay is None:
        decay = run.amount(unit)
    if lr.lr_warmup_fraction is not None:
        warmup = int(lr.lr_warmup_fraction * decay)
    if warmup >= decay:
        raise ValueError(f"the LR warmup ({warmup} {unit}) must be shorter than the decay ({decay} {unit})")
    return int(warmup), int(decay)


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


def rewind_scheduler(scheduler, amount: int) -> None:
    """Undo ``scheduler.step(amount)`` after a skipped update (fp16 overflow): as in Megatron-LM,
    the schedule advances only with applied updates. ``step(0)`` re-sets the groups' LR and WD."""
    scheduler.num_steps -= amount
    scheduler.step(0)


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
