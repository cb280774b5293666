"""BERT's padding mask with a tokenizer whose pad id is 1 (issue 10, section 5): megatron-core's
dataset marks padding with the pad id, so comparing its mask against 1 kept every padding
position. The mask the model gets must be 1 exactly at the real tokens."""

from __future__ import annotations

import json
import random

import numpy as np
import torch

from megatron.training.arguments import parse_pretrain_config

WORDS = "the cat dog sat on mat ran far away house tree river blue green small".split()


def test_bert_padding_mask_with_pad_id_1(tmp_path):
    from megatron.data.preprocess import PreprocessConfig, preprocess
    from megatron.data.tokenizers import TokenizerConfig, build_tokenizer
    from megatron.training import bert

    # A WordPiece vocabulary with [PAD] at id 1 (and a real token, [UNK], at id 0).
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "."]) + "\n")
    rng = random.Random(0)
    docs = [" ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6))).capitalize() + "." for _ in range(3))
            for _ in range(40)]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok_cfg = TokenizerConfig("BertWordPieceLowerCase", vocab_file=str(vocab))
    out = preprocess(PreprocessConfig(input=str(tmp_path / "c.jsonl"), output_prefix=str(tmp_path / "c"),
                                      tokenizer=tok_cfg, split_sentences=True, progress=False))
    cfg = parse_pretrain_config(
        ["--num-layers", "2", "--hidden-size", "16", "--num-attention-heads", "2", "--seq-length", "32",
         "--micro-batch-size", "4", "--global-batch-size", "4", "--train-iters", "4", "--lr", "1e-3", "--cpu",
         "--data-path", out.outputs["text"], "--split", "100,0,0", "--tokenizer-type", "BertWordPieceLowerCase",
         "--vocab-file", str(vocab), "--data-cache-path", str(tmp_path / "cache")],
        model_type="bert", world_size=1)
    tokenizer = build_tokenizer(cfg.tokenizer)
    assert tokenizer.pad == 1 and tokenizer.unk == 0
    train, _, _ = bert.build_datasets(cfg, tokenizer, [16, 0, 0])

    seen = {}

    class Model(torch.nn.Module):
        encoder = None

        def forward(self, text, padding_mask, tokentype_ids=None, lm_labels=None):
            seen["mask"] = padding_mask
            return torch.zeros(text.shape, dtype=torch.float32), torch.zeros(text.shape[0], 2)

    items = [train[i] for i in range(16)]
    batch = {k: torch.as_tensor(np.stack([it[k] for it in items])) for k in ("text", "types", "labels", "is_random",
                                                                             "padding_mask", "loss_mask")}
    bert.forward_step(batch, Model(), None)
    mask = seen["mask"]
    padded = 0
    for row, item in enumerate(items):
        # Real tokens end at the last [SEP]; everything after it is padding.
        end = int(np.nonzero(item["text"] == tokenizer.sep)[0].max()) + 1
        expected = torch.zeros(32, dtype=torch.long)
        expected[:end] = 1
        assert torch.equal(mask[row].long(), expected), (row, mask[row], item["text"])
        padded += 32 - end
    assert padded > 0  # the samples really are padded
