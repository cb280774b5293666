"""The index plan: shape/order/range, purity, layout invariance, stratification, statistics."""

import math

import pytest
import torch

from megatron.ltd.sampler import (
    IndexPlan,
    _hash_ints,
    _mix32,
    build_index_plan,
    local_shard_plan,
    make_index_plan,
    plan_needed,
)

LAYERS = [1, 2, 3, 5, 8]


def plan(seed=1234, it=7, ids=(0, 1, 2, 3), layers=LAYERS, k=24, s=64, **kw):
    return make_index_plan(seed, it, torch.tensor(ids), layers, k, s, **kw)


def test_shape_sorted_unique_in_range():
    p = plan(k=24, s=64)
    assert p.shape == (len(LAYERS), 4, 24) and p.dtype == torch.int64
    assert bool((p[..., 1:] > p[..., :-1]).all()), "strictly increasing => sorted and unique"
    assert int(p.min()) >= 0 and int(p.max()) < 64
    full = plan(k=64, s=64)
    assert torch.equal(full, torch.arange(64).expand_as(full))
    assert plan(k=1, s=64).shape == (len(LAYERS), 4, 1)


def test_pure_function_and_every_input_matters():
    p = plan()
    assert torch.equal(p, plan())
    torch.manual_seed(0)
    torch.rand(3)  # touching the global RNG changes nothing
    assert torch.equal(p, plan())
    for other in (plan(seed=1235), plan(it=8), plan(ids=(4, 5, 6, 7))):
        assert not torch.equal(p, other)
    # different layers and different samples keep different tokens
    rows = p.reshape(-1, p.shape[-1])
    assert len({tuple(r.tolist()) for r in rows}) == rows.shape[0]
    # a layer's row does not depend on which other layers are planned
    assert torch.equal(plan(layers=[3])[0], p[LAYERS.index(3)])


def test_does_not_touch_torch_rng_state():
    state = torch.random.get_rng_state()
    plan()
    assert torch.equal(state, torch.random.get_rng_state())


def test_large_ids_seeds_and_iterations():
    big = [2**40 + 3, 2**40 + 3 + 2**32, 3]
    p = plan(seed=2**63 - 1, it=10**12, ids=big)
    assert not torch.equal(p[:, 0], p[:, 1]) and not torch.equal(p[:, 0], p[:, 2])
    assert _hash_ints(2**32, 0) != _hash_ints(0, 1)  # chunking cannot alias two inputs
    with pytest.raises(ValueError):
        plan(seed=-1)


def test_mix32_is_exact_32bit_arithmetic():
    x = torch.tensor([0, 1, 2**31, 2**32 - 1, 123456789])
    got = _mix32(x)
    assert got.tolist() == [_mix32(int(v)) for v in x.tolist()]
    # against plain wrap-around multiplication with arbitrary-precision ints
    def ref(v):
        m = 2**32 - 1
        v ^= v >> 16; v = (v * 0x7FEB352D) & m; v ^= v >> 15; v = (v * 0x846CA68B) & m
        return v ^ (v >> 16)
    assert got.tolist() == [ref(int(v)) for v in x.tolist()]
    assert int(got.min()) >= 0 and int(got.max()) < 2**32


def test_independent_of_batch_composition():
    x, y, z = 1001, 42, 77
    a = plan(ids=(x, y))
    b = plan(ids=(z, x))
    assert torch.equal(a[:, 0], b[:, 1])
    c = plan(ids=(x,))
    assert torch.equal(a[:, 0], c[:, 0])


def test_stratified_each_shard_keeps_k_over_tp_of_its_own():
    s, k, tp = 64, 32, 4
    p = plan(k=k, s=s, strata=tp)
    assert p.shape == (len(LAYERS), 4, k)
    assert bool((p[..., 1:] > p[..., :-1]).all())
    shard = s // tp
    for r in range(tp):
        in_shard = ((p >= r * shard) & (p < (r + 1) * shard)).sum(-1)
        assert bool((in_shard == k // tp).all())
        local = local_shard_plan(p, r, tp, s)
        assert local.shape == (len(LAYERS), 4, k // tp)
        assert int(local.min()) >= 0 and int(local.max()) < shard
        assert torch.equal(local + r * shard, p[..., r * k // tp:(r + 1) * k // tp])
    # one stratum is the plain plan; more are (generally) not
    assert torch.equal(plan(k=k, s=s, strata=1), plan(k=k, s=s))
    assert not torch.equal(p, plan(k=k, s=s))
    with pytest.raises(ValueError):
        plan(k=30, s=s, strata=4)


def test_strata_plan_is_the_same_for_every_tp_size_that_divides_it():
    """One plan of 8 strata serves TP=1, 2, 4 and 8 under sequence parallelism: each TP size's
    shards are whole strata, so the union of the shard-local plans is the same global plan."""
    s, k, strata = 64, 32, 8
    p = plan(k=k, s=s, strata=strata)
    for tp in (1, 2, 4, 8):
        shard = s // tp
        rebuilt = torch.cat([local_shard_plan(p, r, tp, s) + r * shard for r in range(tp)], dim=-1)
        assert torch.equal(rebuilt, p), tp
        for r in range(tp):
            local = local_shard_plan(p, r, tp, s)
            assert int(local.min()) >= 0 and int(local.max()) < shard
    # every position is kept with probability k/s (each stratum keeps k/strata of s/strata)
    many = make_index_plan(3, 1, torch.arange(4000), [0], k, s, strata=strata)
    freq = torch.zeros(s).scatter_add_(0, many.reshape(-1), torch.ones(many.numel())) / 4000
    assert float((freq - k / s).abs().max()) < 0.05


def test_a_plan_says_how_it_was_stratified_and_refuses_a_layout_it_does_not_fit():
    from megatron.ltd.sampler import check_plan_fits, route_strata

    ids = torch.arange(3)
    ip = build_index_plan(5, 6, ids, LAYERS, 16, 64, strata=4)
    route = ip.route_tensor()
    assert route_strata(route) == 4 and route.shape == (len(LAYERS), 4, 4, 3)
    # The travelling form is the flat row number pos * b + sample of each kept token, position-major.
    expect = torch.stack([torch.stack([ip.indices[r, j] * 3 + j for j in range(3)], dim=-1) for r in range(len(LAYERS))])
    assert torch.equal(route.reshape(len(LAYERS), 16, 3), expect)
    with pytest.raises(ValueError, match="route_tensor"):
        route_strata(ip.indices)  # positions are not the travelling form
    for tp in (1, 2, 4):
        check_plan_fits(4, tp)
    with pytest.raises(ValueError, match="--random-ltd-strata"):
        check_plan_fits(4, 8)
    with pytest.raises(ValueError, match="--random-ltd-strata"):
        check_plan_fits(1, 2)
    with pytest.raises(ValueError, match="--random-ltd-strata"):
        ip.local_for_layer(8, 0, 8)


def test_the_travelling_rows_are_the_positions_each_shard_gathers():
    """What a layer gathers from the route tensor: on one process the flat rows of the plan's
    positions; under sequence parallelism, each shard's own rows of its local positions; and the
    positions come back from the rows for the masks."""
    from megatron.ltd.ops import flat_rows
    from megatron.ltd.sampler import local_route_rows, route_positions

    b, s, k = 3, 64, 32
    ip = build_index_plan(5, 6, torch.arange(10, 10 + b), LAYERS, k, s, strata=8)
    route = ip.route_tensor()
    for row, layer in enumerate(LAYERS):
        assert torch.equal(route[row].reshape(-1), flat_rows(ip.for_layer(layer), b))
        assert torch.equal(route_positions(route[row]), ip.for_layer(layer))
        for tp in (2, 4, 8):
            for r in range(tp):
                local = flat_rows(ip.local_for_layer(layer, r, tp), b)
                assert torch.equal(local_route_rows(route[row], r, tp, s), local)


def test_no_data_dependent_shapes_or_host_reads():
    # On the meta device any .item()/.cpu()/data-dependent shape would raise.
    ids = torch.arange(8, device="meta")
    p = make_index_plan(1, 2, ids, list(range(1, 23)), 64, 256, device="meta", strata=4)
    assert p.shape == (22, 8, 64) and p.device.type == "meta"


def _chi2_critical(df, z=3.719):  # z for p = 1e-4, Wilson-Hilferty approximation
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_uniform_keep_frequency_and_no_pair_structure():
    s, k, draws = 64, 16, 0
    counts = torch.zeros(s, dtype=torch.float64)
    adjacent = 0.0
    layers = list(range(8))
    for it in range(40):
        p = make_index_plan(99, it, torch.arange(it * 32, it * 32 + 32), layers, k, s)
        counts += torch.bincount(p.reshape(-1), minlength=s).double()
        mask = torch.zeros(p.shape[0] * p.shape[1], s, dtype=torch.bool)
        mask.scatter_(1, p.reshape(-1, k), True)
        adjacent += (mask[:, 1:] & mask[:, :-1]).double().sum().item()
        draws += p.shape[0] * p.shape[1]
    q = k / s
    expected = draws * q
    # each draw keeps exactly k, so per-position counts are binomial(draws, q): scale by (1 - q)
    stat = float(((counts - expected) ** 2).sum() / expected) / (1 - q)
    try:
        from scipy.stats import chi2
        critical = chi2.ppf(1 - 1e-4, s - 1)
    except ImportError:
        critical = _chi2_critical(s - 1)
    assert stat < critical, (stat, critical)
    assert stat > 0.2 * (s - 1), "suspiciously perfect balance: not random"
    # adjacent pairs kept together at the rate of a uniform subset: k(k-1)/(s(s-1)) per pair
    exp_adj = draws * (s - 1) * k * (k - 1) / (s * (s - 1))
    assert abs(adjacent - exp_adj) < 5 * math.sqrt(exp_adj), (adjacent, exp_adj)


def test_layers_and_iterations_decorrelated():
    s, k = 256, 64
    p = plan(ids=tuple(range(16)), layers=list(range(12)), k=k, s=s)
    masks = torch.zeros(*p.shape[:2], s, dtype=torch.bool).scatter_(2, p, True)
    # overlap of two independent uniform k-subsets averages k*k/s
    overlaps = (masks[:-1] & masks[1:]).sum(-1).double()
    assert abs(overlaps.mean().item() - k * k / s) < 1.5, overlaps.mean()
    q = plan(it=8, ids=tuple(range(16)), layers=list(range(12)), k=k, s=s)
    mq = torch.zeros_like(masks).scatter_(2, q, True)
    assert abs((masks & mq).sum(-1).double().mean().item() - k * k / s) < 1.5


def test_index_plan_object_and_skip():
    assert plan_needed(63, 64) and not plan_needed(64, 64)
    ids = torch.arange(3)
    assert build_index_plan(0, 0, ids, LAYERS, 64, 64) is None
    assert build_index_plan(0, 0, ids, [], 16, 64) is None
    ip = build_index_plan(5, 6, ids, LAYERS, 16, 64, strata=2)
    assert isinstance(ip, IndexPlan) and 8 in ip and 4 not in ip
    assert torch.equal(ip.for_layer(8), make_index_plan(5, 6, ids, [8], 16, 64, strata=2)[0])
    assert torch.equal(ip.local_for_layer(8, 1, 2), local_shard_plan(ip.for_layer(8), 1, 2, 64))
    # forced at k == s: every position, in order (the gather/scatter path with nothing dropped)
    full = build_index_plan(0, 0, ids, LAYERS, 64, 64, force=True)
    assert torch.equal(full.indices, torch.arange(64).expand(len(LAYERS), 3, 64))
    with pytest.raises(KeyError):
        ip.for_layer(4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_bit_identical():
    args = (1234, 99, torch.arange(10**9, 10**9 + 8), list(range(1, 23)), 512, 2048)
    cpu = make_index_plan(*args, device="cpu")
    gpu = make_index_plan(*args, device="cuda")
    assert torch.equal(cpu, gpu.cpu())
    cpu = make_index_plan(*args, device="cpu", strata=4)
    gpu = make_index_plan(*args, device="cuda", strata=4)
    assert torch.equal(cpu, gpu.cpu())


def test_row_bases_are_the_same_integers_on_the_host_and_as_tensors():
    """The plan's row bases come from numpy on the host (the data loader's ids) and from torch ops
    for ids already on a device: both must give the same integers, or CPU and CUDA plans differ."""
    import numpy as np

    from megatron.ltd.sampler import _hash_ints, _row_bases

    salts = [_hash_ints(7, 3, n) for n in range(1, 23)]
    ids = [0, 1, 5, 2**31 - 1, 2**32 + 17, 10**12]
    host = _row_bases(np.asarray(salts, dtype=np.uint64), np.asarray(ids, dtype=np.uint64)).astype(np.int64)
    tensors = _row_bases(torch.tensor(salts, dtype=torch.int64), torch.tensor(ids, dtype=torch.int64))
    assert torch.equal(torch.from_numpy(host), tensors)
