"""Helpers for model-level tests: tiny configs, layout-independent weights, batches, and one
training step through megatron-core's real schedules, DDP and optimizer."""

from __future__ import annotations

import hashlib
import re
from typing import Dict, Iterator, List, Optional

import torch
from megatron.core import parallel_state
from megatron.core.transformer.transformer_config import TransformerConfig

VOCAB = 64


def tiny_config(**overrides) -> TransformerConfig:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    kw = dict(
        num_layers=4,
        hidden_size=32,
        num_attention_heads=4,
        ffn_hidden_size=64,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        pipeline_dtype=torch.float32,
        use_cpu_initialization=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_dropout_fusion=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
    )
    kw.update(overrides)
    return TransformerConfig(**kw)


def global_name(model: torch.nn.Module, name: str) -> str:
    """Parameter name with the stage-local layer index replaced by the global layer number."""
    m = re.search(r"decoder\.layers\.(\d+)\.", name)
    if not m:
        return name
    layer = model.decoder.layers[int(m.group(1))] if hasattr(model, "decoder") else None
    global_idx = layer.layer_number - 1
    return name[: m.start(1)] + str(global_idx) + name[m.end(1):]


def _unwrap(model):
    while hasattr(model, "module"):
        model = model.module
    return model


def fill_params_deterministically(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every parameter values that depend only on (seed, global name, full shape), then keep
    this rank's TP shard: the same full model results under any TP x PP layout."""
    core = _unwrap(model)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, param in core.named_parameters():
            gname = global_name(core, name)
            if gname == "output_layer.weight" and getattr(param, "shared_embedding", False):
                gname = "embedding.word_embeddings.weight"  # tied copy on the last stage
            shape = list(param.shape)
            dim = getattr(param, "partition_dim", -1) if getattr(param, "tensor_model_parallel", False) else -1
            if dim >= 0:
                shape[dim] *= tp
            digest = hashlib.sha256(f"{seed}:{gname}".encode()).digest()
            gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
            full = torch.randn(shape, generator=gen, dtype=torch.float64) * 0.05
            if "layernorm" in gname and gname.endswith("weight"):
                full += 1.0
            if dim >= 0:
                full = full.chunk(tp, dim=dim)[tp_rank]
            param.copy_(full.to(param.dtype))


def make_batches(num: int, micro_batch_size: int, seq_length: int, seed: int = 1, first_sample_id: int = 0) -> List[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(num):
        tokens = torch.randint(0, VOCAB, (micro_batch_size, seq_length + 1), generator=gen)
        ids = torch.arange(first_sample_id + i * micro_batch_size, first_sample_id + (i + 1) * micro_batch_size)
        out.append(
            {
                "tokens": tokens[:, :-1].contiguous(),
                "labels": tokens[:, 1:].contiguous(),
                "loss_mask": torch.ones(micro_batch_size, seq_length),
                "position_ids": torch.arange(seq_length).unsqueeze(0).expand(micro_batch_size, -1).contiguous(),
                "sample_id": ids,
            }
        )
    return out


def gpt_forward_step(data_iterator: Iterator, model):
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], None, labels=batch["labels"])

    def loss_func(output_tensor):
        mask = batch["loss_mask"].float()
        loss = (output_tensor.float() * mask).sum() / mask.sum()
        return loss, {"lm loss": loss.detach().clone()}

    return output, loss_func


def wrap_ddp(model, config, use_distributed_optimizer: bool = False):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    ddp = DistributedDataParallel(config=config, ddp_config=ddp_config, module=model)
    config.finalize_model_grads_func = finalize_model_grads
    return ddp


def forward_backward(model, config, batches: List[dict], seq_length: int, micro_batch_size: int, forward_step=gpt_forward_step):
    """Run megatron-core's schedule for this layout; return the mean loss seen on this rank (or None)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    losses = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(batches),
        model=[model],
        num_microbatches=len(batches),
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=False,
    )
    if not losses:
        return None
    return float(torch.stack([d["lm loss"] for d in losses]).mean())


def collect_full_tensors(model, which: str = "grad") -> Dict[str, torch.Tensor]:
    """This rank's parameters (or grads) keyed by global name, with TP shards all-gathered."""
    core = _unwrap(model)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    group = parallel_state.get_tensor_model_parallel_group()
    out = {}
    for name, param in core.named_parameters():
        if which == "grad":
            t = getattr(param, "main_grad", None)
            if t is None:
                t = param.grad
        else:
            t = param.data
        t = t.detach().clone().double()
        dim = getattr(param, "partition_dim", -1) if getattr(param, "tensor_model_parallel", False) else -1
        if dim >= 0 and tp > 1:
            parts = [torch.empty_like(t) for _ in range(tp)]
            torch.distributed.all_gather(parts, t.contiguous(), group=group)
            t = torch.cat(parts, dim=dim)
        out[global_name(core, name)] = t
    return out


def max_rel_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], keys: Optional[list] = None) -> float:
    keys = keys if keys is not None else sorted(set(a) & set(b))
    worst = 0.0
    for k in keys:
        denom = max(float(b[k].abs().max()), 1e-12)
        worst = max(worst, float((a[k] - b[k]).abs().max()) / denom)
    return worst


class LTDForwardStep:
    """A GPT forward step that makes the random-LTD index plan of each micro-batch from its
    global sample ids (the same way on every rank and layout) and hands it to the model."""

    def __init__(self, layers, k, seq_length, seed=11, iteration=0, strata=1, attention_mask=None, force=False):
        self.layers, self.k, self.seq_length = list(layers), k, seq_length
        self.seed, self.iteration, self.strata, self.force = seed, iteration, strata, force
        self.attention_mask = attention_mask
        self.plans = []

    def make_plan(self, sample_ids):
        from megatron.ltd.sampler import build_index_plan

        return build_index_plan(
            self.seed, self.iteration, sample_ids, self.layers, self.k, self.seq_length,
            device=torch.device("cpu"), strata=self.strata, force=self.force,
        )

    def __call__(self, data_iterator, model):
        from megatron.ltd.layer import gpt_forward_kwargs

        batch = next(data_iterator)
        plan = self.make_plan(batch["sample_id"])
        self.plans.append(None if plan is None else plan.indices.clone())
        output = model(batch["tokens"], batch["position_ids"], self.attention_mask, labels=batch["labels"], **gpt_forward_kwargs(plan))

        def loss_func(output_tensor):
            mask = batch["loss_mask"].float()
            loss = (output_tensor.float() * mask).sum() / mask.sum()
            return loss, {"lm loss": loss.detach().clone()}

        return output, loss_func
