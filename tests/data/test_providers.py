"""GPT/BERT dataset providers and the resumable loader."""

import argparse

import numpy as np
import pytest
import torch

from megatron.data.config import DataConfig, add_data_args, data_config_from_args, parse_blend
from megatron.data.loader import build_data_loader
from megatron.data.preprocess import PreprocessConfig, preprocess
from megatron.data.providers import (
    SAMPLE_ID_SPLIT_STRIDE, DataError, build_bert_datasets, build_gpt_datasets)
from megatron.data.tokenizers import ByteTokenizer, TokenizerConfig, build_tokenizer
from tests.data.conftest import make_texts, write_jsonl


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpora")
    out = {}
    for name, seed, n in (("a", 1, 300), ("b", 2, 200)):
        inp = write_jsonl(d / f"{name}.jsonl", make_texts(n, seed=seed))
        s = preprocess(PreprocessConfig(input=inp, output_prefix=str(d / name),
                                        tokenizer=TokenizerConfig("ByteTokenizer"),
                                        append_eod=True, progress=False))
        out[name] = s.outputs["text"]
    out["dir"] = d
    return out


def _gpt(cfg, sizes, seq=32, seed=7):
    return build_gpt_datasets(cfg, ByteTokenizer(), seq, sizes, seed)


def test_blend_follows_weights_and_split(corpora):
    cfg = DataConfig(data_path=["0.25", corpora["a"], "0.75", corpora["b"]], split="80,15,5",
                     data_cache_path=str(corpora["dir"] / "cache"))
    train, valid, test = _gpt(cfg, [2000, 200, 50])
    assert len(train) == 2000 and len(valid) == 200 and len(test) >= 50
    ids = np.array([train[i]["dataset_id"] for i in range(len(train))])
    assert abs((ids == 0).mean() - 0.25) < 0.02
    item = train[0]
    assert item["tokens"].shape == (32,) and torch.equal(item["tokens"][1:], item["labels"][:-1])
    # sample ids: the dataset index plus a per-split offset, unique across splits
    all_ids = [int(ds[i]["sample_id"]) for ds in (train, valid, test) for i in range(len(ds))]
    assert len(set(all_ids)) == len(all_ids)
    assert int(valid[5]["sample_id"]) == SAMPLE_ID_SPLIT_STRIDE + 5
    # same seed, same samples; another seed, another order
    again = _gpt(cfg, [2000, 200, 50])[0]
    assert all(torch.equal(train[i]["tokens"], again[i]["tokens"]) for i in range(0, 2000, 97))
    other = build_gpt_datasets(cfg, ByteTokenizer(), 32, [2000, 200, 50], 8)[0]
    assert not all(torch.equal(train[i]["tokens"], other[i]["tokens"]) for i in range(20))


def test_split_keeps_documents_apart(corpora):
    """Train and valid samples come from disjoint documents of the single prefix."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    cfg = DataConfig(data_path=[corpora["a"]], split="50,50,0")
    train, valid, test = _gpt(cfg, [100, 100, 0], seq=64)
    assert test is None
    ds = IndexedDataset(corpora["a"])
    eod = ByteTokenizer().eod
    first_half = b"|".join(bytes(ds[i][:-1].tolist()) for i in range(150))  # [:-1]: drop eod
    second_half = b"|".join(bytes(ds[i][:-1].tolist()) for i in range(150, 300))
    checked = 0
    for split_ds, inside, outside in ((train, first_half, second_half),
                                      (valid, second_half, first_half)):
        for i in range(100):
            tokens = split_ds[i]["tokens"].tolist()
            piece = bytes(tokens[:tokens.index(eod)] if eod in tokens else tokens)
            if len(piece) >= 40:
                assert piece in inside and piece not in outside
                checked += 1
    assert checked > 50


def test_per_split_paths_and_mock(corpora):
    cfg = DataConfig(train_data_path=[corpora["a"]], valid_data_path=[corpora["b"]])
    train, valid, test = _gpt(cfg, [64, 16, 0])
    assert len(train) >= 64 and len(valid) >= 16 and test is None
    mock = _gpt(DataConfig(mock_data=True), [64, 16, 16])
    assert all(d is not None for d in mock) and mock[0][3]["tokens"].shape == (32,)
    assert int(mock[2][0]["sample_id"]) == 2 * SAMPLE_ID_SPLIT_STRIDE


def test_clear_errors(corpora):
    with pytest.raises(DataError, match=r"missing .*nope\.bin.*nope\.idx"):
        _gpt(DataConfig(data_path=[str(corpora["dir"] / "nope")]), [10, 1, 1])
    with pytest.raises(DataError, match=r"valid split .* is empty: --split 999,1,0.0001 gives .* \[300, 300\) of 300"):
        _gpt(DataConfig(data_path=[corpora["a"]], split="999,1,0.0001"), [10, 1, 1])
    with pytest.raises(DataError, match=r"valid split .* tokens, fewer than one sample"):
        _gpt(DataConfig(data_path=[corpora["a"]], split="298,1,1"), [10, 1, 1], seq=512)
    with pytest.raises(ValueError, match="only one of"):
        DataConfig(data_path=[corpora["a"]], mock_data=True)
    with pytest.raises(ValueError, match="weight/prefix pairs"):
        parse_blend(["0.3", "a", "0.7"])


def test_data_args():
    parser = add_data_args(argparse.ArgumentParser())
    args = parser.parse_args(["--data-path", "0.3", "x", "0.7", "y", "--split", "98,2,0",
                              "--bert-no-binary-head", "--mask-prob", "0.2"])
    cfg = data_config_from_args(args)
    assert cfg.blend == (["x", "y"], [0.3, 0.7]) and cfg.split == "98,2,0"
    assert cfg.bert_binary_head is False and cfg.mask_prob == 0.2


def test_loader_is_resumable_and_sharded(corpora):
    train = _gpt(DataConfig(data_path=[corpora["a"]], split="1,0,0"), [200, 0, 0])[0]
    mbs, dp = 2, 3
    full = {r: list(build_data_loader(train, mbs, 0, r, dp)) for r in range(dp)}
    assert len(full[0]) == len(train) // (mbs * dp)
    # each global micro-batch is consecutive samples, split across ranks in rank order
    step3 = torch.cat([full[r][3]["sample_id"] for r in range(dp)])
    assert step3.tolist() == list(range(3 * mbs * dp, 4 * mbs * dp))
    assert full[1][0]["tokens"].shape == (mbs, 32) and full[1][0]["sample_id"].dtype == torch.int64
    # resuming after 5 global micro-batches yields exactly the remaining batches
    resumed = list(build_data_loader(train, mbs, 5 * mbs * dp, 1, dp))
    assert len(resumed) == len(full[1]) - 5
    for a, b in zip(resumed, full[1][5:]):
        assert torch.equal(a["sample_id"], b["sample_id"]) and torch.equal(a["tokens"], b["tokens"])
    with pytest.raises(ValueError, match="nothing left"):
        build_data_loader(train, mbs, len(train), 0, dp)


def test_gpt_under_gloo(corpora, tmp_path):
    """With torch.distributed initialized (gloo, one rank) the builder takes its barrier path."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        cfg = DataConfig(data_path=[corpora["b"]], split="9,1,0",
                         data_cache_path=str(tmp_path / "cache"))
        train, valid, _ = _gpt(cfg, [50, 5, 0])
        assert len(train) >= 50 and len(valid) >= 5
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def bert_corpus(tok_files, tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    texts = make_texts(400, seed=11, sentences=(2, 6))
    inp = write_jsonl(d / "b.jsonl", texts)
    tok_cfg = TokenizerConfig("BertWordPieceLowerCase", vocab_file=tok_files["bert_lower_vocab"])
    s = preprocess(PreprocessConfig(input=inp, output_prefix=str(d / "b"), tokenizer=tok_cfg,
                                    split_sentences=True, progress=False))
    return s.outputs["text"], build_tokenizer(tok_cfg), d


@pytest.mark.parametrize("mask_prob", [0.15, 0.3])
def test_bert_masking_ratios(bert_corpus, mask_prob):
    prefix, tok, d = bert_corpus
    cfg = DataConfig(data_path=[prefix], split="90,10,0", mask_prob=mask_prob,
                     short_seq_prob=0.0, masking_max_ngram=1, masking_do_full_word=False,
                     data_cache_path=str(d / f"cache{mask_prob}"))
    train, valid, test = build_bert_datasets(cfg, tok, 64, [300, 20, 0], seed=3)
    assert test is None and len(train) >= 300
    masked = mask_tok = kept = real = 0
    is_random = []
    for i in range(len(train)):
        s = train[i]
        text, labels, lm = s["text"], s["labels"], s["loss_mask"].astype(bool)
        n_real = int((s["padding_mask"] == 1).sum()) - 3  # minus cls, sep, sep
        real += n_real
        masked += int(lm.sum())
        mask_tok += int((text[lm] == tok.mask).sum())
        kept += int((text[lm] == labels[lm]).sum())
        is_random.append(s["is_random"])
        assert set(np.unique(s["types"][: n_real + 3])) <= {0, 1}
        assert int(s["sample_id"]) == i
    assert abs(masked / real - mask_prob) < 0.03
    assert abs(mask_tok / masked - 0.8) < 0.05
    assert abs(kept / masked - 0.1) < 0.04  # 10% kept (+ random replacements that hit the same id)
    assert 0.35 < np.mean(is_random) < 0.65  # sentence-order target is balanced


def test_bert_needs_sentence_split_corpus(corpora, bert_corpus):
    _, tok, _ = bert_corpus
    # a document-level corpus has one "sentence" per document: no sample can have two segments
    from megatron.data.tokenizers import BertWordPieceTokenizer

    with pytest.raises(DataError, match="--split-sentences"):
        build_bert_datasets(DataConfig(data_path=[corpora["a"]], split="1,0,0"), tok, 64,
                            [10, 0, 0], seed=1)
    with pytest.raises(DataError, match="mock"):
        build_bert_datasets(DataConfig(mock_data=True), tok, 64, [10, 0, 0], seed=1)
    assert isinstance(tok, BertWordPieceTokenizer)
