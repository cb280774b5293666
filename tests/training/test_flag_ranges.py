"""Every numeric flag of pretrain_gpt.py and pretrain_bert.py has a declared range, and a value
outside it exits 2 with one line naming the flag and the range (issue 18 §4).

Generated from the parser: a new numeric flag without a range fails
``test_every_numeric_flag_declares_a_range``, and each bound of each range is crossed once in
``test_out_of_range_values_exit_2_with_one_line``. The entry functions run in-process (the range
check comes right after parsing, before any process group or model), plus one real subprocess per
script for the exit code and the absence of a traceback.
"""

import contextlib
import io
import math
import os
import subprocess
import sys
import traceback

import pytest

from megatron.training.arguments import build_parser
from megatron.training.cli import Range, numeric_actions, parse_int
from tests.training.inprocess import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = TINY + ["--train-iters", "2"]


def _entries():
    from megatron.training.bert import bert_task
    from megatron.training.gpt import gpt_task

    return {"pretrain_gpt.py": ("gpt", gpt_task), "pretrain_bert.py": ("bert", bert_task)}


def _run_entry(script: str, argv):
    """The entry script's main in-process: (exit code, stderr). A traceback is returned as text."""
    from megatron.training.entry import main

    model_type, task = _entries()[script]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(model_type, task, script, argv)
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:  # noqa: BLE001 (reported by the test)
            return "traceback", traceback.format_exc()
    return code, err.getvalue()


def _fmt(value) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def out_of_range_values(rng: Range, is_int: bool):
    """One value just past each bound of ``rng`` (and a NaN for float flags)."""
    step = 1 if is_int else 0.5
    values = []
    if rng.ge is not None:
        values.append(rng.ge - step)
    if rng.gt is not None:
        values.append(rng.gt)
    if rng.le is not None:
        values.append(rng.le + step)
    if rng.lt is not None:
        values.append(rng.lt)
    if not is_int:
        values.append(float("nan"))
    values = [int(v) if is_int else float(v) for v in values]
    return [v for v in values if v != rng.off]


def _cases():
    parser = build_parser()
    for action in numeric_actions(parser):
        rng = getattr(action, "range", None)
        if rng is None:
            continue
        for value in out_of_range_values(rng, action.type in (int, parse_int)):
            yield action.option_strings[0], rng, value


def test_every_numeric_flag_declares_a_range():
    parser = build_parser()
    actions = numeric_actions(parser)
    assert len(actions) >= 60, [a.option_strings for a in actions]  # the enumeration finds the flags
    missing = [a.option_strings[0] for a in actions if getattr(a, "range", None) is None]
    assert not missing, f"numeric flags without a declared range (add ge/gt/le/lt to the field's metadata): {missing}"
    for a in actions:  # every default is itself in range
        if a.default is not None:
            assert a.range.contains(a.default), (a.option_strings[0], a.default, str(a.range))
    # The cases the issue names.
    named = {a.option_strings[0]: a.range for a in actions}
    assert not named["--lr-warmup-iters"].contains(-5)
    assert not named["--adam-beta2"].contains(1.5)
    assert not named["--init-method-std"].contains(-0.02)
    assert not named["--hidden-dropout"].contains(1.0) and not named["--mask-prob"].contains(1.5)
    assert str(named["--adam-beta2"]) == "in [0, 1)" and str(named["--micro-batch-size"]) == ">= 1"
    assert not named["--lr"].contains(math.inf) and not named["--lr"].contains(math.nan)


@pytest.mark.parametrize("script", ["pretrain_gpt.py", "pretrain_bert.py"])
def test_out_of_range_values_exit_2_with_one_line(script):
    failures, count = [], 0
    for flag, rng, value in _cases():
        count += 1
        code, text = _run_entry(script, BASE + [flag, _fmt(value)])
        lines = text.strip().splitlines()
        expected = f"{script}: error: {flag} must be {rng}, got "
        if code != 2 or len(lines) != 1 or not lines[0].startswith(expected):
            failures.append(f"{flag} {_fmt(value)}: exit {code}, expected one line starting {expected!r}, got:\n{text[-800:]}")
    assert count >= 90, count  # every bound of every range was tried
    assert not failures, "\n\n".join(failures)


def test_parse_errors_are_one_line_too():
    """argparse's own errors (not a number, a missing value): one line, not the whole usage."""
    for argv, needle in ((["--num-layers", "abc"], "argument --num-layers: 'abc' is not a whole number"),
                         (["--num-layers", "2.5"], "argument --num-layers: '2.5' is not a whole number"),
                         (["--adam-beta2", "x"], "argument --adam-beta2: invalid float value: 'x'"),
                         (["--lr"], "argument --lr: expected one argument")):
        code, text = _run_entry("pretrain_gpt.py", BASE + argv)
        assert code == 2 and f": error: {needle} (see --help)" in text and text.count("\n") == 1, text  # prog: sys.argv[0]


def test_real_scripts_exit_2_without_traceback():
    """The scripts themselves (one process each, run side by side): the exit code and stderr."""
    env = dict(os.environ, PYTHONPATH=ROOT, MEGATRON_LTD_FORCE_CPU="1")
    runs = {
        "pretrain_gpt.py": ["--adam-beta2", "1.5"],
        "pretrain_bert.py": ["--init-method-std", "-0.02"],
    }
    procs = {script: subprocess.Popen([sys.executable, os.path.join(ROOT, script)] + BASE + extra, cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script, extra in runs.items()}
    for script, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        flag = runs[script][0]
        assert proc.returncode == 2, (script, proc.returncode, err)
        assert "Traceback" not in err and err.strip().count("\n") == 0, err
        assert err.startswith(f"{script}: error: {flag} must be "), err
