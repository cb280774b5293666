"""The layer's gather/scatter pair (TokenRoute) against the reference ops, on every kernel that can
run here: the torch route always; the Triton kernels on a GPU, or on CPU under Triton's
interpreter when Triton is installed (TRITON_INTERPRET=1), values and gradients exact."""

import os

import pytest
import torch

from megatron.ltd import triton_ops
from megatron.ltd.ops import TokenRoute, gather_tokens, resolve_kernel, scatter_tokens
from megatron.ltd.sampler import make_index_plan


def _kernels_here():
    out = [("torch", "cpu")]
    if triton_ops._triton() is not None:
        out.append(("triton", "cuda" if torch.cuda.is_available() else "interpret"))
    return out


@pytest.fixture(params=_kernels_here(), ids=lambda p: f"{p[0]}-{p[1]}")
def kernel_device(request, monkeypatch):
    kernel, where = request.param
    if where == "interpret":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        triton_ops._kernels.cache_clear()  # jit-decorated afresh, under the interpreter
        yield kernel, torch.device("cpu")
        triton_ops._kernels.cache_clear()
        return
    yield kernel, torch.device("cuda" if where == "cuda" else "cpu")


def _layer(x, w):
    """A stand-in for the stock layer: residual plus a token-wise nonlinearity."""
    return x + torch.tanh(x @ w)


def _run(kernel, device, s, b, h, k, dtype, reference):
    torch.manual_seed(s * 100 + k)
    idx = make_index_plan(3, 0, torch.arange(b), [0], k, s)[0].to(device)
    x0 = torch.randn(s, b, h, dtype=torch.float32).to(device=device, dtype=dtype)
    w = (torch.randn(h, h) / h ** 0.5).to(device=device, dtype=dtype).requires_grad_()
    x = x0.clone().requires_grad_()
    up = x * 1.5  # the layer's input is an intermediate, as in a model
    if reference:
        out = scatter_tokens(up, _layer(gather_tokens(up, idx), w), idx)
    else:
        route = TokenRoute.from_positions(idx, b, kernel)
        out = route.scatter(up, _layer(route.gather(up), w))
    # Two consumers of the output (the next layer's residual and branch) share one gradient.
    loss = (out * torch.linspace(-1, 1, h, device=device, dtype=dtype)).sum() + (out.float() ** 2).sum() * 0.01
    loss.backward()
    return out.detach(), x.grad, w.grad


@pytest.mark.parametrize("s,b,h,k", [(16, 3, 5, 6), (37, 2, 33, 11), (8, 4, 16, 8), (24, 1, 7, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_route_matches_reference_ops(kernel_device, s, b, h, k, dtype):
    kernel, device = kernel_device
    ref = _run("torch", device, s, b, h, k, dtype, reference=True)
    got = _run(kernel, device, s, b, h, k, dtype, reference=False)
    for name, r, g in zip(("output", "input grad", "weight grad"), ref, got):
        assert g.dtype == r.dtype and g.shape == r.shape, name
        # Same additions in the same order: bit-identical, in bf16 too.
        assert torch.equal(g, r), f"{name}: max diff {(g.float() - r.float()).abs().max()}"


def test_route_in_bf16_is_the_fp32_reference_rounded_once(kernel_device):
    """The route only moves rows: with a layer whose bf16 arithmetic rounds once (t -> 2t + t), the
    bf16 route's output and input gradient are the fp32 reference's rounded to bf16, exactly."""
    kernel, device = kernel_device
    s, b, h, k = 37, 2, 33, 11
    idx = make_index_plan(5, 0, torch.arange(b), [0], k, s)[0].to(device)
    x0 = torch.randn(s, b, h).bfloat16().float().to(device)
    c = torch.randn(s, b, h).bfloat16().float().to(device)
    results = []
    for dtype, reference in ((torch.float32, True), (torch.bfloat16, False)):
        x = x0.to(dtype).detach().requires_grad_()
        if reference:
            out = scatter_tokens(x, gather_tokens(x, idx) * 2 + gather_tokens(x, idx), idx)
        else:
            route = TokenRoute.from_positions(idx, b, kernel)
            kept = route.gather(x)
            out = route.scatter(x, kept * 2 + kept)
        (out.float() * c).sum().backward()
        results.append((out.detach(), x.grad))
    (out32, grad32), (out16, grad16) = results
    assert out16.dtype == grad16.dtype == torch.bfloat16
    assert torch.equal(out16, out32.to(torch.bfloat16)), (out16.float() - out32).abs().max()
    assert torch.equal(grad16, grad32.to(torch.bfloat16)), (grad16.float() - grad32).abs().max()


@pytest.mark.parametrize("s,b,h,k", [(16, 3, 5, 6), (37, 2, 33, 11)])
def test_route_in_bf16_with_a_layer_stays_within_bf16_precision_of_fp32(kernel_device, s, b, h, k):
    """The whole layer step in bf16 (route plus a matmul-tanh layer) against the fp32 reference
    ops: output, input and weight gradients within 2**-4 of (|ref| + mean |ref|) elementwise.
    Measured: at most 3.6e-2 (about 9 bf16 rounding units of 2**-8: the matmul and tanh round in
    bf16, not the route); a misplaced row would be off by O(1)."""
    kernel, device = kernel_device
    ref = _run("torch", device, s, b, h, k, torch.float32, reference=True)
    got = _run(kernel, device, s, b, h, k, torch.bfloat16, reference=False)
    for name, r, g in zip(("output", "input grad", "weight grad"), ref, got):
        assert g.dtype == torch.bfloat16 and g.shape == r.shape, name
        err = (g.float() - r).abs() / (r.abs() + r.abs().mean())
        assert float(err.max()) <= 2 ** -4, (name, float(err.max()))


def test_route_dropped_tokens_bypass_and_input_grad_written_once(kernel_device):
    kernel, device = kernel_device
    s, b, h, k = 12, 2, 8, 5
    idx = make_index_plan(1, 0, torch.arange(b), [0], k, s)[0].to(device)
    x = torch.randn(s, b, h, device=device, requires_grad=True)
    route = TokenRoute.from_positions(idx, b, kernel)
    out = route.scatter(x, route.gather(x) * 3.0)
    g = torch.randn(s, b, h, device=device)
    out.backward(g)
    kept = torch.zeros(s, b, dtype=torch.bool, device=device)
    kept[idx.t(), torch.arange(b, device=device)] = True
    assert torch.equal(out[~kept], x.detach()[~kept]) and torch.equal(out[kept], x.detach()[kept] * 3.0)
    assert torch.equal(x.grad[~kept], g[~kept]) and torch.equal(x.grad[kept], g[kept] * 3.0)
    assert route.grad_out is None  # the handed-over gradient is released after the gather's backward


def test_kernel_choice():
    assert resolve_kernel("auto", torch.device("cpu")) == "torch"
    assert resolve_kernel("torch", torch.device("cpu")) == "torch"
    with pytest.raises(ValueError, match="--random-ltd-kernel"):
        resolve_kernel("cuda", torch.device("cpu"))
    if triton_ops._triton() is None:
        with pytest.raises(RuntimeError, match="Triton is not installed"):
            resolve_kernel("triton", torch.device("cpu"))
    elif os.environ.get("TRITON_INTERPRET") != "1":
        with pytest.raises(RuntimeError, match="needs a CUDA device"):
            resolve_kernel("triton", torch.device("cpu"))


def test_kernel_flag():
    import argparse

    from megatron.ltd.config import RandomLTDConfig, add_random_ltd_args, random_ltd_config_from_args

    parser = add_random_ltd_args(argparse.ArgumentParser())
    assert random_ltd_config_from_args(parser.parse_args(["--random-ltd"])).kernel == "auto"
    assert random_ltd_config_from_args(parser.parse_args(["--random-ltd", "--random-ltd-kernel", "triton"])).kernel == "triton"
    with pytest.raises(ValueError, match="--random-ltd-kernel"):
        RandomLTDConfig(enabled=True, constant_k=4, kernel="cuda").validate(8, 4)
