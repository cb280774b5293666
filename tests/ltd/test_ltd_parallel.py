"""Random-LTD under every parallel layout (CPU, gloo, fp32): the plan the layers use during training
is the one-process plan on every TP rank (with and without sequence parallelism), recompute drops the same tokens, sequence parallelism matches TP=1 given the
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


# A real Trainer run (tiny GPT, seq 16, layers 1 and 2 drop tokens, k = 4 then 8, 4 strata).
TRAIN = [
    "--mock-data", "--num-layers", "4", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
    "--max-position-embeddings", "16", "--micro-batch-size", "2", "--global-batch-size", "4", "--vocab-size", "127",
    "--make-vocab-size-divisible-by", "32", "--lr", "1e-3", "--train-iters", "2", "--log-interval", "1",
    "--eval-interval", "1000", "--eval-iters", "0", "--no-progress", "--cpu", "--hidden-dropout", "0.0",
    "--attention-dropout", "0.0", "--random-ltd", "--random-ltd-min-seq", "4", "--random-ltd-seq-step", "4",
    "--random-ltd-require-steps", "3", "--random-ltd-strata", "4",
]


def body_plans_used_by_the_layers(ctx, runs, tmp):
    """For each argument list in ``runs``: train two steps and record the token positions every
    dropping layer actually gathered (from the TokenRoute it built), as global positions [b, k]
    in call order."""
    import os

    import megatron.ltd.layer as layer_mod
    from megatron.core import parallel_state
    from tests.training.trainer_utils import run_trainer

    used, shift = [], [0]

    class RecordingRoute(layer_mod.TokenRoute):
        def gather(self, hidden):
            used.append(self.positions(hidden.shape[1]).clone() + shift[0])  # shard-local under SP: made global below
            return super().gather(hidden)

    layer_mod.TokenRoute = RecordingRoute
    out = []
    for i, args in enumerate(runs):
        parallel_state.destroy_model_parallel()  # the Trainer makes this run's groups
        used.clear()
        run_trainer(args, os.path.join(tmp, f"plans-{i}-{ctx.rank}.jsonl"))
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        if "--sequence-parallel" in args:  # the positions seen so far were local to this rank's shard
            used[:] = [u + tp_rank * 16 // parallel_state.get_tensor_model_parallel_world_size() for u in used]
        out.append({"used": list(used), "tp_rank": tp_rank})
    return out


def test_layers_use_the_one_process_plan_on_every_tp_rank(tmp_path):
    """The plan each dropping layer uses, recorded inside the layer during real training steps:
    identical on both TP ranks (each builds its own, with no communication) and equal to the
    one-process run's; under sequence parallelism each rank gathers its own shard's part of it."""
    ref = run_multirank(body_plans_used_by_the_layers, world_size=1, kwargs={"runs": [TRAIN], "tmp": str(tmp_path)})[0][0]
    tp2 = TRAIN + ["--tensor-model-parallel-size", "2"]
    out = run_multirank(body_plans_used_by_the_layers, world_size=2, tp=2,
                        kwargs={"runs": [tp2, tp2 + ["--sequence-parallel"]], "tmp": str(tmp_path)})
    # 2 steps x 2 micro-batches x 2 dropping layers, k = 4 (step 1) and 8 (step 2) of 16
    assert [u.shape for u in ref["used"]] == [torch.Size([2, 4])] * 4 + [torch.Size([2, 8])] * 4
    assert len({tuple(u.flatten().tolist()) for u in ref["used"]}) == 8  # layers and micro-batches differ
    plain, sp = [o[0] for o in out], [o[1] for o in out]
    assert all(len(o["used"]) == len(ref["used"]) for o in plain + sp)
    for i, r in enumerate(ref["used"]):
        assert torch.equal(plain[0]["used"][i], r) and torch.equal(plain[1]["used"][i], r), (i, plain[0]["used"][i], r)
        # Sequence parallel: rank 0 gathers the kept tokens among positions 0-7, rank 1 among 8-15.
        for o in sp:
            assert ((o["used"][i] >= 8 * o["tp_rank"]) & (o["used"][i] < 8 * (o["tp_rank"] + 1))).all(), (i, o)
        both = torch.cat([sp[0]["used"][i], sp[1]["used"][i]], dim=1)
        assert torch.equal(both, r), (i, both, r)


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
