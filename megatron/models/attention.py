"""Core attention through ``torch.nn.functional.scaled_dot_product_attention``.

Used in place of megatron-core's ``DotProductAttention``, which allocates a global CUDA buffer and
materialises the full ``[b, heads, s, s]`` score matrix. SDPA picks flash / memory-efficient
kernels on GPU and a fused math kernel on CPU; for a plain causal mask no mask tensor is built.
The module has no parameters, so checkpoints are those of the stock layer.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


class SDPACoreAttention(MegatronModule):
    """Drop-in ``core_attention`` submodule: q, k, v ``[s, b, heads, d]`` -> ``[s, b, heads*d]``.

    Masks follow megatron-core's convention: ``True`` means *masked out*. With a causal mask type
    and no mask tensor, causality is applied by SDPA itself (``is_causal``).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        cp_comm_type: Optional[str] = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPACoreAttention does not support context parallelism (--context-parallel-size 1).")
        if pg_collection is not None and hasattr(pg_collection, "tp"):
            tp_size = pg_collection.tp.size()
        else:
            from megatron.core import parallel_state

            tp_size = parallel_state.get_tensor_model_parallel_world_size()
        self.layer_number = max(1, layer_number)
        self.attn_mask_type = attn_mask_type
        self.heads_per_partition = divide(config.num_attention_heads, tp_size)
        self.groups_per_partition = divide(config.num_query_groups, tp_size)
        head_dim = config.kv_channels
        self.hidden_size_per_partition = self.heads_per_partition * head_dim
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPACoreAttention: packed sequences and attention bias are not supported.")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        sq, b = query.shape[0], query.shape[1]
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        if self.groups_per_partition != self.heads_per_partition:  # grouped-query attention
            rep = self.heads_per_partition // self.groups_per_partition
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        is_causal = mask_type == AttnMaskType.causal and attention_mask is None
        sdpa_mask = None
        if attention_mask is not None:
            sdpa_mask = ~attention_mask.to(torch.bool)  # megatron: True = masked; SDPA: True = keep
            # A row with no key to attend to (a BERT sample whose kept tokens are all padding under
            # random-LTD) makes some SDPA kernels return NaN; let such rows attend everywhere.
            # Their outputs sit at padded positions, which carry no loss.
            sdpa_mask = sdpa_mask | ~sdpa_mask.any(dim=-1, keepdim=True)
        dropout_p = self.dropout_p if self.training else 0.0
        if dropout_p > 0.0 and not self.config.sequence_parallel:
            # Heads are split across TP ranks: each rank needs its own dropout stream.
            with tensor_parallel.get_cuda_rng_tracker().fork():
                out = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=sdpa_mask, dropout_p=dropout_p, is_causal=is_causal, scale=self.softmax_scale
                )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=sdpa_mask, dropout_p=dropout_p, is_causal=is_causal, scale=self.softmax_scale
            )
        # [b, n, s, d] -> [s, b, n*d]
        return out.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)
