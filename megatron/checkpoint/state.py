"""What goes into a checkpoint, as megatron-core sharded state dicts, and back.

Model: each chunk's ``sharded_state_dict()`` (global layer numbers, TP shards described by their
place in the whole tensor; SwiGLU, GQA, tied output layers handled by megatron-core's factories).
Optimizer: ``optimizer.sharded_state_dict`` in the ``fully_reshardable`` form, so TP, PP and DP
may all change between save and load. Common (written once by rank 0): the LR scheduler, the
trainer's counters and Adam's step. RNG: one object per rank, loaded only on the same layout.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, List

import numpy as np
import torch

RNG_KEY = "rng_state"


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    while hasattr(module, "module"):
        module = module.module
    return module


def _metadata() -> Dict[str, Any]:
    from megatron.core import parallel_state as ps

    # fully_reshardable: the only distributed-optimizer form that can change TP and PP; the
    # deprecated default raises "flattened_range is not supported" in megatron-core 0.16.1.
    return {"distrib_optim_sharding_type": "fully_reshardable", "singleton_local_shards": False,
            "chained_optim_avoid_prefix": True, "dp_cp_group": ps.get_data_parallel_group()}


def model_sharded_state(models: List[torch.nn.Module]) -> Dict[str, Any]:
    # The innermost model: DDP/Float16Module wrappers would prefix every key with "module.".
    if len(models) == 1:
        return {"model": unwrap(models[0]).sharded_state_dict()}
    return {f"model{i}": unwrap(m).sharded_state_dict() for i, m in enumerate(models)}


def _flat(model_sd: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for v in model_sd.values():
        out.update(v)
    return out


def torch_optimizers(optimizer) -> List[Any]:
    """(megatron optimizer, torch optimizer) pairs of a possibly chained megatron-core optimizer."""
    if optimizer is None:
        return []
    return [(o, o.optimizer) for o in getattr(optimizer, "chained_optimizers", [optimizer]) if getattr(o, "optimizer", None)]


def uses_distributed_optimizer(optimizer) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return any(isinstance(o, DistributedOptimizer) for o in getattr(optimizer, "chained_optimizers", [optimizer]))


def adam_step(optimizer) -> int:
    step = 0
    for _, opt in torch_optimizers(optimizer):
        for st in opt.state.values():
            if "step" in st:
                step = max(step, int(st["step"]))
    return step


def set_adam_step(optimizer, step: int) -> None:
    """One step tensor per parameter, on the parameter's device when torch's fused/capturable
    Adam wants it there (a step shared by all parameters would be advanced once per parameter)."""
    for megatron_opt, opt in torch_optimizers(optimizer):
        if isinstance(opt, torch.optim.SGD):
            continue
        init = getattr(megatron_opt, "init_state_fn", None)
        if init is not None:
            init(opt, getattr(megatron_opt, "config", None))
        for group in opt.param_groups:
            on_device = group.get("fused") or group.get("capturable")
            for p in group["params"]:
                dtype = torch.float32
                opt.state[p]["step"] = torch.tensor(float(step), dtype=dtype, device=p.device if on_device else "cpu")


def rng_state() -> Dict[str, Any]:
    from megatron.core import tensor_parallel

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
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


def _rng_object(data):
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    return ShardedObject(RNG_KEY, data, (world,), (rank,), replica_id=0)


def for_save(models, optimizer, scheduler, common: Dict[str, Any]) -> Dict[str, Any]:
    model_sd = model_sharded_state(models)
    out: Dict[str, Any] = dict(model_sd)
    if optimizer is not None:
        out["optimizer"] = optimizer.sharded_state_dict(_flat(model_sd), is_loading=False, metadata=_metadata())
    out["scheduler"] = scheduler.state_dict() if scheduler is not None else None
    out["common"] = dict(common, optimizer_step=adam_step(optimizer))
    out[RNG_KEY] = _rng_object(rng_state())
    return out


def load(directory: str, models, optimizer, load_optim: bool, load_rng: bool, strict: bool = True) -> Dict[str, Any]:
    """Collective: fill the models (and the optimizer, and this rank's RNG) from ``directory``;
    return the common part (scheduler, counters, Adam's step)."""
    from megatron.core import dist_checkpointing

    model_sd = model_sharded_state(models)
    request: Dict[str, Any] = dict(model_sd)
    common = dist_checkpointing.load_common_state_dict(directory)
    if load_optim and optimizer is not None:
        if "optimizer" not in common and not has_optimizer(directory):
            from megatron.checkpoint.files import CheckpointError

            raise CheckpointError(f"{directory} holds no optimizer state (weights only): add --no-load-optim or --finetune")
        set_adam_step(optimizer, 0)  # state must exist before megatron-core builds the load dict
        request["optimizer"] = optimizer.sharded_state_dict(_flat(model_sd), is_loading=True, metadata=_metadata())
    if load_rng:
        request[RNG_KEY] = _rng_object(None)
    with torch.no_grad():
        loaded = dist_checkpointing.load(request, directory, strict=_strict(strict))
        for i, m in enumerate(models):
            key = "model" if len(models) == 1 else f"model{i}"
            unwrap(m).load_state_dict(loaded[key], strict=True)
        if "optimizer" in request:
            with _step_kept_aside(optimizer):
                optimizer.load_state_dict(loaded["optimizer"])
    if "optimizer" in request:
        set_adam_step(optimizer, int(common["common"].get("optimizer_step", 0)))
    elif optimizer is not None:
        refresh_main_params(optimizer)
    if load_rng:
        set_rng_state(loaded[RNG_KEY])
    return {"scheduler": common.get("scheduler"), **common["common"]}


@contextlib.contextmanager
def _step_kept_aside(optimizer):
    """megatron-core 0.16.1's distributed optimizer copies every per-parameter state entry from the
    checkpoint, which holds no ``step`` for torch's Adam (KeyError: 'step'): give it a dummy one;
    the real step is set afterwards from the common state (:func:`set_adam_step`)."""
    patched = []
    for megatron_opt, _ in torch_optimizers(optimizer):
        if hasattr(megatron_opt, "_set_main_param_and_optimizer_states"):
            setter = megatron_opt._set_main_param_and_optimizer_states
            megatron_opt._set_main_param_and_optimizer_states = (
                lambda p, tensors, _set=setter: _set(p, {"step": torch.zeros(()), **tensors}))
            patched.append(megatron_opt)
    try:
        yield
    finally:
        for megatron_opt in patched:
            del megatron_opt._set_main_param_and_optimizer_states  # back to the class's method


def has_optimizer(directory: str) -> bool:
    from megatron.core.dist_checkpointing import load_tensors_metadata

    return any(k.startswith("optimizer.") for k in load_tensors_metadata(directory))


def _strict(strict: bool):
    from megatron.core.dist_checkpointing.validation import StrictHandling

    return StrictHandling.ASSUME_OK_UNEXPECTED if strict else StrictHandling.IGNORE_ALL


def refresh_main_params(optimizer) -> None:
    """Weights loaded without optimizer state: copy them into the optimizer's fp32 main params
    (bf16/fp16, distributed optimizer), or its first step writes the initial values back."""
    for o in getattr(optimizer, "chained_optimizers", [optimizer]):
        if hasattr(o, "reload_model_params"):
            o.reload_model_params()


def saved_rng_layout(meta: Dict[str, Any], layout: Dict[str, Any]) -> bool:
    saved = meta.get("layout") or {}
    return all(saved.get(k) == layout.get(k) for k in ("tp", "pp", "dp", "vpp"))


def model_only_state(model: torch.nn.Module, directory: str) -> None:
    """Fill one model (any layout, e.g. TP=1 for evaluation) from ``directory``, weights only."""
    from megatron.core import dist_checkpointing

    with torch.no_grad():
        loaded = dist_checkpointing.load({"model": model.sharded_state_dict()}, directory, strict=_strict(True))
        model.load_state_dict(loaded["model"], strict=True)


def state_bytes(models, optimizer) -> int:
    """Bytes of the model and optimizer state this rank holds (for the on-disk size check)."""
    seen, total = set(), 0
    for m in models:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel() * p.element_size()
    for megatron_opt, opt in torch_optimizers(optimizer):
        for p, st in opt.state.items():
            for v in st.values():
                if torch.is_tensor(v) and v.dim() > 0:
                    total += v.numel() * v.element_size()
            if id(p) not in seen:  # a main copy that is not the model parameter itself
                seen.add(id(p))
                total += p.numel() * p.element_size()
    return total
