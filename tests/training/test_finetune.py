"""Finetuning with and without random-LTD (examples/gpt/finetune_gpt_random_ltd.sh): from a tiny
pretrained checkpoint, both finetuned models beat the starting checkpoint's perplexity on the
new corpus's held-out text, measured with tools/evaluate_zeroshot.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from tests.multirank import run_multirank

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "examples", "gpt", "finetune_gpt_random_ltd.sh")


def _new_domain(n: int, seed: int) -> list:
    """A corpus unlike the pretraining one (animals and places): ships, colours, directions."""
    rng = random.Random(seed)
    ships, colours, winds = ["ketch", "sloop", "barge", "ferry"], ["red", "grey", "blue", "gold"], ["north", "south", "east", "west"]
    out = []
    for _ in range(n):
        s, c, w = rng.choice(ships), rng.choice(colours), rng.choice(winds)
        out.append(f"a {c} {s} sailed {w} at dawn; the {s} turned {w} again and the {c} sails were full.")
    return out


def test_finetuning_with_and_without_random_ltd_beats_the_pretrained_checkpoint(tmp_path):
    from tests.evaluation.ckpt_utils import body_train_and_save

    pretrained = str(tmp_path / "pretrained")
    run_multirank(body_train_and_save, world_size=1, kwargs={"out_dir": pretrained, "steps": 40})
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"text": t}) + "\n" for t in _new_domain(300, seed=1)))
    heldout = tmp_path / "heldout.txt"
    heldout.write_text("\n".join(_new_domain(12, seed=2)) + "\n")
    out = tmp_path / "ft"
    env = dict(os.environ, PRETRAINED=pretrained, TRAIN_JSONL=str(train), HELDOUT_TXT=str(heldout),
               OUTPUT_DIR=str(out), TRAIN_ITERS="24", MICRO_BATCH="4", GLOBAL_BATCH="8", LR="3e-3",
               MIN_LR="3e-4", LTD_SEQ_STEP="8", PYTHON=sys.executable, OMP_NUM_THREADS="1",
               MEGATRON_LTD_FORCE_CPU="1", PYTHONPATH=ROOT)
    proc = subprocess.run(["bash", LAUNCHER], env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ppl = json.load(open(out / "summary.json"))
    assert set(ppl) == {"pretrained", "baseline", "random_ltd"}
    assert ppl["baseline"] < 0.8 * ppl["pretrained"] and ppl["random_ltd"] < 0.8 * ppl["pretrained"], ppl
    table = proc.stdout[proc.stdout.index("held-out token perplexity"):]
    for name, value in ppl.items():
        assert f"{value:10.3f}" in table
    # The random-LTD run dropped tokens (its kept length ramped), the baseline did not.
    rows = {m: [json.loads(line) for line in open(out / m / "metrics.jsonl")] for m in ("baseline", "random_ltd")}
    kept = {m: [r["kept_length"] for r in rs if r["kind"] == "train"] for m, rs in rows.items()}
    assert min(kept["random_ltd"]) < 64 == min(kept["baseline"])
    # Both started from the pretrained weights (weights only: counters restart at zero).
    assert all(rs[-1]["kind"] == "summary" and rs[-1]["iterations"] == 24 for rs in rows.values())


def test_launcher_names_what_is_missing(tmp_path):
    proc = subprocess.run(["bash", LAUNCHER], env=dict(os.environ, PRETRAINED=str(tmp_path)), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode != 0 and "set TRAIN_JSONL" in proc.stderr
