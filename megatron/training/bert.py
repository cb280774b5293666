"""BERT pretraining: the model, datasets and loss that :class:`~megatron.training.trainer.Trainer`
needs (``pretrain_bert.py`` only wires these together).

* Model: megatron-core's ``BertModel`` (post-norm encoder, LM head tied to the word embeddings, a
  pooler + binary sentence-order head unless ``--bert-no-binary-head``), with random-LTD layers
  when ``--random-ltd`` is on.
* Data: megatron-core's ``BERTMaskedWordPieceDataset`` over a ``--split-sentences`` corpus
  (:func:`megatron.data.providers.build_bert_datasets`), or with ``--mock-data`` the synthetic
  :class:`MockBERTDataset` below (megatron-core has no mock BERT dataset).
* Loss: masked-LM cross-entropy averaged over the masked tokens, plus the sentence-order
  cross-entropy of the binary head. Reported as ``{"lm loss", "sop loss", "total loss"}``; the
  trainer logs (and checks for NaN) the FIRST key, ``lm loss``, so validation perplexity is the
  masked-LM perplexity. The gradient is that of ``lm + sop``.

How random-LTD reaches the encoder: the trainer builds the index plan per micro-batch from the
batch's ``sample_id`` (set by the dataset, independent of the parallel layout) and hands it to
:func:`forward_step`; ``BertModel.forward`` cannot pass extra arguments to its encoder, so the plan
is attached to the encoder call with :func:`megatron.ltd.layer.carry_plan` for this one model call.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from megatron.ltd.layer import carry_plan
from megatron.training.arguments import ConfigError
from megatron.training.trainer import TaskSpec


class BertConfigError(ConfigError):
    """A flag that BERT pretraining cannot honour."""


def check_bert_config(cfg) -> None:
    """BERT-specific flag checks (the generic ones are in :mod:`megatron.training.arguments`)."""
    if cfg.model.untie_embeddings_and_output_weights:
        raise BertConfigError("--untie-embeddings-and-output-weights is not supported for BERT: its LM head is tied "
                              "to the word embeddings")
    if cfg.model.swiglu:
        raise BertConfigError("--swiglu is not supported for BERT (megatron-core's BERT layer is a GELU MLP)")


# ---------------------------------------------------------------------------------------- model
def _num_tokentypes(cfg) -> int:
    # Segment embeddings only matter with two segments, i.e. with the sentence-order head.
    return 2 if cfg.data.bert_binary_head else 0


def build_model(cfg, vocab_size, tconfig, pre_process, post_process, vp_stage, ltd_layers):
    """Our BERT for this pipeline stage (random-LTD layers when ``ltd_layers``)."""
    from megatron.models.builders import build_bert_model

    if tconfig.sequence_parallel:
        raise BertConfigError("--sequence-parallel is not supported for BERT (its LM-head norm needs TransformerEngine/apex)")
    m = cfg.model
    return build_bert_model(
        tconfig,
        vocab_size=vocab_size,
        max_sequence_length=m.max_position_embeddings,
        num_tokentypes=_num_tokentypes(cfg),
        add_binary_head=cfg.data.bert_binary_head,
        position_embedding_type=m.position_embedding_type,
        ltd_layers=ltd_layers,
        pre_process=pre_process,
        post_process=post_process,
        vp_stage=vp_stage,
    )


# ---------------------------------------------------------------------------------------- data
class MockBERTDataset(torch.utils.data.Dataset):
    """Synthetic masked-LM samples with the items of megatron-core's BERT dataset, for runs
    without a corpus.

    Each sample is a run of consecutive token ids (wrapping around the vocabulary) cut into two
    segments A and B, swapped with probability 1/2 when there is a binary head (``is_random``);
    15 % of the content tokens (``mask_prob``) are masked 80/10/10 ([MASK] / random / kept). Both
    targets are learnable (a masked id is its neighbour + 1; a swapped pair does not continue),
    so a tiny model's loss falls within a few steps. Ids 0-3 are [PAD], [CLS], [SEP], [MASK].
    Samples depend only on (seed, index).
    """

    PAD, CLS, SEP, MASK = 0, 1, 2, 3
    FIRST = 4

    def __init__(self, num_samples: int, seq_length: int, vocab_size: int, seed: int, mask_prob: float = 0.15,
                 binary_head: bool = True, short_seq_prob: float = 0.1) -> None:
        if vocab_size <= self.FIRST + 1:
            raise ValueError(f"MockBERTDataset needs a vocabulary of more than {self.FIRST + 1} ids, got {vocab_size}")
        if seq_length < 5:
            raise ValueError(f"MockBERTDataset needs --seq-length >= 5, got {seq_length}")
        self.num_samples, self.seq_length, self.vocab_size = int(num_samples), int(seq_length), int(vocab_size)
        self.seed, self.mask_prob, self.binary_head, self.short_seq_prob = int(seed), mask_prob, binary_head, short_seq_prob

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, idx: int) -> Dict[str, np.ndarray]:
        rng = np.random.RandomState((self.seed * 1_000_003 + int(idx)) % 2**32)
        s, n_ids = self.seq_length, self.vocab_size - self.FIRST
        specials = 3 if self.binary_head else 2
        longest = s - specials
        n = longest if rng.random_sample() >= self.short_seq_prob else int(rng.randint(2, longest + 1))
        content = self.FIRST + (rng.randint(n_ids) + np.arange(n)) % n_ids
        if self.binary_head:
            cut = int(rng.randint(1, n))
            a, b = content[:cut], content[cut:]
            swapped = bool(rng.random_sample() < 0.5)
            if swapped:
                a, b = b, a
            tokens = np.concatenate([[self.CLS], a, [self.SEP], b, [self.SEP]])
            types = np.concatenate([np.zeros(len(a) + 2), np.ones(len(b) + 1)])
            candidates = np.concatenate([np.arange(1, 1 + len(a)), np.arange(2 + len(a), 2 + len(a) + len(b))])
        else:
            swapped = False
            tokens = np.concatenate([[self.CLS], content, [self.SEP]])
            types = np.zeros(len(tokens))
            candidates = np.arange(1, 1 + n)
        n_mask = max(1, int(round(self.mask_prob * n)))
        positions = np.sort(rng.choice(candidates, size=n_mask, replace=False))
        labels = np.full(s, -1, dtype=np.int64)
        labels[positions] = tokens[positions]
        action = rng.random_sample(n_mask)
        tokens = tokens.astype(np.int64)
        tokens[positions[action < 0.8]] = self.MASK
        randomized = positions[(action >= 0.8) & (action < 0.9)]
        tokens[randomized] = self.FIRST + rng.randint(n_ids, size=len(randomized))
        real = len(tokens)
        pad = s - real
        loss_mask = np.zeros(s, dtype=np.int64)
        loss_mask[positions] = 1
        return {
            "text": np.pad(tokens, (0, pad), constant_values=self.PAD),
            "types": np.pad(types.astype(np.int64), (0, pad)),
            "labels": labels,
            "is_random": int(swapped),
            "padding_mask": np.pad(np.ones(real, dtype=np.int64), (0, pad)),
            "loss_mask": loss_mask,
            "truncated": 0,
        }


def build_mock_datasets(cfg, tokenizer, num_samples: Sequence[int]) -> List[Optional[torch.utils.data.Dataset]]:
    from megatron.data.providers import SAMPLE_ID_SPLIT_STRIDE, SampleIdDataset

    out = []
    for split, n in enumerate(num_samples):
        if not n:
            out.append(None)
            continue
        ds = MockBERTDataset(n, cfg.model.seq_length, tokenizer.vocab_size, cfg.training.seed + split,
                             cfg.data.mask_prob, cfg.data.bert_binary_head, cfg.data.short_seq_prob)
        out.append(SampleIdDataset(ds, split * SAMPLE_ID_SPLIT_STRIDE))
    return out


def mark_padding_unambiguously(dataset) -> None:
    """Make megatron-core's BERT datasets inside ``dataset`` write -1 (megatron-core's own "no pad
    token" marker, which no token id equals) instead of the tokenizer's pad id into the padding
    positions of ``padding_mask`` and ``types``.

    megatron-core marks padding in ``padding_mask`` with the pad id and real tokens with 1, and
    then rewrites padded ``text`` to 0: with a tokenizer whose pad id is 1, nothing in the item
    tells padding from tokens any more. The marker value changes nothing else (padded text is
    written as 0 either way; the model never sees the marker).
    """
    stack = [dataset]
    while stack:
        ds = stack.pop()
        if hasattr(ds, "_pad_token_id"):
            ds._pad_token_id = -1
        stack.extend(getattr(ds, "datasets", None) or [])
        if getattr(ds, "dataset", None) is not None:
            stack.append(ds.dataset)


def build_datasets(cfg, tokenizer, num_samples):
    """[train, valid, test] datasets whose ``padding_mask`` is 1 exactly at the real tokens."""
    if cfg.data.mock_data:
        return build_mock_datasets(cfg, tokenizer, num_samples)
    from megatron.data.providers import build_bert_datasets

    built = build_bert_datasets(cfg.data, tokenizer, cfg.model.seq_length, num_samples, cfg.training.seed)
    for ds in built:
        mark_padding_unambiguously(ds)
    return built


# ---------------------------------------------------------------------------------------- step
def bert_loss(loss_mask: torch.Tensor, sop_labels: Optional[torch.Tensor], output):
    """Masked-LM loss (mean over the masked tokens) + sentence-order loss (mean over samples).

    ``output`` is what ``BertModel.forward`` returns with ``lm_labels``: per-token LM losses
    ``[b, s]`` and the binary head's logits ``[b, 2]`` (None without a binary head)."""
    lm_per_token, binary_logits = output
    mask = loss_mask.float().reshape(-1)
    lm_loss = (lm_per_token.float().reshape(-1) * mask).sum() / mask.sum().clamp(min=1.0)
    if binary_logits is None or sop_labels is None:
        return lm_loss, {"lm loss": lm_loss.detach().clone()}
    sop_loss = F.cross_entropy(binary_logits.float().view(-1, 2), sop_labels.view(-1).long())
    total = lm_loss + sop_loss
    return total, {"lm loss": lm_loss.detach().clone(), "sop loss": sop_loss.detach().clone(),
                   "total loss": total.detach().clone()}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module"):
        model = model.module
    return model


def forward_step(batch, model, plan, binary_head: bool = True):
    """One BERT micro-batch; ``plan`` is the random-LTD index plan (or None) for this batch."""
    # 1 = real token; padding is 0 (mock data) or -1 (see mark_padding_unambiguously), never 1.
    keep = (batch["padding_mask"] == 1).long()
    types = (batch["types"] * keep).long() if binary_head else None
    core = _unwrap(model)
    with carry_plan(core.encoder, plan):
        output = model(batch["text"].long(), keep, tokentype_ids=types, lm_labels=batch["labels"].long())
    sop_labels = batch["is_random"] if binary_head else None
    return output, partial(bert_loss, batch["loss_mask"], sop_labels)


def bert_task(cfg) -> TaskSpec:
    check_bert_config(cfg)
    return TaskSpec(
        build_model=build_model,
        build_datasets=build_datasets,
        forward_step=partial(forward_step, binary_head=bool(cfg.data.bert_binary_head)),
    )
