"""One logger interface: a stdout line per log interval, TensorBoard scalars, a JSON-lines file,
and a progress bar. Only the last pipeline stage's first rank (which sees the loss) writes."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Dict, Optional

import torch


def model_flops_per_token_layer(hidden: int, seq: int, ffn: int, kv_channels: int, heads: int, query_groups: int, gated: bool) -> float:
    """Forward FLOPs of one transformer layer for one token at sequence length ``seq``
    (Megatron-style count: matmuls, 2 FLOPs per multiply-add)."""
    q = heads * kv_channels
    kv = 2 * query_groups * kv_channels
    qkv = 2 * hidden * (q + kv)
    proj = 2 * q * hidden
    attn = 2 * 2 * seq * q  # scores and weighted sum over `seq` keys (causal halving ignored, as Megatron does)
    mlp = 2 * hidden * ffn * (3 if gated else 2)
    return qkv + proj + attn + mlp


def step_model_flops(samples: int, seq: int, kept: int, num_layers: int, num_ltd_layers: int, hidden: int, ffn: int,
                     kv_channels: int, heads: int, query_groups: int, gated: bool, vocab: int) -> float:
    """Forward+backward FLOPs of one step counted on the tokens each layer actually processes."""
    full = model_flops_per_token_layer(hidden, seq, ffn, kv_channels, heads, query_groups, gated)
    dropped = model_flops_per_token_layer(hidden, kept, ffn, kv_channels, heads, query_groups, gated)
    per_sample = seq * full * (num_layers - num_ltd_layers) + kept * dropped * num_ltd_layers
    per_sample += 2 * seq * hidden * vocab  # LM head
    return 3.0 * samples * per_sample


class MetricsLogger:
    def __init__(self, is_writer: bool, tensorboard_dir: Optional[str], metrics_file: Optional[str],
                 total_iters: Optional[int], progress: bool, start_iteration: int = 0):
        self.is_writer = is_writer
        self.tb = None
        self.metrics_file = metrics_file if is_writer else None
        if is_writer and tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=tensorboard_dir)
        self.bar = None
        if is_writer and progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_iters, initial=start_iteration, unit="it", dynamic_ncols=True, leave=False)
        if self.metrics_file:
            os.makedirs(os.path.dirname(os.path.abspath(self.metrics_file)), exist_ok=True)

    def print(self, text: str) -> None:
        if not self.is_writer:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def record(self, kind: str, step: int, values: Dict[str, float], x_axes: Optional[Dict[str, int]] = None) -> None:
        """Write ``values`` to TensorBoard (against the step and, when given, other x axes such as
        layer-tokens) and to the JSON-lines file."""
        if not self.is_writer:
            return
        if self.tb is not None:
            for key, value in values.items():
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    continue
                self.tb.add_scalar(f"{kind}/{key}", value, step)
                for axis, x in (x_axes or {}).items():
                    self.tb.add_scalar(f"{kind}/{key} vs {axis}", value, x)
        if self.metrics_file:
            row = {"kind": kind, "iteration": step, "time": time.time(), **values, **(x_axes or {})}
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.flush()
            self.tb.close()


def memory_summary(device: torch.device) -> str:
    if device.type == "cuda":
        return f"mem {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    try:
        import resource

        return f"rss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    except Exception:  # noqa: BLE001
        return ""
