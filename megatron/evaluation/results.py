"""Evaluation results as a JSON file and as a readable table."""

from __future__ import annotations

import json
import math
import os
from typing import Any, List, Mapping, Sequence

__all__ = ["write_json", "format_table", "format_side_by_side", "METRIC_LABELS"]

# metric key -> (label, higher is better)
METRIC_LABELS = {
    "accuracy_strict": ("LAMBADA acc (strict)", True),
    "accuracy_non_strict": ("LAMBADA acc (non-strict)", True),
    "target_ppl_strict": ("LAMBADA target ppl", False),
    "token_ppl": ("token perplexity", False),
    "word_ppl": ("word perplexity", False),
    "token_loss": ("token loss (nats)", False),
}


def write_json(path: str, results: Mapping[str, Any]) -> str:
    """Write ``results`` atomically (temp file + rename); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if 0 < abs(value) < 1:
            return f"{value:.4f}"
        return f"{value:.3f}" if abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def _table(header: Sequence[str], rows: List[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in rows]])


def format_table(task_results: Sequence[Mapping[str, Any]]) -> str:
    """One row per (task, metric): a Markdown table that reads in a terminal too."""
    rows = []
    for res in task_results:
        task = res.get("task", "?")
        for key, (label, _) in METRIC_LABELS.items():
            if key in res and res[key] is not None:
                rows.append((task, label, _fmt(res[key])))
        extra = res.get("examples") or res.get("scored_tokens")
        if extra is not None:
            rows.append((task, "examples" if "examples" in res else "scored tokens", _fmt(extra)))
    return _table(("task", "metric", "value"), rows)


def format_side_by_side(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """``results[model][task]`` -> one row per metric, one column per model, and which is better."""
    models = list(results)
    rows = []
    tasks: List[str] = []
    for m in models:
        for t in results[m]:
            if t not in tasks:
                tasks.append(t)
    for t in tasks:
        for key, (label, higher_better) in METRIC_LABELS.items():
            vals = [results[m].get(t, {}).get(key) for m in models]
            if all(v is None for v in vals):
                continue
            present = [v for v in vals if isinstance(v, (int, float))]
            best = ""
            if len(present) == len(models) > 1 and len(set(present)) > 1:
                target = max(present) if higher_better else min(present)
                best = models[vals.index(target)]
            rows.append((f"{t}: {label}", *[_fmt(v) for v in vals], best))
    return _table(("metric", *models, "better"), rows)
