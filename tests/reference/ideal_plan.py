"""The project's trainer with its index plan swapped for an independently drawn one (measurement).

``make_index_plan`` (megatron/ltd/sampler.py) draws each (layer, sample) row from an integer hash.
This module replaces it, for one process, by numpy's PCG64 generator seeded with
``SeedSequence([seed, iteration, sample id, layer])``: a uniformly random ``k``-subset per row
(``Generator.choice`` without replacement), sorted. Everything else (model, gather/scatter,
schedule, optimizer) stays the project's, so a run with this plan and one with the project's
plan differ only in which tokens are dropped. Used to measure whether the plan's randomness is
what separates the project's random-LTD from an independent one (docs/random_ltd_quality.md).

    python -m tests.reference.ideal_plan pretrain_gpt.py-flags...
"""

from __future__ import annotations

import sys

import numpy as np
import torch


def ideal_index_plan(seed, iteration, sample_ids, layer_numbers, k, seq_length, device=None, strata=1):
    if strata != 1:
        raise ValueError("the ideal plan is drawn without strata")
    device = torch.device(device) if device is not None else sample_ids.device
    ids = [int(i) for i in sample_ids.reshape(-1).tolist()]
    out = np.empty((len(layer_numbers), len(ids), int(k)), dtype=np.int64)
    for r, layer in enumerate(layer_numbers):
        for j, sid in enumerate(ids):
            gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(iteration), sid, int(layer)])))
            out[r, j] = np.sort(gen.choice(int(seq_length), size=int(k), replace=False))
    return torch.from_numpy(out).to(device)


def install() -> None:
    import megatron.ltd.sampler as sampler

    sampler.make_index_plan = ideal_index_plan


if __name__ == "__main__":
    install()
    from megatron.training.entry import main
    from megatron.training.gpt import gpt_task

    sys.argv = ["pretrain_gpt.py"] + sys.argv[1:]
    main("gpt", gpt_task, "pretrain_gpt.py")
