#!/usr/bin/env python
"""Data efficiency on the main job: random-LTD ("data routing") composed with a sequence-length
curriculum ("data sampling"), as in DeepSpeed Data Efficiency (Li et al., arXiv 2212.03597).

The main job's corpus, tokenizer and model (examples/quickstart.py, preset ``default``), trained
eight times: {baseline, random-LTD, curriculum (seqlen_truncate), both} x {the baseline's budget B,
B/2} of layer-averaged tokens, each with the LayerToken LR over its own budget (warmup 5%, cosine to
--min-lr at its last step). Token counts are the work done: a truncated sample counts its truncated
length, so a curriculum run takes more steps for the same budget.

    random-LTD   kept length 32 -> 128 (step 16) over 70% of the run's full-length steps
    curriculum   seqlen_truncate 32 -> 128 (step 8), fixed_linear over 40% of them
    both         the two together (the kept length never exceeds the curriculum's length)

Prints a table (final validation loss, layer-averaged tokens, wall-clock, each as a ratio to the
full-budget baseline; steps), writes it to OUT_DIR/table.md, and plots validation loss against
layer-averaged tokens and wall-clock. Not part of ./quickstart.sh. See docs/data_efficiency.md.

    nice -n 5 python examples/data_efficiency.py --out-dir runs/data_efficiency --seeds 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
sys.path.insert(0, ROOT)

import quickstart as qs  # noqa: E402  (the main job: presets, data, runner, summaries)

# name -> (random-LTD?, curriculum?, budget fraction of B)
RUNS = {
    f"{name}{suffix}": (ltd, cur, frac)
    for frac, suffix in ((1.0, ""), (0.5, " 1/2"))
    for name, ltd, cur in (("baseline", False, False), ("random-LTD", True, False), ("curriculum", False, True),
                           ("both", True, True))
}
CURRICULUM_MIN, CURRICULUM_STEP, CURRICULUM_SHARE = 32, 8, 0.4


def run_dir_name(name: str) -> str:
    return name.replace(" 1/2", "_half").replace("-", "_").lower()


def curriculum_steps(p: dict, fraction: float) -> int:
    """--curriculum-steps: 40% of the steps a full-length run of the same budget takes (a length
    in steps, like random-LTD's ramp; the run itself takes more steps, its early ones short)."""
    return max(1, round(CURRICULUM_SHARE * fraction * p["tokens"] / (p["gbs"] * p["seq"])))


def args_for(p: dict, data: dict, run_dir: str, ltd: bool, cur: bool, fraction: float, seed: int) -> List[str]:
    args = qs.train_args(p, data, run_dir, ltd, fraction, seed)
    if cur:
        args += ["--curriculum-metric", "seqlen_truncate", "--curriculum-min", str(CURRICULUM_MIN),
                 "--curriculum-step-increment", str(CURRICULUM_STEP), "--curriculum-steps", str(curriculum_steps(p, fraction))]
    return args


def train_all(p: dict, data: dict, out_dir: str, seed: int, reuse: bool, only=None) -> Dict[str, dict]:
    dirs = {n: os.path.join(out_dir, run_dir_name(n)) for n in RUNS}
    for name, (ltd, cur, frac) in RUNS.items():
        if only and name not in only:
            continue
        args = args_for(p, data, dirs[name], ltd, cur, frac, seed)
        if reuse and qs.finished_with(dirs[name], args):
            print(f"=== {name}: reusing the finished run in {dirs[name]}", flush=True)
            continue
        qs.run(name, args, dirs[name])
        with open(os.path.join(dirs[name], "args.json"), "w") as f:
            json.dump(qs._portable(args, dirs[name]), f)
    return qs.summarize({n: d for n, d in dirs.items() if os.path.exists(os.path.join(d, "metrics.jsonl"))})


def format_markdown(per_seed: Dict[int, Dict[str, dict]]) -> str:
    """One row per run: mean over seeds (with the spread when there are several)."""
    seeds = sorted(per_seed)

    def cell(values, fmt):
        m = statistics.fmean(values)
        return (fmt.format(m) + (f" ± {fmt.format(statistics.stdev(values))}" if len(values) > 1 else ""))

    lines = ["| run | budget (layer-avg tokens) | final valid loss | loss ratio | layer-avg tokens ratio | "
             "raw tokens ratio | wall-clock (s) | wall-clock ratio | steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in RUNS:
        rows = [(per_seed[s][name], per_seed[s]["baseline"]) for s in seeds if name in per_seed[s]]
        if not rows:
            continue
        r0 = rows[0][0]
        lines.append(
            f"| {name} | {r0['layer_averaged_tokens']:,} | {cell([r['final_valid_loss'] for r, _ in rows], '{:.4f}')} | "
            f"{cell([r['final_valid_loss'] / b['final_valid_loss'] for r, b in rows], '{:.3f}')} | "
            f"{statistics.fmean(r['layer_averaged_tokens'] / b['layer_averaged_tokens'] for r, b in rows):.3f} | "
            f"{statistics.fmean(r['raw_tokens'] / b['raw_tokens'] for r, b in rows):.3f} | "
            f"{cell([r['train_wall_s'] for r, _ in rows], '{:.1f}')} | "
            f"{cell([r['train_wall_s'] / b['train_wall_s'] for r, b in rows], '{:.3f}')} | {r0['iterations']} |")
    return "\n".join(lines)


def plot(out_dir: str, seed: int, png: str) -> str:
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from plot_runs import plot_comparison

    runs = {n: os.path.join(out_dir, f"seed{seed}", run_dir_name(n), "metrics.jsonl") for n in RUNS}
    return plot_comparison({n: p for n, p in runs.items() if os.path.exists(p)}, png,
                           title="Baseline, random-LTD, seqlen curriculum and both, at B and B/2 layer-averaged tokens")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "runs", "data_efficiency"))
    ap.add_argument("--preset", choices=sorted(qs.PRESETS), default="default")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--tokens", type=int, default=None,
                    help="the baseline budget B in layer-averaged tokens (default: the preset's, 614,400)")
    ap.add_argument("--data-dir", default=None, help="corpus, tokenizer and datasets (default: OUT_DIR/data)")
    ap.add_argument("--only", nargs="+", choices=list(RUNS), default=None, help="train only these runs")
    ap.add_argument("--reuse-runs", action="store_true", help="keep runs already finished with the same arguments")
    a = ap.parse_args(argv)
    p = dict(qs.PRESETS[a.preset])
    if a.tokens:
        p["tokens"] = a.tokens

    from megatron.data.sample_corpus import CorpusConfig, prepare_sample_data

    data = prepare_sample_data(a.data_dir or os.path.join(a.out_dir, "data"), vocab_size=p["vocab"],
                               corpus=CorpusConfig(max_bytes=p["corpus_bytes"]))
    per_seed = {}
    for seed in a.seeds:
        per_seed[seed] = train_all(p, data, os.path.join(a.out_dir, f"seed{seed}"), seed, a.reuse_runs, a.only)
    table = format_markdown({s: r for s, r in per_seed.items() if "baseline" in r})
    print("\n" + table)
    png = plot(a.out_dir, a.seeds[0], os.path.join(a.out_dir, "data_efficiency.png"))
    with open(os.path.join(a.out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(a.out_dir, "report.json"), "w") as f:
        json.dump({"preset": p, "seeds": a.seeds, "per_seed": per_seed, "table": table, "plot": png}, f, indent=1)
    print(f"plot: {png}\nreport: {os.path.join(a.out_dir, 'report.json')}")


if __name__ == "__main__":
    main()
