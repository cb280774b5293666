"""A write that fails part-way leaves nothing behind (issue 26): the trainer's checkpoint save
(any error, not only a full disk), preprocessing, merging datasets and tokenizer training. The
failure is injected with monkeypatch after real output was staged; the evaluation exporters are
covered in tests/evaluation/test_failed_exports.py."""

import contextlib
import errno
import functools
import io
import json
import os

import pytest

from tests.training.inprocess import TINY, train, trainer_runtime  # noqa: F401 (fixture)


def _tree(root):
    return sorted(os.path.relpath(os.path.join(dp, n), root) for dp, ds, fs in os.walk(root) for n in ds + fs)


def _injected():
    return OSError(errno.EIO, "injected write failure")


@pytest.mark.usefixtures("trainer_runtime")
def test_failed_checkpoint_save_leaves_no_partial_directory(tmp_path, monkeypatch):
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    write_item = filesystem_async._write_item

    @functools.wraps(write_item)  # megatron-core inspects its signature
    def fails_at_4(*args, **kwargs):  # runs in megatron-core's writer
        stream = args[1]
        if "iter_0000004" in getattr(stream, "name", ""):
            raise _injected()
        return write_item(*args, **kwargs)

    monkeypatch.setattr(filesystem_async, "_write_item", fails_at_4)
    ck = str(tmp_path / "ck")
    with pytest.raises(BaseException, match="injected write failure"):  # torch wraps it in its CheckpointException
        train(TINY + ["--train-iters", "4", "--save", ck, "--save-interval", "2"])
    monkeypatch.undo()
    # Iteration 2 stays the loadable checkpoint; nothing of the failed save of iteration 4.
    assert sorted(os.listdir(ck)) == ["iter_0000002", "latest_checkpointed_iteration.txt"]


def _corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " * 8}) + "\n" for i in range(30)))
    return str(path)


def _finalize_then_fail(monkeypatch, seen):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    finalize = IndexedDatasetBuilder.finalize

    def fails(self, idx_path):
        finalize(self, idx_path)  # the .bin and .idx are written (staged)
        seen.append(sorted(os.listdir(os.path.dirname(idx_path))))
        raise _injected()

    monkeypatch.setattr(IndexedDatasetBuilder, "finalize", fails)


def test_failed_preprocessing_and_merge_leave_nothing(tmp_path, monkeypatch):
    from tools.merge_datasets import main as merge_main
    from tools.preprocess_data import main as preprocess_main

    corpus = _corpus(tmp_path)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet, contextlib.redirect_stderr(io.StringIO()):
        assert preprocess_main(["--input", corpus, "--output-prefix", str(tmp_path / "a"), "--tokenizer-type",
                                "ByteTokenizer", "--no-progress-bar"]) == 0
    before = _tree(tmp_path)
    seen = []
    with monkeypatch.context() as m:
        _finalize_then_fail(m, seen)
        for run in (lambda: preprocess_main(["--input", corpus, "--output-prefix", str(tmp_path / "new" / "sub" / "b"),
                                             "--tokenizer-type", "ByteTokenizer", "--no-progress-bar"]),
                    lambda: merge_main(["--input", str(tmp_path / "a_text_document"), "--output-prefix",
                                        str(tmp_path / "new" / "merged")])):
            with pytest.raises(OSError, match="injected"), contextlib.redirect_stderr(io.StringIO()):
                run()
            assert _tree(tmp_path) == before
    assert len(seen) == 2 and all(any(n.endswith(".idx") for n in names) for names in seen), seen


def test_failed_tokenizer_training_leaves_nothing(tmp_path, monkeypatch):
    import sentencepiece as spm

    from tools.train_tokenizer import main as tokenizer_main

    corpus = _corpus(tmp_path)
    before = _tree(tmp_path)

    def writes_then_fails(model_prefix, **kwargs):
        for ext in (".model", ".vocab"):
            with open(model_prefix + ext, "w") as f:
                f.write("partial")
        raise RuntimeError("injected training failure")

    monkeypatch.setattr(spm.SentencePieceTrainer, "train", writes_then_fails)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = tokenizer_main(["--input", corpus, "--model-prefix", str(tmp_path / "new" / "tok" / "spm"),
                               "--vocab-size", "300", "--num-threads", "1"])
    assert code == 1 and "SentencePiece training failed: injected training failure" in err.getvalue()
    assert _tree(tmp_path) == before
