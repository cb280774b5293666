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
        (BASE + ["--lr", "-1e-3"], "--lr must be > 0, got -0.001"),
        (BASE + ["--save", str(a_file)], f"--save {a_file} is a file, not a directory"),
        (BASE + ["--save", os.path.join(ro, "ck")], "is not writable"),
        (BASE + ["--metrics-file", os.path.join(ro, "m.jsonl")], "--metrics-file"),
        (BASE + ["--save", ck, "--keep-last-checkpoints", "-1"], "--keep-last-checkpoints must be >= 1"),
        (BASE + ["--save", ck, "--keep-last-checkpoints", "0"], "--keep-last-checkpoints must be >= 1"),
        (BASE + ["--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler"], "mutually exclusive"),
        (BASE + ["--exit-duration-in-mins", "0"], "--exit-duration-in-mins must be > 0"),
        (BASE + ["--load", str(a_file)], f"--load {a_file} is a file, not a directory: give a directory written by --save"),
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


def _entry_bert(argv):
    from megatron.training.bert import bert_task

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            pretrain_main("bert", bert_task, "pretrain_bert.py", argv)
            code = 0
        except SystemExit as e:
            code = e.code
        except BaseException:
            return "traceback", traceback.format_exc()
    return code, err.getvalue()


def _preprocess(tmp_path, name, n_docs, extra=()):
    from tools.preprocess_data import main as preprocess_main

    corpus = tmp_path / f"{name}.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{name} document {i} " * (5 + i % 7)}) + "\n" for i in range(n_docs)))
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = preprocess_main(["--input", str(corpus), "--output-prefix", str(tmp_path / name), "--tokenizer-type",
                                "ByteTokenizer", "--no-progress-bar", *extra])
    return code, err.getvalue(), str(tmp_path / f"{name}_text_document")


def test_unclear_inputs_name_their_cause(tmp_path, monkeypatch):
    """Issue 18 §5: inputs that passed start-up, hung, or failed with a message naming no cause."""
    import shutil

    from megatron.training.arguments import ConfigError, parse_pretrain_config

    # --- datasets: a truncated .bin, a truncated .idx, another dataset's .idx (the file is named)
    code, err, good = _preprocess(tmp_path, "a", 60, extra=["--workers", "100000"])
    assert code == 0, err  # resources bounded: the workers are capped at the CPUs, with a note
    assert f"--workers 100000 is more than the {os.cpu_count()} CPUs" in err
    _, _, other = _preprocess(tmp_path, "b", 30)
    bad = {}
    for kind in ("short_bin", "short_idx", "foreign_idx"):
        prefix = str(tmp_path / kind)
        shutil.copy(good + ".bin", prefix + ".bin")
        shutil.copy((other if kind == "foreign_idx" else good) + ".idx", prefix + ".idx")
        if kind != "foreign_idx":
            path = prefix + (".bin" if kind == "short_bin" else ".idx")
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
        bad[kind] = prefix
    data = ["--tokenizer-type", "NullTokenizer", "--split", "90,5,5"]
    real = [a for a in BASE if a != "--mock-data"]
    real[real.index("--vocab-size") + 1] = "300"

    empty = tmp_path / "empty"
    empty.mkdir()
    ck = str(tmp_path / "ck")
    train(BASE + ["--save", ck])
    bert_ck = str(tmp_path / "bert_ck")  # the same checkpoint, marked as a BERT model in its manifest
    shutil.copytree(ck, bert_ck)
    meta_path = os.path.join(bert_ck, "iter_0000002", "manifest.json")
    meta = json.load(open(meta_path))
    json.dump(dict(meta, model_type="bert"), open(meta_path, "w"))

    gpt_cases = [  # (argv, text the one line must contain)
        (real + data + ["--data-path", bad["short_bin"]], f"{bad['short_bin']}.bin has"),
        (real + data + ["--data-path", bad["short_bin"]], "the .bin is truncated, or the .idx belongs to another dataset"),
        (real + data + ["--data-path", bad["short_idx"]], f"{bad['short_idx']}.idx cannot be read"),
        (real + data + ["--data-path", bad["foreign_idx"]], f"{bad['foreign_idx']}.bin has"),
        (real + data[:-2] + ["--data-path", good, "--split", "0,0,0"], "--split '0,0,0' gives every split a weight of 0"),
        (BASE + ["--random-ltd", "--random-ltd-layers", "1", "--random-ltd-constant-k", "16", "--random-ltd-min-seq", "8",
                 "--random-ltd-require-steps", "10"],
         "--random-ltd-constant-k keeps a fixed length, so the ramp flags --random-ltd-min-seq, --random-ltd-require-steps"),
        (BASE + ["--finetune", "--load", str(empty)], f"--finetune --load {empty}: the directory holds no complete checkpoint"),
        (BASE + ["--finetune"], "--finetune needs --load DIR"),
        (TINY + ["--train-layer-averaged-tokens", "1e30"], "--train-layer-averaged-tokens 1000000000000000019884624838656 "
                                                            "means 7.81e+27 iterations"),
        (TINY + ["--train-iters", "1e15"], "more than the 1e+11 samples a dataset index can hold"),
        (BASE + ["--load", bert_ck], "holds a BERT model, but this run builds GPT: load it with pretrain_bert.py"),
    ]
    failures = []
    for entry, cases in ((_entry, gpt_cases),
                         (_entry_bert, [(BASE + ["--load", ck], "holds a GPT model, but this run builds BERT")])):
        for argv, needle in cases:
            code, text = entry(argv)
            if code != 2 or needle not in text or "Traceback" in text or len(text.strip().splitlines()) != 1:
                failures.append(f"{argv[len(TINY):]}: exit {code}, expected {needle!r} in one line:\n{text[-1500:]}")
    assert not failures, "\n\n".join(failures)

    # A 1-virtual-stage interleaved schedule: refused at start-up, not at iteration 1 (2 processes).
    with pytest.raises(ConfigError, match="only 1 virtual stage; the interleaved schedule needs 2 or more"):
        parse_pretrain_config(BASE + ["--pipeline-model-parallel-size", "2", "--num-layers-per-virtual-pipeline-stage", "1"],
                              world_size=2)

    # A relative tokenizer path is recorded absolute, so a checkpoint works from any directory.
    monkeypatch.chdir(tmp_path)
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(sentence_iterator=iter(["the cat sat on the mat"] * 20), model_prefix="tok",
                                   vocab_size=15, minloglevel=2)
    cfg = parse_pretrain_config(BASE + ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", "tok.model"],
                                world_size=1)
    assert cfg.tokenizer.tokenizer_model == str(tmp_path / "tok.model")

    # train_tokenizer.py on an empty input or with --json-keys that match nothing.
    from tools.train_tokenizer import main as tokenizer_main

    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "body.jsonl").write_text("".join(json.dumps({"body": f"text {i}", "id": i}) + "\n" for i in range(20)))
    for inp, needle in (("empty.jsonl", "no training text in --input empty.jsonl: the input is empty"),
                        ("body.jsonl", "no text under --json-keys text; their text keys are body (e.g. --json-keys body)")):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = tokenizer_main(["--input", inp, "--model-prefix", "tok/spm", "--vocab-size", "300", "--num-threads", "1"])
        assert code == 1 and needle in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    assert not os.path.exists(tmp_path / "tok")
