"""Device choice and process-group setup: NCCL on GPUs, gloo (with CPU mode) otherwise.

Everything that differs between a cluster and a laptop is decided here, once, so the trainer,
the tests and the tools run the same megatron-core code path on both.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch

from megatron.runtime import acceleration_notice, cpu_compat


@dataclass(frozen=True)
class DeviceInfo:
    use_gpu: bool
    device: torch.device
    backend: str

    @property
    def name(self) -> str:
        if self.use_gpu:
            return torch.cuda.get_device_name(self.device)
        return "cpu"


def gpu_requested(force_cpu: bool = False) -> bool:
    """A GPU is used when one is visible and neither --cpu nor MEGATRON_LTD_FORCE_CPU=1 is set."""
    if force_cpu or os.environ.get("MEGATRON_LTD_FORCE_CPU", "0") == "1":
        return False
    return torch.cuda.is_available()


def select_device(force_cpu: bool = False) -> DeviceInfo:
    """Pick the device for this process and, on CPU, switch megatron-core's CUDA paths to CPU."""
    if gpu_requested(force_cpu):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        _print_acceleration_notice_once()
        return DeviceInfo(True, torch.device("cuda", local_rank), "nccl")
    cpu_compat.enable()
    return DeviceInfo(False, torch.device("cpu"), "gloo")


_NOTICE_PRINTED = False


def _print_acceleration_notice_once() -> None:
    """The one line about missing TransformerEngine/apex, on global rank 0 of a GPU run."""
    global _NOTICE_PRINTED
    if _NOTICE_PRINTED or int(os.environ.get("RANK", "0")) != 0:
        return
    _NOTICE_PRINTED = True
    line = acceleration_notice(use_gpu=True)
    if line:
        print(line, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    virtual_pipeline_model_parallel_size: Optional[int] = None,
    force_cpu: bool = False,
    timeout_minutes: float = 10.0,
) -> DeviceInfo:
    """Initialise torch.distributed and megatron-core's model-parallel groups.

    Works under torchrun (RANK/WORLD_SIZE/MASTER_ADDR set) and as a plain single process.
    """
    from megatron.core import parallel_state

    info = select_device(force_cpu)
    if not torch.distributed.is_initialized():
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        init_method = None
        if "MASTER_ADDR" not in os.environ:
            if world_size != 1:
                raise RuntimeError(
                    "WORLD_SIZE > 1 but MASTER_ADDR is not set: launch with torchrun "
                    "(e.g. `torchrun --nproc-per-node 2 pretrain_gpt.py ...`)."
                )
            # A private rendezvous, not MASTER_ADDR/PORT in os.environ: child processes started
            # later (tools, tests) must not inherit a port this process holds.
            init_method = f"tcp://127.0.0.1:{free_port()}"
        world = tensor_model_parallel_size * pipeline_model_parallel_size
        if world_size % world != 0:
            raise ValueError(
                f"world size {world_size} is not divisible by --tensor-model-parallel-size "
                f"({tensor_model_parallel_size}) x --pipeline-model-parallel-size "
                f"({pipeline_model_parallel_size}); launch a multiple of {world} processes."
            )
        torch.distributed.init_process_group(
            backend=info.backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            init_method=init_method,
            **({"device_id": info.device} if info.use_gpu else {}),
        )
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tensor_model_parallel_size,
            pipeline_model_parallel_size=pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
            distributed_timeout_minutes=timeout_minutes,  # the subgroups' timeout (megatron-core default: 30)
        )
    return info


def set_seed(seed: int) -> None:
    """Seed python/numpy/torch and megatron's tensor-parallel RNG tracker.

    As in Megatron-LM, the seed is offset by ``100 * pipeline rank``: pipeline stages hold
    different layers, and one seed for all would give their dropout masks the same pattern. Data-
    parallel ranks keep one seed (their replicas must start identical); megatron-core's tracker
    offsets the seed per TP rank inside model-parallel regions. The data order does not depend on
    these RNGs (the loader has its own generator, seeded by the consumed samples).
    """
    import random

    import numpy as np
    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        seed = seed + 100 * parallel_state.get_pipeline_model_parallel_rank()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
