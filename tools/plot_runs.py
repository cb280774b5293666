#!/usr/bin/env python
"""Plot runs side by side from their --metrics-file JSON lines: validation loss against
layer-averaged tokens and against wall-clock, kept length against step and learning rate against
layer-averaged tokens.

    python tools/plot_runs.py --run baseline=runs/a/metrics.jsonl --run random-ltd=runs/b/metrics.jsonl --out cmp.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_rows(path: str) -> List[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file {path} does not exist (was the run given --metrics-file?)")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno} is not a JSON line ({e.msg}): give a --metrics-file written by a "
                                 "run (one JSON object per line)") from None
            if not isinstance(row, dict) or "kind" not in row:
                raise ValueError(f"{path}:{lineno} is not a metrics record (no 'kind'): give a --metrics-file written "
                                 "by a run")
            rows.append(row)
    return rows


def plot_comparison(runs: Dict[str, str], out_png: str, title: str = "Baseline vs random-LTD") -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (ax_lt, ax_time), (ax_k, ax_lr) = axes
    for name, path in runs.items():
        rows = read_rows(path)
        valid = [r for r in rows if r["kind"] == "valid"]
        train = [r for r in rows if r["kind"] == "train"]
        if valid:
            ax_time.plot([r["wall_s"] for r in valid], [r["loss"] for r in valid], marker="o", ms=3, label=name)
            ax_lt.plot([r["layer_averaged_tokens"] for r in valid], [r["loss"] for r in valid], marker="o", ms=3, label=name)
        if train:
            ax_k.plot([r["iteration"] for r in train], [r["kept_length"] for r in train], label=name)
            ax_lr.plot([r["layer_averaged_tokens"] for r in train], [r["lr"] for r in train], label=name)
    for ax, (x, y) in zip(
        (ax_lt, ax_time, ax_k, ax_lr),
        (("layer-averaged tokens", "validation loss"), ("training wall-clock (s)", "validation loss"),
         ("iteration", "kept length k (tokens per dropping layer)"), ("layer-averaged tokens", "learning rate")),
    ):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def build_parser() -> argparse.ArgumentParser:
    from megatron.data import paths
    from megatron.training.cli import OneLineErrorParser

    p = OneLineErrorParser(prog="plot_runs.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    paths.declare(p.add_argument("--run", action="append", required=True, metavar="NAME=METRICS_JSONL"),
                  paths.INPUT_FILE, "a --metrics-file written by a run", after="=")
    paths.declare(p.add_argument("--out", required=True, help="PNG to write"), paths.OUTPUT_FILE, "a .png file path")
    paths.declare(p.add_argument("--title", default="Baseline vs random-LTD"), paths.TEXT)
    return p


def main(argv=None) -> None:
    from megatron.data import paths

    p = build_parser()
    a = paths.parse_checked(p, argv)
    runs = {}
    for item in a.run:
        if "=" not in item:
            p.error(f"--run {item!r}: expected NAME=PATH")
        name, path = item.split("=", 1)
        runs[name] = path
    try:
        for path in runs.values():
            read_rows(path)  # every file parses before anything is drawn
    except ValueError as e:
        paths.fail(p.prog, e)
    print(plot_comparison(runs, a.out, a.title))


if __name__ == "__main__":
    main()
