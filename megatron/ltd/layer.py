"""Random-LTD inside megatron-core's transformer layer, through ModuleSpec.

:class:`RandomLTDTransformerLayer` subclasses megatron-core's ``TransformerLayer`` without adding
a parameter or buffer, so its state-dict keys are exactly the stock layer's (a random-LTD
checkpoint loads into a baseline model and back). A dropping layer

1. picks its row of the micro-batch's index plan, which travels as the kept tokens' row numbers in
   the flattened ``[s*b, h]`` states (``LongTensor[n_ltd_layers, strata, k/strata, b]``, made for
   every layer at once by ``IndexPlan.route_tensor``; under sequence parallelism it refuses a plan
   whose strata do not split over the TP ranks),
2. gathers the kept tokens of the hidden states (and of the attention mask / rotary angles),
3. runs the stock layer on those ``k`` tokens (kept tokens attend only to kept tokens; their
   order is preserved, so a causal mask stays causal among them),
4. scatters the outputs back; dropped tokens come out exactly as they went in.

How the plan travels: as the transformer block's ``context_mask`` argument. megatron-core passes
that argument, unchanged, to every layer of the block, and through full activation recompute as
a checkpointed input, and decoder-only / encoder-only models have no cross-attention that would
read it. So the plan is made once per micro-batch and rides with that micro-batch's forward
(and its recomputation), never through mutable state read later: several micro-batches can be
in flight under 1F1B. GPT passes it with ``GPTModel(..., extra_block_kwargs=...)``
(:func:`gpt_forward_kwargs`); BERT, whose forward has no such hook, through
:func:`carry_plan`, a forward pre-hook scoped to one model call.
"""

from __future__ import annotations

import contextlib
from typing import Optional, Sequence, Tuple

import torch
from megatron.core import parallel_state
from megatron.core.transformer.transformer_layer import TransformerLayer

from megatron.ltd.ops import TokenRoute, gather_mask, gather_rotary_rows, resolve_kernel
from megatron.ltd.sampler import IndexPlan, check_plan_fits, local_route_rows, route_positions


class RandomLTDTransformerLayer(TransformerLayer):
    """A ``TransformerLayer`` that runs on the kept tokens when its global layer number is listed.

    ``ltd_layer_numbers`` are GLOBAL, 0-based layer numbers in plan-row order; the layer finds its
    own row from ``self.layer_number`` (megatron-core's global, 1-based number), so the same spec
    works for any pipeline split.
    """

    def __init__(self, *args, ltd_layer_numbers: Sequence[int] = (), ltd_kernel: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.ltd_kernel = ltd_kernel  # gather/scatter implementation (megatron.ltd.ops.resolve_kernel)
        self.ltd_layer_numbers: Tuple[int, ...] = tuple(int(n) for n in ltd_layer_numbers)
        own = self.layer_number - 1
        self.ltd_row: Optional[int] = self.ltd_layer_numbers.index(own) if own in self.ltd_layer_numbers else None
        if self.config.context_parallel_size != 1:
            raise ValueError("random-LTD does not support context parallelism (--context-parallel-size 1)")
        self._resolved_kernel: Optional[Tuple[torch.device, str]] = None
        # The stock layer's forward, or a compiled version of it (megatron.models.compile): what
        # runs on the kept (or all) tokens. Not a module or parameter: the state dict is unchanged.
        self.dense_forward = None
        # With --compile: gather, layer and scatter as one compiled function (native_dropping_forward).
        self.dropping_forward = None

    def _kernel_for(self, hidden: torch.Tensor) -> str:
        """``ltd_kernel`` resolved for the input's device, once (not on every forward)."""
        if self.ltd_kernel in ("torch", "auto"):
            return "torch"  # no device to ask about: the torch ops run anywhere
        device = hidden.device
        if self._resolved_kernel is None or self._resolved_kernel[0] != device:
            self._resolved_kernel = (device, resolve_kernel(self.ltd_kernel, device))
        return self._resolved_kernel[1]

    def _dense(self, **kwargs):
        if self.dense_forward is not None:
            return self.dense_forward(**kwargs)
        return super().forward(**kwargs)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        rotary_pos_emb: Optional[torch.Tensor] = None,
        **kwargs,
    ):
        plan = context_mask  # the index plan rides in the (otherwise unused) cross-attention mask slot
        sp = self.config.sequence_parallel
        tp = parallel_state.get_tensor_model_parallel_world_size() if sp else 1
        # No plan means nothing is dropped (the trainer passes None once the ramp has ended, so the
        # dropping path then costs nothing); a given plan always runs gather/scatter, even one that
        # keeps every token (which must equal the full-length path exactly).
        if plan is None or self.ltd_row is None or kwargs.get("inference_context") is not None:
            return self._dense(
                hidden_states=hidden_states,
                attention_mask=attention_mask,
                context=context,
                context_mask=None,
                rotary_pos_emb=rotary_pos_emb,
                **kwargs,
            )
        shape = plan.shape  # [rows, strata, k/strata, b]: flat row numbers (IndexPlan.route_tensor)
        if len(shape) != 4 or shape[0] != len(self.ltd_layer_numbers):
            raise ValueError(
                f"random-LTD route of shape {tuple(shape)} does not match the {len(self.ltd_layer_numbers)} "
                f"random-LTD layers {list(self.ltd_layer_numbers)} (expected IndexPlan.route_tensor())"
            )
        _, strata, per_stratum, batch = shape
        full_shape = tuple(hidden_states.shape)  # [s (this rank's shard under SP), b, h]
        seq_length = full_shape[0] * tp
        check_plan_fits(strata, tp)  # a plain or differently stratified plan would gather across shards
        if strata * per_stratum > seq_length:
            raise ValueError(f"index plan keeps {strata * per_stratum} tokens of a {seq_length}-token sequence")
        rows = plan[self.ltd_row]  # [strata, k/strata, b], global rows, position-major
        global_rows = rows.reshape(-1)
        local_rows = local_route_rows(rows, parallel_state.get_tensor_model_parallel_rank(), tp, seq_length) if tp > 1 else global_rows
        kept_mask = gather_mask(attention_mask, route_positions(rows)) if attention_mask is not None else None
        kept_rope = None
        if rotary_pos_emb is not None:
            if isinstance(rotary_pos_emb, tuple):
                kept_rope = tuple(gather_rotary_rows(r, global_rows, batch) for r in rotary_pos_emb)
            else:
                kept_rope = gather_rotary_rows(rotary_pos_emb, global_rows, batch)
        if self.dropping_forward is not None:
            return self.dropping_forward(hidden_states, local_rows, kept_mask, kept_rope, context, **kwargs)
        route = TokenRoute(local_rows, self._kernel_for(hidden_states), kept_tokens=strata * per_stratum // tp,
                           full_shape=full_shape)
        kept = route.gather(hidden_states)
        out, context = self._dense(
            hidden_states=kept,
            attention_mask=kept_mask,
            context=context,
            context_mask=None,
            rotary_pos_emb=kept_rope,
            **kwargs,
        )
        return route.scatter(hidden_states, out), context


def native_dropping_forward(layer: TransformerLayer, hidden_states: torch.Tensor, rows: torch.Tensor,
                            attention_mask, rotary_pos_emb, context, **kwargs):
    """Gather, the stock layer, scatter, in native differentiable operators: what ``--compile``
    compiles as one graph per dropping layer (megatron.models.compile). Same values as the eager
    :class:`TokenRoute` path; autograd's extra full-size gradient terms (the scatter's zeroed rows,
    the gather's zero-filled gradient and their sum) are left to the compiler to fuse into one pass."""
    s, b, h = hidden_states.shape
    flat = hidden_states.reshape(s * b, h)
    kept = flat.index_select(0, rows).view(-1, b, h)
    out, context = TransformerLayer.forward(layer, hidden_states=kept, attention_mask=attention_mask, context=context,
                                            context_mask=None, rotary_pos_emb=rotary_pos_emb, **kwargs)
    return flat.index_copy(0, rows, out.reshape(-1, h)).view(s, b, h), context


def plan_tensor(plan) -> Optional[torch.Tensor]:
    """The tensor that travels with the forward: ``IndexPlan.route_tensor()`` (the kept tokens'
    flat row numbers, ``[rows, strata, k/strata, b]``, so the layer knows how it was stratified),
    a tensor already in that form, or None."""
    if plan is None:
        return None
    if isinstance(plan, IndexPlan):
        return plan.route_tensor()
    return plan


def gpt_forward_kwargs(plan) -> dict:
    """Keyword arguments for ``GPTModel.forward`` that hand the plan to every layer."""
    t = plan_tensor(plan)
    return {} if t is None else {"extra_block_kwargs": {"context_mask": t}}


@contextlib.contextmanager
def carry_plan(block: torch.nn.Module, plan):
    """Pass ``plan`` to ``block`` (a TransformerBlock) for the model calls made inside the scope.

    For models whose forward cannot forward extra block arguments (megatron-core's BertModel).
    The hook only fills the block's ``context_mask`` argument at call time; layers and recompute
    then see the plan as an argument, not as state.
    """
    t = plan_tensor(plan)
    if t is None:
        yield
        return

    def _inject(module, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["context_mask"] = t
        return args, kwargs

    handle = block.register_forward_pre_hook(_inject, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
