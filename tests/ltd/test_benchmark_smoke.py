"""tools/benchmark_random_ltd.py --smoke runs as a script and its outputs parse."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "benchmark_random_ltd.py"), "--smoke", "--cpu", "--json-out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["shape"] == {"layers": 2, "batch": 2, "seq": 64, "hidden": 16}
    rows = result["rows"]
    assert [r["keep"] for r in rows] == [1.0, 0.75, 0.5, 0.25, 0.125]
    assert [r["k"] for r in rows] == [64, 48, 32, 16, 8]
    assert rows[0]["plan_ms"] == 0.0 and "skipped" in rows[0]["note"]
    for r in rows[1:]:
        assert r["plan_ms"] > 0 and r["gs_layer_ms"] > 0 and r["naive_layer_ms"] > 0
        assert abs(r["gs_step_ms"] - 2 * r["gs_layer_ms"]) < 1e-9
    table = proc.stdout.strip().splitlines()
    assert table[0].startswith("random-LTD overhead on cpu")
    assert len(table) == 2 + len(rows)
    assert [float(line.split()[0]) for line in table[2:]] == [1.0, 0.75, 0.5, 0.25, 0.125]
