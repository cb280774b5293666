"""Batched scoring and greedy generation with a loaded GPT model.

Everything a task needs reduces to two primitives:

* :func:`score_continuations`: for (context tokens, continuation tokens) pairs, the summed
  log-probability of the continuation given the context, whether every continuation token is
  the model's greedy (argmax) choice, and the per-token values. Requests are sorted by length
  (longest first) and batched; contexts longer than the window are cut from the left.
* :func:`greedy_generate`: argmax decoding until a stop sequence, the end-of-document token or
  a token budget.

Log-probabilities are taken over the model's full (padded) vocabulary, exactly as its training
loss does, so ``-sum(logprob)`` equals the model's own cross-entropy on the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["ContinuationScore", "score_continuations", "window_for", "greedy_generate"]


@dataclass
class ContinuationScore:
    logprob: float  # sum over the scored continuation tokens
    is_greedy: bool  # every scored token is the argmax prediction
    num_tokens: int  # continuation tokens scored (fewer than given only if it exceeds the window)
    token_logprobs: List[float]
    predictions: List[int]  # argmax token at each scored position


def window_for(context: Sequence[int], continuation: Sequence[int], max_length: int) -> Tuple[List[int], int]:
    """The model input for one request and how many of its last positions to score.

    The full sequence is ``context + continuation``; the input is all of it but the last token,
    keeping the last ``max_length`` tokens (long contexts are truncated from the left). Position
    ``j`` of the input predicts token ``j + 1``, so the continuation is scored at the last
    ``len(continuation)`` positions (capped by the window)."""
    if not continuation:
        raise ValueError("empty continuation: nothing to score")
    if not context:
        raise ValueError("empty context: give at least one token (e.g. the end-of-document id)")
    full = list(context) + list(continuation)
    inp = full[:-1][-max_length:]
    return inp, min(len(continuation), len(inp))


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> List[List[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def score_continuations(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    requests: Sequence[Tuple[Sequence[int], Sequence[int]]],
    max_length: int,
    batch_size: int = 8,
    pad_id: int = 0,
    progress: Optional[Callable[[int], None]] = None,
) -> List[ContinuationScore]:
    """Score each (context, continuation) pair; results come back in request order.

    ``logits_fn``: [b, s] long -> [b, s, vocab] float (e.g. :meth:`LoadedModel.logits`).
    ``progress``: called with the number of requests finished after each batch."""
    prepared = [window_for(c, t, max_length) for c, t in requests]
    targets = [(list(c) + list(t))[-n:] for (c, t), (_, n) in zip(requests, prepared)]
    out: List[Optional[ContinuationScore]] = [None] * len(requests)
    for batch in _batches_by_length([len(inp) for inp, _ in prepared], batch_size):
        width = len(prepared[batch[0]][0])
        tokens = torch.full((len(batch), width), pad_id, dtype=torch.long)
        for row, i in enumerate(batch):
            inp = prepared[i][0]
            tokens[row, : len(inp)] = torch.tensor(inp, dtype=torch.long)
        logits = logits_fn(tokens)
        for row, i in enumerate(batch):
            inp, n = prepared[i]
            end = len(inp)
            # Only the scored positions go through log_softmax (a [n, vocab] slice, not [s, vocab]).
            lp = F.log_softmax(logits[row, end - n:end].float(), dim=-1)
            tgt = torch.tensor(targets[i], dtype=torch.long, device=lp.device)
            tok_lp = lp.gather(1, tgt.unsqueeze(1)).squeeze(1)
            pred = lp.argmax(dim=-1)
            out[i] = ContinuationScore(
                logprob=float(tok_lp.double().sum()),
                is_greedy=bool((pred == tgt).all()),
                num_tokens=n,
                token_logprobs=[float(x) for x in tok_lp],
                predictions=[int(x) for x in pred],
            )
        if progress is not None:
            progress(len(batch))
    return out  # type: ignore[return-value]


def greedy_generate(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    prompts: Sequence[Sequence[int]],
    max_length: int,
    max_new_tokens: int,
    decode: Callable[[List[int]], str],
    stop: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
    batch_size: int = 8,
    pad_id: int = 0,
    vocab_limit: Optional[int] = None,
) -> List[str]:
    """Greedy continuation of each prompt, cut at the first stop string (not included).

    Recomputes the full window at every step (no KV cache): simple, exact, fine for evaluation
    sized outputs. ``vocab_limit`` masks the padded vocabulary rows that are not real tokens."""
    results: List[str] = [""] * len(prompts)
    stop = [s for s in stop if s]
    for batch in _batches_by_length([len(p) for p in prompts], batch_size):
        seqs = [list(prompts[i]) for i in batch]
        gen: List[List[int]] = [[] for _ in batch]
        done = [False] * len(batch)
        for _ in range(max_new_tokens):
            live = [r for r in range(len(batch)) if not done[r]]
            if not live:
                break
            windows = [seqs[r][-max_length:] for r in live]
            width = max(len(w) for w in windows)
            tokens = torch.full((len(live), width), pad_id, dtype=torch.long)
            for row, w in enumerate(windows):
                tokens[row, : len(w)] = torch.tensor(w, dtype=torch.long)
            logits = logits_fn(tokens)
            for row, r in enumerate(live):
                last = logits[row, len(windows[row]) - 1]
                if vocab_limit is not None:
                    last = last[:vocab_limit]
                nxt = int(last.argmax())
                if nxt in stop_token_ids:
                    done[r] = True
                    continue
                seqs[r].append(nxt)
                gen[r].append(nxt)
                if stop and any(s in decode(gen[r]) for s in stop):
                    done[r] = True
        for r, i in enumerate(batch):
            text = decode(gen[r])
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            results[i] = text[:cut] if cut >= 0 else text
    return results
