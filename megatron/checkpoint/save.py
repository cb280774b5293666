"""Saving: every rank writes its own shards (megatron-core ``dist_checkpointing``, torch_dist)
under ``iter_N.partial/``; once the write is complete on every rank, each rank records the size
and CRC-32 of the files it wrote, rank 0 writes ``manifest.json``, renames the directory into
place and only then replaces the tracker. With ``async_save`` the write runs in a background
process and this commit happens at a later step (:meth:`Saver.poll`) or at :meth:`Saver.wait`.

A save killed at any moment leaves a ``.partial`` directory (ignored, removed by the next save)
or a complete directory the tracker does not name yet. A full disk is reported as such, with the
directory named; the previous checkpoint stays the one ``--load`` takes.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any, Callable, Dict, List, Optional

import torch

from megatron.checkpoint import files, state
from megatron.runtime import collectives

_OWN_FILE = re.compile(r"^__(\d+)_\d+\.distcp$")


class _ResultsQueue:
    """megatron-core's writer-results queue is a spawned Manager's: a server process that
    re-imports the training script (seconds) and outlives a killed trainer, holding its stdout
    open. The writer is this process (sync) or a child forked after the queue exists (async), so
    a pipe queue serves; megatron-core reads it with ``get_nowait`` right after the write, before
    the pipe's feeder thread may have delivered a put made in this same process: wait briefly."""

    def __init__(self):
        import multiprocessing as mp

        self._q = mp.get_context("fork").Queue()

    def put(self, item) -> None:
        self._q.put(item)

    def get_nowait(self):
        return self._q.get(timeout=60)  # queue.Empty, as megatron-core expects, if nothing came


def _writer_results_queue():
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if filesystem_async._results_queue is None:
        filesystem_async._results_queue = _ResultsQueue()


def _strategy(thread_count: int):
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    return TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=thread_count)


class Saver:
    """Writes checkpoints; holds at most one unfinished asynchronous save."""

    def __init__(self, root: str, keep_last: Optional[int] = None, async_save: bool = False,
                 say: Callable[[str], None] = print, thread_count: int = 1):
        self.root, self.keep_last, self.async_save, self.say = root, keep_last, async_save, say
        self.thread_count = thread_count
        self._queue = None
        self._pending: Optional[Dict[str, Any]] = None
        self.committed: List[int] = []

    # ------------------------------------------------------------------ save
    def save(self, iteration: int, models, optimizer, scheduler, trainer_state: Dict[str, Any],
             metadata: Dict[str, Any]) -> str:
        """Collective. Synchronous: returns once the checkpoint is committed. Asynchronous:
        returns once this rank's shards are staged in host memory; the commit comes later."""
        from megatron.core import dist_checkpointing

        self.wait()  # one save in flight at a time: the previous one commits first
        final = files.iter_dir(self.root, iteration)
        partial = final + ".partial"
        t0 = time.time()
        try:
            if collectives.rank() == 0:
                os.makedirs(self.root, exist_ok=True)
                if os.path.isdir(partial):  # left by a save that was killed
                    shutil.rmtree(partial)
                os.makedirs(partial)
            collectives.barrier()
            _writer_results_queue()
            sharded = state.for_save(models, optimizer, scheduler, {"iteration": iteration, "trainer": trainer_state})
            files.maybe_crash("save-model", iteration)
            request = dist_checkpointing.save(sharded, partial, sharded_strategy=_strategy(self.thread_count),
                                              async_sharded_save=True)
        except BaseException as e:  # noqa: BLE001 - torch's CheckpointException is a BaseException; _failed re-raises
            self._failed(partial, e)
        meta = dict(metadata, iteration=iteration, format=files.FORMAT, state_bytes=state.state_bytes(models, optimizer))
        job = {"iteration": iteration, "partial": partial, "final": final, "meta": meta, "t0": t0, "steps_overlapped": 0}
        request.add_finalize_fn(lambda: self._commit(job))
        if not self.async_save:
            try:
                request.execute_sync()
            except BaseException as e:  # noqa: BLE001 - see above
                self._failed(partial, e)
            return final
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        if self._queue is None:
            self._queue = AsyncCallsQueue()
        self._queue.schedule_async_request(request)
        job["staged_s"] = time.time() - t0
        self._pending = job
        return final

    def poll(self) -> None:
        """Collective, after a step: commit a finished asynchronous save (cheap when none is pending)."""
        if self._pending is None:
            return
        self._pending["steps_overlapped"] += 1  # one more step ran while the write was in flight
        self._finalize(blocking=False)

    def wait(self) -> None:
        """Collective: block until the pending asynchronous save (if any) is committed."""
        if self._pending is not None:
            self._finalize(blocking=True)

    def close(self) -> None:
        self.wait()
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def _finalize(self, blocking: bool) -> None:
        job = self._pending
        try:
            self._queue.maybe_finalize_async_calls(blocking=blocking)
        except BaseException as e:  # noqa: BLE001 - see above
            self._pending = None
            self._failed(job["partial"], e)
        if self._queue.get_num_unfinalized_calls() == 0:
            self._pending = None

    # ------------------------------------------------------------------ commit
    def _commit(self, job: Dict[str, Any]) -> None:
        """Runs on every rank once the write is complete everywhere (megatron-core's finalize)."""
        iteration, partial, final = job["iteration"], job["partial"], job["final"]
        rank, world = collectives.rank(), torch.distributed.get_world_size()
        names = files.all_files(partial)
        # Each rank checksums the files it wrote (still in the page cache); rank 0 also the shared ones.
        mine = [n for n in names if (_OWN_FILE.match(n) and int(_OWN_FILE.match(n).group(1)) == rank)
                or (rank == 0 and not _OWN_FILE.match(n))]
        described = collectives.all_gather_object(files.describe_files(partial, mine))
        if rank == 0:
            listing: Dict[str, Any] = {}
            for part in described:
                listing.update(part)
            files.maybe_crash("save-before-manifest", iteration)
            write_s = time.time() - job["t0"]
            meta = dict(job["meta"], complete=True, files=listing, world_size=world,
                        saved_at=time.strftime("%Y-%m-%d %H:%M:%S"), save_seconds=round(write_s, 3))
            files.write_manifest(partial, meta)
            files.maybe_crash("save-before-rename", iteration)
            if os.path.isdir(final):  # re-saving an iteration (e.g. after a resume): replace it whole
                shutil.rmtree(final)
            os.rename(partial, final)
            files.fsync_dir(self.root)
            files.maybe_crash("save-before-tracker", iteration)
            files.atomic_write_text(os.path.join(self.root, files.TRACKER), str(iteration))
            if self.keep_last:
                files.prune(self.root, self.keep_last, iteration)
            extra = (f" (asynchronous: training resumed after {job['staged_s']:.2f}s, the write completed "
                     f"{job['steps_overlapped']} step(s) later)" if "staged_s" in job else f" in {write_s:.2f}s")
            self.say(f"[checkpoint] saved {final}{extra}")
        collectives.barrier()
        self.committed.append(iteration)

    def _failed(self, partial: str, error: BaseException):
        if collectives.rank() == 0:  # a failed write leaves nothing behind; the previous checkpoint is untouched
            shutil.rmtree(partial, ignore_errors=True)
        if files.is_disk_full(error):
            newest = files.latest_iteration(self.root) if os.path.isdir(self.root) else None
            kept = files.iter_dir(self.root, newest) if newest is not None else "none"
            raise files.CheckpointError(
                f"no space left on device while saving {partial} (--save {self.root}); the save was abandoned and "
                f"the newest complete checkpoint is still {kept}. Free space or point --save elsewhere.") from error
        raise error
