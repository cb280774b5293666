"""A file the project parses that is not the kind of file expected is refused with one line naming
the file and the kind expected (issue 26): tokenizer models and vocabularies, merges files, Hugging
Face tokenizer files and metrics files. The .bin/.idx pairs and checkpoint records are covered with
the data and checkpoint tests (tests/training/test_bad_inputs.py, test_checkpoint_faults.py)."""

import contextlib
import io
import json
import os

import pytest

from megatron.data.tokenizers import TokenizerConfig, TokenizerFileError, build_tokenizer
from tests.test_path_flags import TINY, _entry, _run


@pytest.fixture
def files(tmp_path):
    (tmp_path / "notes.txt").write_text("just some text\nnot a model\n")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c d e\n")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "tokenizer.json").write_text("{not json")
    hf_cfg = tmp_path / "hf_cfg"
    hf_cfg.mkdir()
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(str(hf_cfg / "tokenizer.json"))
    (hf_cfg / "tokenizer_config.json").write_text("{\"eos_token\": ")
    return {p.name: str(p) for p in tmp_path.iterdir()}


def _one_line(error, *needles):
    text = str(error)
    assert "\n" not in text and all(n in text for n in needles), text


def test_tokenizer_files_of_the_wrong_kind_are_named(files):
    cases = [  # (config, text the one line must hold)
        (TokenizerConfig("SentencePieceTokenizer", tokenizer_model=files["notes.txt"]),
         [f"--tokenizer-model {files['notes.txt']} is not a SentencePiece model", "could not parse ModelProto",
          "give the .model file written by tools/train_tokenizer.py"]),
        (TokenizerConfig("SentencePieceTokenizer", tokenizer_model=files["hf"]),
         [f"--tokenizer-model {files['hf']} is a directory", "--tokenizer-type HuggingFaceTokenizer"]),
        (TokenizerConfig("GPT2BPETokenizer", vocab_file=files["notes.txt"], merge_file=files["merges.txt"]),
         [f"--vocab-file {files['notes.txt']} is not a GPT-2 vocab.json"]),
        (TokenizerConfig("GPT2BPETokenizer", vocab_file=files["list.json"], merge_file=files["merges.txt"]),
         [f"--vocab-file {files['list.json']} is not a GPT-2 vocab.json", "holds a JSON list"]),
        (TokenizerConfig("GPT2BPETokenizer", vocab_file=files["vocab.json"], merge_file=files["merges.txt"]),
         [f"--merge-file {files['merges.txt']} is not a GPT-2 merges.txt for --vocab-file {files['vocab.json']}"]),
        (TokenizerConfig("BertWordPieceLowerCase", vocab_file=files["binary.bin"]),
         [f"--vocab-file {files['binary.bin']} is not a BERT WordPiece vocab.txt", "line 2, byte 118 is not UTF-8"]),
        (TokenizerConfig("HuggingFaceTokenizer", tokenizer_model=files["hf"]),
         [f"--tokenizer-model {files['hf']}/tokenizer.json is not a Hugging Face tokenizer.json"]),
        (TokenizerConfig("HuggingFaceTokenizer", tokenizer_model=files["hf_cfg"]),
         [f"{files['hf_cfg']}/tokenizer_config.json is not JSON", "fix it or remove it"]),
    ]
    for cfg, needles in cases:
        with pytest.raises(TokenizerFileError) as e:
            build_tokenizer(cfg)
        _one_line(e.value, *needles)


def test_entry_points_refuse_a_text_file_as_tokenizer_model(files, tmp_path):
    """The issue's case: a text file as --tokenizer-model, through pretrain_gpt.py and
    preprocess_data.py: exit 2, one line, nothing written."""
    from tools.preprocess_data import main as preprocess_main

    bad = ["--tokenizer-type", "SentencePieceTokenizer", "--tokenizer-model", files["notes.txt"]]
    code, text = _run(_entry("gpt", "pretrain_gpt.py"), TINY + bad + ["--save", str(tmp_path / "ck")])
    assert code == 2 and text.count("\n") == 1, text
    assert text.startswith(f"pretrain_gpt.py: error: --tokenizer-model {files['notes.txt']} is not a SentencePiece model")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"text": "hello"}) + "\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert preprocess_main(["--input", str(corpus), "--output-prefix", str(tmp_path / "out" / "c")] + bad) == 2
    assert err.getvalue().count("\n") == 1 and "is not a SentencePiece model" in err.getvalue(), err.getvalue()
    assert not os.path.exists(tmp_path / "ck") and not os.path.exists(tmp_path / "out")


def test_plot_runs_names_a_line_that_is_not_a_metrics_record(tmp_path):
    from tools.plot_runs import main as plot_main

    good = tmp_path / "m.jsonl"
    good.write_text(json.dumps({"kind": "train", "iteration": 1}) + "\n")
    for name, body, needle in (("garbled.jsonl", "{\"kind\": \"train\"}\n{oops\n", "garbled.jsonl:2 is not a JSON line"),
                               ("other.jsonl", "[1, 2]\n", "other.jsonl:1 is not a metrics record")):
        (tmp_path / name).write_text(body)
        code, text = _run(plot_main, ["--run", f"a={good}", "--run", f"b={tmp_path / name}",
                                      "--out", str(tmp_path / "p.png")])
        assert code == 2 and text.count("\n") == 1 and needle in text and "--metrics-file" in text, text
    assert not os.path.exists(tmp_path / "p.png")


def test_a_difficulty_file_that_is_not_a_npy_array_is_named(tmp_path):
    """--curriculum-difficulty-file (or the analyzer's file next to the data) of the wrong kind or
    length: a DataError (one line from the entry points, exit 2), not numpy's traceback."""
    import types

    import numpy as np

    from megatron.curriculum.metrics import load_sequence_values
    from megatron.data.providers import DataError

    low = types.SimpleNamespace(path_prefix=str(tmp_path / "corpus"), sequence_lengths=[3, 4, 5])
    (tmp_path / "notes.npy").write_text("not an array\n")
    np.save(tmp_path / "short.npy", np.arange(2.0))
    np.save(tmp_path / "good.npy", np.arange(3.0))
    for name, needle in (("notes.npy", "notes.npy is not a .npy array"), ("short.npy", "short.npy holds (2,) values"),
                         ("missing.npy", "missing.npy is missing")):
        with pytest.raises(DataError) as e:
            load_sequence_values(low, "file", str(tmp_path / name))
        _one_line(e.value, needle)
    assert list(load_sequence_values(low, "file", str(tmp_path / "good.npy"))) == [0.0, 1.0, 2.0]
