"""The offline sample corpus and the one-call preparation for the main job."""

import json
import os

from megatron.data.sample_corpus import (
    CorpusConfig, clean_paragraphs, lambada_style_items, prepare_sample_data)


def test_clean_paragraphs_keeps_prose_only():
    doc = """Return the sum of the values along the given axis, skipping missing values entirely.

    >>> np.nansum([1, 2])
    3

    Parameters
    ----------
    a : array_like
        Input data.

    See :func:`numpy.sum` and ``np.add`` for the details of how the summation itself is done here."""
    import inspect

    paras = clean_paragraphs(inspect.cleandoc(doc), min_chars=40)
    assert paras == [
        "Return the sum of the values along the given axis, skipping missing values entirely.",
        "See numpy.sum and np.add for the details of how the summation itself is done here."]


def test_lambada_items_split_last_word():
    doc = ("The ship sailed on through the long and stormy night until at last the crew could "
           "see the distant lights of the harbour.")
    (item,) = lambada_style_items([doc], min_words=10)
    assert item["target"] == "harbour" and item["context"] + " harbour" == item["text"]
    assert lambada_style_items(["Too short to use."], min_words=10) == []


def test_prepare_sample_data_is_idempotent(tmp_path):
    corpus = CorpusConfig(max_bytes=150_000, packages=(), include_stdlib=True, valid_fraction=0.05,
                          test_fraction=0.05)
    paths = prepare_sample_data(str(tmp_path), vocab_size=400, corpus=corpus, workers=1,
                                verbose=False)
    train = [json.loads(l)["text"] for l in open(paths["train_jsonl"])]
    valid = [json.loads(l)["text"] for l in open(paths["valid_jsonl"])]
    assert sum(map(len, train)) > 100_000 and valid and not set(train) & set(valid)
    assert all(t.isascii() and len(t) >= 80 for t in train)
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.data.tokenizers import TokenizerConfig, build_tokenizer

    tok = build_tokenizer(TokenizerConfig(paths["tokenizer_type"],
                                          tokenizer_model=paths["tokenizer_model"]))
    ds = IndexedDataset(paths["valid_prefix"])
    assert len(ds) == len(valid) and tok.detokenize(ds[0][:-1]) == valid[0]
    for item in map(json.loads, open(paths["lambada_jsonl"])):
        assert item["text"] == item["context"] + " " + item["target"]
    stamps = {k: os.path.getmtime(v) for k, v in paths.items() if os.path.isfile(str(v))}
    again = prepare_sample_data(str(tmp_path), vocab_size=400, corpus=corpus, workers=1,
                                verbose=False)
    assert again == paths
    assert stamps == {k: os.path.getmtime(paths[k]) for k in stamps}  # nothing was redone
