#!/usr/bin/env python
"""The main job: a small GPT trained twice on real text, without and with random-LTD.

1. builds an offline sample corpus of real English (docstrings of the installed Python stack),
   trains a SentencePiece tokenizer and writes megatron-core indexed datasets;
2. trains the same small GPT for the same number of steps, baseline and random-LTD (middle
   layers drop tokens, kept length ramping up over 70% of the run), both with the LayerToken LR
   (warmup and cosine decay advance with consumed layer-tokens), saving checkpoints;
3. reports validation loss, wall-clock and layer-tokens side by side, plots them
   (PNG), and evaluates both checkpoints zero-shot on held-out text.

GPU when one is visible, else CPU. ``--preset tiny`` is a fast smoke run (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import megatron.runtime  # noqa: E402,F401  (quiets megatron-core's optional-dependency notices)

PRESETS = {
    # 6 layers x 192 hidden, seq 128, batch 32: a couple of minutes per run on 2 CPU cores.
    "default": dict(layers=6, hidden=192, heads=4, seq=128, mbs=16, gbs=32, iters=150, lr=1.5e-3,
                    min_k=32, seq_step=16, eval_interval=15, eval_iters=4, vocab=4096),
    "tiny": dict(layers=4, hidden=64, heads=4, seq=64, mbs=8, gbs=8, iters=16, lr=2e-3,
                 min_k=16, seq_step=16, eval_interval=8, eval_iters=1, vocab=1024),
}


def layer_token_total(p: dict, ltd: bool) -> int:
    from megatron.ltd.config import RandomLTDConfig
    from megatron.ltd.schedule import kept_length
    from megatron.training.lr_schedule import StepWork

    n_ltd = p["layers"] - 2 if ltd else 0
    cfg = RandomLTDConfig(enabled=ltd, min_seq=p["min_k"], seq_step=p["seq_step"], require_steps=ramp_steps(p))
    total = 0
    for step in range(p["iters"]):
        k = kept_length(step, cfg, p["seq"]) if ltd else p["seq"]
        total += StepWork.of(p["gbs"], p["seq"], k, p["layers"], n_ltd).layer_tokens
    return total


def ramp_steps(p: dict) -> int:
    return max(1, int(0.7 * p["iters"]))


def train_args(p: dict, data: dict, run_dir: str, ltd: bool) -> list:
    total = layer_token_total(p, ltd)
    args = [
        "--num-layers", p["layers"], "--hidden-size", p["hidden"], "--num-attention-heads", p["heads"],
        "--seq-length", p["seq"], "--max-position-embeddings", p["seq"],
        "--micro-batch-size", p["mbs"], "--global-batch-size", p["gbs"], "--train-iters", p["iters"],
        "--hidden-dropout", 0.0, "--attention-dropout", 0.0, "--weight-decay", 0.01, "--clip-grad", 1.0,
        "--adam-beta2", 0.95, "--lr", f"{p['lr']:g}", "--min-lr", f"{p['lr'] / 10:g}", "--lr-decay-style", "cosine",
        # LayerToken LR: warmup 5% and cosine decay over this run's own layer-tokens.
        "--lr-schedule-unit", "layer-tokens", "--lr-warmup-tokens", total // 20, "--lr-decay-tokens", total,
        "--tokenizer-type", data["tokenizer_type"], "--tokenizer-model", data["tokenizer_model"],
        "--train-data-path", data["train_prefix"], "--valid-data-path", data["valid_prefix"],
        "--eval-interval", p["eval_interval"], "--eval-iters", p["eval_iters"], "--log-interval", max(1, p["iters"] // 10),
        "--save", os.path.join(run_dir, "checkpoints"), "--save-interval", p["iters"],
        "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), "--tensorboard-dir", os.path.join(run_dir, "tensorboard"),
        "--seed", 1234, "--no-progress",
    ]
    if ltd:
        args += ["--random-ltd", "--random-ltd-min-seq", p["min_k"], "--random-ltd-seq-step", p["seq_step"],
                 "--random-ltd-require-steps", ramp_steps(p)]
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
        if "Unable to save MockGPTDataset" in line or "warnings.warn" in line:
            continue
        print(f"[{name}] {line}", end="", flush=True)
    if proc.wait() != 0:
        raise SystemExit(f"{name} training failed (exit code {proc.returncode}); see its output above")
    return time.time() - t0


def summarize(run_dirs: dict, walls: dict) -> dict:
    out = {}
    for name, d in run_dirs.items():
        rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]
        valid = [r for r in rows if r["kind"] == "valid"]
        train = [r for r in rows if r["kind"] == "train"]
        summary = [r for r in rows if r["kind"] == "summary"][-1]
        out[name] = {
            "first_valid_loss": valid[0]["loss"], "final_valid_loss": valid[-1]["loss"],
            "final_train_loss": train[-1]["loss"], "train_wall_s": summary["wall_s"], "process_wall_s": walls[name],
            "layer_tokens": summary["layer_tokens"], "raw_tokens": summary["raw_tokens"], "iterations": summary["iterations"],
        }
    return out


def print_table(summary: dict) -> None:
    base, ltd = summary["baseline"], summary["random-ltd"]
    rows = [
        ("validation loss (first eval)", f"{base['first_valid_loss']:.4f}", f"{ltd['first_valid_loss']:.4f}", ""),
        ("validation loss (final)", f"{base['final_valid_loss']:.4f}", f"{ltd['final_valid_loss']:.4f}",
         f"{ltd['final_valid_loss'] / base['final_valid_loss']:.3f}"),
        ("training wall-clock (s)", f"{base['train_wall_s']:.1f}", f"{ltd['train_wall_s']:.1f}",
         f"{ltd['train_wall_s'] / base['train_wall_s']:.3f}"),
        ("layer-tokens", f"{base['layer_tokens']:,}", f"{ltd['layer_tokens']:,}", f"{ltd['layer_tokens'] / base['layer_tokens']:.3f}"),
        ("raw tokens", f"{base['raw_tokens']:,}", f"{ltd['raw_tokens']:,}", "1.000"),
    ]
    print("\n=== baseline vs random-LTD (same steps, LayerToken LR)")
    print(f"{'':32}{'baseline':>16}{'random-LTD':>16}{'ratio':>10}")
    for label, a, b, r in rows:
        print(f"{label:32}{a:>16}{b:>16}{r:>10}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "runs", "quickstart"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--iters", type=int, default=None, help="override the preset's training iterations")
    ap.add_argument("--skip-eval", action="store_true", help="skip the zero-shot evaluation at the end")
    a = ap.parse_args(argv)
    p = dict(PRESETS[a.preset])
    if a.iters:
        p["iters"] = a.iters

    from megatron.data.sample_corpus import prepare_sample_data

    print("=== 1/4 sample corpus, tokenizer, indexed datasets", flush=True)
    data = prepare_sample_data(os.path.join(a.out_dir, "data"), vocab_size=p["vocab"])
    run_dirs = {"baseline": os.path.join(a.out_dir, "baseline"), "random-ltd": os.path.join(a.out_dir, "random_ltd")}
    walls = {}
    print("=== 2/4 training: baseline, then random-LTD", flush=True)
    for name, ltd in (("baseline", False), ("random-ltd", True)):
        walls[name] = run(name, train_args(p, data, run_dirs[name], ltd), run_dirs[name])

    print("=== 3/4 comparison", flush=True)
    summary = summarize(run_dirs, walls)
    print_table(summary)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from plot_runs import plot_comparison

    png = plot_comparison({n: os.path.join(d, "metrics.jsonl") for n, d in run_dirs.items()},
                          os.path.join(a.out_dir, "baseline_vs_random_ltd.png"))
    print(f"plot: {png}")
    for name, s in summary.items():
        if not s["final_valid_loss"] < s["first_valid_loss"]:
            raise SystemExit(f"{name}: validation loss did not fall ({s['first_valid_loss']:.4f} -> {s['final_valid_loss']:.4f})")

    report = {"preset": p, "summary": summary, "plot": png}
    if not a.skip_eval:
        print("=== 4/4 zero-shot evaluation of both checkpoints on held-out text", flush=True)
        try:
            from megatron.evaluation.main_job_eval import evaluate_checkpoints_side_by_side
        except ImportError as e:  # evaluation package missing from this checkout
            print(f"evaluation skipped: {e}")
        else:
            report["evaluation"] = evaluate_checkpoints_side_by_side(
                {n: os.path.join(d, "checkpoints") for n, d in run_dirs.items()},
                data["test_txt"], data["lambada_jsonl"], os.path.join(a.out_dir, "zeroshot.json"))
    with open(os.path.join(a.out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nreport: {os.path.join(a.out_dir, 'report.json')}")


if __name__ == "__main__":
    main()
