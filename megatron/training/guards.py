"""Stops for a run that has gone wrong, before it saves anything: a non-finite loss, a loss spike
(a loss far above its recent mean: the weights are already damaged, so checkpoints written from
here on would not be good), and fp16 steps that overflow again and again (no update at all).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional


class TrainingStopped(RuntimeError):
    """The run cannot usefully continue; the message names the cause, the fix and what is kept."""


class TrainingDiverged(TrainingStopped):
    """The loss became NaN/inf or spiked; nothing was saved from this step on."""


class LossGuard:
    def __init__(self, spike_factor: Optional[float], window: int, max_consecutive_skipped: int):
        self.spike_factor = spike_factor or 0.0
        self.recent: deque = deque(maxlen=window)
        self.max_skipped = max_consecutive_skipped
        self.skipped_run = 0
        self.first_skipped: Optional[int] = None

    def check_loss(self, loss: float, iteration: int, kept: str) -> None:
        """Before the update: raise on a non-finite loss or a spike; ``kept`` says which checkpoint
        is the newest (all of them were written before this step)."""
        advice = "Lower --lr, raise --lr-warmup-*, use --bf16 instead of --fp16, or check the data."
        if not math.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss} at iteration {iteration}: stopping without saving; {kept}. {advice}")
        # A few iterations of history first: the loss falls fast at the start.
        if self.spike_factor and len(self.recent) >= min(5, self.recent.maxlen):
            mean = sum(self.recent) / len(self.recent)
            if mean > 0 and loss > self.spike_factor * mean:
                raise TrainingDiverged(
                    f"loss {loss:.4g} at iteration {iteration} is more than --loss-spike-factor {self.spike_factor:g} x its "
                    f"mean {mean:.4g} over the last {len(self.recent)} iterations: stopping without saving; {kept}. {advice} "
                    "(--loss-spike-factor 0 turns this guard off.)")
        self.recent.append(loss)

    def after_step(self, updated: bool, iteration: int, loss_scale: Optional[float]) -> None:
        """After the optimizer step: count consecutive skipped (overflowed) fp16 updates."""
        if updated:
            self.skipped_run, self.first_skipped = 0, None
            return
        self.skipped_run += 1
        self.first_skipped = self.first_skipped or iteration
        if self.max_skipped and self.skipped_run >= self.max_skipped:
            raise TrainingStopped(
                f"{self.skipped_run} consecutive fp16 steps overflowed (iterations {self.first_skipped}-{iteration}, loss "
                f"scale {loss_scale:g}): no update was made. Drop --loss-scale (dynamic scaling) or lower it, lower --lr, "
                "or use --bf16; --max-consecutive-skipped-steps sets this limit.")


def check_token_ids(dataset, vocab_size: int, where: str, samples: int = 32) -> None:
    """Before training: token ids at or above the model's vocabulary (a corpus made with another
    tokenizer) would fail deep in the embedding with an IndexError. Reads the first samples only."""
    from megatron.training.arguments import ConfigError

    if dataset is None:
        return
    for i in range(min(len(dataset), samples)):
        item = dataset[i]
        for key in ("tokens", "text", "labels"):
            ids = item.get(key) if isinstance(item, dict) else None
            if ids is None:
                continue
            top = int(ids.max()) if hasattr(ids, "max") else max(ids)
            if top >= vocab_size:
                raise ConfigError(
                    f"sample {i} of the training data holds token id {top}, but the vocabulary has {vocab_size} entries "
                    f"({where}): the corpus was made with another tokenizer. Preprocess it with this tokenizer, or pass "
                    "the tokenizer (and --vocab-size) it was made with")
