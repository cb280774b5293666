"""EleutherAI lm-evaluation-harness (0.4.x) model class for Megatron-LTD checkpoints.

Registered as ``megatron-ltd`` (alias ``megatron_ltd``), so any harness task runs on a checkpoint:

    python -m megatron.evaluation.lm_eval_cli run --model megatron-ltd \
        --model_args load=CKPT --batch_size 8 --tasks lambada_openai,piqa

or from Python: ``lm_eval.simple_evaluate(model=MegatronLTDLM(load=CKPT), tasks=[...])``.
Needs lm-eval (the default setup installs it; by hand: ``pip install -c constraints.txt -e .[eval]``).

Request handling (what the harness asks of a model):

* ``loglikelihood(context, continuation)``: the harness's TemplateLM moves trailing spaces of
  the context into the continuation, encodes ``context + continuation`` as one string and takes
  the tokens after the context's own encoding as the continuation, so the boundary matches how
  the text tokenizes as a whole. An empty context is replaced by the end-of-document token.
  The strings are scored exactly as the harness built them, with no whitespace clean-up: a
  multiple-choice request is ``(context, target_delimiter + choice)`` (delimiter " " by default),
  so a task whose choices already start with a space is scored with two, as on any lm-eval model.
  Returns (sum of log-probabilities, whether every continuation token is the greedy choice).
* ``loglikelihood_rolling(text)``: log-probability of the whole text, the first token
  conditioned on the end-of-document token, in disjoint windows of ``max_length`` tokens.
* ``generate_until(context, until=..., max_gen_toks=...)``: greedy decoding, cut before the first
  stop sequence (sampling options are ignored with a warning: evaluation here is greedy).

Requests are sorted longest first and batched (``batch_size``); contexts longer than the window
(``max_length``, default the checkpoint's sequence length) are truncated from the left.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple

import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from megatron.evaluation.scoring import greedy_generate, score_continuations
from megatron.evaluation.tasks import perplexity_windows

__all__ = ["MegatronLTDLM"]

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):  # "auto", "auto:4", None
        return default


@register_model("megatron-ltd", "megatron_ltd")
class MegatronLTDLM(TemplateLM):
    """A Megatron-LTD GPT checkpoint (any saved TP/PP layout) as an lm-eval causal LM."""

    backend = "causal"

    def __init__(
        self,
        load: Optional[str] = None,
        iteration: Optional[int] = None,
        batch_size: Any = 8,
        max_batch_size: Any = None,  # accepted for CLI compatibility; batches are fixed-size
        max_length: Optional[int] = None,
        max_gen_toks: int = 256,
        dtype: str = "float32",
        cpu: bool = False,
        device: Optional[str] = None,
        loaded: Any = None,
        tokenizer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if kwargs:
            log.warning("megatron-ltd: ignoring unknown model_args %s", sorted(kwargs))
        if loaded is None:
            if not load:
                raise ValueError("megatron-ltd needs --model_args load=CHECKPOINT_DIR")
            from megatron.evaluation.checkpoint_loader import load_for_inference

            if dtype not in _DTYPES:
                raise ValueError(f"dtype={dtype!r} is not one of {sorted(_DTYPES)}")
            force_cpu = bool(cpu) or (device is not None and str(device).startswith("cpu"))
            loaded = load_for_inference(load, iteration, dtype=_DTYPES[dtype], force_cpu=force_cpu)
        self.loaded = loaded
        self.tokenizer = tokenizer or loaded.tokenizer
        if self.tokenizer is None:
            raise ValueError("the checkpoint records no tokenizer; pass one (tokenizer=...)")
        self._batch_size = max(1, _as_int(batch_size, 8))
        self._max_length = int(max_length or loaded.seq_length)
        self._max_gen_toks = int(max_gen_toks)
        # Rows of the padded vocabulary beyond the tokenizer never appear in text.
        self._vocab_limit = min(int(self.tokenizer.vocab_size), int(loaded.padded_vocab_size))

    # ------------------------------------------------------------------ what the harness reads
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eod)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self.loaded.device

    @property
    def tokenizer_name(self) -> str:
        return type(self.tokenizer).__name__

    def chat_template(self, chat_template: Any = False) -> Optional[str]:
        if chat_template:
            raise ValueError("megatron-ltd models are base language models: no chat template (drop --apply_chat_template)")
        return None

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs: Any) -> List[int]:
        return list(self.tokenizer.tokenize(string))

    def tok_decode(self, tokens: List[int]) -> str:
        return self.tokenizer.detokenize([int(t) for t in tokens])

    def _pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad", None)
        return int(pad if pad is not None else self.eot_token_id)

    def _score(self, pairs, disable_tqdm: bool, desc: str):
        bar = None
        if not disable_tqdm:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), desc=desc, leave=False)
        try:
            return score_continuations(self.loaded.logits, pairs, self.max_length, self.batch_size,
                                       pad_id=self._pad_id(), progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()

    # ------------------------------------------------------------------ requests
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> List[Tuple[float, bool]]:
        pairs = [(ctx, cont) for _, ctx, cont in requests]
        scores = self._score(pairs, disable_tqdm, "megatron-ltd loglikelihood")
        out = []
        for (cache_key, _, _), s in zip(requests, scores):
            answer = (s.logprob, s.is_greedy)
            if cache_key is not None:
                self.cache_hook.add_partial("loglikelihood", cache_key, answer)
            out.append(answer)
        return out

    def rolling_pairs(self, text: str) -> List[Tuple[List[int], List[int]]]:
        """(context, continuation) pairs that score every token of ``text`` once."""
        full = [self.eot_token_id] + self.tok_encode(text)
        pairs = []
        for w in perplexity_windows(len(full), self.max_length):
            cut = w.end - w.num_scored + 1
            pairs.append((full[w.start:cut], full[cut:w.end + 1]))
        return pairs

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> List[float]:
        per_doc = [self.rolling_pairs(req.args[0]) for req in requests]
        flat = [p for pairs in per_doc for p in pairs]
        scores = self._score(flat, disable_tqdm, "megatron-ltd rolling")
        out, i = [], 0
        for req, pairs in zip(requests, per_doc):
            total = sum(s.logprob for s in scores[i:i + len(pairs)])
            i += len(pairs)
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
            out.append(total)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> List[str]:
        # Group by generation settings so each group is one batched greedy run.
        groups = {}
        for idx, req in enumerate(requests):
            context, gen_kwargs = req.args[0], dict(req.args[1] if len(req.args) > 1 else {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
            if gen_kwargs.pop("do_sample", False) or float(gen_kwargs.pop("temperature", 0.0) or 0.0) > 0:
                log.warning("megatron-ltd: sampling requested; decoding greedily")
            key = (tuple(until), max_new)
            groups.setdefault(key, []).append((idx, context))
        out: List[str] = [""] * len(requests)
        for (until, max_new), items in groups.items():
            budget = max(1, self.max_length - max_new)
            prompts = [self.tok_encode(ctx)[-budget:] or [self.eot_token_id] for _, ctx in items]
            texts = greedy_generate(self.loaded.logits, prompts, self.max_length, max_new, self.tok_decode,
                                    stop=until, stop_token_ids=(self.eot_token_id,), batch_size=self.batch_size,
                                    pad_id=self._pad_id(), vocab_limit=self._vocab_limit)
            for (idx, ctx), text in zip(items, texts):
                out[idx] = text
                self.cache_hook.add_partial("generate_until", (ctx, {"until": list(until), "max_gen_toks": max_new}), text)
        return out
