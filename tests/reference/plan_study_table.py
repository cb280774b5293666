"""Tables of :mod:`tests.reference.plan_study` runs: validation loss at equal steps, the
independently drawn plan against the project's, per seed, and the mean relative difference.

    python -m tests.reference.plan_study_table runs/plan_study
"""

from __future__ import annotations

import json
import os
import statistics
import sys


def valid_curve(run_dir: str) -> dict:
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return {r["iteration"]: r["loss"] for r in rows if r["kind"] == "valid"}


def main(out_dir: str) -> None:
    runs = {name: valid_curve(os.path.join(out_dir, name)) for name in sorted(os.listdir(out_dir))
            if os.path.isdir(os.path.join(out_dir, name))}
    pairs = []
    for name, curve in runs.items():
        if name.startswith("random-ltd_project_seed") and "ltdseed" not in name:
            other = name.replace("_project_", "_ideal_")
            if other in runs:
                pairs.append((name.rsplit("seed", 1)[1], curve, runs[other]))
    controls = [(name, curve) for name, curve in runs.items() if "ltdseed" in name]
    steps = sorted({s for _, a, b in pairs for s in a if s in b})
    print("| step | " + " | ".join(f"seed {s}: project / ideal / diff" for s, _, _ in pairs) + " | mean diff |")
    print("|---" * (len(pairs) + 2) + "|")
    for step in steps:
        cells, diffs = [], []
        for _, a, b in pairs:
            if step in a and step in b:
                d = (b[step] - a[step]) / a[step] * 100
                diffs.append(d)
                cells.append(f"{a[step]:.4f} / {b[step]:.4f} / {d:+.2f}%")
            else:
                cells.append("")
        mean = f"{statistics.mean(diffs):+.2f}%" + (f" (n={len(diffs)})" if len(diffs) != len(pairs) else "")
        print(f"| {step} | " + " | ".join(cells) + f" | {mean} |")
    if not controls:
        return
    cols = sorted({s for name, curve in controls for s in curve})
    print("\ncontrols: the same generator with another plan seed, relative to its default plan seed\n")
    print("| run | " + " | ".join(f"step {s}" for s in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, curve in controls:
        base = runs.get(name.split("_ltdseed")[0], {})
        cells = [f"{(curve[s] - base[s]) / base[s] * 100:+.2f}%" if s in curve and s in base else "" for s in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/plan_study")
