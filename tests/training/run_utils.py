"""Run pretrain_gpt.py in subprocesses (plain python or torchrun on CPU) and read its metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Dict, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_GPT = [
    "--mock-data", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "32", "--micro-batch-size", "2", "--global-batch-size", "8", "--vocab-size", "128",
    "--lr", "3e-3", "--min-lr", "1e-4", "--lr-decay-style", "cosine", "--log-interval", "1",
    "--eval-interval", "1000", "--eval-iters", "1", "--no-progress", "--cpu",
]


def run_pretrain(args: List[str], nproc: int = 1, env: Optional[Dict[str, str]] = None, timeout: int = 240,
                 check: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, OMP_NUM_THREADS="1", MEGATRON_LTD_FORCE_CPU="1", PYTHONPATH=ROOT)
    full_env.pop("MEGATRON_LTD_CRASH_AT", None)
    full_env.update(env or {})
    if nproc == 1:
        cmd = [sys.executable, os.path.join(ROOT, "pretrain_gpt.py"), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               os.path.join(ROOT, "pretrain_gpt.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"pretrain_gpt.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_metrics(path: str, kind: str = "train") -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r["kind"] == kind]
