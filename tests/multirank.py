"""Run a test body in N gloo processes (CPU), for any TP x PP x DP layout.

    results = run_multirank(body, world_size=4, tp=2, pp=2, kwargs={...})

``body(ctx, **kwargs)`` must be a module-level function (it is pickled by reference). Each rank
initialises torch.distributed (gloo) and megatron-core's model-parallel groups, runs the body, and
returns its (picklable) result; ``results[rank]`` is that value. Failures are collected from
every rank and raised together with their tracebacks; a deadline kills all ranks so a collective
that never completes fails the test instead of hanging it. Processes come from a forkserver that
has torch and megatron-core preloaded, so each rank starts in well under a second.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing as mp
import os
import queue as queue_mod
import time
import traceback
from typing import Any, Callable, Dict, List, Optional

_CTX = None


def _context():
    global _CTX
    if _CTX is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "megatron.core", "megatron.runtime.device"])
        _CTX = ctx
    return _CTX


@dataclasses.dataclass
class RankContext:
    rank: int
    world_size: int
    tp: int
    pp: int
    dp: int

    @property
    def tp_rank(self) -> int:
        from megatron.core import parallel_state

        return parallel_state.get_tensor_model_parallel_rank()

    @property
    def pp_rank(self) -> int:
        from megatron.core import parallel_state

        return parallel_state.get_pipeline_model_parallel_rank()

    @property
    def dp_rank(self) -> int:
        from megatron.core import parallel_state

        return parallel_state.get_data_parallel_rank()


def _worker(body, rank, world_size, port, tp, pp, vpp, kwargs, result_queue, timeout_s, cpu=True):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MEGATRON_LTD_FORCE_CPU="1" if cpu else "0",
        OMP_NUM_THREADS="1",
    )
    try:
        import torch

        torch.set_num_threads(1)
        from megatron.runtime.device import destroy_distributed, init_distributed, set_seed

        init_distributed(tp, pp, virtual_pipeline_model_parallel_size=vpp, force_cpu=cpu,
                         timeout_minutes=max(timeout_s / 60.0, 0.5))
        set_seed(1234)
        ctx = RankContext(rank, world_size, tp, pp, world_size // (tp * pp))
        result = body(ctx, **kwargs)
        # Tensors go through torch.save bytes, not torch's shared-memory reductions: the fd
        # handoff would race with this process exiting.
        buf = io.BytesIO()
        torch.save(result, buf)
        result_queue.put((rank, "ok", buf.getvalue()))
        destroy_distributed()
    except BaseException:  # noqa: BLE001 - report everything, including assertion errors
        result_queue.put((rank, "error", traceback.format_exc()))


class MultiRankError(AssertionError):
    pass


def run_multirank(
    body: Callable[..., Any],
    world_size: int,
    tp: int = 1,
    pp: int = 1,
    kwargs: Optional[Dict[str, Any]] = None,
    vpp: Optional[int] = None,
    timeout_s: float = 120.0,
    cpu: bool = True,
) -> List[Any]:
    """Run ``body`` on ``world_size`` ranks; return the per-rank results in rank order.

    ``cpu=False`` uses the GPU (NCCL) when one is visible: one rank per GPU."""
    if world_size % (tp * pp) != 0:
        raise ValueError(f"world_size {world_size} is not a multiple of tp*pp = {tp * pp}")
    # The port is picked free, then bound by rank 0 a moment later: on a busy machine another
    # process can take it in between. That is the harness's race, not the test's: launch again.
    for attempt in range(3):
        try:
            return _launch(body, world_size, tp, pp, kwargs, vpp, timeout_s, cpu)
        except MultiRankError as e:
            if attempt == 2 or not any(m in str(e) for m in ("EADDRINUSE", "address already in use")):
                raise
    raise AssertionError("unreachable")


def _launch(body, world_size, tp, pp, kwargs, vpp, timeout_s, cpu) -> List[Any]:
    from megatron.runtime.device import free_port

    ctx = _context()
    result_queue = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(body, rank, world_size, port, tp, pp, vpp, kwargs or {}, result_queue, timeout_s, cpu),
            daemon=False,  # megatron-core checkpoint writers start child processes
        )
        for rank in range(world_size)
    ]
    for p in procs:
        p.start()
    results: Dict[int, Any] = {}
    errors: Dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(results) + len(errors) < world_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                rank, status, payload = result_queue.get(timeout=min(remaining, 0.5))
            except queue_mod.Empty:
                # A rank that died without reporting (segfault, os._exit) will never answer.
                dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results and r not in errors]
                for r in dead:
                    errors[r] = f"rank {r} exited with code {procs[r].exitcode} without reporting"
                continue
            if status == "ok":
                import torch

                results[rank] = torch.load(io.BytesIO(payload), weights_only=False)
            else:
                errors[rank] = payload
            if errors:
                # Other ranks are probably blocked in a collective with the failed one.
                deadline = min(deadline, time.monotonic() + 5.0)
    finally:
        for p in procs:
            p.join(timeout=2.0)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5.0)
        result_queue.close()
    missing = [r for r in range(world_size) if r not in results and r not in errors]
    if errors or missing:
        parts = [f"--- rank {r} failed ---\n{errors[r]}" for r in sorted(errors)]
        if missing:
            parts.append(f"--- ranks {missing} did not finish within {timeout_s:.0f}s (killed) ---")
        raise MultiRankError(
            f"{body.__name__} on {world_size} ranks (tp={tp}, pp={pp}):\n" + "\n".join(parts)
        )
    return [results[r] for r in range(world_size)]
