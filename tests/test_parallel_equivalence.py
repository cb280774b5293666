"""Layout equivalence of megatron-core models on CPU/gloo through our device layer:
TP=2 (with and without sequence parallelism), PP=2 with 1F1B, DP=2 with the distributed
optimizer and gradient clipping, each against the single-process result."""

import pytest
import torch

from tests.model_utils import (
    collect_full_tensors,
    fill_params_deterministically,
    forward_backward,
    make_batches,
    max_rel_diff,
    tiny_config,
    wrap_ddp,
    VOCAB,
)
from tests.multirank import run_multirank

SEQ, MBS = 16, 2


def _build(sequence_parallel=False, **cfg):
    from megatron.models.builders import build_gpt_model

    config = tiny_config(sequence_parallel=sequence_parallel, **cfg)
    model = build_gpt_model(config, vocab_size=VOCAB, max_sequence_length=SEQ)
    fill_params_deterministically(model, seed=3)
    return config, model


def body_loss_and_grads(ctx, sequence_parallel=False, num_microbatches=1):
    config, model = _build(sequence_parallel)
    ddp = wrap_ddp(model, config)
    batches = make_batches(num_microbatches, MBS, SEQ)
    loss = forward_backward(ddp, config, batches, SEQ, MBS)
    grads = collect_full_tensors(ddp, "grad")
    return {"loss": loss, "grads": grads if ctx.tp_rank == 0 else None}


def test_tp2_matches_tp1():
    ref = run_multirank(body_loss_and_grads, world_size=1)[0]
    out = run_multirank(body_loss_and_grads, world_size=2, tp=2)
    assert out[0]["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert out[1]["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert set(out[0]["grads"]) == set(ref["grads"])
    assert max_rel_diff(out[0]["grads"], ref["grads"]) < 1e-4


def test_tp2_sequence_parallel_matches_tp1():
    ref = run_multirank(body_loss_and_grads, world_size=1)[0]
    out = run_multirank(body_loss_and_grads, world_size=2, tp=2, kwargs={"sequence_parallel": True})
    assert out[0]["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    # Norm weights see only half the sequence per rank: equal grads prove the SP all-reduce ran.
    assert max_rel_diff(out[0]["grads"], ref["grads"]) < 1e-4
    assert any("layernorm" in k for k in out[0]["grads"])


def body_pipeline(ctx, num_microbatches=4):
    config, model = _build()
    ddp = wrap_ddp(model, config)
    batches = make_batches(num_microbatches, MBS, SEQ)
    loss = forward_backward(ddp, config, batches, SEQ, MBS)
    return {"loss": loss, "pp_rank": ctx.pp_rank, "grads": collect_full_tensors(ddp, "grad")}


def test_pp2_1f1b_matches_pp1():
    ref = run_multirank(body_pipeline, world_size=1)[0]
    out = run_multirank(body_pipeline, world_size=2, pp=2)
    last = [o for o in out if o["pp_rank"] == 1][0]
    first = [o for o in out if o["pp_rank"] == 0][0]
    assert first["loss"] is None  # only the last stage computes the loss
    assert last["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    merged = {**first["grads"], **last["grads"]}
    # Tied embeddings: the first stage's embedding grad includes the last stage's output-layer grad.
    assert max_rel_diff(merged, ref["grads"], keys=sorted(first["grads"])) < 1e-4
    assert max_rel_diff(last["grads"], ref["grads"], keys=[k for k in last["grads"] if "layers" in k]) < 1e-4


def body_dp_step(ctx, use_distributed_optimizer=True, global_microbatches=2, clip=0.05):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config, model = _build()
    ddp = wrap_ddp(model, config, use_distributed_optimizer=use_distributed_optimizer)
    opt = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=1e-2, weight_decay=0.0, clip_grad=clip, use_distributed_optimizer=use_distributed_optimizer),
        [ddp],
    )
    all_batches = make_batches(global_microbatches, MBS, SEQ)
    per_rank = global_microbatches // ctx.dp
    mine = all_batches[ctx.dp_rank * per_rank : (ctx.dp_rank + 1) * per_rank]
    ddp.zero_grad_buffer()
    opt.zero_grad()
    loss = forward_backward(ddp, config, mine, SEQ, MBS)
    ok, grad_norm, _ = opt.step()
    assert ok
    return {"loss": loss, "grad_norm": grad_norm, "params": collect_full_tensors(ddp, "param")}


def test_dp2_distributed_optimizer_with_clipping_matches_dp1():
    ref = run_multirank(body_dp_step, world_size=1)[0]
    out = run_multirank(body_dp_step, world_size=2)
    assert ref["grad_norm"] > 0.05  # clipping is active
    for o in out:
        assert o["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
        assert max_rel_diff(o["params"], ref["params"]) < 1e-5
    # The step moved the weights (the comparison is not trivially of unchanged parameters).
    init = run_multirank(body_initial_params, world_size=1)[0]
    assert max_rel_diff(ref["params"], init) > 1e-4


def body_initial_params(ctx):
    _, model = _build()
    return collect_full_tensors(model, "param")


def body_interleaved(ctx, vpp=None, num_microbatches=4):
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron.models.builders import build_gpt_model
    from tests.model_utils import gpt_forward_step

    # One message at a time on gloo (what the trainer sets on CPU; see model_setup.transformer_config).
    config = tiny_config(virtual_pipeline_model_parallel_size=vpp, batch_p2p_comm=False)
    chunks = []
    for v in range(vpp) if vpp else [None]:
        first = ps.is_pipeline_first_stage(ignore_virtual=v is None, vp_stage=v)
        last = ps.is_pipeline_last_stage(ignore_virtual=v is None, vp_stage=v)
        m = build_gpt_model(config, vocab_size=VOCAB, max_sequence_length=SEQ, pre_process=first, post_process=last, vp_stage=v)
        fill_params_deterministically(m, seed=3)
        chunks.append(m)
    ddps = [wrap_ddp(m, config) for m in chunks]
    batches = make_batches(num_microbatches, MBS, SEQ)
    iters = [iter(batches) for _ in ddps]
    out = get_forward_backward_func()(
        forward_step_func=gpt_forward_step, data_iterator=iters if vpp else iters[0], model=ddps,
        num_microbatches=num_microbatches, seq_length=SEQ, micro_batch_size=MBS, forward_only=False,
    )
    grads = {}
    for d in ddps:
        grads.update(collect_full_tensors(d, "grad"))
    loss = float(torch.stack([x["lm loss"] for x in out]).mean()) if out else None
    return {"loss": loss, "grads": grads, "layers": [[l.layer_number for l in c.decoder.layers] for c in chunks]}


def test_pp2_interleaved_1f1b_matches_pp1():
    ref = run_multirank(body_interleaved, world_size=1)[0]
    out = run_multirank(body_interleaved, world_size=2, pp=2, vpp=2, kwargs={"vpp": 2})
    assert out[0]["layers"] == [[1], [3]] and out[1]["layers"] == [[2], [4]]  # really interleaved
    assert out[1]["loss"] == pytest.approx(ref["loss"], rel=1e-5)
    merged = {**out[1]["grads"], **out[0]["grads"]}  # first stage's tied embedding grad is the full one
    assert max_rel_diff(merged, ref["grads"]) < 1e-4
