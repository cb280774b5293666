"""An independent plain-PyTorch GPT with random-LTD, for loss-compares against the project.

Nothing here imports ``megatron.ltd`` (or any other project module): the model, the token
dropping, the learning-rate schedule and the optimizer step are written from the paper's
description (arXiv 2211.11586) and torch alone, so a bug in the project's path cannot hide in a
shared helper. Weights arrive in the GPT-2 layout (``transformers``' ``GPT2LMHeadModel`` names, as
``megatron.evaluation.hf_export.convert_state_dict`` writes them; ``Conv1D`` weights are
``[in, out]``), so this file needs no knowledge of megatron-core's fused QKV layout.

The model: pre-LN blocks, learned absolute positions, tied input/output embeddings, exact GELU,
``torch.nn.functional.scaled_dot_product_attention`` with ``is_causal``, no dropout.

Random-LTD (one dropping layer, one sample): take the rows ``idx`` (sorted) of the sample's hidden
states, run the whole block on those ``k`` tokens alone (so the causal mask is causal over kept
tokens in their original order), and write the results back at the same rows; every other row
passes through unchanged. Written batch-first with ``torch.gather`` / ``Tensor.scatter`` (no
in-place writes), autograd does the backward.
"""

from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F


class PlainGPT(torch.nn.Module):
    def __init__(self, weights: Mapping[str, torch.Tensor], num_heads: int, eps: float = 1e-5,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.num_heads = int(num_heads)
        self.eps = float(eps)
        self.num_layers = 1 + max(int(n.split(".")[2]) for n in weights if n.startswith("transformer.h."))
        # One flat ParameterDict keyed by the GPT-2 names ('.' is not allowed in keys: use '/').
        self.p = torch.nn.ParameterDict({
            name.replace(".", "/"): torch.nn.Parameter(t.detach().to(dtype).clone())
            for name, t in weights.items() if name != "lm_head.weight"  # tied to the input embedding
        })

    def w(self, name: str) -> torch.Tensor:
        return self.p[name.replace(".", "/")]

    def named_weights(self) -> Dict[str, torch.Tensor]:
        """The parameters under their GPT-2 names (for comparing with an exported model)."""
        return {name.replace("/", "."): t for name, t in self.p.items()}

    # ------------------------------------------------------------------ forward
    def _norm(self, x, prefix):
        return F.layer_norm(x, x.shape[-1:], self.w(prefix + ".weight"), self.w(prefix + ".bias"), self.eps)

    def _block(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """One pre-LN block on ``x[b, t, h]``: every token attends to the tokens before it in x."""
        pre = f"transformer.h.{i}."
        b, t, h = x.shape
        d = h // self.num_heads
        a = self._norm(x, pre + "ln_1")
        qkv = a @ self.w(pre + "attn.c_attn.weight") + self.w(pre + "attn.c_attn.bias")
        q, k, v = (z.reshape(b, t, self.num_heads, d).transpose(1, 2) for z in qkv.split(h, dim=-1))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, h)
        x = x + att @ self.w(pre + "attn.c_proj.weight") + self.w(pre + "attn.c_proj.bias")
        m = self._norm(x, pre + "ln_2")
        m = F.gelu(m @ self.w(pre + "mlp.c_fc.weight") + self.w(pre + "mlp.c_fc.bias"))
        return x + m @ self.w(pre + "mlp.c_proj.weight") + self.w(pre + "mlp.c_proj.bias")

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor,
                kept: Optional[Mapping[int, torch.Tensor]] = None) -> torch.Tensor:
        """Logits ``[b, s, V]``. ``kept[layer] = LongTensor[b, k]``: the rows that layer runs on."""
        kept = kept or {}
        x = self.w("transformer.wte.weight")[tokens] + self.w("transformer.wpe.weight")[position_ids]
        for i in range(self.num_layers):
            if i in kept:
                idx = kept[i].to(torch.int64)[:, :, None].expand(-1, -1, x.shape[-1])  # [b, k, h]
                y = self._block(torch.gather(x, 1, idx), i)
                x = x.scatter(1, idx, y)  # out of place: dropped rows are x itself
            else:
                x = self._block(x, i)
        x = self._norm(x, "transformer.ln_f")
        return x @ self.w("transformer.wte.weight").t()

    def loss(self, batch: Mapping[str, torch.Tensor], kept=None) -> torch.Tensor:
        """Mean cross-entropy over the tokens the loss mask keeps."""
        logits = self.forward(batch["tokens"], batch["position_ids"], kept)
        ce = F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), reduction="none")
        mask = batch["loss_mask"].float().flatten()
        return (ce * mask).sum() / mask.sum()


# ---------------------------------------------------------------------- the recipe around it
def mslg_kept_length(step: int, min_k: int, max_k: int, step_k: int, ramp_steps: int) -> int:
    """The paper's MSLG ramp: ``min + step/ramp*(max-min)``, rounded down to ``step_k``, at least
    ``min``, ``max`` once the ramp is over."""
    if step >= ramp_steps:
        return max_k
    v = int(math.floor(min_k + step * (max_k - min_k) / ramp_steps))
    v -= v % step_k
    return max(min_k, min(v, max_k))


def warmup_cosine_lr(consumed: float, max_lr: float, min_lr: float, warmup: float, decay: float) -> float:
    """Linear warmup from 0, then half a cosine from ``max_lr`` to ``min_lr`` (both lengths in the
    schedule's unit, counted from 0), ``min_lr`` afterwards."""
    if warmup > 0 and consumed <= warmup:
        return max_lr * consumed / warmup
    if consumed >= decay:
        return min_lr
    frac = (consumed - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * frac)) * (max_lr - min_lr)


def adamw(model: PlainGPT, lr: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """``torch.optim.AdamW``; weight decay on matrices only (no decay on biases and norms)."""
    named = model.named_weights()
    decay = [t for n, t in named.items() if t.dim() > 1]
    no_decay = [t for n, t in named.items() if t.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)


def train_step(model: PlainGPT, optimizer: torch.optim.Optimizer, micro_batches: Sequence[Mapping],
               kept_per_micro_batch: Sequence[Optional[Mapping[int, torch.Tensor]]], lr: float,
               clip: float) -> Dict[str, float]:
    """One optimizer step over the global batch: the mean of the micro-batch losses, gradient norm
    before clipping, ``clip_grad_norm_``, AdamW at ``lr``."""
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    total = 0.0
    for mb, kept in zip(micro_batches, kept_per_micro_batch):
        loss = model.loss(mb, kept)
        (loss / n).backward()
        total += float(loss.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(list(model.parameters()), clip)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    return {"loss": total / n, "grad_norm": float(grad_norm), "lr": lr}
