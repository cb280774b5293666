"""Every tokenizer type: JSONL -> preprocess -> indexed dataset -> detokenize gives the text back."""

import argparse

import numpy as np
import pytest

from megatron.data.preprocess import PreprocessConfig, preprocess
from megatron.data.tokenizers import (
    MissingSpecialTokenError, TokenizerConfig, add_tokenizer_args, build_tokenizer,
    tokenizer_config_from_args)
from tests.data.conftest import make_texts, write_jsonl


def _configs(f):
    return {
        "SentencePieceTokenizer": TokenizerConfig("SentencePieceTokenizer",
                                                  tokenizer_model=f["sp_model"]),
        "GPT2BPETokenizer": TokenizerConfig("GPT2BPETokenizer", vocab_file=f["gpt2_vocab"],
                                            merge_file=f["gpt2_merges"]),
        "BertWordPieceLowerCase": TokenizerConfig("BertWordPieceLowerCase",
                                                  vocab_file=f["bert_lower_vocab"]),
        "BertWordPieceCase": TokenizerConfig("BertWordPieceCase", vocab_file=f["bert_cased_vocab"]),
        "HuggingFaceTokenizer": TokenizerConfig("HuggingFaceTokenizer", tokenizer_model=f["hf_dir"]),
        "NullTokenizer": TokenizerConfig("NullTokenizer", vocab_size=1000),
        "ByteTokenizer": TokenizerConfig("ByteTokenizer"),
    }


def _texts_for(name):
    if name == "NullTokenizer":
        rng = np.random.default_rng(0)
        return [" ".join(map(str, rng.integers(0, 1000, rng.integers(3, 30)))) for _ in range(40)]
    if name == "BertWordPieceLowerCase":  # WordPiece is lossy for case and punctuation spacing
        return make_texts(40, seed=5, punctuation=False, cased=False)
    if name == "BertWordPieceCase":
        return make_texts(40, seed=5, punctuation=False, cased=True)
    texts = make_texts(40, seed=5)
    if name in ("ByteTokenizer", "GPT2BPETokenizer", "HuggingFaceTokenizer"):
        texts[3] = "Unicode survives: café, naïve, ☃ and  double  spaces\nand a newline."
    return texts


ALL_TYPES = ["SentencePieceTokenizer", "GPT2BPETokenizer", "BertWordPieceLowerCase",
             "BertWordPieceCase", "HuggingFaceTokenizer", "NullTokenizer", "ByteTokenizer"]


@pytest.mark.parametrize("name", ALL_TYPES)
def test_roundtrip_through_indexed_dataset(name, tok_files, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    cfg = _configs(tok_files)[name]
    texts = _texts_for(name)
    inp = write_jsonl(tmp_path / "in.jsonl", texts)
    summary = preprocess(PreprocessConfig(input=inp, output_prefix=str(tmp_path / "out"),
                                          tokenizer=cfg, append_eod=True, progress=False))
    assert summary.documents == len(texts) and not summary.skipped
    tok = build_tokenizer(cfg)
    ds = IndexedDataset(summary.outputs["text"])
    assert len(ds) == len(texts)
    for i, text in enumerate(texts):
        ids = ds[i].tolist()
        assert ids[-1] == tok.eod
        assert tok.detokenize(ids[:-1]) == text
    assert summary.tokens == sum(len(ds[i]) for i in range(len(ds)))


def test_special_tokens_are_uniform(tok_files):
    cfgs = _configs(tok_files)
    for name, cfg in cfgs.items():
        tok = build_tokenizer(cfg)
        assert isinstance(tok.eod, int) and 0 <= tok.eod < tok.vocab_size, name
        assert tok.special_tokens["eod"] == tok.eod
        for role, idx in tok.special_tokens.items():
            assert 0 <= idx < tok.vocab_size, (name, role)
    bert = build_tokenizer(cfgs["BertWordPieceLowerCase"])
    roles = {r: getattr(bert, r) for r in ("cls", "sep", "mask", "pad", "unk")}
    assert len(set(roles.values())) == 5
    assert bert.inv_vocab[bert.cls] == "[CLS]" and bert.inv_vocab[bert.mask] == "[MASK]"
    sp = build_tokenizer(cfgs["SentencePieceTokenizer"])
    assert [sp.inv_vocab[getattr(sp, r)] for r in ("eod", "cls", "sep", "mask", "pad")] == \
        ["<eod>", "<cls>", "<sep>", "<mask>", "<pad>"]
    # Control symbols never come out of ordinary text.
    assert sp.eod not in sp.tokenize("<eod> <cls> text")
    gpt2 = build_tokenizer(cfgs["GPT2BPETokenizer"])
    with pytest.raises(MissingSpecialTokenError, match="mask"):
        gpt2.mask
    assert getattr(gpt2, "pad", None) is None
    hf = build_tokenizer(cfgs["HuggingFaceTokenizer"])
    assert hf.inv_vocab[hf.eos] == "</s>" and hf.eod == hf.eos and hf.inv_vocab[hf.pad] == "<pad>"


def test_missing_file_names_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match="--tokenizer-model"):
        TokenizerConfig("SentencePieceTokenizer", tokenizer_model=str(tmp_path / "nope.model"))
    with pytest.raises(FileNotFoundError, match="--merge-file"):
        (tmp_path / "v.json").write_text("{}")
        TokenizerConfig("GPT2BPETokenizer", vocab_file=str(tmp_path / "v.json"),
                        merge_file=str(tmp_path / "m.txt"))
    with pytest.raises(ValueError, match="--vocab-file"):
        TokenizerConfig("BertWordPieceCase")
    with pytest.raises(ValueError, match="not one of"):
        TokenizerConfig("WhateverTokenizer")


def test_args_roundtrip(tok_files):
    parser = add_tokenizer_args(argparse.ArgumentParser())
    args = parser.parse_args(["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file",
                              tok_files["gpt2_vocab"], "--merge-file", tok_files["gpt2_merges"]])
    cfg = tokenizer_config_from_args(args)
    assert cfg.tokenizer_type == "GPT2BPETokenizer" and cfg.merge_file == tok_files["gpt2_merges"]
    assert build_tokenizer(cfg).tokenize("the cat") == \
        build_tokenizer(_configs(tok_files)["GPT2BPETokenizer"]).tokenize("the cat")


def test_train_tokenizer_cli(tmp_path):
    from tools.train_tokenizer import main

    texts = make_texts(100, seed=9)
    inp = write_jsonl(tmp_path / "c.jsonl", texts, key="body")
    txt = tmp_path / "c.txt"
    txt.write_text("\n".join(make_texts(50, seed=10)))
    prefix = str(tmp_path / "tok" / "uni")
    assert main(["--input", inp, str(txt), "--json-keys", "body", "--model-prefix", prefix,
                 "--vocab-size", "340", "--model-type", "unigram", "--num-threads", "1",
                 "--special-tokens", "<eod>,<mask>,<extra>"]) == 0
    tok = build_tokenizer(TokenizerConfig("SentencePieceTokenizer", tokenizer_model=prefix + ".model"))
    # cls and sep were not among the special tokens: appended after the model's 340 pieces.
    assert tok.vocab_size == 342 and {tok.cls, tok.sep} == {340, 341}
    assert tok.detokenize([tok.cls]) == "<cls>"
    assert tok.inv_vocab[tok.eod] == "<eod>" and tok.inv_vocab[tok.mask] == "<mask>"
    assert "<extra>" in tok.vocab
    assert all(tok.detokenize(tok.tokenize(t)) == t for t in texts[:20])
    # A vocabulary that cannot fit is an error, not a crash.
    assert main(["--input", inp, "--json-keys", "body", "--model-prefix", prefix,
                 "--vocab-size", "100"]) == 1
