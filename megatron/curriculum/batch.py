"""Sequence-length curricula applied to a GPT micro-batch before the forward.

``seqlen_truncate`` keeps the first ``L`` tokens of each sample; ``seqlen_reshape`` cuts each
sample into ``s // L`` rows of ``L`` (the tail that fills no row is dropped), so the step sees the
same tokens as more, shorter samples. Labels, loss mask and positions follow the tokens; a reshaped
row restarts its positions at 0 (it is trained as a sample of its own) and gets its own id,
``sample_id * s + row``, unique across the run, for random-LTD's index plan.
"""

from __future__ import annotations

from typing import Dict

import torch

__all__ = ["SEQUENCE_KEYS", "truncate_batch", "reshape_batch", "apply_seqlen"]

SEQUENCE_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def truncate_batch(batch: Dict[str, torch.Tensor], length: int) -> Dict[str, torch.Tensor]:
    out = dict(batch)
    for key in SEQUENCE_KEYS:
        if key in out:
            out[key] = out[key][:, :length].contiguous()
    if out.get("attention_mask") is not None:
        out["attention_mask"] = out["attention_mask"][..., :length, :length].contiguous()
    return out


def reshape_batch(batch: Dict[str, torch.Tensor], length: int) -> Dict[str, torch.Tensor]:
    tokens = batch["tokens"]
    b, s = tokens.shape
    rows = s // length
    out = dict(batch)
    for key in SEQUENCE_KEYS:
        if key in out:
            out[key] = out[key][:, :rows * length].reshape(b * rows, length).contiguous()
    if "position_ids" in out:
        out["position_ids"] = torch.arange(length, device=tokens.device, dtype=batch["position_ids"].dtype).expand(b * rows, length).contiguous()
    if "sample_id" in out:
        out["sample_id"] = (batch["sample_id"].view(b, 1) * s + torch.arange(rows, device=batch["sample_id"].device)).view(-1)
    if out.get("attention_mask") is not None:
        raise ValueError("seqlen_reshape does not support per-sample document masks (--reset-attention-mask)")
    return out


def apply_seqlen(batch: Dict[str, torch.Tensor], metric: str, length: int) -> Dict[str, torch.Tensor]:
    """The micro-batch the model sees at curriculum length ``length`` (unchanged at full length)."""
    if length >= batch["tokens"].shape[1]:
        return batch
    if metric == "seqlen_truncate":
        return truncate_batch(batch, length)
    if metric == "seqlen_reshape":
        return reshape_batch(batch, length)
    return batch
