"""Checkpoints that go bad, and resumes that would silently change the run (in-process, one rank).

Each fault has its own test: a missing or garbage tracker, an iteration directory given to
--load, damaged files (truncated, empty, garbage metadata) with the fallback to an older
checkpoint, --keep-last-checkpoints, the loss-spike guard, consecutive fp16 overflows, and the
resume checks (LR schedule flags, --no-load-optim keeping the schedule position, random-LTD
settings)."""

import os
import shutil

import pytest

from megatron.training.arguments import ConfigError, parse_pretrain_config
from megatron.training.checkpointing import CheckpointDamaged, CheckpointError, prune
from megatron.training.guards import TrainingDiverged, TrainingStopped
from tests.training.inprocess import TINY, open_trainer, train, trainer_runtime  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("trainer_runtime")

LTD = ["--random-ltd", "--random-ltd-layers", "1", "--random-ltd-min-seq", "8", "--random-ltd-seq-step", "8", "--random-ltd-require-steps", "6"]
ARGS = TINY + LTD + ["--train-iters", "6"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Checkpoints at iterations 2, 4 and 6 of one run."""
    d = str(tmp_path_factory.mktemp("saved") / "ck")
    train(ARGS + ["--save", d, "--save-interval", "2"])
    assert sorted(os.listdir(d)) == ["iter_0000002", "iter_0000004", "iter_0000006", "latest_checkpointed_iteration.txt"]
    return d


def _copy(saved, tmp_path):
    d = str(tmp_path / "ck")
    shutil.copytree(saved, d)
    return d


def _loaded(args):
    with open_trainer(args) as (trainer, out):
        return trainer.counters.iteration, trainer.loaded_from, out


def test_missing_or_garbage_tracker_resumes_from_the_newest_complete_checkpoint(saved, tmp_path):
    d = _copy(saved, tmp_path)
    tracker = os.path.join(d, "latest_checkpointed_iteration.txt")
    os.remove(tracker)
    it, path, out = _loaded(ARGS + ["--load", d, "--save", d])
    assert it == 6 and path.endswith("iter_0000006")
    assert "latest_checkpointed_iteration.txt is missing: using the newest complete checkpoint" in out
    with open(tracker, "w") as f:
        f.write("\x00garbage")
    it, _, out = _loaded(ARGS + ["--load", d])
    assert it == 6 and "is garbage" in out
    # A tracker naming a deleted checkpoint: the newest complete one, said so.
    with open(tracker, "w") as f:
        f.write("8")
    it, _, out = _loaded(ARGS + ["--load", d])
    assert it == 6 and "names" in out and "iter_0000008, which is missing or incomplete" in out
    # Only an empty directory starts from scratch.
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    it, path, out = _loaded(ARGS + ["--load", empty])
    assert it == 0 and path is None and "starting from scratch" in out


def test_load_of_an_iteration_directory_loads_that_iteration(saved):
    it, path, _ = _loaded(ARGS + ["--load", os.path.join(saved, "iter_0000004")])
    assert it == 4 and path.endswith("iter_0000004")
    with pytest.raises(CheckpointError, match=r"iter_0000005 is not a complete checkpoint.*\[2, 4, 6\]"):
        os.makedirs(os.path.join(saved, "iter_0000005"), exist_ok=True)
        try:
            _loaded(ARGS + ["--load", os.path.join(saved, "iter_0000005")])
        finally:
            os.rmdir(os.path.join(saved, "iter_0000005"))


@pytest.mark.parametrize("victim,damage", [
    ("__0_0.distcp", "truncate"),
    ("__0_0.distcp", "flip"),  # same size, 64 bytes changed: only the CRC-32 sees it
    ("common.pt", "empty"),
    ("manifest.json", "garbage"),
])
def test_damaged_file_is_named_and_load_falls_back_to_an_older_checkpoint(saved, tmp_path, victim, damage):
    d = _copy(saved, tmp_path)
    path = os.path.join(d, "iter_0000006", victim)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "truncate":
            f.truncate(size // 2)
        elif damage == "flip":
            f.seek(size // 2)
            chunk = f.read(64)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
        elif damage == "empty":
            f.truncate(0)
        else:
            f.write(b"{not json")
    it, loaded, out = _loaded(ARGS + ["--load", d])
    assert it == 4 and loaded.endswith("iter_0000004")
    assert f"cannot load {os.path.join(d, 'iter_0000006')}: {path} is" in out and "falling back to" in out, out
    # Named explicitly, the damaged checkpoint is refused with the file named (no fallback).
    with pytest.raises(CheckpointDamaged, match=path.replace(".", r"\.")):
        _loaded(ARGS + ["--load", os.path.join(d, "iter_0000006")])


def test_keep_last_checkpoints_is_validated_and_never_deletes_the_newest(tmp_path):
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match="--keep-last-checkpoints must be >= 1"):
            parse_pretrain_config(ARGS + ["--save", str(tmp_path), "--keep-last-checkpoints", bad], world_size=1)
    d = str(tmp_path / "ck")
    train(TINY + ["--train-iters", "3", "--save", d, "--save-interval", "1", "--keep-last-checkpoints", "1"])
    assert sorted(n for n in os.listdir(d) if n.startswith("iter_")) == ["iter_0000003"]
    # After a resume from an older checkpoint, newer directories are neither counted nor deleted,
    # and the one just written always stays.
    for it in (2, 5, 7):
        os.makedirs(os.path.join(d, f"iter_{it:07d}"))
        open(os.path.join(d, f"iter_{it:07d}", "manifest.json"), "w").close()
    assert prune(d, 1, 5) == [2, 3]
    assert sorted(os.listdir(d)) == ["iter_0000005", "iter_0000007", "latest_checkpointed_iteration.txt"]


def test_loss_spike_stops_before_saving(tmp_path):
    d = str(tmp_path / "ck")
    args = TINY + ["--train-iters", "40", "--lr", "1e3", "--min-lr", "1e3", "--lr-decay-style", "constant",
                   "--save", d, "--save-interval", "1"]
    with pytest.raises(TrainingDiverged) as err:
        train(args)
    msg = str(err.value)
    assert "--loss-spike-factor 10" in msg and "stopping without saving" in msg, msg
    stopped_at = int(msg.split(" at iteration ")[1].split()[0])
    newest = max(int(n[5:]) for n in os.listdir(d) if n.startswith("iter_"))
    assert newest == stopped_at - 1 and f"the newest checkpoint is {d}/iter_{newest:07d}" in msg


def test_consecutive_skipped_fp16_steps_stop_with_a_clear_error():
    with pytest.raises(TrainingStopped, match=r"3 consecutive fp16 steps overflowed \(iterations 1-3"):
        train(TINY + ["--train-iters", "20", "--fp16", "--loss-scale", "1e30", "--max-consecutive-skipped-steps", "3"])


# ------------------------------------------------------------------ resume must not change the run


def test_lr_schedule_that_differs_needs_one_of_megatron_lms_two_flags(saved, capsys):
    longer = ARGS[:-1] + ["9", "--load", saved]  # --train-iters 9: a longer decay than the checkpoint's
    with pytest.raises(CheckpointError) as err:
        _loaded(longer)
    assert "--override-opt_param-scheduler" in str(err.value) and "--use-checkpoint-opt_param-scheduler" in str(err.value)
    assert "lr_decay_steps" in str(err.value)
    for flag in ("--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler"):
        with open_trainer(longer + [flag]) as (trainer, _):
            sched = trainer.scheduler
            assert sched.num_steps == 6  # the position always comes from the checkpoint
            new_decay = flag.startswith("--override")
            assert (sched.lr_decay_steps > 6) == new_decay, (flag, sched.lr_decay_steps)
            capsys.readouterr()
            trainer._print_header()  # the header prints the values in force
            assert f"decay {sched.lr_decay_steps:,}" in capsys.readouterr().out


def test_no_load_optim_keeps_the_schedule_position(saved):
    with open_trainer(ARGS + ["--load", saved]) as (trainer, _):
        position, lr = trainer.scheduler.num_steps, trainer.optimizer.param_groups[0]["lr"]
    with open_trainer(ARGS + ["--load", saved, "--no-load-optim"]) as (trainer, _):
        assert trainer.counters.iteration == 6
        assert trainer.scheduler.num_steps == position == 6
        assert trainer.optimizer.param_groups[0]["lr"] == lr


def test_changed_random_ltd_settings_are_refused_unless_asked_for(saved):
    for extra, flag in ((["--random-ltd-seed", "7"], "--random-ltd-seed"), (["--random-ltd-require-steps", "8"], "--random-ltd-require-steps")):
        with pytest.raises(CheckpointError, match=flag):
            _loaded(ARGS + extra + ["--load", saved])
    it, _, _ = _loaded(ARGS + ["--random-ltd-seed", "7", "--random-ltd-allow-change", "--load", saved])
    assert it == 6
