"""Resume check: the curriculum settings decide every later batch (its samples and their length),
so a change at resume must be explicit (``--curriculum-allow-change``), as for random-LTD."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from .config import CurriculumConfig

__all__ = ["CurriculumChanged", "curriculum_record", "check_curriculum"]

# Fields that change the data stream (allow_change is the escape hatch itself, not a setting).
_FLAGS = (("metric", "--curriculum-metric"), ("min_difficulty", "--curriculum-min"),
          ("max_difficulty", "--curriculum-max"), ("total_steps", "--curriculum-steps"),
          ("schedule", "--curriculum-schedule"), ("root_degree", "--curriculum-root-degree"),
          ("step_increment", "--curriculum-step-increment"), ("discrete_values", "--curriculum-discrete-values"),
          ("discrete_steps", "--curriculum-discrete-steps"), ("difficulty_file", "--curriculum-difficulty-file"),
          ("seed", "--curriculum-seed (default: --seed)"))


class CurriculumChanged(ValueError):
    """The run's curriculum differs from the checkpoint's."""


def curriculum_record(cfg: CurriculumConfig) -> Optional[Dict[str, Any]]:
    """What a checkpoint records (``None`` when the curriculum is off)."""
    if not cfg.enabled:
        return None
    record = dataclasses.asdict(cfg)
    record.pop("allow_change")
    return record


def check_curriculum(saved: Optional[Dict[str, Any]], current: CurriculumConfig) -> List[str]:
    """Compare a checkpoint's record with this run's settings; raise :class:`CurriculumChanged`
    naming every differing flag unless ``current.allow_change``. Turning the curriculum on or off
    at a resume is a change too (a forgotten flag would silently change the data). Returns the
    differences (for the log)."""
    now = curriculum_record(current)
    if saved is None and now is None:
        return []
    if saved is None or now is None:
        diffs = [f"--curriculum-metric: checkpoint {None if saved is None else saved.get('metric')!r}, "
                 f"this run {current.metric!r}"]
    else:
        diffs = [f"{flag}: checkpoint {saved.get(key)!r}, this run {now[key]!r}"
                 for key, flag in _FLAGS if saved.get(key) != now[key]]
    if diffs and not current.allow_change:
        raise CurriculumChanged("the curriculum settings differ from the checkpoint's, which changes every later batch:\n  "
                                + "\n  ".join(diffs)
                                + "\nResume with the checkpoint's values, or pass --curriculum-allow-change to change them")
    return diffs
