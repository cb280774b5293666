"""GPU checks (skipped without CUDA): the random-LTD GPT runs forward/backward in fp32 and bf16 on
the GPU, matches the CPU result for the same weights and plan, and full-length random-LTD equals
the baseline there too. CPU and CUDA index plans are compared bit for bit in tests/ltd."""

import pytest
import torch

from tests.multirank import run_multirank

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEQ, MBS, K = 32, 2, 12


def _loss_and_grads(model, batch, plan, device):
    from megatron.ltd.layer import gpt_forward_kwargs

    b = {k: v.to(device) for k, v in batch.items()}
    out = model(b["tokens"], b["position_ids"], None, labels=b["labels"], **gpt_forward_kwargs(plan))
    loss = out.float().mean()
    loss.backward()
    grads = {n: p.grad.detach().float().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return float(loss), grads


def body_gpu_matches_cpu(ctx, dtype_name):
    from megatron.ltd.sampler import build_index_plan
    from megatron.models.builders import build_gpt_model
    from tests.model_utils import VOCAB, fill_params_deterministically, make_batches, tiny_config

    dtype = getattr(torch, dtype_name)
    batch = make_batches(1, MBS, SEQ)[0]
    layers = [1, 2]
    model = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=SEQ, ltd_layers=layers)
    fill_params_deterministically(model, seed=5)
    plan_cpu = build_index_plan(3, 1, batch["sample_id"], layers, K, SEQ, device=torch.device("cpu"))
    # The CPU reference runs on the same process's CPU copy of the model (fp32).
    ref_loss, ref_grads = _loss_and_grads(model, batch, plan_cpu, torch.device("cpu"))
    gpu_model = model.to(device="cuda", dtype=dtype)
    plan_gpu = build_index_plan(3, 1, batch["sample_id"].cuda(), layers, K, SEQ, device=torch.device("cuda"))
    same_plan = bool(torch.equal(plan_gpu.indices.cpu(), plan_cpu.indices))
    loss, grads = _loss_and_grads(gpu_model, batch, plan_gpu, torch.device("cuda"))
    worst = max(float((grads[k] - ref_grads[k]).abs().max() / ref_grads[k].abs().max().clamp(min=1e-12)) for k in ref_grads)
    full_plan = build_index_plan(3, 1, batch["sample_id"].cuda(), layers, SEQ, SEQ, device=torch.device("cuda"))
    base = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=SEQ)
    fill_params_deterministically(base, seed=5)
    base = base.to(device="cuda", dtype=dtype)
    base_loss, _ = _loss_and_grads(base, batch, None, torch.device("cuda"))
    full_loss, _ = _loss_and_grads(gpu_model, batch, full_plan, torch.device("cuda"))
    return {"ref": ref_loss, "gpu": loss, "grad_rel": worst, "same_plan": same_plan, "base": base_loss, "full": full_loss}


@pytest.mark.parametrize("dtype_name,tol", [("float32", 1e-4), ("bfloat16", 3e-2)])
def test_random_ltd_gpt_on_gpu_matches_cpu(dtype_name, tol):
    r = run_multirank(body_gpu_matches_cpu, world_size=1, cpu=False, kwargs={"dtype_name": dtype_name})[0]
    assert r["same_plan"]
    assert r["gpu"] == pytest.approx(r["ref"], rel=tol)
    assert r["grad_rel"] < (tol * 10 if dtype_name == "bfloat16" else 1e-3)
    assert r["full"] == r["base"]


def body_triton_kernels_match_torch_ops(ctx):
    """The random-LTD GPT with the Triton gather/scatter gives the torch ops' loss and gradients (bf16)."""
    from megatron.ltd import triton_ops
    from megatron.ltd.sampler import build_index_plan
    from megatron.models.builders import build_gpt_model
    from tests.model_utils import VOCAB, fill_params_deterministically, make_batches, tiny_config

    if not triton_ops.available(torch.device("cuda")):
        return {"skipped": "triton not importable"}
    batch = make_batches(1, MBS, SEQ)[0]
    layers = [1, 2]
    plan = build_index_plan(3, 1, batch["sample_id"].cuda(), layers, K, SEQ, device=torch.device("cuda"))
    out = {}
    for kernel in ("torch", "triton"):
        model = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=SEQ, ltd_layers=layers, ltd_kernel=kernel)
        fill_params_deterministically(model, seed=5)
        model = model.to(device="cuda", dtype=torch.bfloat16)
        out[kernel] = _loss_and_grads(model, batch, plan, torch.device("cuda"))
    same_grads = all(torch.equal(out["torch"][1][k], out["triton"][1][k]) for k in out["torch"][1])
    return {"torch": out["torch"][0], "triton": out["triton"][0], "same_grads": same_grads}


def test_triton_kernels_match_torch_ops_in_the_gpt():
    r = run_multirank(body_triton_kernels_match_torch_ops, world_size=1, cpu=False)[0]
    if "skipped" in r:
        pytest.skip(r["skipped"])
    assert r["triton"] == r["torch"] and r["same_grads"]  # pure data movement: bit-identical
