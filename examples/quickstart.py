#!/usr/bin/env python
"""The main job: the paper's headline on a small GPT trained on real text, three runs.

1. builds an offline sample corpus of real English (docstrings of the pinned Python packages),
   prints its checksum and checks it against the one recorded in examples/quickstart_expected.json,
   trains a SentencePiece tokenizer and writes megatron-core indexed datasets;
2. trains the same small GPT three times, each to its own budget of layer-averaged tokens
   (layer-tokens / layers; for the baseline, the raw tokens) with the LayerToken LR (warmup and
   cosine decay over that budget):
     baseline            B tokens
     random-LTD          B layer-averaged tokens (more steps: its dropping layers see fewer tokens)
     random-LTD 2/3      2/3 B layer-averaged tokens (the paper's "same quality, 1/3 less compute")
   random-LTD drops tokens in every layer but the first and the last, the kept length ramping
   from min to the full sequence over 70% of the run's budget;
3. prints one table (final validation loss, layer-averaged tokens, training wall-clock, each also
   as a ratio to the baseline) and plots validation loss against layer-averaged tokens and against
   wall-clock (PNG);
4. evaluates the three checkpoints zero-shot on held-out text.

``--seeds 1 2 3`` repeats the three runs per seed and reports mean and spread (docs/main_job.md).
GPU when one is visible, else CPU. ``--preset tiny`` is a fast smoke run (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import megatron.runtime  # noqa: E402,F401  (quiets megatron-core's optional-dependency notices)

EXPECTED_FILE = os.path.join(ROOT, "examples", "quickstart_expected.json")

PRESETS = {
    # 6 layers x 192 hidden, seq 128, batch 32. Budget B = 614,400 tokens (150 baseline steps of
    # 32 x 128): about 2 minutes for the baseline on 2 CPU cores.
    "default": dict(layers=6, hidden=192, heads=4, seq=128, mbs=16, gbs=32, tokens=614_400, lr=1.5e-3,
                    min_k=32, seq_step=16, eval_interval=15, eval_iters=4, vocab=4096,
                    corpus_bytes=8_000_000),
    # Budget 8,192 tokens (16 baseline steps of 8 x 64) on a small slice of the corpus.
    "tiny": dict(layers=4, hidden=64, heads=4, seq=64, mbs=8, gbs=8, tokens=8_192, lr=2e-3,
                 min_k=16, seq_step=16, eval_interval=8, eval_iters=1, vocab=1024,
                 corpus_bytes=400_000),
}

# name -> (random-LTD on?, budget as a fraction of the baseline's)
RUNS = {"baseline": (False, 1.0), "random-ltd": (True, 1.0), "random-ltd-2/3": (True, 2 / 3)}
RUN_DIRS = {"baseline": "baseline", "random-ltd": "random_ltd", "random-ltd-2/3": "random_ltd_2_3"}


def ramp_steps(p: dict, fraction: float) -> int:
    """The kept-length ramp (--random-ltd-require-steps, a length in steps by definition): 70% of
    the steps a full-length run of the same budget takes, so a smaller budget ramps faster (the
    paper's 200B-token recipe uses 2/3 of the 300B recipe's ramp)."""
    return max(1, round(0.7 * fraction * p["tokens"] / (p["gbs"] * p["seq"])))


def train_args(p: dict, data: dict, run_dir: str, ltd: bool, fraction: float, seed: int) -> List[str]:
    budget = int(round(p["tokens"] * fraction))
    args = [
        "--num-layers", p["layers"], "--hidden-size", p["hidden"], "--num-attention-heads", p["heads"],
        "--seq-length", p["seq"], "--max-position-embeddings", p["seq"],
        "--micro-batch-size", p["mbs"], "--global-batch-size", p["gbs"],
        "--hidden-dropout", 0.0, "--attention-dropout", 0.0, "--weight-decay", 0.01, "--clip-grad", 1.0,
        "--adam-beta2", 0.95, "--lr", f"{p['lr']:g}", "--min-lr", f"{p['lr'] / 10:g}", "--lr-decay-style", "cosine",
        # The budget alone sets the run's length and its LayerToken LR: warmup 5% and cosine decay
        # over this run's own layer-averaged tokens.
        "--train-layer-averaged-tokens", budget, "--lr-schedule-unit", "layer-averaged-tokens",
        "--lr-warmup-fraction", 0.05,
        "--tokenizer-type", data["tokenizer_type"], "--tokenizer-model", data["tokenizer_model"],
        "--train-data-path", data["train_prefix"], "--valid-data-path", data["valid_prefix"],
        "--eval-interval", p["eval_interval"], "--eval-iters", p["eval_iters"], "--log-interval", p["eval_interval"],
        "--save", os.path.join(run_dir, "checkpoints"),
        "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), "--tensorboard-dir", os.path.join(run_dir, "tensorboard"),
        "--seed", seed, "--no-progress",
    ]
    if ltd:
        args += ["--random-ltd", "--random-ltd-min-seq", p["min_k"], "--random-ltd-seq-step", p["seq_step"],
                 "--random-ltd-require-steps", ramp_steps(p, fraction)]
    return [str(a) for a in args]


def run(name: str, args: list, run_dir: str) -> float:
    """Run pretrain_gpt.py, streaming its output; returns wall-clock seconds."""
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)  # a fresh curve for this run
    os.makedirs(run_dir, exist_ok=True)
    cmd = [sys.executable, os.path.join(ROOT, "pretrain_gpt.py"), *args]
    print(f"\n=== {name}: {' '.join(cmd[1:])}\n", flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        print(f"[{name}] {line}", end="", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"{name} training failed (exit code {proc.returncode}); see its output above")
    return time.time() - t0


def summarize(run_dirs: Dict[str, str]) -> Dict[str, dict]:
    out = {}
    for name, d in run_dirs.items():
        rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl")) if line.strip()]
        valid = [r for r in rows if r["kind"] == "valid"]
        train = [r for r in rows if r["kind"] == "train"]
        summary = [r for r in rows if r["kind"] == "summary"][-1]
        out[name] = {
            "first_valid_loss": valid[0]["loss"], "final_valid_loss": valid[-1]["loss"],
            "final_lr": train[-1]["lr"] if train else None, "train_wall_s": summary["wall_s"],
            "layer_averaged_tokens": summary["layer_averaged_tokens"], "layer_tokens": summary["layer_tokens"],
            "raw_tokens": summary["raw_tokens"], "iterations": summary["iterations"],
        }
    return out


def format_table(summary: Dict[str, dict]) -> str:
    base = summary["baseline"]
    lines = [f"{'':16}{'final valid loss':>18}{'ratio':>7}{'layer-avg tokens':>18}{'ratio':>7}"
             f"{'wall-clock (s)':>16}{'ratio':>7}{'steps':>7}"]
    for name, s in summary.items():
        lines.append(
            f"{name:16}{s['final_valid_loss']:>18.4f}{s['final_valid_loss'] / base['final_valid_loss']:>7.3f}"
            f"{s['layer_averaged_tokens']:>18,}{s['layer_averaged_tokens'] / base['layer_averaged_tokens']:>7.3f}"
            f"{s['train_wall_s']:>16.1f}{s['train_wall_s'] / base['train_wall_s']:>7.3f}{s['iterations']:>7}")
    return "\n".join(lines)


def check_corpus(preset: str, data: dict, versions: dict) -> bool:
    """Print the corpus checksum and whether it is the recorded one; warn (never fail) if not."""
    from megatron.data.sample_corpus import compare_with_expected, tokenizer_fingerprint

    print(f"corpus sha256: {data['corpus_sha256']}")
    try:
        with open(EXPECTED_FILE) as f:
            expected = json.load(f).get(preset, {})
    except (OSError, json.JSONDecodeError):
        expected = {}
    diffs = compare_with_expected(data["corpus_sha256"], versions, expected)
    tok_sha = tokenizer_fingerprint(data["tokenizer_model"])
    if not diffs and tok_sha != expected.get("tokenizer_vocab_sha256"):
        diffs = [f"same corpus, but the tokenizer's vocabulary (sha256 {tok_sha[:16]}...) differs from the recorded "
                 f"{str(expected.get('tokenizer_vocab_sha256'))[:16]}... (another sentencepiece version?)"]
    if not diffs:
        print("corpus and tokenizer: identical to the recorded ones (examples/quickstart_expected.json)")
        return True
    print("WARNING: this corpus is not the one the README's numbers were measured on, so the losses "
          "will differ from the README's (the comparison between the three runs still holds).\n" + "\n".join(diffs) +
          "\nInstall the versions recorded in examples/quickstart_expected.json (the pinned ones) to reproduce them.", flush=True)
    return False


def compare_losses(preset: str, summary: Dict[str, dict]) -> None:
    try:
        with open(EXPECTED_FILE) as f:
            recorded = json.load(f).get(preset, {}).get("final_valid_loss", {})
    except (OSError, json.JSONDecodeError):
        recorded = {}
    if recorded:
        print("final validation loss against the recorded run (same corpus): " + ", ".join(
            f"{n} {s['final_valid_loss']:.4f} vs {recorded[n]:.4f}" for n, s in summary.items() if n in recorded))


def _portable(args: List[str], run_dir: str) -> List[str]:
    """``args`` with the run's own directory replaced by a placeholder (a run may be moved)."""
    return [a.replace(run_dir, "<run>") for a in args]


def finished_with(run_dir: str, args: List[str]) -> bool:
    """True when ``run_dir`` holds a finished run made with exactly ``args`` (up to its directory)."""
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            same = _portable(json.load(f), run_dir) == _portable(args, run_dir)
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            return same and any(json.loads(line)["kind"] == "summary" for line in f if line.strip())
    except (OSError, ValueError, KeyError):
        return False


def train_three(p: dict, data: dict, out_dir: str, seed: int, reuse: bool = False,
                only: Optional[List[str]] = None) -> Optional[Dict[str, dict]]:
    """Train the three runs (or the ``only`` ones, then returning None) and summarize them."""
    run_dirs = {name: os.path.join(out_dir, RUN_DIRS[name]) for name in RUNS}
    for name, (ltd, fraction) in RUNS.items():
        if only and name not in only:
            continue
        args = train_args(p, data, run_dirs[name], ltd, fraction, seed)
        if reuse and finished_with(run_dirs[name], args):
            print(f"=== {name}: reusing the finished run in {run_dirs[name]}", flush=True)
            continue
        run(name, args, run_dirs[name])
        with open(os.path.join(run_dirs[name], "args.json"), "w") as f:
            json.dump(_portable(args, run_dirs[name]), f)
    if only:
        return None
    summary = summarize(run_dirs)
    for name, s in summary.items():
        if not s["final_valid_loss"] < s["first_valid_loss"]:
            raise SystemExit(f"{name}: validation loss did not fall ({s['first_valid_loss']:.4f} -> {s['final_valid_loss']:.4f})")
    return summary


def plot(out_dir: str, png: str) -> str:
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from plot_runs import plot_comparison

    return plot_comparison({n: os.path.join(out_dir, RUN_DIRS[n], "metrics.jsonl") for n in RUNS}, png,
                           title="Baseline vs random-LTD at equal and at 2/3 of the layer-averaged tokens")


def seed_statistics(per_seed: Dict[int, Dict[str, dict]]) -> Dict[str, dict]:
    """Mean and sample standard deviation over seeds of each run's loss and of its ratios to the
    same seed's baseline."""
    def ms(values):
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    out = {}
    for name in RUNS:
        rows = [per_seed[s][name] for s in per_seed]
        bases = [per_seed[s]["baseline"] for s in per_seed]
        out[name] = {
            "final_valid_loss": ms([r["final_valid_loss"] for r in rows]),
            "loss_ratio": ms([r["final_valid_loss"] / b["final_valid_loss"] for r, b in zip(rows, bases)]),
            "tokens_ratio": ms([r["layer_averaged_tokens"] / b["layer_averaged_tokens"] for r, b in zip(rows, bases)]),
            "wall_ratio": ms([r["train_wall_s"] / b["train_wall_s"] for r, b in zip(rows, bases)]),
            "train_wall_s": ms([r["train_wall_s"] for r in rows]),
        }
    return out


def format_seed_table(stats: Dict[str, dict], seeds: List[int]) -> str:
    lines = [f"| run ({len(seeds)} seeds: {' '.join(map(str, seeds))}) | final valid loss | loss ratio | "
             "layer-avg tokens ratio | wall-clock ratio |", "|---|---|---|---|---|"]
    for name, s in stats.items():
        lines.append(f"| {name} | {s['final_valid_loss']['mean']:.4f} ± {s['final_valid_loss']['std']:.4f} | "
                     f"{s['loss_ratio']['mean']:.4f} ± {s['loss_ratio']['std']:.4f} | "
                     f"{s['tokens_ratio']['mean']:.3f} | {s['wall_ratio']['mean']:.3f} ± {s['wall_ratio']['std']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "runs", "quickstart"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--tokens", type=int, default=None,
                    help="override the preset's baseline budget B (layer-averaged tokens)")
    ap.add_argument("--seed", type=int, default=1, help="training seed of the three runs (seed 1 of the study)")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="run the three-run comparison once per seed and report mean and spread "
                         "(no zero-shot evaluation)")
    ap.add_argument("--skip-eval", action="store_true", help="skip the zero-shot evaluation at the end")
    ap.add_argument("--data-dir", default=None, help="corpus, tokenizer and datasets (default: OUT_DIR/data)")
    ap.add_argument("--only", nargs="+", choices=list(RUNS), default=None,
                    help="train only these runs (to spread a study over processes; no summary)")
    ap.add_argument("--reuse-runs", action="store_true",
                    help="keep a run already finished in --out-dir with the same arguments (resume a study)")
    a = ap.parse_args(argv)
    p = dict(PRESETS[a.preset])
    if a.tokens:
        p["tokens"] = a.tokens

    from megatron.data.sample_corpus import CorpusConfig, prepare_sample_data, source_versions

    print("=== 1/4 sample corpus, tokenizer, indexed datasets", flush=True)
    corpus = CorpusConfig(max_bytes=p["corpus_bytes"])
    data = prepare_sample_data(a.data_dir or os.path.join(a.out_dir, "data"), vocab_size=p["vocab"], corpus=corpus)
    corpus_ok = check_corpus(a.preset, data, source_versions(corpus))

    if a.seeds:
        per_seed = {}
        for seed in a.seeds:
            print(f"=== seed {seed}: baseline, random-LTD, random-LTD at 2/3 of the budget", flush=True)
            per_seed[seed] = train_three(p, data, os.path.join(a.out_dir, f"seed{seed}"), seed, a.reuse_runs, a.only)
            if a.only:
                continue
            print(format_table(per_seed[seed]), flush=True)
        if a.only:
            return
        stats = seed_statistics(per_seed)
        table = format_seed_table(stats, a.seeds)
        print(f"\n=== {len(a.seeds)} seeds: mean ± sample standard deviation\n{table}")
        report = {"preset": p, "seeds": a.seeds, "per_seed": per_seed, "statistics": stats, "table": table,
                  "corpus_sha256": data["corpus_sha256"], "corpus_matches_record": corpus_ok}
        name = "seeds.json" if len(a.seeds) > 1 else f"seed{a.seeds[0]}.json"
        with open(os.path.join(a.out_dir, name), "w") as f:
            json.dump(report, f, indent=1)
        print(f"\nreport: {os.path.join(a.out_dir, name)}")
        return

    print("=== 2/4 training: baseline, random-LTD, random-LTD at 2/3 of the budget", flush=True)
    summary = train_three(p, data, a.out_dir, a.seed, a.reuse_runs, a.only)
    if summary is None:
        return
    print("\n=== 3/4 comparison (each run to its own layer-averaged token budget, LayerToken LR)")
    print(format_table(summary))
    if corpus_ok:
        compare_losses(a.preset, summary)
    png = plot(a.out_dir, os.path.join(a.out_dir, "baseline_vs_random_ltd.png"))
    print(f"plot: {png}")

    report = {"preset": p, "summary": summary, "plot": png, "corpus_sha256": data["corpus_sha256"],
              "corpus_matches_record": corpus_ok}
    if not a.skip_eval:
        print("=== 4/4 zero-shot evaluation of the three checkpoints on held-out text", flush=True)
        from megatron.evaluation.main_job_eval import evaluate_checkpoints_side_by_side

        report["evaluation"] = evaluate_checkpoints_side_by_side(
            {n: os.path.join(a.out_dir, RUN_DIRS[n], "checkpoints") for n in RUNS},
            data["test_txt"], data["lambada_jsonl"], os.path.join(a.out_dir, "zeroshot.json"))
    with open(os.path.join(a.out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nreport: {os.path.join(a.out_dir, 'report.json')}")


if __name__ == "__main__":
    main()
