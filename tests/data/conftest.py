"""Fixtures for the data tests: tiny corpora and tokenizer files built in the test session."""

import json
import os
import random
import warnings

import pytest

warnings.filterwarnings("ignore", message=".*Transformer Engine.*")

WORDS = ("the cat dog sat on mat ran far away house tree river blue green small large quick "
         "brown fox jumps over lazy model data token layer train drop keep sample").split()


def make_texts(n, seed=0, sentences=(2, 5), punctuation=True, cased=True):
    """``n`` documents of a few sentences of common words (ASCII, single spaces)."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        sents = []
        for _ in range(rng.randint(*sentences)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
            if cased:
                words[0] = words[0].capitalize()
            sents.append(" ".join(words) + ("." if punctuation else ""))
        texts.append(" ".join(sents))
    return texts


def write_jsonl(path, texts, key="text"):
    with open(path, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({key: t}) + "\n")
    return str(path)


@pytest.fixture(scope="session")
def tok_files(tmp_path_factory):
    """Tokenizer files for every type, trained on the tiny vocabulary above."""
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("tokfiles")
    texts = make_texts(200, seed=1) + [t.lower() for t in make_texts(50, seed=2)]
    # GPT-2 style BPE
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>"])
    os.makedirs(d / "gpt2", exist_ok=True)
    bpe.save_model(str(d / "gpt2"))
    # Hugging Face directory (tokenizer.json + special tokens map)
    os.makedirs(d / "hf", exist_ok=True)
    hf = ByteLevelBPETokenizer()
    hf.train_from_iterator(texts, vocab_size=400, special_tokens=["<s>", "</s>", "<pad>"])
    hf.save(str(d / "hf" / "tokenizer.json"))
    with open(d / "hf" / "special_tokens_map.json", "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "pad_token": "<pad>"}, f)
    # BERT WordPiece, lower-cased and cased
    files = {}
    for name, lower in (("bert_lower", True), ("bert_cased", False)):
        wp = BertWordPieceTokenizer(lowercase=lower)
        wp.train_from_iterator(texts, vocab_size=300, min_frequency=1)
        os.makedirs(d / name, exist_ok=True)
        files[name] = wp.save_model(str(d / name))[0]
    # SentencePiece
    from megatron.data.train_tokenizer import SentencePieceTrainConfig, train_sentencepiece

    corpus = write_jsonl(d / "sp_corpus.jsonl", texts)
    sp_model = train_sentencepiece(SentencePieceTrainConfig(
        inputs=[corpus], model_prefix=str(d / "sp" / "tiny"), vocab_size=340, num_threads=1))
    return {
        "gpt2_vocab": str(d / "gpt2" / "vocab.json"),
        "gpt2_merges": str(d / "gpt2" / "merges.txt"),
        "hf_dir": str(d / "hf"),
        "bert_lower_vocab": files["bert_lower"],
        "bert_cased_vocab": files["bert_cased"],
        "sp_model": sp_model,
    }
