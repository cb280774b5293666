"""The host cost of a dropping layer, as a count (deterministic, unlike time): through the trainer's
own forward-backward schedule, a dropping layer dispatches exactly the operators of a plain layer
plus four (gather and scatter, forward and backward), also when every token is kept, and the index
plan costs a fixed number of operators per micro-batch whatever the number of dropping layers.

On a GPU each counted operator is at least one kernel launch, and its host cost the launch's: the
H200 step was bound by the host (docs/performance.md), so these counts are the CPU guard of what
the GPU showed. Timings of the same quantities: tools/benchmark_train_step.py --host-overhead.
"""

from __future__ import annotations

import functools

import pytest

from tests.training.inprocess import trainer_runtime  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("trainer_runtime")

ARGS = [
    "--mock-data", "--hidden-size", "32", "--num-attention-heads", "2", "--seq-length", "32",
    "--micro-batch-size", "1", "--global-batch-size", "1", "--vocab-size", "128", "--train-iters", "100",
    "--lr", "1e-3", "--hidden-dropout", "0.0", "--attention-dropout", "0.0", "--eval-iters", "0", "--no-progress",
    "--cpu",
]
ROUTE_OPS_PER_LAYER = 4  # index_select + index_copy forward, index_select + index_copy backward
PLAN_OPS_MAX = 30  # per micro-batch: the key hash over [layers, b, s], topk, sort, the row numbers


def _compute_ops(layers, keep=None, force=False):
    import megatron.ltd.sampler as sampler
    from megatron.runtime.host_cost import count_ops
    from megatron.training.arguments import parse_pretrain_config
    from megatron.training.gpt import gpt_task
    from megatron.training.trainer import Trainer

    argv = ARGS + ["--num-layers", str(layers)]
    if keep is not None:
        argv += ["--random-ltd", "--random-ltd-constant-k", str(int(32 * keep))]
    cfg = parse_pretrain_config(argv, model_type="gpt", world_size=1)
    tr = Trainer(cfg, gpt_task(cfg))
    it = tr._iterators(tr.train_ds, 0)
    build_plan = sampler.build_index_plan

    def fwd_bwd():
        work = tr.step_work(0)
        for model in tr.models:
            model.zero_grad_buffer()
        tr._run_schedule(it, tr._forward_step_fn(0, work.kept_length, work.seq_length), False, tr.num_microbatches, work)

    sampler.build_index_plan = functools.partial(build_plan, force=True) if force else build_plan
    try:
        fwd_bwd()  # first call builds lazy state
        counter = count_ops(fwd_bwd)
    finally:
        sampler.build_index_plan = build_plan
        tr.close()
    return counter


@pytest.mark.parametrize("keep,force", [(0.5, False), (1.0, True)], ids=["k = s/2", "k = s, every token routed"])
def test_a_dropping_layer_dispatches_four_more_operators_than_a_plain_one(keep, force):
    base4, base6 = _compute_ops(4), _compute_ops(6)
    ltd4, ltd6 = _compute_ops(4, keep, force), _compute_ops(6, keep, force)
    # Two more layers, both dropping (all but the first and last drop): the plan is made once per
    # micro-batch for all of them, so the difference is two layers' worth of operators.
    plain_layer = (base6.compute - base4.compute) / 2
    dropping_layer = (ltd6.compute - ltd4.compute) / 2
    assert dropping_layer - plain_layer == ROUTE_OPS_PER_LAYER, (plain_layer, dropping_layer, ltd6.by_op)
    # What is left is the plan, once per micro-batch, the same for 2 and 4 dropping layers.
    plan4 = ltd4.compute - base4.compute - 2 * ROUTE_OPS_PER_LAYER
    plan6 = ltd6.compute - base6.compute - 4 * ROUTE_OPS_PER_LAYER
    assert plan4 == plan6 and 0 < plan4 <= PLAN_OPS_MAX, (plan4, plan6)
