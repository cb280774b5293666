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
from typing import Dict, List


def read_rows(path: str) -> List[dict]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"metrics file {path} does not exist (was the run given --metrics-file?)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="NAME=METRICS_JSONL")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--title", default="Baseline vs random-LTD")
    a = p.parse_args(argv)
    runs = {}
    for item in a.run:
        if "=" not in item:
            p.error(f"--run {item!r}: expected NAME=PATH")
        name, path = item.split("=", 1)
        runs[name] = path
    print(plot_comparison(runs, a.out, a.title))


if __name__ == "__main__":
    main()
