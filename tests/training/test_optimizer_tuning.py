"""The fused AdamW switch: same updates as torch's default AdamW, state and resume included."""

import copy

import torch

from megatron.training.optimizer_tuning import torch_optimizers, use_fused_adam


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(7, 5), (5,), (3, 3, 2)]]


def _steps(opt, params, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


def test_fused_adamw_matches_default_and_survives_a_resume():
    ref_p, fused_p = _params(), _params()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref = torch.optim.AdamW(ref_p, **kw)
    fused = torch.optim.AdamW(fused_p, **kw)
    assert use_fused_adam(fused) == 1 and fused.param_groups[0]["fused"]
    assert use_fused_adam(fused) == 0  # already fused
    _steps(ref, ref_p, 3)
    _steps(fused, fused_p, 3)
    for a, b in zip(ref_p, fused_p):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    # A checkpoint of the unfused optimizer loads, is switched again, and keeps stepping alike.
    resumed = torch.optim.AdamW(fused_p, **kw)
    resumed.load_state_dict(copy.deepcopy(ref.state_dict()))  # as from disk: no tensor shared with ref
    for a, b in zip(ref_p, fused_p):
        b.data.copy_(a.data)
    assert use_fused_adam(resumed) == 1
    _steps(ref, ref_p, 2, seed=2)
    _steps(resumed, fused_p, 2, seed=2)
    for a, b in zip(ref_p, fused_p):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_other_optimizers_left_alone():
    sgd = torch.optim.SGD(_params(), lr=0.1)
    assert use_fused_adam(sgd) == 0 and not sgd.param_groups[0].get("fused")

    class Chained:  # megatron-core's ChainedOptimizer shape: .chained_optimizers of wrappers with .optimizer
        def __init__(self, *opts):
            self.chained_optimizers = [type("W", (), {"optimizer": o})() for o in opts]

    a, b = torch.optim.AdamW(_params(), lr=0.1), torch.optim.Adam(_params(), lr=0.1, foreach=True)
    assert list(torch_optimizers(Chained(a, b))) == [a, b]
    assert use_fused_adam(Chained(a, b)) == 1  # b's explicit foreach is kept
