"""Moved to :mod:`megatron.checkpoint` (one room for checkpoints); these names stay importable."""

from megatron.checkpoint.files import CheckpointDamaged, CheckpointError, iter_dir, prune  # noqa: F401

__all__ = ["CheckpointDamaged", "CheckpointError", "iter_dir", "prune"]
