"""Every bad input of docs/bad_inputs.md: one clear message naming the flag or file and the fix, exit
code 2 from the entry points, no traceback, before any work. In-process (parsers, validators and
the entry functions called directly) so the whole table runs in seconds."""

import contextlib
import io
import json
import os
import traceback

import pytest

from megatron.training.arguments import build_parser
from megatron.training.entry import main as pretrain_main
from megatron.training.gpt import gpt_task
from tests.training.inprocess import TINY, train, trainer_runtime  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("trainer_runtime")

BASE = TINY + ["--train-iters", "2"]


def _read_only_dir(tmp_path):
    """A directory this process cannot write to (root ignores mode bits: use /proc/1)."""
    if os.geteuid() == 0:
        return "/proc/1"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d)


def _entry(argv):
    """pretrain_gpt.py's main in-process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            pretrain_main("gpt", gpt_task, "pretrain_gpt.py", argv)
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:  # a traceback is a failure of this test, reported with the case
            return "traceback", traceback.format_exc()
    return code, err.getvalue()


def test_every_bad_input_is_one_clear_message(tmp_path):
    ro = _read_only_dir(tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    ck = str(tmp_path / "ck")
    train(BASE + ["--save", ck])  # a checkpoint for the resume cases
    os.makedirs(os.path.join(ck, "iter_0000001"))  # a directory that is not a complete checkpoint

    # Byte-tokenized corpus (ids up to 255) for a run whose vocabulary has 64 entries.
    from tools.preprocess_data import main as preprocess_main

    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes("\ufeff".encode() + b"".join(json.dumps({"text": f"document number {i} " * 20}).encode() + b"\n"
                                                   for i in range(40)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        assert preprocess_main(["--input", str(corpus), "--output-prefix", str(tmp_path / "c"),
                                "--tokenizer-type", "ByteTokenizer", "--no-progress-bar"]) == 0
    report = json.load(open(tmp_path / "c_preprocess_report.json"))
    assert report["documents"] == 40 and not report["skipped"]  # the BOM no longer costs the first document
    data = ["--data-path", str(tmp_path / "c_text_document"), "--tokenizer-type", "NullTokenizer", "--split", "80,10,10"]
    real = [a for a in BASE if a != "--mock-data"]
    real[real.index("--vocab-size") + 1] = "64"

    cases = [  # (argv, text the message must contain)
        (BASE + ["--global-batch-size", "-4"], "--global-batch-size must be >= 1"),
        (BASE + ["--global-batch-size", "0"], "--global-batch-size must be >= 1"),
        (BASE + ["--eval-iters", "-1"], "--eval-iters must be >= 0"),
        (BASE + ["--clip-grad", "-1"], "--clip-grad must be >= 0"),
        (BASE + ["--lr", "-1e-3"], "--lr > 0"),
        (BASE + ["--save", str(a_file)], f"--save {a_file} is a file, not a directory"),
        (BASE + ["--save", os.path.join(ro, "ck")], "is not writable"),
        (BASE + ["--metrics-file", os.path.join(ro, "m.jsonl")], "--metrics-file"),
        (BASE + ["--save", ck, "--keep-last-checkpoints", "-1"], "--keep-last-checkpoints must be >= 1"),
        (BASE + ["--save", ck, "--keep-last-checkpoints", "0"], "--keep-last-checkpoints must be >= 1"),
        (BASE + ["--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler"], "mutually exclusive"),
        (BASE + ["--exit-duration-in-mins", "0"], "--exit-duration-in-mins must be positive"),
        (BASE + ["--load", str(a_file)], "no such directory"),
        (BASE + ["--load", ck, "--vocab-size", "300"], "checkpoint 256, this run 384; resume with the checkpoint's tokenizer: --tokenizer-type NullTokenizer --vocab-size 128"),
        (BASE + ["--load", ck, "--seq-length", "64"], "--seq-length: checkpoint 32, this run 64"),
        (BASE + ["--load", os.path.join(ck, "iter_0000001")], "iter_0000001 is not a complete checkpoint"),
        (real + data, "holds token id"),
    ]
    failures = []
    for argv, needle in cases:
        code, text = _entry(argv)
        if code != 2 or needle not in text or "Traceback" in text or text.count("error") != 1:
            failures.append(f"{argv[len(TINY):]}: exit {code}, expected {needle!r} in:\n{text[-1500:]}")
    assert not failures, "\n\n".join(failures)

    # Preprocessing and evaluation entry points.
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert preprocess_main(["--input", str(corpus), "--output-prefix", str(tmp_path) + "/",
                                "--tokenizer-type", "ByteTokenizer"]) == 2
    assert "names a directory; give a file prefix" in err.getvalue()
    assert not os.path.exists(tmp_path / "_text_document.bin")

    from megatron.evaluation.cli import main as eval_main

    text_file = tmp_path / "plain.txt"
    text_file.write_text("The quick brown fox jumps over the lazy dog.\n")
    for argv, needle in (
        (["--micro-batch-size", "0"], "--micro-batch-size must be >= 1"),
        ([], "cannot read this text"),  # a NullTokenizer (mock-data) checkpoint given plain text
    ):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = eval_main(["--task", "perplexity", "--load", ck, "--data-path", str(text_file), "--cpu",
                              "--results-dir", str(tmp_path / "res")] + argv)
        assert code == 2 and needle in err.getvalue(), err.getvalue()

    # --help: each default once; on/off flags show none ("--no-load-optim (default: True)" read as on).
    text = " ".join(build_parser().format_help().split())
    assert "(default: True)" not in text and "(default: False)" not in text
    for chunk in text.split(" --")[1:]:
        assert chunk.count("(default:") <= 1, chunk
    assert "--lr LR Peak learning rate. (default: 0.0001)" in text
