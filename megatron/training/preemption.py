"""Preemption and hangs: stop at a step boundary on every rank together, and name the step when a
collective times out.

With ``--exit-signal-handler``, SIGTERM and SIGUSR1 only set a flag; the current step finishes.
After each step every rank contributes its flag (and whether ``--exit-duration-in-mins`` has
passed) to one all-reduce (MAX), so all ranks see the same decision at the same iteration, save
together and exit 0. A signal that reaches only some ranks (or reaches them at different moments)
is handled the same way.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

import torch

from megatron.runtime import collectives

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_REASONS = {1: "a signal (SIGTERM/SIGUSR1) with --exit-signal-handler", 2: "--exit-duration-in-mins"}


class CollectiveFailed(RuntimeError):
    """A collective timed out or lost a peer; the message names the iteration."""


class StopRequests:
    def __init__(self, signal_handler: bool, duration_mins: Optional[float], device: torch.device):
        self.enabled = signal_handler or duration_mins is not None
        self.duration_s = duration_mins * 60.0 if duration_mins is not None else None
        self.device = device
        self.t0 = time.time()
        self.received: Optional[int] = None
        self._previous = {}
        if signal_handler:
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.received = signum

    def agreed_stop(self) -> Optional[str]:
        """Collective (when enabled): the reason every rank stops now, or None."""
        if not self.enabled:
            return None
        local = 1 if self.received is not None else 0
        if self.duration_s is not None and time.time() - self.t0 > self.duration_s:
            local = local or 2
        flag = torch.tensor([local], dtype=torch.int32, device=self.device)
        collectives.all_reduce(flag, op=collectives.ReduceOp.MAX)
        return _REASONS.get(int(flag.item()))

    def close(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def inject_faults(iteration: int) -> None:
    """Fault injection for the tests, at the start of a step on one rank:
    MEGATRON_LTD_SIGNAL_AT=<iteration>:<rank> sends this process SIGTERM;
    MEGATRON_LTD_HANG_AT=<iteration>:<rank> sleeps 600 s (a stuck rank)."""
    rank = os.environ.get("RANK", "0")
    if os.environ.get("MEGATRON_LTD_SIGNAL_AT") == f"{iteration}:{rank}":
        os.kill(os.getpid(), signal.SIGTERM)
    if os.environ.get("MEGATRON_LTD_HANG_AT") == f"{iteration}:{rank}":
        time.sleep(600)


def is_collective_failure(error: BaseException) -> bool:
    text = str(error).lower()
    dist_error = getattr(torch.distributed, "DistError", ())
    return (isinstance(error, dist_error) if dist_error else False) or any(
        s in text for s in ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe"))


def describe_collective_failure(error: BaseException, iteration: int, timeout_minutes: float) -> str:
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return (f"iteration {iteration}: a collective did not complete ({first}). Another rank is stuck or died (look for its "
            f"error above); a stuck collective fails after --distributed-timeout-minutes {timeout_minutes:g}.")
