"""Curriculum-learning settings: one typed dataclass, its command-line flags, and its validation.

Flag names follow Megatron-DeepSpeed's data-efficiency curriculum (``min_difficulty``,
``max_difficulty``, ``total_curriculum_step``, ``difficulty_step``, ``root_degree``), spelled
``--curriculum-*``. Every check in :meth:`CurriculumConfig.validate` raises a ``ValueError`` that
names the offending flag and suggests a value that would pass.

Difficulty units:
  * ``seqlen_truncate`` / ``seqlen_reshape``: the difficulty is a sequence length in tokens
    (full difficulty = ``--seq-length``);
  * ``vocab_rarity`` / ``file``: the difficulty is a percentile in [1, 100]: at limit ``p`` the
    sampler draws from the easiest ``p``% of the training samples (ranked by the metric), so a
    float-valued metric still gets an integer, exact pacing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

METRICS = ("seqlen_truncate", "seqlen_reshape", "vocab_rarity", "file")
SEQLEN_METRICS = ("seqlen_truncate", "seqlen_reshape")
SCHEDULES = ("fixed_linear", "fixed_root", "fixed_discrete")
FULL_PERCENTILE = 100

__all__ = ["CurriculumConfig", "METRICS", "SEQLEN_METRICS", "SCHEDULES", "add_curriculum_args",
           "curriculum_config_from_args"]


# The dest of each numeric --curriculum-* flag -> the field that declares its range.
FLAG_FIELDS = {"curriculum_min": "min_difficulty", "curriculum_max": "max_difficulty", "curriculum_steps": "total_steps",
               "curriculum_root_degree": "root_degree", "curriculum_step_increment": "step_increment",
               "curriculum_seed": "seed"}


@dataclass
class CurriculumConfig:
    """What the curriculum does, independent of the model.

    Attributes:
        metric: the difficulty metric (``None``: curriculum off).
        min_difficulty: the limit at step 0.
        max_difficulty: the limit at the end of the pacing (``None``: full difficulty).
        total_steps: pacing length in optimizer steps (``fixed_linear`` / ``fixed_root``).
        schedule: pacing function.
        root_degree: ``fixed_root``'s degree (2 = square root).
        step_increment: limits are aligned down to multiples of it (then clamped to [min, max]).
        discrete_values / discrete_steps: ``fixed_discrete``'s limits and the steps at which each
            next one starts (``len(values) == len(steps) + 1``).
        difficulty_file: ``file`` metric: a ``.npy`` of one value per sequence of the indexed
            dataset (``{prefix}`` in the path is replaced by each train-blend prefix).
        seed: seed of the sampler's draws (``None``: ``--seed``).
        allow_change: on resume, accept settings that differ from the checkpoint's.
    """

    # Numeric fields declare their flag's range (enforced with every other flag's at parsing:
    # megatron.training.cli.check_ranges); cross-field rules stay in validate().
    metric: Optional[str] = None
    min_difficulty: Optional[int] = field(default=None, metadata={"ge": 1})
    max_difficulty: Optional[int] = field(default=None, metadata={"ge": 1})
    total_steps: Optional[int] = field(default=None, metadata={"ge": 1})
    schedule: str = "fixed_linear"
    root_degree: int = field(default=2, metadata={"ge": 1})
    step_increment: int = field(default=1, metadata={"ge": 1})
    discrete_values: Optional[List[int]] = None
    discrete_steps: Optional[List[int]] = None
    difficulty_file: Optional[str] = None
    seed: Optional[int] = field(default=None, metadata={"ge": 0})
    allow_change: bool = False

    # ------------------------------------------------------------------ derived values
    @property
    def enabled(self) -> bool:
        return self.metric is not None

    @property
    def truncates(self) -> bool:
        """The metric shortens sequences (changes the step's shape and token count)."""
        return self.metric in SEQLEN_METRICS

    @property
    def samples(self) -> bool:
        """The metric selects samples (the curriculum sampler replaces the plain loader)."""
        return self.metric in ("vocab_rarity", "file")

    def full_difficulty(self, seq_length: int) -> int:
        return int(seq_length) if self.truncates else FULL_PERCENTILE

    def resolved_max(self, seq_length: int) -> int:
        return self.full_difficulty(seq_length) if self.max_difficulty is None else int(self.max_difficulty)

    def constant_from(self) -> int:
        """The first step from which the limit no longer changes."""
        if not self.enabled:
            return 0
        if self.schedule == "fixed_discrete":
            return int(self.discrete_steps[-1]) if self.discrete_steps else 0
        return int(self.total_steps or 0)

    def possible_values(self, seq_length: int) -> List[int]:
        """Values the schedule's output is built from (start, increment, end): each later check
        that must hold for every limit (divisibility by random-LTD's strata, by the TP size under
        sequence parallelism) holds for every limit once it holds for these."""
        if self.schedule == "fixed_discrete":
            return list(self.discrete_values or [])
        return [int(self.min_difficulty), int(self.step_increment), self.resolved_max(seq_length)]

    # ------------------------------------------------------------------ validation
    def validate(self, seq_length: int) -> None:
        """Raise ``ValueError`` naming the flag of the first inconsistent setting (nothing when off)."""
        if not self.enabled:
            return
        if self.metric not in METRICS:
            raise ValueError(f"--curriculum-metric {self.metric!r}: choose one of {', '.join(METRICS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--curriculum-schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        full = self.full_difficulty(seq_length)
        unit = "tokens (at most --seq-length)" if self.truncates else "a percentile of the samples"
        if self.metric == "file" and not self.difficulty_file:
            raise ValueError("--curriculum-metric file needs --curriculum-difficulty-file PATH.npy "
                             "(one value per sequence of the indexed dataset, e.g. from tools/analyze_data.py)")
        if self.metric != "file" and self.difficulty_file:
            raise ValueError("--curriculum-difficulty-file is read only with --curriculum-metric file")
        mx = self.resolved_max(seq_length)
        if not 0 < mx <= full:
            raise ValueError(f"--curriculum-max ({mx}) must be in [1, {full}] ({unit}), e.g. --curriculum-max {full}")
        if self.schedule == "fixed_discrete":
            self._validate_discrete(full, unit)
            return
        if self.discrete_values is not None or self.discrete_steps is not None:
            raise ValueError("--curriculum-discrete-values/--curriculum-discrete-steps need "
                             "--curriculum-schedule fixed_discrete")
        if self.min_difficulty is None or self.min_difficulty <= 0:
            raise ValueError(f"--curriculum-min ({self.min_difficulty}) must be positive ({unit}), e.g. "
                             f"--curriculum-min {max(full // 8, 1)}")
        if self.min_difficulty > mx:
            raise ValueError(f"--curriculum-min ({self.min_difficulty}) must be <= --curriculum-max ({mx}), e.g. "
                             f"--curriculum-min {max(mx // 8, 1)}")
        if self.step_increment is None or self.step_increment <= 0:
            raise ValueError(f"--curriculum-step-increment ({self.step_increment}) must be positive, e.g. "
                             "--curriculum-step-increment 8")
        if self.step_increment > mx:
            raise ValueError(f"--curriculum-step-increment ({self.step_increment}) does not fit in --curriculum-max "
                             f"({mx}), e.g. --curriculum-step-increment {min(8, mx)}")
        if self.total_steps is None or self.total_steps <= 0:
            raise ValueError(f"--curriculum-steps ({self.total_steps}) must be a positive number of steps, e.g. "
                             "--curriculum-steps 1000")
        if self.schedule == "fixed_root" and (self.root_degree is None or self.root_degree < 1):
            raise ValueError(f"--curriculum-root-degree ({self.root_degree}) must be an integer >= 1, e.g. "
                             "--curriculum-root-degree 2")

    def _validate_discrete(self, full: int, unit: str) -> None:
        values, steps = self.discrete_values, self.discrete_steps
        if not values:
            raise ValueError("--curriculum-schedule fixed_discrete needs --curriculum-discrete-values, e.g. "
                             f"--curriculum-discrete-values {max(full // 4, 1)} {max(full // 2, 1)} {full}")
        steps = list(steps or [])
        if len(steps) != len(values) - 1:
            raise ValueError(f"--curriculum-discrete-steps needs one step per change of value: {len(values) - 1} "
                             f"for {len(values)} values, got {len(steps)}")
        for v in values:
            if not 0 < v <= full:
                raise ValueError(f"--curriculum-discrete-values: {v} is not in [1, {full}] ({unit})")
        if any(b < a for a, b in zip(values, values[1:])):
            raise ValueError(f"--curriculum-discrete-values {values} must be non-decreasing (easy to hard)")
        if any(s <= 0 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"--curriculum-discrete-steps {steps} must be positive and strictly increasing")
        if self.max_difficulty is not None and values[-1] != self.max_difficulty:
            raise ValueError(f"--curriculum-max ({self.max_difficulty}) differs from the last discrete value "
                             f"({values[-1]}); drop --curriculum-max with fixed_discrete")


# ---------------------------------------------------------------------- command line
def _int_list(values: Optional[Sequence[str]], flag: str) -> Optional[List[int]]:
    if values is None:
        return None
    out = []
    for chunk in values:
        for item in str(chunk).replace(",", " ").split():
            try:
                out.append(int(item))
            except ValueError:
                raise ValueError(f"{flag}: {item!r} is not an integer") from None
    return out


def add_curriculum_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the "curriculum learning" argument group to ``parser`` and return the parser."""
    g = parser.add_argument_group("curriculum learning (data sampling, composes with random-LTD)")
    g.add_argument("--curriculum-metric", choices=METRICS, default=None,
                   help="Turn the curriculum on with this difficulty metric: seqlen_truncate (train on the first L "
                        "tokens of each sample), seqlen_reshape (the same tokens as more samples of L), vocab_rarity "
                        "(easiest = most common tokens; needs tools/analyze_data.py), file (a per-sequence .npy).")
    g.add_argument("--curriculum-min", dest="curriculum_min", type=int, default=None,
                   help="Difficulty limit at step 0 (tokens for seqlen_*, else a percentile of the samples).")
    g.add_argument("--curriculum-max", dest="curriculum_max", type=int, default=None,
                   help="Limit at the end of the pacing (default: full difficulty: --seq-length or 100).")
    g.add_argument("--curriculum-steps", type=int, default=None,
                   help="Iterations over which the limit grows from min to max (fixed_linear, fixed_root).")
    g.add_argument("--curriculum-schedule", choices=SCHEDULES, default="fixed_linear", help="Pacing function.")
    g.add_argument("--curriculum-root-degree", type=int, default=2, help="Degree of fixed_root (2 = square root).")
    g.add_argument("--curriculum-step-increment", type=int, default=None,
                   help="Limits are aligned down to multiples of this (default: 8 for seqlen_*, 1 otherwise).")
    g.add_argument("--curriculum-discrete-values", nargs="+", default=None, metavar="V",
                   help="fixed_discrete: the limits, easy to hard.")
    g.add_argument("--curriculum-discrete-steps", nargs="+", default=None, metavar="STEP",
                   help="fixed_discrete: the iteration at which each next limit starts.")
    g.add_argument("--curriculum-difficulty-file", default=None,
                   help="file metric: .npy of one value per sequence of the indexed dataset ({prefix} is replaced "
                        "by each train-blend prefix).")
    g.add_argument("--curriculum-seed", type=int, default=None, help="Seed of the sampler's draws (default: --seed).")
    g.add_argument("--curriculum-allow-change", action="store_true",
                   help="On --load, accept curriculum settings that differ from the checkpoint's.")
    return parser


def curriculum_config_from_args(args: argparse.Namespace) -> CurriculumConfig:
    metric = getattr(args, "curriculum_metric", None)
    inc = getattr(args, "curriculum_step_increment", None)
    if inc is None:
        inc = 8 if metric in SEQLEN_METRICS else 1
    seed = getattr(args, "curriculum_seed", None)
    return CurriculumConfig(
        metric=metric,
        min_difficulty=getattr(args, "curriculum_min", None),
        max_difficulty=getattr(args, "curriculum_max", None),
        total_steps=getattr(args, "curriculum_steps", None),
        schedule=getattr(args, "curriculum_schedule", "fixed_linear"),
        root_degree=getattr(args, "curriculum_root_degree", 2),
        step_increment=inc,
        discrete_values=_int_list(getattr(args, "curriculum_discrete_values", None), "--curriculum-discrete-values"),
        discrete_steps=_int_list(getattr(args, "curriculum_discrete_steps", None), "--curriculum-discrete-steps"),
        difficulty_file=getattr(args, "curriculum_difficulty_file", None),
        seed=seed if seed is not None else getattr(args, "seed", None),
        allow_change=bool(getattr(args, "curriculum_allow_change", False)),
    )
