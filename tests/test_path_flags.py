"""Every path flag of every tool, given the wrong kind of path, exits 2 with one line naming the
flag and the path, without a traceback, and leaves the disk as it was (issue 26).

Generated from the argparse parsers: each flag that takes a string declares its kind
(``megatron.data.paths``), ``test_every_string_flag_declares_a_path_kind`` fails for a new one
without, and ``test_wrong_kinds_of_path_exit_2_with_one_line`` gives every declared flag each wrong
kind of path for its kind. The tools' ``main`` run in-process (the check comes right after parsing).
"""

import contextlib
import io
import os
import traceback

from megatron.data import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--mock-data", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "32",
        "--micro-batch-size", "2", "--vocab-size", "128", "--train-iters", "2", "--cpu", "--no-progress"]


def _training_parser():
    from megatron.training.arguments import build_parser

    return build_parser()


def _entry(model_type, prog):
    def run(argv):
        from megatron.training.entry import main
        from megatron.training.bert import bert_task
        from megatron.training.gpt import gpt_task

        return main(model_type, gpt_task if model_type == "gpt" else bert_task, prog, argv)
    return run


def _seed(argv):
    from megatron.training.entry import save_seed_main

    return save_seed_main(argv)


def _attr(module, attr):
    import importlib

    return getattr(importlib.import_module(module), attr)


def _parser(module, attr="build_parser"):
    return lambda: _attr(module, attr)()


def _main(module, attr="main"):
    return lambda argv: _attr(module, attr)(argv)


# tool -> (parser factory, main, base argv {flag: value} with every path valid, flags the flag replaces)
def _tools(ok):
    training = {"--save": ok["new_dir"]}
    return {
        "pretrain_gpt.py": (_training_parser, _entry("gpt", "pretrain_gpt.py"), TINY, training),
        "pretrain_bert.py": (_training_parser, _entry("bert", "pretrain_bert.py"), TINY, training),
        "tools/seed_checkpoint.py": (_training_parser, _seed, TINY, training),
        "tools/convert_checkpoint.py": (_parser("megatron.evaluation.cli", "build_convert_parser"),
                                        _main("tools.convert_checkpoint"), [],
                                        {"--load": ok["dir"], "--save": ok["new_dir"]}),
        "tools/convert_checkpoint.py --to-hf": (_parser("tools.convert_checkpoint", "build_hf_parser"),
                                                _main("tools.convert_checkpoint"), [],
                                                {"--load": ok["dir"], "--to-hf": ok["new_dir"]}),
        "tools/evaluate_zeroshot.py": (_parser("megatron.evaluation.cli", "build_eval_parser"),
                                       _main("megatron.evaluation.cli"), ["--task", "lambada"],
                                       {"--load": ok["dir"], "--data-path": ok["file"]}),
        "tools/preprocess_data.py": (_parser("tools.preprocess_data", "build_parser"), _main("tools.preprocess_data"),
                                     ["--tokenizer-type", "ByteTokenizer"],
                                     {"--input": ok["file"], "--output-prefix": ok["new_prefix"]}),
        "tools/train_tokenizer.py": (_parser("tools.train_tokenizer", "build_parser"), _main("tools.train_tokenizer"), [],
                                     {"--input": ok["file"], "--model-prefix": ok["new_prefix"]}),
        "tools/merge_datasets.py": (_parser("tools.merge_datasets", "build_parser"), _main("tools.merge_datasets"), [],
                                    {"--input": ok["dataset"], "--output-prefix": ok["new_prefix"]}),
        "tools/analyze_data.py": (_parser("tools.analyze_data", "build_parser"), _main("tools.analyze_data"), [],
                                  {"--data-path": ok["dataset"]}),
        "tools/build_sample_corpus.py": (_parser("tools.build_sample_corpus", "build_parser"),
                                         _main("tools.build_sample_corpus"), [], {"--output-dir": ok["new_dir"]}),
        "tools/checkpoint_check.py": (_parser("tools.checkpoint_check", "build_parser"), _main("tools.checkpoint_check"),
                                      [], {"--dir": ok["new_dir"], "--json-out": ok["new_file"]}),
        "tools/plot_runs.py": (_parser("tools.plot_runs", "build_parser"), _main("tools.plot_runs"), [],
                               {"--run": "a=" + ok["file"], "--out": ok["new_file"]}),
    }


EXCLUSIVE = {"--input-dir": "--input", "--input": "--input-dir"}  # merge_datasets: one source or the other
# Tools without a parser of their own: evaluate_zeroshot.py and seed_checkpoint.py are listed under the
# parser they use; the benchmarks belong to the performance work (their path flags are not covered here).
NOT_TOOLS = ("benchmark_",)


def _layout(tmp_path):
    """Valid paths for the base command lines, and one wrong path of each sort."""
    (tmp_path / "ok_dir").mkdir()
    (tmp_path / "ok_dir" / "x").write_text("x")
    (tmp_path / "ok.txt").write_text("hello\n")
    for ext in (".bin", ".idx"):
        (tmp_path / ("ds" + ext)).write_bytes(b"")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "kept").write_text("x")
    (tmp_path / "empty").mkdir()
    if os.geteuid() == 0:  # root ignores mode bits: /proc is never writable
        unwritable = "/proc/1/out"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        unwritable = str(ro / "out")
    ok = {"dir": str(tmp_path / "ok_dir"), "file": str(tmp_path / "ok.txt"), "dataset": str(tmp_path / "ds"),
          "new_dir": str(tmp_path / "new" / "d"), "new_file": str(tmp_path / "new" / "f.json"),
          "new_prefix": str(tmp_path / "new" / "p")}
    t = {k: str(tmp_path / k) for k in ("a_file", "full", "empty")}
    missing, under_file = str(tmp_path / "missing"), os.path.join(t["a_file"], "sub")
    wrong = {  # kind -> [(value, text the message must hold)]
        paths.INPUT_FILE: [(t["full"], "is a directory, not a file"), (missing, "does not exist")],
        paths.INPUT_DIR: [(t["a_file"], "is a file, not a directory"), (missing, "no such directory")],
        paths.INPUT_PATH: [(missing, "does not exist"), (under_file, "does not exist")],
        paths.INPUT_DATASET: [(t["full"], "is a directory; give a dataset prefix"),
                              (t["a_file"], "is not an indexed dataset"), (missing, "is not an indexed dataset")],
        paths.OUTPUT_FILE: [(t["empty"], "is a directory, not a file"), (under_file, "is a file, not a directory"),
                            (unwritable, "is not writable")],
        paths.OUTPUT_DIR: [(t["a_file"], "is a file, not a directory"), (under_file, "is a file, not a directory"),
                           (unwritable, "is not writable")],
        paths.OUTPUT_NEW_DIR: [(t["a_file"], "is a file, not a directory"), (t["full"], "is not empty"),
                               (under_file, "is a file, not a directory"), (unwritable, "is not writable")],
        paths.OUTPUT_PREFIX: [(t["empty"], "names a directory"), (under_file, "is a file, not a directory"),
                              (unwritable, "is not writable")],
        paths.TEXT: [],
    }
    return ok, wrong


def _snapshot(root):
    out = {}
    for dp, dirs, names in os.walk(root):
        for n in dirs + names:
            p = os.path.join(dp, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def _run(main, argv):
    """(exit code, stderr); a traceback is returned as text."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException:  # noqa: BLE001 (reported by the test)
            return "traceback", traceback.format_exc()
    return code, err.getvalue()


def _argv(base, given, flag, value, action):
    flags = dict(given)
    flags.pop(flag, None)
    flags.pop(EXCLUSIVE.get(flag), None)
    argv = [a for a in base if not (flag.endswith("data-path") and a == "--mock-data")]
    for f, v in flags.items():
        argv += [f, v]
    spec = paths.kind_of(action)
    return argv + [flag, ("a=" + value) if spec.after else value]


def test_every_tool_is_covered_and_every_string_flag_declares_a_path_kind(tmp_path):
    ok, _ = _layout(tmp_path)
    tools = _tools(ok)
    listed = {name.split()[0] for name in tools}
    on_disk = {f"tools/{f}" for f in os.listdir(os.path.join(ROOT, "tools"))
               if f.endswith(".py") and not f.startswith(NOT_TOOLS)}
    assert on_disk <= listed, f"tools without path-flag cases (add them to _tools): {sorted(on_disk - listed)}"
    declared = 0
    for name, (parser, _, _, _) in tools.items():
        p = parser()
        missing = [a.option_strings[0] for a in paths.string_actions(p) if paths.kind_of(a) is None]
        assert not missing, (f"{name}: string flags without a path kind (declare it with megatron.data.paths.declare, "
                             f"paths.TEXT when it is not a path): {missing}")
        declared += sum(1 for a in p._actions if paths.kind_of(a) and paths.kind_of(a).kind != paths.TEXT)
    assert declared >= 60, declared  # the enumeration finds the flags


def test_wrong_kinds_of_path_exit_2_with_one_line(tmp_path, monkeypatch):
    ok, wrong = _layout(tmp_path)
    monkeypatch.chdir(tmp_path)  # relative defaults (--results-dir eval_results) land in the snapshot
    os.environ.setdefault("MEGATRON_LTD_FORCE_CPU", "1")
    before = _snapshot(tmp_path)
    failures, count, kinds = [], 0, set()
    for name, (parser, main, base, given) in _tools(ok).items():
        for action in parser()._actions:
            spec = paths.kind_of(action)
            if spec is None or not action.option_strings:
                continue
            flag = action.option_strings[0]
            for value, needle in wrong[spec.kind]:
                count += 1
                kinds.add(spec.kind)
                code, text = _run(main, _argv(base, given, flag, value, action))
                lines = text.strip().splitlines()
                ok_line = len(lines) == 1 and "error: " in lines[0] and flag in lines[0] and needle in lines[0] \
                    and value in lines[0]
                if code != 2 or not ok_line:
                    failures.append(f"{name} {flag} {value}: exit {code}, expected one line with {needle!r}, got:\n"
                                    f"{text[-1500:]}")
                after = _snapshot(tmp_path)
                if after != before:
                    changed = sorted(set(after.items()) ^ set(before.items()))
                    failures.append(f"{name} {flag} {value}: the disk changed: {changed[:5]}")
                    before = after
    assert kinds == set(paths.KINDS) - {paths.TEXT}, kinds  # every kind was walked
    assert count >= 150, count
    assert not failures, f"{len(failures)} of {count} cases:\n\n" + "\n\n".join(failures)


def test_lm_eval_checkpoint_is_checked_before_lm_eval_starts(tmp_path):
    """lm-evaluation-harness's own command line: the ``load=`` of ``--model_args`` is a path flag too."""
    from megatron.evaluation.lm_eval_cli import main

    (tmp_path / "a_file").write_text("x")
    for value, needle in ((str(tmp_path / "a_file"), "is a file, not a directory"),
                          (str(tmp_path / "missing"), "no such directory")):
        for argv in (["run", "--model", "megatron-ltd", "--model_args", f"batch_size=2,load={value}", "--tasks", "x"],
                     ["run", f"--model_args=load={value}", "--tasks", "x"]):
            code, text = _run(main, argv)
            assert code == 2 and text.count("\n") == 1, text
            assert text.startswith(f"lm_eval_cli: error: --model_args load {value}") and needle in text, text


def test_checkpoint_check_never_deletes_what_it_did_not_write(tmp_path):
    """tools/checkpoint_check.py replaces its scratch --dir: one holding anything else is refused."""
    from tools.checkpoint_check import main

    scratch = tmp_path / "scratch"
    (scratch / "mine").mkdir(parents=True)
    (scratch / "sync").mkdir()
    code, text = _run(main, ["--dir", str(scratch), "--json-out", str(tmp_path / "ck.json")])
    assert code == 2 and text.count("\n") == 1 and f"--dir {scratch} holds files this check did not write (mine)" in text
    assert sorted(os.listdir(scratch)) == ["mine", "sync"]
