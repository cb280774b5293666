#!/usr/bin/env python
"""The checkpoint check of tools/gpu_check.sh: four short bf16 random-LTD runs in one process.

    python tools/checkpoint_check.py --dir /tmp/ck --json-out ck.json <pretrain_gpt.py model flags>

1. ``sync``: 6 steps, saved at 3 and 6 (synchronous);
2. ``async``: the same run with --async-save (its losses equal run 1's within --rtol);
3. ``load``: --load of run 1's iteration 3, continued to 6 (losses equal run 1's steps 4-6);
4. ``finetune``: --finetune from run 1 at a tiny LR (every loss stays at the trained level,
   well below run 1's first loss: the loaded weights were kept).

Writes the losses, the save/load times and the checkpoint's size to --json-out; exits 1 when a
check fails.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.data import paths  # noqa: E402


def _run(args):
    from megatron.runtime.device import destroy_distributed
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    t0 = time.time()
    cfg = parse_pretrain_config(args)
    trainer = Trainer(cfg, gpt_task(cfg))
    built = time.time() - t0
    try:
        trainer.train()
    finally:
        trainer.close()
        destroy_distributed()
    metrics = [json.loads(line) for line in open(cfg.logging.metrics_file) if line.strip()]
    return {"build_and_load_s": round(built, 2), "wall_s": round(time.time() - t0, 2),
            "losses": {r["iteration"]: r["loss"] for r in metrics if r["kind"] == "train"}}


def build_parser() -> argparse.ArgumentParser:
    from megatron.training.cli import OneLineErrorParser

    p = OneLineErrorParser(prog="checkpoint_check.py", description=__doc__.splitlines()[0], allow_abbrev=False)
    paths.declare(p.add_argument("--dir", required=True, help="Scratch directory (replaced)."), paths.OUTPUT_DIR,
                  "a scratch directory (its contents are replaced)")
    paths.declare(p.add_argument("--json-out", required=True), paths.OUTPUT_FILE, "a .json file path")
    p.add_argument("--rtol", type=float, default=2e-2, help="Loss agreement between runs (bf16 on a GPU is not bitwise).")
    return p


# What a run of this check leaves in --dir when it is killed (the next run replaces it).
_SCRATCH = ("sync", "async", "sync.jsonl", "async.jsonl", "load.jsonl", "finetune.jsonl")


@paths.exit_code
def main(argv=None) -> int:
    args, model = paths.parse_checked(build_parser(), argv, known=True)
    foreign = sorted(set(os.listdir(args.dir)) - set(_SCRATCH)) if os.path.isdir(args.dir) else []
    if foreign:  # the directory is deleted: only ever one that holds nothing but a previous run's scratch
        paths.fail("checkpoint_check.py", f"--dir {args.dir} holds files this check did not write ({', '.join(foreign[:3])}"
                   f"{', ...' if len(foreign) > 3 else ''}) and would delete them: give a new or empty directory")
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    base = model + ["--bf16", "--random-ltd", "--log-interval", "1", "--eval-iters", "0", "--no-progress",
                    "--train-iters", "6", "--hidden-dropout", "0", "--attention-dropout", "0"]
    d = lambda name: os.path.join(args.dir, name)  # noqa: E731
    runs = {
        "sync": _run(base + ["--save", d("sync"), "--save-interval", "3", "--metrics-file", d("sync.jsonl")]),
        "async": _run(base + ["--save", d("async"), "--save-interval", "3", "--async-save",
                              "--metrics-file", d("async.jsonl")]),
        "load": _run(base + ["--load", os.path.join(d("sync"), "iter_0000003"), "--metrics-file", d("load.jsonl")]),
        "finetune": _run(base + ["--load", d("sync"), "--finetune", "--lr", "1e-9", "--min-lr", "1e-9",
                                 "--metrics-file", d("finetune.jsonl")]),
    }
    ref = runs["sync"]["losses"]
    close = lambda a, b: abs(a - b) <= args.rtol * abs(b)  # noqa: E731
    manifest = json.load(open(os.path.join(d("sync"), "iter_0000006", "manifest.json")))
    checks = {
        "async_equals_sync": all(close(runs["async"]["losses"][i], ref[i]) for i in ref),
        "load_continues_sync": sorted(runs["load"]["losses"]) == [4, 5, 6]
        and all(close(runs["load"]["losses"][i], ref[i]) for i in (4, 5, 6)),
        "finetune_keeps_weights": max(runs["finetune"]["losses"].values()) < ref[1] - 0.5 * (ref[1] - ref[6]),
        "async_committed": sorted(n for n in os.listdir(d("async")) if n.startswith("iter_")) == ["iter_0000003", "iter_0000006"],
    }
    report = {"runs": runs, "checks": checks, "checkpoint_bytes": sum(f["size"] for f in manifest["files"].values()),
              "state_bytes": manifest.get("state_bytes"), "sync_save_s": manifest.get("save_seconds")}
    json.dump(report, open(args.json_out, "w"), indent=1)
    print(json.dumps({"checks": checks, "checkpoint_bytes": report["checkpoint_bytes"],
                      "state_bytes": report["state_bytes"], "sync_save_s": report["sync_save_s"]}))
    shutil.rmtree(args.dir, ignore_errors=True)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
