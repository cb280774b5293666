"""Start-up refusals and seeds (issue 10, section 5): --reset-attention-mask without the data
loader's masks is refused, and pipeline stages get different seeds (Megatron-LM: +100 per stage)
while data-parallel ranks share one."""

from __future__ import annotations

import pytest
import torch

from megatron.training.arguments import ConfigError, parse_pretrain_config
from tests.multirank import run_multirank

TINY = ["--mock-data", "--num-layers", "2", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "16",
        "--micro-batch-size", "1", "--train-iters", "1", "--lr", "1e-3", "--cpu"]


def test_reset_attention_mask_without_dataloader_masks_is_refused():
    with pytest.raises(ConfigError, match="--no-create-attention-mask-in-dataloader"):
        parse_pretrain_config(TINY + ["--reset-attention-mask", "--no-create-attention-mask-in-dataloader"], world_size=1)
    parse_pretrain_config(TINY + ["--reset-attention-mask"], world_size=1)  # with the masks: fine
    parse_pretrain_config(TINY + ["--no-create-attention-mask-in-dataloader"], world_size=1)  # plain causal: fine


def body_draws(ctx):
    from megatron.core import tensor_parallel

    from megatron.runtime.device import set_seed

    set_seed(1234)
    default = torch.rand(4)
    with tensor_parallel.get_cuda_rng_tracker().fork():  # the RNG dropout uses in model-parallel regions
        tracked = torch.rand(4)
    return {"pp": ctx.pp_rank, "dp": ctx.dp_rank, "default": default, "tracked": tracked}


def test_pipeline_stages_get_different_seeds_data_parallel_ranks_the_same():
    out = run_multirank(body_draws, world_size=4, pp=2)
    by = {(o["pp"], o["dp"]): o for o in out}
    for key in ("default", "tracked"):
        assert not torch.equal(by[(0, 0)][key], by[(1, 0)][key]), key  # stages differ
        assert torch.equal(by[(0, 0)][key], by[(0, 1)][key]), key  # DP replicas agree
        assert torch.equal(by[(1, 0)][key], by[(1, 1)][key]), key
