"""A layout-independent copy of the model and optimizer state, so that ``--load`` can continue a
run on another TP x PP (x virtual PP) x DP layout, with or without the distributed optimizer.

Format: ``iter_N/dcp/``, written and read with ``torch.distributed.checkpoint`` (DCP). Every
tensor is stored whole, under a layout-free name: parameters by their global name
(``decoder.layers.<global layer>.``), optimizer state (``exp_avg``/``exp_avg_sq``, the fp32 main
copy when it is not the parameter itself) by the same name. Before saving, each rank assembles the
whole tensor: the distributed optimizer's DP shards with one all-reduce per tensor over the DP
group, tensor-parallel shards with an all-gather along the parameter's ``partition_dim``
(megatron-core marks each sharded parameter with ``tensor_model_parallel``/``partition_dim``).
Ranks holding the same tensor write it once (DCP de-duplicates equal keys across ranks). Loading
reads the whole tensors this rank needs and keeps its slice.

Why not megatron-core's ``dist_checkpointing``: on CPU/gloo with megatron-core 0.16.1 the
distributed optimizer's sharded state dict raised ``flattened_range is not supported`` and the
``torch_dist`` save hung (see README, Design).
"""

from __future__ import annotations

import os
import re
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from megatron.runtime import collectives
from megatron.training.checkpointing import CheckpointError, layer_offset, unwrap

_LAYER = re.compile(r"^((?:decoder|encoder)\.layers\.)(\d+)(\..*)$")
DCP_DIR = "dcp"


def _global_name(name: str, offset: int) -> str:
    m = _LAYER.match(name)
    return f"{m.group(1)}{int(m.group(2)) + offset}{m.group(3)}" if m else name


def _named_params(models) -> Iterator[Tuple[str, torch.nn.Parameter]]:
    for model in models:
        offset = layer_offset(model)
        for name, p in unwrap(model).named_parameters():
            yield _global_name(name, offset), p


def _inner(optimizer) -> List:
    return list(getattr(optimizer, "chained_optimizers", [optimizer])) if optimizer is not None else []


def _state_keys(torch_opt) -> Tuple[str, ...]:
    return ("momentum_buffer",) if isinstance(torch_opt, torch.optim.SGD) else ("exp_avg", "exp_avg_sq")


def _main_param_map(opt) -> Dict[torch.nn.Parameter, torch.Tensor]:
    """model param -> the tensor the torch optimizer updates (non-distributed optimizers)."""
    out = {}
    for model_group, main_group in zip(getattr(opt, "float16_groups", []), getattr(opt, "fp32_from_float16_groups", [])):
        out.update({p: m for p, m in zip(model_group, main_group)})
    for group in getattr(opt, "fp32_from_fp32_groups", []):
        out.update({p: p for p in group})
    if not out:  # FP32Optimizer: the model params themselves
        out = {p: p for g in opt.optimizer.param_groups for p in g["params"]}
    return out


def _local_pieces(opt, p) -> Tuple[Optional[Tuple[int, int]], Dict[str, torch.Tensor]]:
    """(flat range of ``p`` this rank holds or None for all, {key: tensor}) with key "main" and the
    optimizer state keys; {} when this rank holds no part of ``p``."""
    if hasattr(opt, "_get_model_param_range_map"):  # distributed optimizer: a DP shard of the flat param
        try:
            rng = opt._get_model_param_range_map(p)["param"]
        except KeyError:
            return None, {}
        tensors = opt._get_main_param_and_optimizer_states(p)
        return (rng.start, rng.end), {("main" if k == "param" else k): v for k, v in tensors.items() if k != "step"}
    main = _main_param_map(opt).get(p)
    if main is None:
        return None, {}
    return None, {"main": main, **{k: v for k, v in opt.optimizer.state.get(main, {}).items() if k != "step"}}


def _tp_full(t: torch.Tensor, p) -> torch.Tensor:
    from megatron.core import parallel_state as ps

    if not getattr(p, "tensor_model_parallel", False) or ps.get_tensor_model_parallel_world_size() == 1:
        return t
    parts = collectives.all_gather(t, group=ps.get_tensor_model_parallel_group())
    return torch.cat(parts, dim=int(p.partition_dim))


def _tp_slice(full: torch.Tensor, p) -> torch.Tensor:
    from megatron.core import parallel_state as ps

    if not getattr(p, "tensor_model_parallel", False) or ps.get_tensor_model_parallel_world_size() == 1:
        return full
    return full.chunk(ps.get_tensor_model_parallel_world_size(), dim=int(p.partition_dim))[ps.get_tensor_model_parallel_rank()]


def full_state(models, optimizer) -> Tuple[Dict[str, torch.Tensor], int]:
    """Collective: {name: whole tensor} for every parameter and its optimizer state, and Adam's step."""
    from megatron.core import parallel_state as ps

    out: Dict[str, torch.Tensor] = {}
    step = 0
    opts = _inner(optimizer)
    for name, p in _named_params(models):
        out[f"model.{name}"] = _tp_full(p.detach().cpu().float() if p.dtype != torch.float32 else p.detach().cpu(), p)
        for opt in opts:
            dist = hasattr(opt, "_get_model_param_range_map")
            if dist and not any(p in b.param_index_map for b in opt.buffers):
                continue  # p belongs to another optimizer of the chain (the same on every DP rank)
            rng, pieces = _local_pieces(opt, p)
            if not dist and not pieces:
                continue
            for key in ("main",) + _state_keys(opt.optimizer):
                if dist:
                    flat = torch.zeros(p.numel(), dtype=torch.float32)
                    if key in pieces:
                        flat[rng[0]:rng[1]] = pieces[key].detach().float().cpu().view(-1)
                    collectives.all_reduce(flat, group=ps.get_data_parallel_group())
                    whole = flat.view(p.shape)
                elif key in pieces:
                    whole = pieces[key].detach().float().cpu().view(p.shape)
                else:
                    continue
                out[f"optim.{key}.{name}"] = _tp_full(whole, p)
        for opt in opts:
            for st in opt.optimizer.state.values():
                if "step" in st:
                    step = max(step, int(st["step"]))
    return out, collectives.reduce_max_flag(step)


def save(directory: str, models, optimizer) -> int:
    """Collective: write ``directory/dcp``; returns the optimizer step (for the metadata)."""
    import torch.distributed.checkpoint as dcp

    state, step = full_state(models, optimizer)
    dcp.save(state, storage_writer=dcp.FileSystemWriter(os.path.join(directory, DCP_DIR)))
    return step


def load(directory: str, models, optimizer, step: int, load_optim: bool) -> None:
    """Collective: fill this rank's parameters (and optimizer state) from ``directory/dcp``."""
    import torch.distributed.checkpoint as dcp

    path = os.path.join(directory, DCP_DIR)
    if not os.path.isdir(path):
        raise CheckpointError(f"{directory} was saved before layout-independent checkpoints existed (no {DCP_DIR}/): "
                              "resume it on its own layout, or merge its weights with tools/convert_checkpoint.py")
    available = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
    params = list(_named_params(models))
    opts = _inner(optimizer) if load_optim else []

    def source(key: str) -> Optional[str]:
        # A tied embedding's copy on the last pipeline stage (output_layer) reads the embedding.
        for candidate in (key, key.replace("output_layer.weight", "embedding.word_embeddings.weight")):
            if candidate in available:
                return candidate
        return None

    wanted: Dict[str, torch.Tensor] = {}
    for name, p in params:
        if source(f"model.{name}") is None:
            raise CheckpointError(f"{path} holds no {name!r}: the checkpoint is from another model")
        keys = [f"model.{name}"] + [f"optim.{k}.{name}" for opt in opts for k in ("main",) + _state_keys(opt.optimizer)]
        for key in filter(None, map(source, keys)):
            wanted[key] = torch.empty(available[key].size, dtype=available[key].properties.dtype)
    dcp.load(wanted, storage_reader=dcp.FileSystemReader(path))

    with torch.no_grad():
        for name, p in params:
            p.copy_(_tp_slice(wanted[source(f"model.{name}")], p).to(p.dtype))
        for opt in opts:
            _init_state(opt.optimizer, step)
            for name, p in params:
                rng, pieces = _local_pieces(opt, p)
                for key, dst in pieces.items():
                    src_key = source(f"optim.{key}.{name}")
                    if src_key is None:  # e.g. a seed checkpoint: no optimizer state yet
                        continue
                    whole = _tp_slice(wanted[src_key], p).reshape(-1)
                    src = whole[rng[0]:rng[1]] if rng is not None else whole
                    dst.copy_(src.view(dst.shape).to(dst.dtype))


def _init_state(torch_opt, step: int) -> None:
    """torch's optimizers create their state at the first step: create it now, at ``step``."""
    for group in torch_opt.param_groups:
        if "step" in group:
            group["step"] = step
        for p in group["params"]:
            st = torch_opt.state[p]
            for key in _state_keys(torch_opt):
                if key not in st:
                    st[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if not isinstance(torch_opt, torch.optim.SGD):
                st["step"] = torch.tensor(float(step), dtype=torch.float32)
