"""Model pieces on top of megatron-core: SDPA core attention, a sequence-parallel-capable norm,
layer specs, and builders for GPT/BERT (with random-LTD layers when asked)."""

import megatron.runtime  # noqa: F401,E402  (quiets optional-dependency notices)
