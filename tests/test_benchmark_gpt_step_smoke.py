"""The end-to-end benchmark runs (tiny shape, CPU) and reports a consistent table; its numbers
are measured in docs/performance.md, never asserted here."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_gpt_step_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, MEGATRON_LTD_FORCE_CPU="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark_gpt_step.py"), "--smoke", "--json-out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert rows[0]["run"] == "baseline" and rows[0]["speedup"] == 1.0
    half = [r for r in rows if r["run"] == "random-LTD" and r["keep"] == 0.5][0]
    assert half["k"] == 32 and half["ideal"] > 1.0  # fewer FLOPs counted when tokens are dropped
    assert all(r["ms"] > 0 for r in rows)
