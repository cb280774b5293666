"""Checkpoints: model, optimizer, LR scheduler, token counters, data position and RNG, written
atomically.

Layout (one directory per saved iteration, Megatron-LM's legacy per-rank naming)::

    SAVE/latest_checkpointed_iteration.txt      the newest COMPLETE checkpoint (atomic replace)
    SAVE/iter_0000100/metadata.json             written last: config, layout, counters
    SAVE/iter_0000100/mp_rank_TT_PPP/model_optim_rng.pt   per tensor/pipeline rank (DP rank 0)
    SAVE/iter_0000100/mp_rank_TT_PPP/distrib_optim.pt     distributed-optimizer state (gathered)
    SAVE/iter_0000100/rng/rank_NNNNN.pt         every rank's RNG states

Atomicity: every rank writes under ``iter_0000100.partial/``; after a barrier rank 0 writes the
metadata, renames the directory into place and only then replaces the tracker file. A save
killed at any moment leaves either a ``.partial`` directory (ignored, cleaned up by the next
save) or a complete directory the tracker does not name yet; ``--load`` only ever follows the
tracker to a directory whose metadata says it is complete.

``metadata.json`` also records the size of every file of the checkpoint, so a truncated or
emptied file is found (and named) before anything is read. Loading, with its fallback to an
older checkpoint, is in :mod:`megatron.training.checkpoint_load`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from megatron.runtime import collectives

TRACKER = "latest_checkpointed_iteration.txt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run; the message says why and what to do."""


class CheckpointDamaged(CheckpointError):
    """A file of the checkpoint is missing, truncated or unreadable (an older one may still load)."""


def iter_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


def rank_dir_name(tp_rank: int, pp_rank: int) -> str:
    return f"mp_rank_{tp_rank:02d}_{pp_rank:03d}"


def _maybe_crash(stage: str, iteration: int) -> None:
    """Fault injection for the kill-and-resume tests: MEGATRON_LTD_CRASH_AT=<stage>:<iteration>."""
    spec = os.environ.get("MEGATRON_LTD_CRASH_AT")
    only_rank = os.environ.get("MEGATRON_LTD_CRASH_RANK")  # kill one rank only (the job must follow)
    if only_rank is not None and only_rank != os.environ.get("RANK", "0"):
        return
    if spec and spec == f"{stage}:{iteration}":
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path) or ".")


def durable_torch_save(obj: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def rng_state() -> Dict[str, Any]:
    from megatron.core import tensor_parallel

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while hasattr(module, "module"):
        module = module.module
    return module


def tp_partition_dims(model: torch.nn.Module) -> Dict[str, int]:
    """{state-dict key: dim} for tensor-parallel-sharded parameters (for merging/converting)."""
    dims = {}
    for name, param in unwrap(model).named_parameters():
        if getattr(param, "tensor_model_parallel", False):
            dims[name] = int(getattr(param, "partition_dim", 0))
    return dims


def layer_offset(model: torch.nn.Module) -> int:
    core = unwrap(model)
    block = getattr(core, "decoder", None) or getattr(core, "encoder", None)
    if block is None or len(block.layers) == 0:
        return 0
    return int(block.layers[0].layer_number) - 1


# ------------------------------------------------------------------------------------------ save


def save_checkpoint(
    root: str,
    iteration: int,
    models: List[torch.nn.Module],
    optimizer,
    scheduler,
    trainer_state: Dict[str, Any],
    metadata: Dict[str, Any],
    keep_last: Optional[int] = None,
    distributed_optimizer: bool = False,
) -> str:
    """Collective: every rank calls it. Returns the final directory."""
    from megatron.core import parallel_state as ps

    rank = collectives.rank()
    final = iter_dir(root, iteration)
    partial = final + ".partial"
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        if os.path.isdir(partial):  # left by a save that was killed
            shutil.rmtree(partial)
        os.makedirs(partial)
    collectives.barrier()

    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    dp_rank = ps.get_data_parallel_rank()
    rank_dir = os.path.join(partial, rank_dir_name(tp_rank, pp_rank))
    if distributed_optimizer and optimizer is not None:
        # Collective over the data-parallel group: gathers the sharded state to DP rank 0.
        os.makedirs(rank_dir, exist_ok=True)
        optimizer.save_parameter_state(os.path.join(rank_dir, "distrib_optim.pt"))
    if dp_rank == 0:
        state = {
            "format_version": FORMAT_VERSION,
            "iteration": iteration,
            "model": [unwrap(m).state_dict() for m in models] if len(models) > 1 else unwrap(models[0]).state_dict(),
            "tp_partition_dims": [tp_partition_dims(m) for m in models],
            "layer_offsets": [layer_offset(m) for m in models],
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "trainer": trainer_state,
        }
        durable_torch_save(state, os.path.join(rank_dir, "model_optim_rng.pt"))
    _maybe_crash("save-model", iteration)
    durable_torch_save(rng_state(), os.path.join(partial, "rng", f"rank_{rank:05d}.pt"))
    from megatron.training import resharding

    optimizer_step = resharding.save(partial, models, optimizer)  # collective: the layout-independent copy
    collectives.barrier()

    if rank == 0:
        meta = dict(metadata, iteration=iteration, complete=True, format_version=FORMAT_VERSION,
                    resharding=resharding.DCP_DIR, optimizer_step=optimizer_step,
                    saved_at=time.strftime("%Y-%m-%d %H:%M:%S"), files=_file_sizes(partial))
        atomic_write_text(os.path.join(partial, "metadata.json"), json.dumps(meta, indent=1, sort_keys=True))
        _maybe_crash("save-before-rename", iteration)
        if os.path.isdir(final):  # re-saving an iteration (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.rename(partial, final)
        _fsync_dir(root)
        _maybe_crash("save-before-tracker", iteration)
        atomic_write_text(os.path.join(root, TRACKER), str(iteration))
        if keep_last:
            prune(root, keep_last, iteration)
    collectives.barrier()
    return final


def _file_sizes(directory: str) -> Dict[str, int]:
    out = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, directory)] = os.path.getsize(path)
    return out


def prune(root: str, keep_last: int, written: int) -> List[int]:
    """Keep the checkpoint just written and the ``keep_last - 1`` newest older complete ones.
    Newer directories (left by a run that was resumed from an older checkpoint) are not counted
    and not deleted: the resumed run replaces each when it saves that iteration again."""
    if keep_last < 1:
        raise ValueError(f"--keep-last-checkpoints must be >= 1, got {keep_last}")
    older = sorted(it for it in complete_iterations(root) if it < written)
    doomed = older[: max(len(older) - (keep_last - 1), 0)]
    for it in doomed:
        shutil.rmtree(iter_dir(root, it), ignore_errors=True)
    return doomed


def complete_iterations(root: str) -> List[int]:
    out = []
    for name in os.listdir(root) if os.path.isdir(root) else []:
        if name.startswith("iter_") and not name.endswith(".partial"):
            meta = os.path.join(root, name, "metadata.json")
            if os.path.isfile(meta):
                try:
                    out.append(int(name[5:]))
                except ValueError:
                    pass
    return out


# ------------------------------------------------------------------------------------------ load


def latest_iteration(root: str) -> Optional[int]:
    """The tracker's iteration, or None when the directory holds no checkpoint yet."""
    path = os.path.join(root, TRACKER)
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{path} is corrupt (expected an iteration number, found {text[:40]!r})") from None


def read_metadata(root: str, iteration: int) -> Dict[str, Any]:
    d = iter_dir(root, iteration)
    meta_path = os.path.join(d, "metadata.json")
    if not os.path.isfile(meta_path):
        raise CheckpointError(
            f"checkpoint {d} is missing or incomplete (no metadata.json); it may have been deleted. "
            f"Fix {os.path.join(root, TRACKER)} to name a complete iteration ({sorted(complete_iterations(root))})."
        )
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointDamaged(f"{meta_path} is damaged ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or not meta.get("complete"):
        raise CheckpointDamaged(f"{meta_path} does not mark the checkpoint complete")
    return meta


def verify_files(directory: str, meta: Dict[str, Any]) -> None:
    """Compare every file with the size recorded at save time (checkpoints from before sizes were
    recorded are not checked); name the first missing, empty or truncated file."""
    for rel, size in sorted((meta.get("files") or {}).items()):
        path = os.path.join(directory, rel)
        if not os.path.isfile(path):
            if rel.startswith("rng" + os.sep):
                continue  # a missing RNG file is reported by the loader, and the run continues from --seed
            raise CheckpointDamaged(f"{path} is missing")
        actual = os.path.getsize(path)
        if actual != size:
            what = "empty (0 bytes)" if actual == 0 else f"truncated ({actual:,} of {size:,} bytes)"
            raise CheckpointDamaged(f"{path} is {what}")


def read_torch_file(path: str) -> Any:
    """torch.load that names the file when it is missing or cannot be read."""
    if not os.path.isfile(path):
        raise CheckpointDamaged(f"{path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any unpickling/zip error means a damaged file
        raise CheckpointDamaged(f"{path} cannot be read ({type(e).__name__}: {str(e)[:200]})") from None
