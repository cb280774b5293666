"""GPT builds an attention mask only with document masks: a plain causal mask is applied by the
attention itself, so a ``[1, s, s]`` mask per sample would be built, collated and copied to the
device every micro-batch for nothing."""

from functools import partial

import torch

from megatron.data.config import DataConfig
from megatron.data.loader import build_data_loader
from megatron.data.providers import build_gpt_datasets
from megatron.data.tokenizers import ByteTokenizer
from megatron.training.gpt import forward_step


def _first_batch(**data_flags):
    train = build_gpt_datasets(DataConfig(mock_data=True, **data_flags), ByteTokenizer(), 16, [8, None, None], 3)[0]
    return next(iter(build_data_loader(train, 4, 0, 0, 1)))


def test_no_mask_without_document_masks():
    batch = _first_batch()
    assert "attention_mask" not in batch
    assert set(batch) >= {"tokens", "labels", "loss_mask", "position_ids", "sample_id"}


def test_document_masks_still_built():
    batch = _first_batch(reset_attention_mask=True, reset_position_ids=True)
    assert batch["attention_mask"].shape == (4, 1, 16, 16) and batch["attention_mask"].dtype == torch.bool


def test_forward_step_passes_no_mask_tensor():
    seen = {}

    def model(tokens, position_ids, attention_mask, labels=None, **kw):
        seen["mask"] = attention_mask
        return torch.zeros(tokens.shape)

    batch = _first_batch()
    forward_step(batch, model, None)
    assert seen["mask"] is None
    doc = _first_batch(reset_attention_mask=True)
    partial(forward_step, use_attention_mask=True)(doc, model, None)
    assert seen["mask"] is doc["attention_mask"]
