"""Gather/scatter ops: exact values vs naive indexing, gradchecks, dtypes, masks, rotary."""

import pytest
import torch

from megatron.ltd.ops import gather_mask, gather_rotary, gather_tokens, scatter_tokens
from megatron.ltd.sampler import make_index_plan


def _idx(b, k, s, seed=0):
    return make_index_plan(seed, 0, torch.arange(b), [0], k, s)[0]


def _naive_gather(x, idx):
    return torch.stack([x[:, j].index_select(0, idx[j]) for j in range(idx.shape[0])], dim=1)


def _naive_scatter(full, kept, idx):
    out = full.clone()
    for j in range(idx.shape[0]):
        out[:, j] = out[:, j].index_copy(0, idx[j], kept[:, j])
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_values_exact_against_naive_reference(dtype):
    s, b, h, k = 16, 3, 5, 6
    idx = _idx(b, k, s)
    x = torch.randn(s, b, h).to(dtype)
    kept = torch.randn(k, b, h).to(dtype)
    g = gather_tokens(x, idx)
    assert g.shape == (k, b, h) and g.dtype == dtype
    assert torch.equal(g, _naive_gather(x, idx))
    out = scatter_tokens(x, kept, idx)
    assert out.dtype == dtype and torch.equal(out, _naive_scatter(x, kept, idx))
    # dropped tokens pass through unchanged, kept ones are replaced
    dropped = torch.ones(s, b, dtype=torch.bool)
    dropped[idx.t(), torch.arange(b)] = False
    assert torch.equal(out[dropped], x[dropped])
    # gather then scatter of the same tokens is the identity
    assert torch.equal(scatter_tokens(x, gather_tokens(x, idx), idx), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_forward_and_backward_are_the_fp32_reference_rounded_once(dtype):
    """Gather and scatter only move values, so in bf16/fp16 their forward and backward must be the
    fp32 result rounded once to the low precision: exactly, not merely close. Inputs and the
    upstream gradient are representable in ``dtype``; the only arithmetic (x3 on the kept rows, and
    autograd's sum of the two paths' gradients) rounds once in both precisions."""
    s, b, h, k = 12, 2, 4, 5
    idx = _idx(b, k, s, seed=3)
    x32 = torch.randn(s, b, h).to(dtype).float()
    w = torch.randn(s, b, h).to(dtype).float()
    outs, grads = [], []
    for dt in (torch.float32, dtype):
        x = x32.to(dt).detach().requires_grad_()
        y = scatter_tokens(x, gather_tokens(x, idx) * 3, idx) + x  # plus a residual path
        (y.float() * w).sum().backward()
        assert y.dtype == dt and x.grad.dtype == dt
        outs.append(y.detach())
        grads.append(x.grad)
    assert torch.equal(outs[1], outs[0].to(dtype))
    assert torch.equal(grads[1], grads[0].to(dtype))
    kept = torch.zeros(s, b, dtype=torch.bool)
    kept[idx.t(), torch.arange(b)] = True
    assert torch.equal(grads[0][kept], 4 * w[kept]) and torch.equal(grads[0][~kept], 2 * w[~kept])  # the oracle itself


def test_gradcheck_gather_and_scatter_float64():
    s, b, h, k = 7, 3, 4, 3
    idx = _idx(b, k, s, seed=1)
    x = torch.randn(s, b, h, dtype=torch.float64, requires_grad=True)
    kept = torch.randn(k, b, h, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gather_tokens(t, idx), (x,))
    assert torch.autograd.gradcheck(lambda f, c: scatter_tokens(f, c, idx), (x, kept))
    full_only = torch.randn(k, b, h, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: scatter_tokens(f, full_only, idx), (x,))
    assert torch.autograd.gradcheck(lambda c: scatter_tokens(x.detach(), c, idx), (kept,))


def test_scatter_backward_does_not_corrupt_shared_grad():
    # AddBackward hands the same grad tensor to both summands: the residual-connection case.
    s, b, h, k = 8, 2, 3, 4
    idx = _idx(b, k, s)
    x = torch.randn(s, b, h, requires_grad=True)
    other = torch.randn(s, b, h, requires_grad=True)
    kept = torch.randn(k, b, h, requires_grad=True)
    residual = other * 2  # created first, so its backward runs after the scatter's
    y = scatter_tokens(x, kept, idx) + residual
    y.backward(torch.ones(s, b, h))
    assert torch.equal(other.grad, torch.full((s, b, h), 2.0))
    expected = torch.ones(s, b, h)
    expected[idx.t(), torch.arange(b)] = 0
    assert torch.equal(x.grad, expected)
    assert torch.equal(kept.grad, torch.ones(k, b, h))


def test_scatter_does_not_modify_inputs_and_accepts_noncontiguous():
    s, b, h, k = 8, 2, 3, 4
    idx = _idx(b, k, s)
    base = torch.randn(b, s, h)
    full = base.transpose(0, 1)  # non-contiguous [s, b, h]
    before = full.clone()
    out = scatter_tokens(full, torch.zeros(k, b, h), idx)
    assert torch.equal(full, before) and out.is_contiguous()
    assert torch.equal(gather_tokens(full, idx), _naive_gather(before, idx))


def test_gather_mask_document_and_padding():
    b, s, k = 3, 10, 4
    idx = _idx(b, k, s, seed=2)
    mask = torch.rand(b, 1, s, s) > 0.5
    out = gather_mask(mask, idx)
    assert out.shape == (b, 1, k, k) and out.dtype == torch.bool
    for j in range(b):
        assert torch.equal(out[j, 0], mask[j, 0][idx[j]][:, idx[j]])
    pad = torch.rand(b, 1, 1, s) > 0.5
    po = gather_mask(pad, idx)
    assert po.shape == (b, 1, 1, k)
    for j in range(b):
        assert torch.equal(po[j, 0, 0], pad[j, 0, 0][idx[j]])
    # a shared causal mask stays causal among kept (sorted) tokens
    causal = torch.ones(1, 1, s, s, dtype=torch.bool).triu(1)  # True = masked out
    cm = gather_mask(causal, idx)
    assert cm.shape == (b, 1, k, k)
    assert torch.equal(cm, torch.ones(k, k, dtype=torch.bool).triu(1).expand(b, 1, k, k))


def test_gather_mask_gradcheck_float64():
    b, s, k = 2, 6, 3
    idx = _idx(b, k, s)
    m = torch.randn(b, 2, s, s, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gather_mask(t, idx), (m,))
    p = torch.randn(b, 1, 1, s, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gather_mask(t, idx), (p,))


def _rope_config():
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(num_layers=1, hidden_size=32, num_attention_heads=4, use_cpu_initialization=True)


def test_rotary_gathered_equals_gathering_rotated(monkeypatch):
    from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    if not torch.cuda.is_available():  # RotaryEmbedding moves inv_freq to current_device()
        monkeypatch.setattr(torch.cuda, "current_device", lambda: "cpu")
    s, b, heads, d, k = 16, 3, 4, 8, 6
    rope = RotaryEmbedding(kv_channels=d, rotary_percent=1.0, use_cpu_initialization=True)
    freqs = rope(s).cpu()  # megatron-core's layout: [s, 1, 1, d]
    assert freqs.shape == (s, 1, 1, d)
    cfg = _rope_config()
    assert not cfg.apply_rope_fusion
    t = torch.randn(s, b, heads, d)
    idx = _idx(b, k, s, seed=4)
    rotated_full = apply_rotary_pos_emb(t, freqs, config=cfg, cp_group=_FakeGroup())
    f_k = gather_rotary(freqs, idx)
    assert f_k.shape == (k, b, 1, d)
    t_k = t[idx.t(), torch.arange(b)]  # [k, b, heads, d]
    rotated_kept = apply_rotary_pos_emb(t_k, f_k, config=cfg, cp_group=_FakeGroup())
    assert torch.allclose(rotated_kept, rotated_full[idx.t(), torch.arange(b)], atol=1e-6)
    # gradcheck and the per-sample [s, b, 1, d] form
    fr = torch.randn(s, 1, 1, d, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: gather_rotary(f, idx), (fr,))
    per_sample = freqs.expand(s, b, 1, d).contiguous()
    assert torch.equal(gather_rotary(per_sample, idx), f_k)


class _FakeGroup:
    """apply_rotary_pos_emb reads the CP group only to look it up; one rank, no process group."""

    def size(self):
        return 1

    def rank(self):
        return 0
