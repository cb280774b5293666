"""Layer specs: megatron-core's local (no TransformerEngine) layers with SDPA attention and
sequence-parallel-capable norms swapped in through ModuleSpec, never by forking a class."""

from __future__ import annotations

import copy
from typing import Optional

from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron.models.attention import SDPACoreAttention
from megatron.models.norms import TorchNorm


def _swap_local_modules(layer_spec: ModuleSpec, layer_module: Optional[type] = None) -> ModuleSpec:
    spec = copy.deepcopy(layer_spec)
    sub = spec.submodules
    sub.input_layernorm = TorchNorm
    sub.pre_mlp_layernorm = TorchNorm
    sub.self_attention.submodules.core_attention = SDPACoreAttention
    if layer_module is not None:
        spec.module = layer_module
    return spec


def gpt_layer_spec(layer_module: Optional[type] = None) -> ModuleSpec:
    """GPT decoder layer: causal self-attention (SDPA), MLP, pre-norms. ``layer_module`` replaces
    the TransformerLayer class (random-LTD uses this) while keeping every submodule."""
    return _swap_local_modules(get_gpt_layer_local_spec(), layer_module)


def bert_layer_spec(layer_module: Optional[type] = None) -> ModuleSpec:
    """BERT encoder layer: padding-masked self-attention (SDPA), MLP, norms."""
    return _swap_local_modules(bert_layer_local_spec, layer_module)


def block_spec(config: TransformerConfig, layer_specs: list) -> TransformerBlockSubmodules:
    """A transformer block with one spec per layer built on this pipeline stage and our final norm."""
    return TransformerBlockSubmodules(layer_specs=list(layer_specs), layer_norm=TorchNorm)
