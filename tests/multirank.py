"""Run a test body in N gloo processes (CPU), for any TP x PP x DP layout.

    results = run_multirank(body, world_size=4, tp=2, pp=2, kwargs={...})

``body(ctx, **kwargs)`` must be a module-level function (it is pickled by reference). Each rank
initialises torch.distributed (gloo) and megatron-core's model-parallel groups, runs the body, and
returns its (picklable) result; ``results[rank]`` is that value. Failures are collected from
every rank and raised together with their tracebacks; a deadline kills all ranks so a collective
that never completes fails the test instead of hanging it.

Processes come from a forkserver that has torch and megatron-core preloaded
(tests/multirank_preload.py), so each rank starts in well under a second. A fork is only safe for
CUDA when the server never touched it: before trusting the server the harness forks one probe and
reads torch's poisoned-fork flag and, where a GPU exists, initialises CUDA in it; if the preload
initialised CUDA (which a CUDA build of torch or Triton may do where a CPU build cannot show it)
ranks are started with ``spawn`` instead (slower: each rank imports everything again).
``MEGATRON_LTD_MULTIRANK_START=spawn|forkserver`` forces either.
"""

from __future__ import annotations

import dataclasses
import io
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

START_ENV = "MEGATRON_LTD_MULTIRANK_START"
PRELOAD = "tests.multirank_preload"
_CTX = None
# How this process's ranks start: the method and, for the forkserver, what the probe saw.
START: Dict[str, Any] = {}
# In a rank: start_state() as the rank found it (set by the harness before the body runs).
RANK_START: Dict[str, Any] = {}


def start_state() -> Dict[str, Any]:
    """CUDA as a freshly started rank finds it, before it does anything itself."""
    import torch

    preload = sys.modules.get(PRELOAD)
    return {
        "preloaded": sorted(m for m in ("torch", "megatron.core", "megatron.runtime.device", PRELOAD)
                            if m in sys.modules),
        # The module flag is copied from the parent at fork: True means the server initialised CUDA.
        "parent_cuda_initialized": bool(getattr(torch.cuda, "_initialized", False)),
        "cuda_initialized": torch.cuda.is_initialized(),
        "bad_fork": bool(torch.cuda._is_in_bad_fork()),
        "preload_cuda_calls": [name for name, _ in preload.CALLS] if preload is not None else [],
    }


def poisoned(state: Dict[str, Any]) -> bool:
    """A rank in this state cannot use CUDA: torch refuses to initialise it in the fork, or (a raw
    cuInit in the parent, as Triton >= 3.8's driver probe does) the driver fails there."""
    return state["bad_fork"] or state["parent_cuda_initialized"] or state.get("cuda_usable") is False


def _cuda_usable_in_this_fork() -> Optional[bool]:
    """None where there is no GPU to use (NVML sees none, or a CPU build); else whether CUDA
    initialises here. Only for the probe: it exits next, so initialising CUDA costs nothing."""
    import torch

    if not torch.cuda._is_compiled():
        return None
    count_nvml = getattr(torch.cuda, "_device_count_nvml", lambda: -1)
    if count_nvml() <= 0:
        return None
    try:
        torch.cuda.init()
        return torch.cuda.device_count() > 0
    except Exception:  # noqa: BLE001 - "Cannot re-initialize CUDA", "CUDA driver initialization failed"
        return False


def _probe_body(result_queue) -> None:
    state = start_state()
    state["cuda_usable"] = _cuda_usable_in_this_fork()
    result_queue.put(state)


def _probe(ctx, timeout_s: float = 300.0) -> Dict[str, Any]:
    result_queue = ctx.Queue()
    p = ctx.Process(target=_probe_body, args=(result_queue,))
    p.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                return result_queue.get(timeout=0.5)
            except queue_mod.Empty:
                if p.exitcode is not None:  # died without reporting: its traceback is on stderr
                    break
        raise MultiRankError(f"the forkserver's probe rank did not report (exit code {p.exitcode}); "
                             f"is {PRELOAD} importable?")
    finally:
        p.join(timeout=10.0)
        if p.is_alive():
            p.kill()
        result_queue.close()


def choose_start(requested: Optional[str], probe: Callable[[], Dict[str, Any]]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """The start method for this process's ranks and the probe's report (None when not probed)."""
    if requested not in (None, "", "forkserver", "spawn"):
        raise ValueError(f"{START_ENV}={requested!r}: use 'forkserver' or 'spawn'")
    if requested == "spawn":
        return "spawn", None
    state = probe()
    if requested != "forkserver" and poisoned(state):
        return "spawn", state
    return "forkserver", state


def _context():
    global _CTX
    if _CTX is None:
        server = mp.get_context("forkserver")
        server.set_forkserver_preload([PRELOAD])
        method, state = choose_start(os.environ.get(START_ENV), lambda: _probe(server))
        if method == "spawn" and state is not None:
            calls = ", ".join(state["preload_cuda_calls"]) or "none visible from Python"
            # A warning, so pytest's summary shows it: the GPU run should say which start it used.
            warnings.warn(f"[multirank] the forkserver's preload initialised CUDA (calls seen from Python: {calls}); "
                          "starting ranks with spawn", RuntimeWarning, stacklevel=2)
        START.update(method=method, probe=state)
        _CTX = server if method == "forkserver" else mp.get_context("spawn")
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
        RANK_START.update(start_state())  # before this rank touches anything; bodies may read it
        if not cpu and poisoned(RANK_START):
            raise RuntimeError(
                "this rank was forked from a process that had initialised CUDA, so CUDA cannot be used here; "
                f"start ranks with spawn ({START_ENV}=spawn) or keep CUDA out of {PRELOAD}")
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
