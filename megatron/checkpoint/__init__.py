"""Checkpoints: megatron-core ``dist_checkpointing`` (torch_dist) as the one format.

The surface the trainer and the tools use:

- :class:`Saver` (``save``/``poll``/``wait``): atomic, optionally asynchronous saves (:mod:`.save`);
- :func:`load`: resume what ``--load`` names on any TP x PP x DP layout, with fallback (:mod:`.resume`);
- :func:`inspect`: a checkpoint's manifest without loading it;
- :func:`load_weights`: one model's weights, e.g. at TP=1 for evaluation.

Files, tracker and checksums are in :mod:`.files`; what goes into the sharded state dicts in :mod:`.state`.
"""

from megatron.checkpoint.files import (TRACKER, CheckpointDamaged, CheckpointError, complete_iterations, iter_dir,
                                       latest_iteration, maybe_crash, prune)
from megatron.checkpoint.resume import ResumeOptions, load_checkpoint as load, resume_vocab_size
from megatron.checkpoint.save import Saver
from megatron.checkpoint.state import model_only_state as load_weights


def inspect(root: str, iteration=None) -> dict:
    """The manifest of ``root``'s checkpoint (the tracker's unless ``iteration``), as saved."""
    from megatron.checkpoint.files import read_manifest

    if iteration is None:
        iteration = latest_iteration(root)
        if iteration is None:
            raise CheckpointError(f"{root} holds no checkpoint ({TRACKER} is missing)")
    return read_manifest(root, iteration)


__all__ = ["TRACKER", "CheckpointDamaged", "CheckpointError", "ResumeOptions", "Saver", "complete_iterations",
           "inspect", "iter_dir", "latest_iteration", "load", "load_weights", "maybe_crash", "prune", "resume_vocab_size"]
