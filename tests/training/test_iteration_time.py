"""The iteration time the trainer reports is training time: a save or an evaluation between two log
points is not counted in the next iteration (on one H200 the step after a 4.4 s synchronous save
reported 5,789 ms). The trainer's clock is replaced by one that jumps by PAUSE during every save and
evaluation, so the check does not depend on how fast this machine runs the steps."""

import time as real_time

import pytest

from megatron.training.trainer import Trainer
from tests.training.inprocess import TINY, train, trainer_runtime  # noqa: F401 (fixture)
from tests.training.run_utils import read_metrics

pytestmark = pytest.mark.usefixtures("trainer_runtime")

PAUSE = 1000.0  # seconds a save or an evaluation appears to take


class _JumpingClock:
    """The time module, but time() jumps forward when told to."""

    def __init__(self):
        self.offset = 0.0

    def time(self):
        return real_time.time() + self.offset

    def __getattr__(self, name):
        return getattr(real_time, name)


def test_iteration_after_a_save_or_an_evaluation_reports_its_own_time(tmp_path, monkeypatch):
    from megatron.training import trainer as trainer_module

    clock = _JumpingClock()
    monkeypatch.setattr(trainer_module, "time", clock)
    save, evaluate = Trainer.save, Trainer._eval_and_log

    def slow_save(self):
        save(self)
        clock.offset += PAUSE

    def slow_evaluation(self, it, wall):
        evaluate(self, it, wall)
        clock.offset += PAUSE

    monkeypatch.setattr(Trainer, "save", slow_save)
    monkeypatch.setattr(Trainer, "_eval_and_log", slow_evaluation)
    metrics = str(tmp_path / "metrics.jsonl")
    # Saves after iterations 2 and 4 (synchronous), an evaluation after iteration 3.
    summary, out = train(TINY + ["--train-iters", "5", "--save", str(tmp_path / "ck"), "--save-interval", "2",
                                 "--eval-interval", "3", "--metrics-file", metrics])
    rows = {r["iteration"]: r for r in read_metrics(metrics)}
    assert sorted(rows) == [1, 2, 3, 4, 5], out
    # The pauses happened on the trainer's clock: the run's wall time and x axis include them ...
    assert summary["wall_s"] >= 3 * PAUSE and rows[3]["wall_s"] >= PAUSE
    # ... and no iteration's time does (a real tiny step takes well under a second, even loaded).
    slowest = max(r["s_per_iter"] for r in rows.values())
    assert slowest < PAUSE / 10, {it: r["s_per_iter"] for it, r in rows.items()}
    assert all(r["tokens_per_s"] > 1.0 for r in rows.values())  # throughput over training time too
