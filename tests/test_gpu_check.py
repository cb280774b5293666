"""tools/gpu_check.sh in its CPU dry mode: every step runs (tiny shape, CPU) and the JSON it writes
holds each step's exit code and results, as the GPU run will."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    log = (tmp_path / "gpu_check.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["ok"]
    steps = {s["name"]: s for s in report["steps"]}
    assert list(steps) == ["environment", "gpu_tests", "train_step", "train_step_compile", "recipe_1.3b", "bench_torch",
                           "ops", "checkpoints"]
    assert all(s["rc"] == 0 and s["seconds"] > 0 for s in steps.values())
    rows = steps["bench_torch"]["result"]["rows"]
    assert [r["keep"] for r in rows] == [1.0, 1.0, 0.75, 0.5, 0.25] and rows[0]["run"] == "baseline"
    assert all(r["ms"] > 0 and r["ideal"] >= 1.0 for r in rows)
    assert steps["bench_torch"]["result"]["kernel"] == "torch"
    for name in ("train_step", "train_step_compile"):  # the trainer's step: baseline, keep 0.5, keep 0.25
        rows = steps[name]["result"]["rows"]
        assert [(r["run"], r["keep"]) for r in rows] == [("baseline", 1.0), ("random-LTD", 0.5), ("random-LTD", 0.25)]
        assert all(r["ms"] > 0 for r in rows) and rows[2]["ideal"] > rows[1]["ideal"] > 1.0
    assert "--compile" in steps["train_step_compile"]["command"]
    assert all(r["route_layer_ms"] >= 0 for r in steps["ops"]["result"]["rows"])
    train = steps["recipe_1.3b"]["result"]["train"]
    assert len(train) == 12 and train[-1]["kept_length"] > train[0]["kept_length"]  # the ramp ran
    assert "--random-ltd" in steps["recipe_1.3b"]["command"]
    ckpt = steps["checkpoints"]["result"]
    assert ckpt["checks"] == {"async_equals_sync": True, "load_continues_sync": True, "finetune_keeps_weights": True,
                              "async_committed": True}
    assert ckpt["state_bytes"] <= ckpt["checkpoint_bytes"] <= 2 * ckpt["state_bytes"]  # tiny tensors: headers weigh more
    assert "passed" in log
