"""The trainer: configuration, the loop, checkpoints, LR schedule, logging."""

import megatron.runtime  # noqa: F401  (quiets optional-dependency notices before megatron.core loads)
