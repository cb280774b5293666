"""From our configs to megatron-core objects: TransformerConfig, padded vocabulary, model
chunks wrapped for mixed precision and data parallelism."""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable, List, Optional

import torch
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron.training.config import ModelConfig, ParallelConfig, PrecisionConfig, TrainingConfig


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_model_parallel_size: int) -> int:
    """Megatron-LM's padding: a multiple of ``divisible_by * TP`` so every TP shard is equal."""
    multiple = divisible_by * tensor_model_parallel_size
    return ((vocab_size + multiple - 1) // multiple) * multiple


def params_dtype(precision: PrecisionConfig) -> torch.dtype:
    if precision.bf16:
        return torch.bfloat16
    if precision.fp16:
        return torch.float16
    return torch.float32


def transformer_config(
    model: ModelConfig,
    parallel: ParallelConfig,
    precision: Optional[PrecisionConfig] = None,
    training: Optional[TrainingConfig] = None,
    use_gpu: bool = False,
) -> TransformerConfig:
    precision = precision or PrecisionConfig()
    dtype = params_dtype(precision)
    kw = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        ffn_hidden_size=model.ffn_hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        kv_channels=model.kv_channels,
        normalization=model.normalization,
        layernorm_epsilon=model.layernorm_epsilon,
        gated_linear_unit=model.swiglu,
        add_bias_linear=not model.disable_bias_linear,
        init_method_std=model.init_method_std,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        tensor_model_parallel_size=parallel.tensor_model_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_size(model, parallel),
        sequence_parallel=parallel.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu_initialization=not use_gpu,
        # Fusions that need apex/TE or CUDA kernels; the SDPA path does not use them.
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        bias_activation_fusion=use_gpu and not model.swiglu,
        # gloo mis-pairs batched isend/irecv when both pipeline neighbours are the same rank
        # (PP=2, interleaved): a CPU run exchanges one message at a time.
        batch_p2p_comm=use_gpu,
    )
    if model.swiglu:
        kw["activation_func"] = torch.nn.functional.silu
    if training is not None and training.recompute_granularity is not None:
        kw["recompute_granularity"] = training.recompute_granularity
        if training.recompute_granularity == "full":
            kw["recompute_method"] = training.recompute_method
            kw["recompute_num_layers"] = training.recompute_num_layers
    return TransformerConfig(**kw)


def virtual_pipeline_size(model: ModelConfig, parallel: ParallelConfig) -> Optional[int]:
    if parallel.num_layers_per_virtual_pipeline_stage is None:
        return None
    per_stage = model.num_layers // parallel.pipeline_model_parallel_size
    return per_stage // parallel.num_layers_per_virtual_pipeline_stage


def model_flags(model: ModelConfig) -> dict:
    """The model flags a checkpoint records and a resume/eval must match."""
    return asdict(model)


def build_model_chunks(
    provider: Callable[..., torch.nn.Module],
    config: TransformerConfig,
    device: torch.device,
    use_distributed_optimizer: bool = False,
    overlap_grad_reduce: bool = False,
) -> List[torch.nn.Module]:
    """Call ``provider(pre_process, post_process, vp_stage)`` for each (virtual) stage of this
    rank, move to the device, wrap in Float16Module (bf16/fp16) and megatron-core DDP."""
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.transformer.module import Float16Module

    vpp = config.virtual_pipeline_model_parallel_size
    chunks = []
    for vp_stage in range(vpp) if vpp else [None]:
        pre = ps.is_pipeline_first_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage)
        post = ps.is_pipeline_last_stage(ignore_virtual=vp_stage is None, vp_stage=vp_stage)
        model = provider(pre_process=pre, post_process=post, vp_stage=vp_stage)
        chunks.append(model)
    chunks = [m.to(device) for m in chunks]  # no-op where megatron-core allocated on the device
    if config.bf16 or config.fp16:
        chunks = [Float16Module(config, m) for m in chunks]
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=overlap_grad_reduce,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    wrapped = [
        DistributedDataParallel(config=config, ddp_config=ddp_config, module=m,
                                disable_bucketing=(i > 0))
        for i, m in enumerate(chunks)
    ]
    return wrapped
