"""How checkpoints are written (in-process, one rank): asynchronous saves are committed after
later steps and stay complete; a checkpoint on disk is one copy of the state it holds; a full
disk during a save says so, names the directory, and leaves the previous checkpoint loadable."""

import errno
import functools
import os
import re

import pytest
import torch

from megatron.checkpoint import CheckpointError
from tests.training.inprocess import TINY, open_trainer, train, trainer_runtime  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("trainer_runtime")


def _disk_bytes(directory):
    return sum(os.path.getsize(os.path.join(dp, n)) for dp, _, names in os.walk(directory) for n in names)


def test_async_saves_commit_after_later_steps_and_hold_one_copy_of_the_state(tmp_path):
    wide = TINY + ["--hidden-size", "128", "--train-iters", "3"]  # large tensors: file overheads stay small
    ck = str(tmp_path / "ck")
    _, out = train(wide + ["--save", ck, "--save-interval", "1", "--async-save", "--keep-last-checkpoints", "2"])
    commits = re.findall(r"saved \S+iter_(\d+) \(asynchronous: training resumed after [\d.]+s, the write completed "
                         r"(\d+) step\(s\) later\)", out)
    assert [int(it) for it, _ in commits] == [1, 2, 3], out
    # Saves 1 and 2 were committed at a later step (the next save or poll), the last when the run ended.
    assert sorted(os.listdir(ck)) == ["iter_0000002", "iter_0000003", "latest_checkpointed_iteration.txt"]
    with open_trainer(wide + ["--load", ck]) as (trainer, _):
        assert trainer.counters.iteration == 3
        params = sum(p.numel() for p in trainer.models[0].parameters())
    state = params * 4 * 3  # fp32 weights and Adam's two moments
    on_disk = _disk_bytes(os.path.join(ck, "iter_0000003"))
    assert state <= on_disk <= 1.1 * state, (on_disk, state)


def test_full_disk_is_reported_and_the_previous_checkpoint_stays(tmp_path, monkeypatch):
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    write_item = filesystem_async._write_item

    @functools.wraps(write_item)  # megatron-core inspects its signature
    def disk_full_at_4(*args, **kwargs):  # runs in megatron-core's forked writer process
        stream = args[1]
        if "iter_0000004" in getattr(stream, "name", ""):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), stream.name)
        return write_item(*args, **kwargs)

    monkeypatch.setattr(filesystem_async, "_write_item", disk_full_at_4)
    ck = str(tmp_path / "ck")
    with pytest.raises(CheckpointError) as err:
        train(TINY + ["--train-iters", "4", "--save", ck, "--save-interval", "2"])
    msg = str(err.value)
    assert f"no space left on device while saving {ck}/iter_0000004.partial" in msg, msg
    assert f"the newest complete checkpoint is still {ck}/iter_0000002" in msg, msg
    assert sorted(os.listdir(ck)) == ["iter_0000002", "latest_checkpointed_iteration.txt"]  # the partial save removed
    monkeypatch.undo()
    with open_trainer(TINY + ["--train-iters", "4", "--load", ck]) as (trainer, _):
        assert trainer.counters.iteration == 2


def test_seed_checkpoint_gives_its_weights_to_a_run_with_another_seed(tmp_path):
    from megatron.checkpoint.state import unwrap
    from megatron.training.entry import save_seed_main

    seed = str(tmp_path / "seed")
    save_seed_main(TINY + ["--train-iters", "1", "--seed", "5", "--save", seed])
    with open_trainer(TINY + ["--train-iters", "2", "--seed", "5"]) as (trainer, _):
        expected = {n: p.detach().clone() for n, p in unwrap(trainer.models[0]).named_parameters()}
    with open_trainer(TINY + ["--train-iters", "2", "--seed", "7", "--load", seed]) as (trainer, out):
        assert trainer.counters.iteration == 0 and "loaded" in out
        got = {n: p.detach() for n, p in unwrap(trainer.models[0]).named_parameters()}
    assert got.keys() == expected.keys() and all(torch.equal(got[n], expected[n]) for n in got)
