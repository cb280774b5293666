#!/usr/bin/env python
"""Speed of the trainer's own training step: baseline vs random-LTD at fixed kept fractions.

Each variant is a real :class:`~megatron.training.trainer.Trainer` on mock data, and what is timed
is its ``train_step``: data loading, the index plan, forward, backward, gradient reduction, the
optimizer step, the LR schedule and the token accounting. All variants live in one process and
are timed in alternating blocks (baseline, keep 1.0, 0.75, ..., then again), so machine noise
hits them alike; the table reports medians and ratios.

    python tools/benchmark_train_step.py                     # the main job's shape, CPU fp32
    python tools/benchmark_train_step.py --smoke             # tiny shape, seconds (CI)
    python tools/benchmark_train_step.py --profile 0.5       # + torch.profiler table for keep 0.5
    python tools/benchmark_train_step.py --extra --optimizer-impl foreach   # any pretrain flag
    python tools/benchmark_train_step.py --host-overhead     # host cost per layer (CPU proxy of launches)

On a GPU each row also has the kernel time, the kernel launches and the host time of a step (from
torch.profiler), and whether the step is host-bound (the GPU busy for under 90% of the wall time).

``--host-overhead`` measures what a layer costs the host, where arithmetic is negligible (24 layers,
hidden 32, seq 32, one sample, one thread): dispatched operators and host microseconds per layer of
forward+backward (the trainer's own forward-backward schedule, index plan included), baseline
against random-LTD. A layer's cost is isolated by subtracting a 2-layer model (embedding, loss and
the two full-length layers) and dividing by the other 22 layers, which are the dropping ones. The
row "route, k = s" sends every token through gather/scatter: the same arithmetic as the baseline,
so its ratio is the dropping path's own host cost.

"ideal" = baseline FLOPs / variant FLOPs (megatron.training.metrics.step_model_flops, the
trainer's own count); "efficiency" = measured speedup / ideal.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--num-attention-heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--global-batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--keep", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25])
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant before the first block")
    p.add_argument("--blocks", type=int, default=4, help="rounds over all variants")
    p.add_argument("--iters-per-block", type=int, default=3, help="timed steps per variant and round")
    p.add_argument("--bf16", action="store_true", help="bf16 (default on a GPU)")
    p.add_argument("--cpu", action="store_true", help="CPU even when a GPU is visible")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--profile", type=float, default=None, metavar="KEEP",
                   help="after timing, profile 3 steps of this variant (1.0 = keep 1.0; 0 = baseline) with torch.profiler")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further pretrain flags for every variant")
    p.add_argument("--smoke", action="store_true", help="tiny shape, few steps (CPU smoke test)")
    p.add_argument("--host-overhead", action="store_true",
                   help="host cost per layer at a shape where arithmetic is negligible (see the description)")
    p.add_argument("--main-job-flops", action="store_true",
                   help="only print the main job's (examples/quickstart.py, default preset) FLOP and layer-token ratios")
    p.add_argument("--json-out", default=None)
    a = p.parse_args(argv)
    if a.host_overhead:
        a.num_layers, a.hidden_size, a.num_attention_heads, a.seq_length = 24, 32, 2, 32
        a.micro_batch_size, a.global_batch_size, a.vocab_size = 1, 1, 128
        a.keep, a.threads = [0.5], a.threads or 1
        a.warmup, a.blocks, a.iters_per_block = max(a.warmup, 2), max(a.blocks, 5), max(a.iters_per_block, 4)
        if a.smoke:
            a.num_layers, a.blocks, a.iters_per_block = 4, 1, 1
        return a
    if a.smoke:
        a.num_layers, a.hidden_size, a.num_attention_heads, a.seq_length = 4, 32, 4, 32
        a.micro_batch_size, a.global_batch_size, a.vocab_size = 2, 4, 128
        a.warmup, a.blocks, a.iters_per_block, a.keep = 1, 2, 1, [1.0, 0.5]
    return a


def kept_for(keep: float, s: int) -> int:
    """The kept length for a fraction: a multiple of 16 (MSLG's default increment) where s allows."""
    step = 16 if s >= 32 else 1
    return min(s, max(step, int(round(s * keep / step)) * step))


def variant_argv(a, keep, num_layers=None):
    total_iters = a.warmup + a.blocks * a.iters_per_block + (3 if a.profile is not None else 0) + 4  # + 2 profiled on a GPU
    argv = [
        "--mock-data", "--vocab-size", a.vocab_size, "--num-layers", num_layers or a.num_layers, "--hidden-size", a.hidden_size,
        "--num-attention-heads", a.num_attention_heads, "--seq-length", a.seq_length,
        "--max-position-embeddings", a.seq_length, "--micro-batch-size", a.micro_batch_size,
        "--global-batch-size", a.global_batch_size, "--train-iters", total_iters, "--lr", "1e-3", "--min-lr", "1e-4",
        "--lr-decay-style", "cosine", "--hidden-dropout", 0.0, "--attention-dropout", 0.0, "--weight-decay", 0.01,
        "--clip-grad", 1.0, "--eval-iters", 0, "--no-progress", "--seed", 1234,
    ]
    if a.cpu:
        argv.append("--cpu")
    if a.bf16:
        argv.append("--bf16")
    if keep is not None:
        argv += ["--random-ltd", "--random-ltd-constant-k", kept_for(keep, a.seq_length)]
    return [str(x) for x in argv] + list(a.extra)


def main_job_flops() -> dict:
    """The main job's random-LTD / baseline ratios of layer-tokens and of model FLOPs (its own
    ramp, the LM head, and the full-length evaluations included): the wall-clock ratio to expect."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from quickstart import PRESETS, ramp_steps

    from megatron.ltd.config import RandomLTDConfig
    from megatron.ltd.schedule import kept_length
    from megatron.training.lr_schedule import StepWork
    from megatron.training.metrics import step_model_flops

    p = PRESETS["default"]
    L, h, s, gbs = p["layers"], p["hidden"], p["seq"], p["gbs"]
    ltd = RandomLTDConfig(enabled=True, min_seq=p["min_k"], seq_step=p["seq_step"], require_steps=ramp_steps(p))
    ks = [kept_length(i, ltd, s) for i in range(p["iters"])]

    def flops(k, n_ltd):
        return step_model_flops(gbs, s, k, L, n_ltd, h, 4 * h, h // p["heads"], p["heads"], p["heads"], False, p["vocab"])

    base, rltd = flops(s, 0) * p["iters"], sum(flops(k, L - 2) for k in ks)
    evals = (p["iters"] // p["eval_interval"]) * p["eval_iters"] * flops(s, 0) / 3  # forward only, full length
    layer_tokens = sum(StepWork.of(gbs, s, k, L, L - 2).layer_tokens for k in ks) / (StepWork.of(gbs, s, s, L, 0).layer_tokens * p["iters"])
    out = {"layer_token_ratio": layer_tokens, "train_flop_ratio": rltd / base,
           "flop_ratio_with_eval": (rltd + evals) / (base + evals), "eval_flop_share": evals / base}
    print("main job (examples/quickstart.py default preset), random-LTD / baseline: "
          + ", ".join(f"{k} {v:.3f}" for k, v in out.items()))
    return out


def host_overhead(a) -> dict:
    """Operators and host microseconds per layer of the trainer's forward+backward (see the module doc)."""
    import torch

    from megatron.runtime.device import destroy_distributed
    from megatron.runtime.host_cost import count_ops
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    torch.set_num_threads(a.threads)
    L = a.num_layers
    import megatron.ltd.sampler as sampler

    # "route, k = s": every token goes through gather/scatter (a forced plan that keeps them all), so
    # the arithmetic is the baseline's exactly and the difference is the dropping path's host cost.
    route = "route, k = s"
    variants = ([("stem (2 layers)", None, 2), ("baseline", None, L), (route, 1.0, L)]
                + [(f"keep {k:g}", k, L) for k in a.keep if k < 1.0])
    trainers = {}
    for name, keep, layers in variants:
        cfg = parse_pretrain_config(variant_argv(a, keep, layers), model_type="gpt", world_size=1)
        tr = Trainer(cfg, gpt_task(cfg))
        trainers[name] = (tr, tr._iterators(tr.train_ds, 0))
    build_plan = sampler.build_index_plan

    def fwd_bwd(name):
        tr, it = trainers[name]
        i = tr.counters.iteration
        work = tr.step_work(i)
        for model in tr.models:
            model.zero_grad_buffer()
        sampler.build_index_plan = functools.partial(build_plan, force=True) if name == route else build_plan
        try:
            tr._run_schedule(it, tr._forward_step_fn(i, work.kept_length, work.seq_length), False, tr.num_microbatches, work)
        finally:
            sampler.build_index_plan = build_plan

    for name, _, _ in variants:
        for _ in range(a.warmup):
            fwd_bwd(name)
    times = {name: [] for name, _, _ in variants}
    for _ in range(a.blocks):  # alternating blocks: machine noise hits every variant alike
        for name, _, _ in variants:
            for _ in range(a.iters_per_block):
                t0 = time.process_time()
                fwd_bwd(name)
                times[name].append(time.process_time() - t0)
    # Counted after timing: a dispatch mode, once used, leaves the dispatcher a little slower.
    ops = {name: count_ops(lambda: fwd_bwd(name)) for name, _, _ in variants}
    us = {name: statistics.median(v) * 1e6 for name, v in times.items()}
    stem = "stem (2 layers)"
    per = L - 2
    base_us = (us["baseline"] - us[stem]) / per
    base_ops = (ops["baseline"].compute - ops[stem].compute) / per
    base_all = (ops["baseline"].total - ops[stem].total) / per
    rows = []
    for name, keep, layers in variants[1:]:
        tr = trainers[name][0]
        layer_us = (us[name] - us[stem]) / per
        layer_ops = (ops[name].compute - ops[stem].compute) / per
        layer_all = (ops[name].total - ops[stem].total) / per
        rows.append({"run": name, "k": tr.kept_length(tr.counters.iteration), "step_us": us[name],
                     "layer_us": layer_us, "host_ratio": layer_us / base_us,
                     "layer_ops": layer_ops, "ops_ratio": layer_ops / base_ops,
                     "layer_ops_all": layer_all, "ops_all_ratio": layer_all / base_all})
    dev = trainers["baseline"][0].device_info.name
    print(f"host overhead | device {dev} | torch threads {torch.get_num_threads()} | {L} layers, hidden {a.hidden_size}, "
          f"seq {a.seq_length}, micro-batch {a.micro_batch_size} | forward+backward of the trainer's schedule, "
          f"process CPU time, median of {a.blocks} x {a.iters_per_block} | per layer = (run - 2-layer stem) / {per}")
    print(f"{'run':<12}{'k':>5}{'step us':>10}{'us/layer':>10}{'x base':>8}{'ops/layer':>11}{'x base':>8}"
          f"{'all ops/layer':>15}{'x base':>8}")
    for r in rows:
        print(f"{r['run']:<12}{r['k']:>5}{r['step_us']:>10.0f}{r['layer_us']:>10.1f}{r['host_ratio']:>8.3f}"
              f"{r['layer_ops']:>11.1f}{r['ops_ratio']:>8.3f}{r['layer_ops_all']:>15.1f}{r['ops_all_ratio']:>8.3f}")
    print("ops = dispatched ATen operators that do work (each at least one kernel launch on a GPU); all ops adds "
          "views and other metadata operators")
    out = {"device": dev, "args": vars(a), "host_overhead": rows, "stem_us": us[stem]}
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(out, f, indent=1)
    for tr, _ in trainers.values():
        tr.close()
    destroy_distributed()
    return out


def main(argv=None) -> dict:
    a = parse(argv)
    if a.main_job_flops:
        return main_job_flops()
    if a.host_overhead:
        return host_overhead(a)
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from megatron.runtime.device import destroy_distributed, gpu_requested
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    gpu = gpu_requested(a.cpu)
    if gpu and not a.bf16:
        a.bf16 = True
    variants = [("baseline", None)] + [(f"keep {k:g}", k) for k in a.keep]
    trainers, iterators = {}, {}
    for name, keep in variants:
        cfg = parse_pretrain_config(variant_argv(a, keep), model_type="gpt", world_size=1)
        tr = Trainer(cfg, gpt_task(cfg))
        for model in tr.models:
            model.train()
        trainers[name] = tr
        iterators[name] = tr._iterators(tr.train_ds, 0)

    def sync():
        if gpu:
            torch.cuda.synchronize()

    def step(name):
        sync()
        f0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
        trainers[name].train_step(iterators[name])
        sync()
        t1, c1 = time.perf_counter(), time.process_time()
        return t1 - t0, c1 - c0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0

    for name, _ in variants:
        for _ in range(a.warmup):
            step(name)
    samples = {name: [] for name, _ in variants}
    for _ in range(a.blocks):
        for name, _ in variants:
            samples[name] += [step(name) for _ in range(a.iters_per_block)]
    times = {name: [x[0] for x in v] for name, v in samples.items()}
    cpu_times = {name: [x[1] for x in v] for name, v in samples.items()}

    rows = []
    base_ms = statistics.median(times["baseline"]) * 1000.0
    base_cpu = statistics.median(cpu_times["baseline"]) * 1000.0
    base = trainers["baseline"]
    base_flops = base._step_flops(base.step_work(base.counters.iteration))
    for name, keep in variants:
        tr = trainers[name]
        k = tr.kept_length(tr.counters.iteration)
        ms = statistics.median(times[name]) * 1000.0
        flops = tr._step_flops(tr.step_work(tr.counters.iteration))
        ideal = base_flops / flops
        rows.append({"run": "baseline" if keep is None else "random-LTD", "keep": 1.0 if keep is None else keep, "k": k,
                     "ms": ms, "ms_min": min(times[name]) * 1000.0, "ms_max": max(times[name]) * 1000.0,
                     "speedup": base_ms / ms, "ideal": ideal, "efficiency": base_ms / ms / ideal,
                     # CPU time of this process: on a shared machine it leaves out the time other
                     # jobs held the cores, so its ratios are steadier than wall-clock ones.
                     "cpu_ms": statistics.median(cpu_times[name]) * 1000.0,
                     "cpu_efficiency": base_cpu / (statistics.median(cpu_times[name]) * 1000.0) / ideal,
                     "minor_faults": statistics.median(x[2] for x in samples[name]),
                     "tflops": flops / (ms / 1000.0) / 1e12})
    if gpu:  # where the step's time goes on the device: kernel time, launches, host time
        from megatron.runtime.host_cost import gpu_step_profile

        for r, (name, _) in zip(rows, variants):
            prof = gpu_step_profile(lambda: trainers[name].train_step(iterators[name]), repeats=2)
            r.update({"kernel_ms": prof["kernel_ms"], "launches": prof["launches"], "host_ms": prof["host_ms"],
                      "device_busy": prof["device_busy"], "host_bound": prof["host_bound"]})
    dev = trainers["baseline"].device_info.name
    n_ltd = trainers[variants[-1][0]].num_ltd_layers
    print(f"device: {dev} | {'bf16' if a.bf16 else 'fp32'} | torch threads {torch.get_num_threads()} | {a.num_layers} layers, "
          f"hidden {a.hidden_size}, seq {a.seq_length}, global batch {a.global_batch_size} (micro {a.micro_batch_size}), vocab {a.vocab_size}, "
          f"random-LTD on {n_ltd} layers | trainer train_step, median of {a.blocks} blocks x {a.iters_per_block} "
          f"(alternating) | extra flags: {' '.join(a.extra) or 'none'}")
    print(f"{'run':<12}{'keep':>6}{'k':>6}{'ms/step':>10}{'min':>8}{'max':>8}{'speedup':>9}{'ideal':>7}{'effic.':>8}"
          f"{'cpu ms':>9}{'cpu eff.':>9}{'faults':>8}")
    for r in rows:
        print(f"{r['run']:<12}{r['keep']:>6.3f}{r['k']:>6}{r['ms']:>10.1f}{r['ms_min']:>8.1f}{r['ms_max']:>8.1f}"
              f"{r['speedup']:>9.3f}{r['ideal']:>7.3f}{r['efficiency']:>8.3f}{r['cpu_ms']:>9.1f}{r['cpu_efficiency']:>9.3f}"
              f"{r['minor_faults']:>8.0f}")
    if gpu:
        print(f"\n{'run':<12}{'keep':>6}{'kernel ms':>11}{'launches':>10}{'host ms':>9}{'busy':>7}  host-bound "
              "(torch.profiler over 2 steps; busy = kernel time / wall time)")
        for r in rows:
            print(f"{r['run']:<12}{r['keep']:>6.3f}{r['kernel_ms']:>11.1f}{r['launches']:>10.0f}{r['host_ms']:>9.1f}"
                  f"{r['device_busy']:>7.2f}  {'yes' if r['host_bound'] else 'no'}")
    from megatron.training.optimizer_tuning import torch_optimizers

    groups = [g for o in torch_optimizers(trainers["baseline"].optimizer) for g in o.param_groups]
    out = {"device": dev, "gpu": gpu, "args": vars(a), "rows": rows, "torch_threads": torch.get_num_threads(),
           "optimizer_fused": bool(groups) and all(g.get("fused") for g in groups)}

    if a.profile is not None:
        name = "baseline" if a.profile == 0 else f"keep {a.profile:g}"
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                step(name)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
        print(f"\n=== torch.profiler, 3 steps of {name} (self CPU time)\n{table}")
        out["profile"] = table
        if gpu:
            device_table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=30)
            print(f"\n=== torch.profiler, 3 steps of {name} (self device time)\n{device_table}")
            out["profile_device"] = device_table
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(out, f, indent=1)
    for tr in trainers.values():
        tr.close()
    destroy_distributed()
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
