"""GPU checks (skipped without CUDA), each against a CPU reference computed where a CPU run is valid:
its own gloo process in CPU mode (an NCCL process cannot run megatron-core on host tensors: its
vocab-parallel cross-entropy hands NCCL a CPU tensor).

* the random-LTD GPT (k < s) on the GPU in fp32 and bf16: loss and gradients match the CPU's for the
  same weights and plan, and full-length random-LTD equals the baseline there too;
* the Triton gather/scatter give the torch ops' loss and gradients bit for bit;
* the trainer on one GPU (DP=1, NCCL: its loss reductions, stop agreement and DDP go through NCCL)
  with random-LTD at k < s follows the CPU run loss for loss, and a checkpoint saved and loaded
  over NCCL continues the uninterrupted run.

CPU and CUDA index plans are compared bit for bit in tests/ltd."""

import pytest
import torch

from tests.multirank import run_multirank

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

SEQ, MBS, K = 32, 2, 12
LAYERS = [1, 2]


def _loss_and_grads(model, batch, plan, device):
    from megatron.ltd.layer import gpt_forward_kwargs

    b = {k: v.to(device) for k, v in batch.items()}
    out = model(b["tokens"], b["position_ids"], None, labels=b["labels"], **gpt_forward_kwargs(plan))
    loss = out.float().mean()
    loss.backward()
    grads = {n: p.grad.detach().float().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return float(loss), grads


def body_random_ltd_gpt(ctx, device_name, dtype_name):
    """Loss and gradients of the random-LTD GPT (k < s) on ``device_name``; with the baseline and
    full-length random-LTD losses on the same device."""
    from megatron.ltd.sampler import build_index_plan
    from megatron.models.builders import build_gpt_model
    from tests.model_utils import VOCAB, fill_params_deterministically, make_batches, tiny_config

    device, dtype = torch.device(device_name), getattr(torch, dtype_name)
    batch = make_batches(1, MBS, SEQ)[0]
    ids = batch["sample_id"].to(device)

    def model(**kw):
        m = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=SEQ, **kw)
        fill_params_deterministically(m, seed=5)  # by name and shape: the same weights in every process
        return m.to(device=device, dtype=dtype)

    ltd = model(ltd_layers=LAYERS)
    plan = build_index_plan(3, 1, ids, LAYERS, K, SEQ, device=device)
    loss, grads = _loss_and_grads(ltd, batch, plan, device)
    full_plan = build_index_plan(3, 1, ids, LAYERS, SEQ, SEQ, device=device)
    full, _ = _loss_and_grads(ltd, batch, full_plan, device)
    base, _ = _loss_and_grads(model(), batch, None, device)
    return {"loss": loss, "grads": grads, "indices": plan.indices.cpu(), "full": full, "base": base}


# One gloo process in CPU mode (fp32) computes every reference the GPU tests compare with.
TRAIN_ARGS = [
    "--mock-data", "--num-layers", "3", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", str(SEQ), "--micro-batch-size", "2", "--global-batch-size", "4", "--vocab-size", "128",
    "--lr", "3e-3", "--min-lr", "1e-4", "--log-interval", "1", "--eval-interval", "1000", "--eval-iters", "0",
    "--no-progress", "--hidden-dropout", "0", "--attention-dropout", "0", "--seed", "3",
    "--random-ltd", "--random-ltd-constant-k", str(K),
]
TRAIN_ITERS = 4


def body_train(ctx, tmp, resume):
    """The trainer for TRAIN_ITERS steps; with ``resume`` also the same run stopped half way
    (--exit-interval) with a checkpoint, and a second trainer that loads it and runs to the end."""
    from tests.training.trainer_utils import run_trainer

    def losses(name, extra):
        r = run_trainer(TRAIN_ARGS + extra, f"{tmp}/{name}.jsonl")
        return [row["loss"] for row in r["rows"]]

    out = {"full": losses("full", ["--train-iters", str(TRAIN_ITERS)])}
    if resume:
        ck = f"{tmp}/ck"
        half = str(TRAIN_ITERS // 2)
        out["first"] = losses("first", ["--train-iters", str(TRAIN_ITERS), "--exit-interval", half, "--save", ck,
                                        "--save-interval", half])
        out["resumed"] = losses("resumed", ["--train-iters", str(TRAIN_ITERS), "--load", ck])
    return out


def body_cpu_references(ctx, tmp):
    return {"gpt": body_random_ltd_gpt(ctx, "cpu", "float32"), "train": body_train(ctx, tmp, resume=False)}


@pytest.fixture(scope="module")
def cpu_reference(tmp_path_factory):
    return run_multirank(body_cpu_references, world_size=1, cpu=True,
                         kwargs={"tmp": str(tmp_path_factory.mktemp("cpu_ref"))})[0]


@pytest.mark.parametrize("dtype_name,tol", [("float32", 1e-4), ("bfloat16", 3e-2)])
def test_random_ltd_gpt_on_gpu_matches_cpu(cpu_reference, dtype_name, tol):
    ref = cpu_reference["gpt"]
    r = run_multirank(body_random_ltd_gpt, world_size=1, cpu=False,
                      kwargs={"device_name": "cuda", "dtype_name": dtype_name})[0]
    assert torch.equal(r["indices"], ref["indices"])  # the same plan on both devices
    assert r["indices"].shape[-1] == K < SEQ
    assert r["loss"] == pytest.approx(ref["loss"], rel=tol)
    worst = max(float((r["grads"][k] - g).abs().max() / g.abs().max().clamp(min=1e-12))
                for k, g in ref["grads"].items())
    assert worst < (tol * 10 if dtype_name == "bfloat16" else 1e-3), worst
    assert r["full"] == r["base"]


def test_trainer_on_one_gpu_matches_cpu_and_resumes_over_nccl(cpu_reference, tmp_path):
    r = run_multirank(body_train, world_size=1, cpu=False, kwargs={"tmp": str(tmp_path), "resume": True})[0]
    ref = cpu_reference["train"]["full"]
    assert len(r["full"]) == len(ref) == TRAIN_ITERS
    assert r["full"] == pytest.approx(ref, rel=1e-3)  # fp32 on both; the GPU's kernels sum in other orders
    assert r["first"] == pytest.approx(r["full"][:TRAIN_ITERS // 2], rel=1e-5)
    # The loaded run continues the uninterrupted one (weights, optimizer, schedule, data position).
    assert r["resumed"] == pytest.approx(r["full"][TRAIN_ITERS // 2:], rel=1e-5)


def body_triton_kernels_match_torch_ops(ctx):
    """The random-LTD GPT with the Triton gather/scatter gives the torch ops' loss and gradients (bf16)."""
    from megatron.ltd import triton_ops
    from megatron.ltd.sampler import build_index_plan
    from megatron.models.builders import build_gpt_model
    from tests.model_utils import VOCAB, fill_params_deterministically, make_batches, tiny_config

    if not triton_ops.available(torch.device("cuda")):
        return {"skipped": "triton not importable"}
    batch = make_batches(1, MBS, SEQ)[0]
    plan = build_index_plan(3, 1, batch["sample_id"].cuda(), LAYERS, K, SEQ, device=torch.device("cuda"))
    out = {}
    for kernel in ("torch", "triton"):
        model = build_gpt_model(tiny_config(), vocab_size=VOCAB, max_sequence_length=SEQ, ltd_layers=LAYERS, ltd_kernel=kernel)
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
