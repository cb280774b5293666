#!/usr/bin/env python
"""End-to-end speed of random-LTD in our megatron-core GPT: forward+backward (no optimizer) of
the baseline model and of the random-LTD model at several keep ratios, side by side in one
process, with the FLOP-ideal speedup next to the measured one.

    python tools/benchmark_gpt_step.py                       # GPT-1.3B shape on the GPU, bf16
    python tools/benchmark_gpt_step.py --smoke               # tiny shape, CPU fp32 (CI)
    python tools/benchmark_gpt_step.py --json-out out.json   # also write the table as JSON

FLOPs are counted Megatron-style on the tokens each layer actually processes
(megatron.training.metrics.step_model_flops); "ideal" = baseline FLOPs / random-LTD FLOPs and
"efficiency" = measured speedup / ideal.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-layers", type=int, default=24)
    p.add_argument("--hidden-size", type=int, default=2048)
    p.add_argument("--num-attention-heads", type=int, default=16)
    p.add_argument("--seq-length", type=int, default=2048)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--vocab-size", type=int, default=50304)
    p.add_argument("--keep", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.125])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU (H100 SXM dense bf16: 989)")
    p.add_argument("--smoke", action="store_true", help="tiny shape, few iterations (CPU smoke test)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--kernel", choices=["auto", "torch", "triton"], default="auto",
                   help="random-LTD gather/scatter implementation (--random-ltd-kernel)")
    p.add_argument("--json-out", default=None)
    a = p.parse_args(argv)
    if a.smoke:
        a.num_layers, a.hidden_size, a.num_attention_heads, a.seq_length = 4, 64, 4, 64
        a.micro_batch_size, a.vocab_size, a.warmup, a.iters = 2, 256, 1, 2
        a.keep = [1.0, 0.5]
    return a


def main(argv=None) -> dict:
    a = parse(argv)
    import torch

    from megatron.ltd.layer import gpt_forward_kwargs
    from megatron.ltd.sampler import build_index_plan
    from megatron.models.builders import build_gpt_model
    from megatron.runtime.device import destroy_distributed, init_distributed, set_seed
    from megatron.training.config import ModelConfig, ParallelConfig, PrecisionConfig
    from megatron.training.metrics import step_model_flops
    from megatron.training.model_setup import transformer_config

    info = init_distributed(1, 1, force_cpu=a.cpu)
    set_seed(1234)
    gpu = info.use_gpu
    model_cfg = ModelConfig(num_layers=a.num_layers, hidden_size=a.hidden_size, num_attention_heads=a.num_attention_heads,
                            seq_length=a.seq_length, hidden_dropout=0.0, attention_dropout=0.0)
    tconfig = transformer_config(model_cfg, ParallelConfig(), PrecisionConfig(bf16=gpu), use_gpu=gpu)
    ltd_layers = list(range(1, a.num_layers - 1))
    s, b, L = a.seq_length, a.micro_batch_size, a.num_layers
    device = info.device
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, a.vocab_size, (b, s), generator=gen).to(device)
    labels = torch.randint(0, a.vocab_size, (b, s), generator=gen).to(device)
    pos = torch.arange(s, device=device).unsqueeze(0).expand(b, -1)
    sample_ids = torch.arange(b, device=device)

    def sync():
        if gpu:
            torch.cuda.synchronize()

    def time_model(model, k):
        times = []
        for it in range(a.warmup + a.iters):
            plan = build_index_plan(1234, it, sample_ids, ltd_layers, k, s, device=device) if k is not None else None
            sync()
            t0 = time.perf_counter()
            loss = model(tokens, pos, None, labels=labels, **gpt_forward_kwargs(plan)).float().mean()
            loss.backward()
            sync()
            if it >= a.warmup:
                times.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        return statistics.median(times) * 1000.0

    def build(ltd):
        m = build_gpt_model(tconfig, vocab_size=a.vocab_size, max_sequence_length=s, ltd_layers=ltd_layers if ltd else None,
                            ltd_kernel=a.kernel)
        return m.to(device=device, dtype=torch.bfloat16 if gpu else torch.float32)

    def flops(k):
        n_ltd = len(ltd_layers) if k is not None else 0
        return step_model_flops(b, s, k or s, L, n_ltd, a.hidden_size, tconfig.ffn_hidden_size, tconfig.kv_channels,
                                a.num_attention_heads, a.num_attention_heads, False, a.vocab_size)

    rows = []
    model = build(False)
    base_ms = time_model(model, None)
    rows.append({"run": "baseline", "keep": 1.0, "k": s, "ms": base_ms})
    del model
    model = build(True)
    for keep in a.keep:
        k = max(16, int(round(s * keep / 16)) * 16) if s >= 16 else s
        k = min(k, s)
        rows.append({"run": "random-LTD", "keep": keep, "k": k, "ms": time_model(model, k)})
    base_flops = flops(None)
    for r in rows:
        f = flops(r["k"] if r["run"] != "baseline" else None)
        r["tflops"] = f / (r["ms"] / 1000.0) / 1e12
        r["mfu"] = r["tflops"] / a.peak_tflops if gpu else None
        r["speedup"] = base_ms / r["ms"]
        r["ideal"] = base_flops / f
        r["efficiency"] = r["speedup"] / r["ideal"]
    device_name = info.name
    from megatron.ltd.ops import resolve_kernel

    kernel = resolve_kernel(a.kernel, device)
    print(f"device: {device_name} | dtype {'bf16' if gpu else 'fp32'} | kernel {kernel} | {L} layers, hidden {a.hidden_size}, "
          f"seq {s}, micro-batch {b}, random-LTD on {len(ltd_layers)} layers | median of {a.iters}")
    print(f"{'run':<12}{'keep':>6}{'k':>6}{'ms/iter':>10}{'TFLOP/s':>10}{'MFU':>7}{'speedup':>9}{'ideal':>7}{'effic.':>8}")
    for r in rows:
        mfu = f"{r['mfu'] * 100:6.1f}%" if r["mfu"] is not None else f"{'-':>7}"
        print(f"{r['run']:<12}{r['keep']:>6.3f}{r['k']:>6}{r['ms']:>10.1f}{r['tflops']:>10.2f}{mfu}{r['speedup']:>9.3f}"
              f"{r['ideal']:>7.3f}{r['efficiency']:>8.3f}")
    out = {"device": device_name, "gpu": gpu, "kernel": kernel, "args": vars(a), "rows": rows}
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(out, f, indent=1)
    destroy_distributed()
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
