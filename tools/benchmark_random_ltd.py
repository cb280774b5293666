#!/usr/bin/env python
"""Time random-LTD's own overhead: index-plan creation and gather/scatter (forward + backward).

Default shape is GPT-1.3B (22 dropping layers, micro-batch 8, seq 2048, hidden 2048) at keep ratios
1.0 / 0.75 / 0.5 / 0.25 / 0.125. On CUDA: bf16, CUDA events, warmup, median of repeats, and the
cost as a percentage of 280 ms (a 1.3B forward+backward on one H100). Without CUDA: fp32 on CPU,
few repeats. "naive" is the same gather/scatter written with plain advanced indexing (autograd's
own backward), for comparison; "route" is the layer's gather/scatter pair (``TokenRoute``, torch
ops) and "triton" the same pair with the Triton kernels (where they run: CUDA, or
``TRITON_INTERPRET=1``).

    python tools/benchmark_random_ltd.py                      # full shape
    python tools/benchmark_random_ltd.py --smoke              # tiny shape, seconds
    python tools/benchmark_random_ltd.py --json-out out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from megatron.ltd import triton_ops
from megatron.ltd.ops import TokenRoute, gather_tokens, scatter_tokens
from megatron.ltd.sampler import make_index_plan, plan_needed

STEP_MS_H100 = 280.0  # GPT-1.3B fwd+bwd, micro-batch 8, one H100 (docs/random_ltd.md)


def _timer(device: torch.device, fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _naive_gather_scatter(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    cols = torch.arange(x.shape[1], device=x.device)
    kept = x[idx.t(), cols]
    out = x.clone()
    out[idx.t(), cols] = kept
    return out


def run(args: argparse.Namespace) -> Dict[str, object]:
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    L, b, s, h = args.layers, args.batch, args.seq, args.hidden
    layers = list(range(1, L + 1))
    ids = torch.arange(b, device=device)
    x = torch.randn(s, b, h, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(s, b, h, device=device, dtype=dtype)

    rows = []
    for ratio in args.ratios:
        k = max(1, int(round(s * ratio)))
        row: Dict[str, object] = {"keep": ratio, "k": k}
        if not plan_needed(k, s):
            row.update(plan_ms=0.0, gs_layer_ms=0.0, gs_step_ms=0.0, naive_layer_ms=0.0, route_layer_ms=0.0,
                       triton_layer_ms=None, note="skipped (k == s)")
            rows.append(row)
            continue
        plan_fn = lambda: make_index_plan(args.seed, 1, ids, layers, k, s, device=device)  # noqa: E731
        row["plan_ms"] = _timer(device, plan_fn, args.warmup, args.repeats)
        idx = plan_fn()[0]

        def ours():
            out = scatter_tokens(x, gather_tokens(x, idx), idx)
            return torch.autograd.grad(out, x, grad)

        def naive():
            return torch.autograd.grad(_naive_gather_scatter(x, idx), x, grad)

        row["gs_layer_ms"] = _timer(device, ours, args.warmup, args.repeats)
        row["gs_step_ms"] = row["gs_layer_ms"] * L
        row["naive_layer_ms"] = _timer(device, naive, args.warmup, args.repeats)

        def route(kernel):
            r = TokenRoute.from_positions(idx, b, kernel)
            return torch.autograd.grad(r.scatter(x, r.gather(x)), x, grad)

        row["route_layer_ms"] = _timer(device, lambda: route("torch"), args.warmup, args.repeats)
        row["triton_layer_ms"] = (_timer(device, lambda: route("triton"), args.warmup, args.repeats)
                                  if triton_ops.available(device) and not args.smoke else None)
        rows.append(row)

    result: Dict[str, object] = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "dtype": str(dtype).replace("torch.", ""),
        "shape": {"layers": L, "batch": b, "seq": s, "hidden": h},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "rows": rows,
    }
    if cuda:
        for row in rows:
            row["plan_pct_of_step"] = 100.0 * row["plan_ms"] / STEP_MS_H100
            row["total_pct_of_step"] = 100.0 * (row["plan_ms"] + row["gs_step_ms"]) / STEP_MS_H100
    return result


def format_table(result: Dict[str, object]) -> str:
    shape = result["shape"]
    lines = [
        f"random-LTD overhead on {result['device']} ({result['dtype']}), layers={shape['layers']} "
        f"b={shape['batch']} s={shape['seq']} h={shape['hidden']}, median of {result['repeats']}",
        f"{'keep':>6} {'k':>6} {'plan ms':>9} {'g+s/layer ms':>13} {'g+s/step ms':>12} {'naive/layer ms':>15}"
        f" {'route/layer ms':>15} {'triton/layer ms':>16}"
        + (f" {'plan %280':>10} {'total %280':>11}" if "plan_pct_of_step" in result["rows"][0] else ""),
    ]
    for row in result["rows"]:
        line = (f"{row['keep']:>6.3f} {row['k']:>6d} {row['plan_ms']:>9.3f} {row['gs_layer_ms']:>13.3f} "
                f"{row['gs_step_ms']:>12.3f} {row['naive_layer_ms']:>15.3f} {row['route_layer_ms']:>15.3f} "
                f"{'-' if row['triton_layer_ms'] is None else format(row['triton_layer_ms'], '.3f'):>16}")
        if "plan_pct_of_step" in row:
            line += f" {row['plan_pct_of_step']:>9.2f}% {row['total_pct_of_step']:>10.2f}%"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny shape, 1 warmup, 2 repeats")
    p.add_argument("--cpu", action="store_true", help="force CPU even when CUDA is available")
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ratios", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.125])
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--json-out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.cpu
    if args.smoke:
        args.layers, args.batch, args.seq, args.hidden = 2, 2, 64, 16
    if args.warmup is None:
        args.warmup = 1 if (args.smoke or not cuda) else 5
    if args.repeats is None:
        args.repeats = 2 if args.smoke else (20 if cuda else 3)
    result = run(args)
    print(format_table(result))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
