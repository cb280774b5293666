"""Random-LTD under every parallel layout (CPU, gloo, fp32): index plans agree across ranks with
no communication, recompute drops the same tokens, sequence parallelism matches TP=1 given the
same stratified plan, and TP=2 / PP=2 (1F1B, 4 micro-batches) / DP=2 reproduce the
single-process loss with tokens dropped (k < s)."""

import pytest
import torch

from tests.model_utils import (
    LTDForwardStep,
    VOCAB,
    collect_full_tensors,
    fill_params_deterministically,
    forward_backward,
    make_batches,
    max_rel_diff,
    tiny_config,
    wrap_ddp,
)
from tests.multirank import run_multirank

SEQ, MBS, K, LAYERS = 16, 2, 6, [1, 2]


def _model(**cfg):
    from megatron.models.builders import build_gpt_model

    config = tiny_config(**cfg)
    model = build_gpt_model(config, vocab_size=VOCAB, max_sequence_length=SEQ, ltd_layers=LAYERS,
)
    fill_params_deterministically(model, seed=4)
    return config, wrap_ddp(model, config)


def body_plans_on_tp_group(ctx, stratified):
    from megatron.core import parallel_state

    from megatron.ltd.sampler import build_index_plan

    plan = build_index_plan(5, 17, torch.tensor([100, 7]), LAYERS, K if not stratified else 8, SEQ,
                            device=torch.device("cpu"), strata=2 if stratified else 1).indices
    gathered = [torch.empty_like(plan) for _ in range(2)]
    torch.distributed.all_gather(gathered, plan, group=parallel_state.get_tensor_model_parallel_group())
    return {"same": bool(torch.equal(gathered[0], gathered[1])), "plan": plan}


@pytest.mark.parametrize("stratified", [False, True])
def test_index_plans_identical_on_tp_ranks_and_after_resume(stratified):
    first = run_multirank(body_plans_on_tp_group, world_size=2, tp=2, kwargs={"stratified": stratified})
    assert first[0]["same"] and first[1]["same"]
    # A "resumed" run is a fresh set of processes: no RNG state carried over, same plan.
    again = run_multirank(body_plans_on_tp_group, world_size=2, tp=2, kwargs={"stratified": stratified})
    assert torch.equal(first[0]["plan"], again[0]["plan"])


def body_recompute(ctx, recompute):
    extra = {}
    if recompute == "full":
        extra = dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif recompute == "selective":
        extra = dict(recompute_granularity="selective")
    config, ddp = _model(**extra)
    step = LTDForwardStep(LAYERS, K, SEQ)
    loss = forward_backward(ddp, config, make_batches(2, MBS, SEQ), SEQ, MBS, forward_step=step)
    return {"loss": loss, "grads": collect_full_tensors(ddp, "grad")}


def test_activation_recompute_drops_the_same_tokens():
    ref = run_multirank(body_recompute, world_size=1, kwargs={"recompute": None})[0]
    for mode in ("full", "selective"):
        out = run_multirank(body_recompute, world_size=1, kwargs={"recompute": mode})[0]
        assert out["loss"] == ref["loss"], mode
        assert max_rel_diff(out["grads"], ref["grads"]) < 1e-6, mode


def body_sequence_parallel(ctx, sequence_parallel):
    config, ddp = _model(sequence_parallel=sequence_parallel)
    step = LTDForwardStep(LAYERS, 8, SEQ, strata=2)  # the same stratified plan for both runs
    loss = forward_backward(ddp, config, make_batches(2, MBS, SEQ), SEQ, MBS, forward_step=step)
    return {"loss": loss, "grads": collect_full_tensors(ddp, "grad")}


def test_sequence_parallel_matches_tp1_with_the_same_stratified_plan():
    ref = run_multirank(body_sequence_parallel, world_size=1, kwargs={"sequence_parallel": False})[0]
    out = run_multirank(body_sequence_parallel, world_size=2, tp=2, kwargs={"sequence_parallel": True})
    for o in out:
        assert o["loss"] == pytest.approx(ref["loss"], rel=1e-5)
        assert max_rel_diff(o["grads"], ref["grads"]) < 1e-4


def body_layer_refuses_unfit_plan(ctx):
    """Under sequence parallelism over 2 ranks a plain plan (1 stratum) would gather tokens across
    shards: the layer must refuse it, and accept a plan of 2 (or 4) strata."""
    config, ddp = _model(sequence_parallel=True)
    out = {}
    for strata in (1, 2, 4):
        try:
            forward_backward(ddp, config, make_batches(1, MBS, SEQ), SEQ, MBS,
                             forward_step=LTDForwardStep(LAYERS, 8, SEQ, strata=strata))
            out[strata] = "ok"
        except ValueError as e:
            out[strata] = str(e)
    return out


def test_sequence_parallel_layer_refuses_a_plan_that_does_not_fit():
    out = run_multirank(body_layer_refuses_unfit_plan, world_size=2, tp=2)[0]
    assert "--random-ltd-strata" in out[1] and "2 ranks" in out[1], out
    assert out[2] == "ok" and out[4] == "ok", out


def body_layout(ctx, num_microbatches=4):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config, ddp = _model()
    # SGD, not Adam: Adam's first step is sign-like and turns fp noise in tiny grads into lr-sized moves.
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="sgd", lr=0.5, sgd_momentum=0.0, clip_grad=1.0), [ddp])
    all_batches = make_batches(num_microbatches, MBS, SEQ)
    per_rank = num_microbatches // ctx.dp
    mine = all_batches[ctx.dp_rank * per_rank : (ctx.dp_rank + 1) * per_rank]
    step = LTDForwardStep(LAYERS, K, SEQ)
    loss = forward_backward(ddp, config, mine, SEQ, MBS, forward_step=step)
    ok, grad_norm, _ = opt.step()
    return {"loss": loss, "grad_norm": grad_norm, "params": collect_full_tensors(ddp, "param"),
            "pp_rank": ctx.pp_rank, "plans": step.plans}


def test_layout_invariance_with_tokens_dropped():
    ref = run_multirank(body_layout, world_size=1)[0]
    assert all(p is not None and p.shape[-1] == K for p in ref["plans"])
    for tp, pp, world in ((2, 1, 2), (1, 2, 2), (1, 1, 2)):
        out = run_multirank(body_layout, world_size=world, tp=tp, pp=pp)
        losses = [o["loss"] for o in out if o["loss"] is not None]
        loss = sum(losses) / len(losses)  # DP ranks each see half of the global batch
        assert loss == pytest.approx(ref["loss"], rel=1e-5), (tp, pp)
        assert out[0]["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-4), (tp, pp)
        params = {}
        for o in out:
            params.update(o["params"])
        assert max_rel_diff(params, ref["params"]) < 1e-4, (tp, pp)
