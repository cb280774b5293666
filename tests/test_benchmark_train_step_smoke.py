"""The trainer-level benchmark runs the real Trainer.train_step for every variant (tiny shape, CPU)
and reports a consistent table; its numbers are measured in docs/performance.md, never asserted."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_train_step_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, MEGATRON_LTD_FORCE_CPU="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_train_step.py"), "--smoke", "--cpu",
                           "--json-out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["optimizer_fused"]  # the trainer switched megatron-core's torch AdamW to the fused kernel
    rows = data["rows"]
    assert [(r["run"], r["keep"], r["k"]) for r in rows] == [("baseline", 1.0, 32), ("random-LTD", 1.0, 32), ("random-LTD", 0.5, 16)]
    assert rows[0]["speedup"] == 1.0 and rows[0]["ideal"] == 1.0
    assert rows[1]["ideal"] == 1.0 and rows[2]["ideal"] > 1.2  # the trainer's FLOP count drops with k
    assert all(r["ms"] > 0 and r["cpu_ms"] > 0 and r["efficiency"] == r["speedup"] / r["ideal"] for r in rows)
    assert "baseline" in proc.stdout and "effic." in proc.stdout
