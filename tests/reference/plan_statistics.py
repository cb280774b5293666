"""Statistics of the project's index plan as the main job's trainer draws it (measurement).

    python -m tests.reference.plan_statistics

Main-job parameters: seed 1, s = 128, dropping layers 1-4, global batch 32, sample ids
``iteration * 32 + position`` (what the trainer passes, see tests/training/test_ltd_reference_compare.py),
180 iterations. Each line prints a statistic next to what independent uniform k-subsets give
(z-scores should look like draws from N(0, 1)). docs/random_ltd_quality.md quotes the output.
"""

from __future__ import annotations

import math

import torch

from megatron.ltd.sampler import _mix32, make_index_plan

S, LAYERS, GBS, ITERS, SEED = 128, [1, 2, 3, 4], 32, 180, 1


def _plans(k):
    out = []
    for it in range(ITERS):
        p = make_index_plan(SEED, it, torch.arange(it * GBS, (it + 1) * GBS), LAYERS, k, S)
        o = torch.zeros(len(LAYERS), GBS, S)
        o.scatter_(2, p, 1.0)
        out.append(o)
    return torch.stack(out)  # [it, layer, sample, s] keep indicators


def main() -> None:
    torch.manual_seed(0)
    for k in (32, 64):
        q = k / S
        o = _plans(k)
        rows = o.reshape(-1, S)
        n = rows.shape[0]
        f = rows.mean(0)
        z = (f - q) / math.sqrt(q * (1 - q) / n)
        print(f"k={k}: {n} rows; per-position keep frequency z: std {z.std():.2f}, max |z| {z.abs().max():.2f}")
        co = (rows.T @ rows) / n
        e = k * (k - 1) / (S * (S - 1))
        zc = ((co - e) / math.sqrt(e * (1 - e) / n))[~torch.eye(S, dtype=torch.bool)]
        print(f"  within-row pair co-inclusion z: std {zc.std():.2f}, max |z| {zc.abs().max():.2f} (16256 pairs)")
        hv = k * q * (1 - q) * (S - k) / (S - 1)
        for a in range(len(LAYERS)):
            for b in range(a + 1, len(LAYERS)):
                ov = (o[:, a] * o[:, b]).sum(-1).flatten()
                print(f"  layers {LAYERS[a]},{LAYERS[b]} same sample: overlap mean {ov.mean():.3f} (independent {k * q:.3f}), "
                      f"var {ov.var():.3f} ({hv:.3f})")
        c = o.sum(1).flatten().long()  # how many of the 4 layers keep each (sample, position)
        obs = torch.bincount(c, minlength=5).double()
        exp = torch.tensor([math.comb(4, i) * q ** i * (1 - q) ** (4 - i) for i in range(5)]) * c.numel()
        print(f"  layers keeping a token (0..4): z {[round(float(x), 2) for x in (obs - exp) / exp.sqrt()]}")
        cnt = o.sum(2)  # [it, layer, s]: samples of the batch keeping each position
        zc = (cnt - GBS * q) / math.sqrt(GBS * q * (1 - q))
        for lag in (1, 2, 5):
            r = float((zc[lag:] * zc[:-lag]).mean())
            print(f"  batch keep counts, iteration lag {lag}: correlation {r:+.4f} (se {1 / math.sqrt(zc[lag:].numel()):.4f})")
    # Marginals of the key construction itself over 10^6 uniform row bases.
    pos = _mix32(torch.arange(S, dtype=torch.int64))
    g = torch.Generator().manual_seed(0)
    for k in (32, 64, 96):
        cnt, n = torch.zeros(S), 0
        for _ in range(10):
            base = torch.randint(0, 2 ** 32, (100_000,), generator=g, dtype=torch.int64)
            idx = torch.topk(_mix32(pos[None, :] ^ base[:, None]), k, dim=1, largest=False).indices
            cnt += torch.zeros(base.numel(), S).scatter_(1, idx, 1.0).sum(0)
            n += base.numel()
        q = k / S
        z = (cnt / n - q) / math.sqrt(q * (1 - q) / n)
        print(f"10^6 random row bases, k={k}: per-position keep frequency z std {z.std():.2f}, max |z| {z.abs().max():.2f}")


if __name__ == "__main__":
    main()
