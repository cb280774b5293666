"""Random-LTD: random and layerwise token dropping (arXiv 2211.11586).

Pure building blocks, no training-loop knowledge:
  * :mod:`.config`   -- ``RandomLTDConfig``, its ``--random-ltd-*`` flags and validation;
  * :mod:`.schedule` -- MSLG kept length ``kept_length(step, cfg, s)`` and layer-token accounting;
  * :mod:`.sampler`  -- the rank-synchronised index plan (pure function of seed, iteration,
    global sample id, layer number, k and the number of strata, never the TP size);
  * :mod:`.ops`      -- gather/scatter of kept tokens, masks and rotary angles in ``[s, b, h]``.
"""

from .config import RandomLTDConfig, add_random_ltd_args, parse_layer_list, random_ltd_config_from_args
from .ops import gather_mask, gather_rotary, gather_tokens, scatter_tokens
from .sampler import (IndexPlan, build_index_plan, check_plan_fits, local_shard_plan, make_index_plan, plan_needed,
                      route_rows, route_strata)
from .schedule import kept_length, layer_averaged_tokens, layer_tokens, raw_tokens

__all__ = [
    "RandomLTDConfig",
    "add_random_ltd_args",
    "parse_layer_list",
    "random_ltd_config_from_args",
    "kept_length",
    "raw_tokens",
    "layer_tokens",
    "layer_averaged_tokens",
    "IndexPlan",
    "make_index_plan",
    "build_index_plan",
    "local_shard_plan",
    "plan_needed",
    "check_plan_fits",
    "route_rows",
    "route_strata",
    "gather_tokens",
    "scatter_tokens",
    "gather_mask",
    "gather_rotary",
]
