"""preprocess_data / merge_datasets: determinism, bad input reporting, atomic outputs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from megatron.data import atomic
from megatron.data.preprocess import PreprocessConfig, preprocess
from megatron.data.sentence_splitter import split_sentences
from megatron.data.tokenizers import TokenizerConfig
from tests.data.conftest import make_texts, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BYTE = TokenizerConfig("ByteTokenizer")


def _files(prefix):
    return [open(prefix + ext, "rb").read() for ext in (".bin", ".idx")]


def _run(inp, prefix, **kw):
    kw.setdefault("tokenizer", BYTE)
    return preprocess(PreprocessConfig(input=inp, output_prefix=prefix, progress=False, **kw))


def test_workers_and_partitions_give_identical_bytes(tmp_path, tok_files):
    texts = make_texts(300, seed=3)
    rows = [{"text": t, "title": t.split(".")[0]} for t in texts]
    rows[17]["text"] = 5  # a skipped line in the middle must not shift anything
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sp = TokenizerConfig("SentencePieceTokenizer", tokenizer_model=tok_files["sp_model"])
    outs = {}
    for workers, partitions in ((1, 1), (2, 1), (2, 3)):
        prefix = str(tmp_path / f"w{workers}p{partitions}")
        s = _run(str(inp), prefix, tokenizer=sp, json_keys=["text", "title"], append_eod=True,
                 workers=workers, partitions=partitions, chunk_lines=7)
        assert s.documents == 299 and [x[0] for x in s.skipped] == [18]
        outs[(workers, partitions)] = [_files(f"{prefix}_{k}_document") for k in ("text", "title")]
    assert outs[(1, 1)] == outs[(2, 1)] == outs[(2, 3)]


def test_bad_lines_are_reported_with_line_numbers(tmp_path, capsys):
    from tools.preprocess_data import main

    good = json.dumps({"text": "A fine document."})
    lines = [good, "{not json", json.dumps({"body": "x"}), json.dumps({"text": 42}),
             json.dumps({"text": "   "}), good, "", json.dumps(["a", "list"])]
    raw = "\n".join(lines).encode() + b"\n" + b'{"text": "caf\xe9 latin-1"}\n' + good.encode()
    inp = tmp_path / "bad.jsonl"
    inp.write_bytes(raw)
    prefix = str(tmp_path / "out")
    assert main(["--input", str(inp), "--output-prefix", prefix, "--tokenizer-type",
                 "ByteTokenizer", "--workers", "2", "--chunk-lines", "2"]) == 0
    report = json.load(open(prefix + "_preprocess_report.json"))
    got = {(s["line"], s["reason"]) for s in report["skipped"]}
    assert got == {(2, "malformed JSON"), (3, "missing key"), (4, "non-string value"),
                   (5, "empty document"), (7, "blank line"), (8, "not a JSON object"),
                   (9, "invalid UTF-8")}
    assert report["documents"] == 3 and report["lines"] == 10
    out = capsys.readouterr().out
    assert "malformed JSON: 1 (lines 2)" in out and "invalid UTF-8: 1 (lines 9)" in out
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert len(IndexedDataset(prefix + "_text_document")) == 3


def test_strict_fails_and_writes_nothing(tmp_path, capsys):
    from tools.preprocess_data import main

    inp = write_jsonl(tmp_path / "in.jsonl", make_texts(20))
    with open(inp, "a") as f:
        f.write('{"text": null}\n')
    prefix = str(tmp_path / "out")
    assert main(["--input", inp, "--output-prefix", prefix, "--tokenizer-type", "ByteTokenizer",
                 "--strict"]) == 2  # a problem the user fixes: exit code 2
    err = capsys.readouterr().err
    assert "in.jsonl:21" in err and "non-string value" in err
    assert os.listdir(tmp_path) == ["in.jsonl"]  # no outputs, no staging left behind


def test_split_sentences_writes_sentence_level(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    texts = ["Dr. Smith arrived at 5 p.m. on Monday. He sat down! Was it late? Yes.",
             "One sentence only"]
    inp = write_jsonl(tmp_path / "in.jsonl", texts)
    s = _run(inp, str(tmp_path / "o"), split_sentences=True, append_eod=True)
    ds = IndexedDataset(s.outputs["text"])
    assert s.outputs["text"].endswith("_text_sentence")
    assert list(ds.document_indices) == [0, 4, 5]
    first = [bytes(ds[i][ds[i] < 256].tolist()).decode() for i in range(4)]
    assert first == ["Dr. Smith arrived at 5 p.m. on Monday.", "He sat down!", "Was it late?",
                     "Yes."]
    assert ds[3][-1] == 256 and ds[0][-1] != 256  # eod only after the document's last sentence


def test_sentence_splitter_abbreviations():
    assert split_sentences("Mr. and Mrs. Smith met Prof. J. R. Doe, e.g. at noon. Then they left."
                           ) == ["Mr. and Mrs. Smith met Prof. J. R. Doe, e.g. at noon.",
                                 "Then they left."]
    assert split_sentences('He said "Stop." She stopped.\n\nnew paragraph') == \
        ['He said "Stop."', "She stopped.", "new paragraph"]
    assert split_sentences("Pi is 3.14 and e is 2.71. Done") == ["Pi is 3.14 and e is 2.71.", "Done"]


def test_exception_before_commit_leaves_no_dataset(tmp_path, monkeypatch):
    inp = write_jsonl(tmp_path / "in.jsonl", make_texts(50))
    prefix = str(tmp_path / "out")

    def fail_halfway(self):  # simulate dying between moving the .bin files and the .idx files
        for final in self._finals:
            os.replace(self.staged_prefix_of(final) + ".bin", final + ".bin")
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.StagedOutputs, "commit", fail_halfway)
    with pytest.raises(KeyboardInterrupt):
        _run(inp, prefix, json_keys=["text"])
    assert not os.path.exists(prefix + "_text_document.idx")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    assert not IndexedDataset.exists(prefix + "_text_document")
    assert [f for f in os.listdir(tmp_path) if "staging" in f] == []


def test_sigkill_mid_run_leaves_no_dataset(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", make_texts(30000, seed=4))
    prefix = str(tmp_path / "out")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input", inp,
           "--output-prefix", prefix, "--tokenizer-type", "ByteTokenizer", "--workers", "1",
           "--split-sentences", "--no-progress-bar"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    staging = None
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        found = [f for f in os.listdir(tmp_path) if ".staging-" in f]
        if found and os.listdir(tmp_path / found[0]):
            staging = found[0]
            time.sleep(0.3)  # let it write for a moment
            break
        time.sleep(0.05)
    assert staging is not None and proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = prefix + "_text_sentence"
    assert not os.path.exists(final + ".bin") and not os.path.exists(final + ".idx")
    # The next run cleans the dead run's staging area and completes.
    s = _run(inp, prefix, split_sentences=True, workers=2)
    assert s.documents == 30000 and os.path.exists(final + ".idx")
    assert [f for f in os.listdir(tmp_path) if ".staging-" in f] == []


def test_merge_datasets(tmp_path, capsys):
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from tools.merge_datasets import main

    a = write_jsonl(tmp_path / "a.jsonl", make_texts(30, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", make_texts(20, seed=2))
    ab = tmp_path / "ab.jsonl"
    ab.write_text(open(a).read() + open(b).read())
    for name in ("a", "b", "ab"):
        _run(str(tmp_path / f"{name}.jsonl"), str(tmp_path / name), append_eod=True)
    out = str(tmp_path / "merged")
    assert main(["--input", str(tmp_path / "a_text_document"), str(tmp_path / "b_text_document"),
                 "--output-prefix", out]) == 0
    assert _files(out) == _files(str(tmp_path / "ab_text_document"))
    assert len(IndexedDataset(out)) == 50
    # missing prefix: a clear error naming the files, nothing written
    assert main(["--input", str(tmp_path / "a_text_document"), str(tmp_path / "zzz"),
                 "--output-prefix", str(tmp_path / "m2")]) == 2  # checked with every path flag, before any work
    err = capsys.readouterr().err
    assert "zzz.bin" in err and "zzz.idx" in err
    assert not os.path.exists(str(tmp_path / "m2.idx"))
    # dtype mismatch: a NullTokenizer with a large vocabulary writes int32 tokens
    n = tmp_path / "n.jsonl"
    n.write_text(json.dumps({"text": "1 2 70000"}) + "\n")
    _run(str(n), str(tmp_path / "n"), tokenizer=TokenizerConfig("NullTokenizer", vocab_size=100000))
    assert main(["--input", str(tmp_path / "a_text_document"), str(tmp_path / "n_text_document"),
                 "--output-prefix", str(tmp_path / "m3")]) == 1
    err = capsys.readouterr().err
    assert "different token dtypes" in err and "uint16" in err and "int32" in err
    assert not os.path.exists(str(tmp_path / "m3.bin"))
