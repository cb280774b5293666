"""One random-LTD run of the main job (examples/quickstart.py, preset ``default``) with the
project's index plan or with the independently drawn one of :mod:`tests.reference.ideal_plan`.

    python -m tests.reference.plan_study --plan {project,ideal} --seed N --data-dir DIR --out-dir DIR

The flags are exactly the main job's random-LTD run (``quickstart.train_args``, budget B, ramp over
70% of it) without ``--save``; the per-step and validation metrics go to
``OUT_DIR/<plan>_seed<N>/metrics.jsonl``. docs/random_ltd_quality.md reports what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", choices=["project", "ideal"], required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--data-dir", required=True, help="prepared by examples/quickstart.py (its data/ folder)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--run", choices=["random-ltd", "baseline"], default="random-ltd")
    ap.add_argument("--ltd-seed", type=int, default=None, help="--random-ltd-seed (default: the training seed)")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    from examples import quickstart
    from megatron.data.sample_corpus import CorpusConfig, prepare_sample_data

    p = dict(quickstart.PRESETS["default"])
    data = prepare_sample_data(a.data_dir, vocab_size=p["vocab"], corpus=CorpusConfig(max_bytes=p["corpus_bytes"]))
    tag = "" if a.ltd_seed is None else f"_ltdseed{a.ltd_seed}"
    run_dir = os.path.join(a.out_dir, f"{a.run}_{a.plan}_seed{a.seed}{tag}")
    os.makedirs(run_dir, exist_ok=True)
    args = quickstart.train_args(p, data, run_dir, a.run == "random-ltd", 1.0, a.seed)
    i = args.index("--save")
    del args[i:i + 2]
    if a.ltd_seed is not None:
        args += ["--random-ltd-seed", str(a.ltd_seed)]
    entry = [os.path.join(ROOT, "pretrain_gpt.py")] if a.plan == "project" else ["-m", "tests.reference.ideal_plan"]
    with open(os.path.join(run_dir, "command.json"), "w") as f:
        json.dump([sys.executable, *entry, *args], f)
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    with open(os.path.join(run_dir, "log.txt"), "w") as log:
        rc = subprocess.call([sys.executable, *entry, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                             env=dict(os.environ, PYTHONPATH=ROOT))
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
