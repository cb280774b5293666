#!/usr/bin/env python
"""Measure a checkpoint: its size against the state it holds, the sync save and load times, the
CRC-32 rate, the asynchronous save's overlap with training, and the save's peak extra memory.

    python tools/benchmark_checkpoint.py --dir /tmp/ckbench <pretrain_gpt.py flags, e.g. --mock-data --cpu ...>

One process; prints one JSON line (docs/checkpoints.md quotes it).
"""

import argparse
import json
import os
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PeakRSS:
    """Peak proportional set size (PSS: shared pages split between the processes sharing them, so
    forked writers are not counted twice) of this process and its children, sampled."""

    def __init__(self):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()

    def _rss(self) -> int:
        total = self.proc.memory_full_info().pss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_full_info().pss
            except Exception:  # noqa: BLE001 - a writer that just exited
                pass
        return total

    def __enter__(self):
        self.base = self._rss()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--dir", required=True)
    args, flags = p.parse_known_args(argv)
    from megatron.checkpoint import files
    from megatron.runtime.device import destroy_distributed
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    shutil.rmtree(args.dir, ignore_errors=True)
    out = {}
    for mode in ("sync", "async"):
        save = os.path.join(args.dir, mode)
        extra = ["--save", save] + (["--async-save"] if mode == "async" else [])
        cfg = parse_pretrain_config(flags + ["--train-iters", "12"] + extra)
        trainer = Trainer(cfg, gpt_task(cfg))
        iterators = trainer._iterators(trainer.train_ds, 0)
        trainer.train_step(iterators)
        t_step = time.time()
        trainer.train_step(iterators)
        step_s = time.time() - t_step
        with PeakRSS() as mem:
            t0 = time.time()
            trainer.save()
            returned_s = time.time() - t0
            steps = 0
            while trainer.saver._pending is not None:
                trainer.train_step(iterators)
                trainer.saver.poll()
                steps += 1
            committed_s = time.time() - t0
        trainer.close()
        destroy_distributed()
        d = files.iter_dir(save, 2)
        manifest = files.read_manifest(save, 2)
        out[mode] = {"returned_to_training_s": round(returned_s, 3), "committed_s": round(committed_s, 3),
                     "steps_during_write": steps, "step_s": round(step_s, 3),
                     "peak_extra_pss_mb": round((mem.peak - mem.base) / 2**20, 1)}
        if mode == "sync":
            size = sum(f["size"] for f in manifest["files"].values())
            t0 = time.time()
            for rel in manifest["files"]:
                files.crc32_file(os.path.join(d, rel))
            crc_s = time.time() - t0
            out.update(state_mb=round(manifest["state_bytes"] / 2**20, 1), disk_mb=round(size / 2**20, 1),
                       disk_over_state=round(size / manifest["state_bytes"], 4),
                       crc32_mb_per_s=round(size / 2**20 / crc_s))
            cfg = parse_pretrain_config(flags + ["--train-iters", "12", "--load", save])
            t0 = time.time()
            trainer = Trainer(cfg, gpt_task(cfg))
            out["build_and_load_s"] = round(time.time() - t0, 3)
            trainer.close()
            destroy_distributed()
            cfg = parse_pretrain_config(flags + ["--train-iters", "12"])
            t0 = time.time()
            trainer = Trainer(cfg, gpt_task(cfg))
            out["load_s"] = round(out["build_and_load_s"] - (time.time() - t0), 3)
            trainer.close()
            destroy_distributed()
    shutil.rmtree(args.dir, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
