"""CPU mode (megatron-core's CUDA paths redirected to CPU), SDPA core attention, SP norms."""

import math
import subprocess
import sys

import pytest
import torch

from tests.multirank import run_multirank

CPU_MODE_SCRIPT = r"""
import torch
from megatron.runtime import cpu_compat
assert not cpu_compat.is_enabled()
cpu_compat.enable()
x = torch.zeros(3, device="cuda")
y = torch.ones(2, device=torch.cuda.current_device())
z = torch.empty(1, device=0)
w = torch.ones(2).cuda().to("cuda:0")
assert x.device.type == y.device.type == z.device.type == w.device.type == "cpu"
assert x.type() == "torch.cuda.FloatTensor"
assert torch.ones(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
assert x.type(torch.float64).dtype == torch.float64  # conversions still work
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream()); torch.cuda.synchronize()
torch.cuda.manual_seed(7); a = torch.rand(4)
torch.manual_seed(7); b = torch.rand(4)
assert torch.equal(a, b)  # the "device" generator is the CPU generator
cpu_compat.disable()
assert not cpu_compat.is_enabled()
try:
    torch.zeros(1, device="cuda")
except (RuntimeError, AssertionError):
    print("RESTORED")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU redirection on a machine without CUDA")
def test_cpu_mode_redirects_and_restores():
    out = subprocess.run([sys.executable, "-c", CPU_MODE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RESTORED" in out.stdout


def _reference_attention(q, k, v, mask_out):
    # q,k,v [s,b,n,d]; mask_out [b,1,s,s] True = masked (megatron's convention)
    qb, kb, vb = (t.permute(1, 2, 0, 3) for t in (q, k, v))
    scores = qb @ kb.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(mask_out, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vb
    return out.permute(2, 0, 1, 3).reshape(q.shape[0], q.shape[1], -1)


def body_sdpa_matches_reference(ctx):
    from megatron.core.transformer.enums import AttnMaskType

    from megatron.models.attention import SDPACoreAttention
    from tests.model_utils import tiny_config

    cfg = tiny_config()
    s, b, n, d = 8, 2, 4, 8
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(s, b, n, d, generator=g, dtype=torch.float64) for _ in range(3))
    causal = SDPACoreAttention(cfg, 1, AttnMaskType.causal, "self")
    tri = torch.triu(torch.ones(s, s, dtype=torch.bool), 1).expand(b, 1, s, s)
    err_causal = float((causal(q, k, v, None) - _reference_attention(q, k, v, tri)).abs().max())
    # Padding: sample 0 attends to 5 tokens, sample 1 to all 8.
    pad = torch.zeros(b, 1, 1, s, dtype=torch.bool)
    pad[0, ..., 5:] = True
    padding = SDPACoreAttention(cfg, 1, AttnMaskType.padding, "self")
    err_pad = float((padding(q, k, v, pad) - _reference_attention(q, k, v, pad.expand(b, 1, s, s))).abs().max())
    return err_causal, err_pad


def test_sdpa_core_attention_matches_reference():
    err_causal, err_pad = run_multirank(body_sdpa_matches_reference, world_size=1)[0]
    assert err_causal < 1e-10 and err_pad < 1e-10


def body_norm_tags(ctx, sequence_parallel):
    from megatron.models.norms import TorchNorm
    from tests.model_utils import tiny_config

    norm = TorchNorm(tiny_config(sequence_parallel=sequence_parallel), 32)
    return [getattr(p, "sequence_parallel", None) for p in norm.parameters()]


def test_norm_marks_params_for_sequence_parallel_reduction():
    assert run_multirank(body_norm_tags, world_size=2, tp=2, kwargs={"sequence_parallel": True})[0] == [True, True]
    assert run_multirank(body_norm_tags, world_size=1, kwargs={"sequence_parallel": False})[0] == [False, False]


def body_fully_masked_rows(ctx):
    from megatron.core.transformer.enums import AttnMaskType

    from megatron.models.attention import SDPACoreAttention
    from tests.model_utils import tiny_config

    s, b, n, d = 6, 2, 4, 8
    q, k, v = (torch.randn(s, b, n, d, dtype=torch.float64) for _ in range(3))
    pad = torch.zeros(b, 1, 1, s, dtype=torch.bool)
    pad[0] = True  # sample 0: every key is padding
    out = SDPACoreAttention(tiny_config(), 1, AttnMaskType.padding, "self")(q, k, v, pad)
    ref = _reference_attention(q[:, 1:], k[:, 1:], v[:, 1:], pad[1:].expand(1, 1, s, s))
    return bool(torch.isfinite(out).all()), float((out[:, 1:] - ref).abs().max())


def test_fully_masked_rows_stay_finite_and_other_samples_are_unaffected():
    finite, err = run_multirank(body_fully_masked_rows, world_size=1)[0]
    assert finite and err < 1e-10
