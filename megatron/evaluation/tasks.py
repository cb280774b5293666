"""Native zero-shot tasks: LAMBADA last-word accuracy and WikiText-style perplexity.

LAMBADA (from a local JSONL file, one ``{"text": ...}`` per line; the last whitespace word of
the text is the target):

* **strict** (Megatron-LM's ``--strict-lambada``, the number usually reported): the passage is
  split at its last word; the context (stripped) and ``" " + word`` are tokenized separately, and
  an example counts as correct only when the greedy (argmax) prediction reproduces **every**
  token of the whole word.
* **non-strict** (Megatron-LM's default): the whole text is tokenized once and only its **final
  token** is predicted from everything before it, so earlier sub-word pieces of the target are
  given as context. With a word-level vocabulary both agree; with subwords non-strict is easier.

Perplexity (from a local raw text file, optionally WikiText-detokenized first): the text is
tokenized as one stream; token ``t`` (t >= 1) is predicted from the tokens before it in
overlapping windows of ``seq_length`` tokens that advance by ``stride``: the first window scores
all of its targets, each later one only its last ``stride`` targets, so every token is scored
exactly once with at least ``seq_length - stride`` tokens of context (when that many exist).
Token 0 has no context and is not scored (as in Megatron-LM).
``token_ppl = exp(NLL / scored tokens)``; ``word_ppl = exp(NLL / whitespace words of the
original text)``: a tokenizer-independent number comparable across vocabularies.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from megatron.evaluation.detokenizer import count_words, wikitext_detokenize
from megatron.evaluation.scoring import score_continuations

__all__ = [
    "EvalDataError",
    "read_lambada_jsonl",
    "lambada_requests",
    "evaluate_lambada",
    "perplexity_windows",
    "evaluate_perplexity",
]


def _tokenize(tokenizer, text: str):
    """The tokenizer's ids, or an error naming the tokenizer: a NullTokenizer (mock-data
    checkpoints) reads whitespace-separated ids, not plain text."""
    try:
        return tokenizer.tokenize(text)
    except ValueError as e:
        raise EvalDataError(
            f"the checkpoint's tokenizer ({type(tokenizer).__name__}) cannot read this text ({str(e)[:120]}); a "
            "NullTokenizer reads whitespace-separated token ids: give such a file, or pass --tokenizer-type and "
            "--tokenizer-model / --vocab-file for a real tokenizer") from None


class EvalDataError(ValueError):
    """Evaluation data that cannot be used; the message names the file, line and problem."""


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar (to stderr) or a no-op; returns (update, close)."""
    if not enabled:
        return (lambda n: None), (lambda: None)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="req", leave=False, dynamic_ncols=True)
    return bar.update, bar.close


# ------------------------------------------------------------------------------------- LAMBADA


def read_lambada_jsonl(path: str, text_key: str = "text", limit: Optional[int] = None) -> List[str]:
    """The passages of a LAMBADA-style JSONL file (one JSON object per line, ``text_key`` holds
    the passage whose last word is the target)."""
    if not os.path.isfile(path):
        raise EvalDataError(f"LAMBADA data file {path!r} does not exist")
    texts = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalDataError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one object per line") from None
            if not isinstance(obj, dict) or text_key not in obj:
                found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                raise EvalDataError(
                    f"{path}:{lineno}: no {text_key!r} field (found {found}); each line must be "
                    f'{{"{text_key}": "<passage whose last word is the target>"}}'
                )
            text = obj[text_key]
            if not isinstance(text, str) or len(text.split()) < 2:
                raise EvalDataError(f"{path}:{lineno}: {text_key!r} must be a string of at least two words")
            texts.append(text)
            if limit is not None and len(texts) >= limit:
                break
    if not texts:
        raise EvalDataError(f"LAMBADA data file {path!r} holds no examples")
    return texts


def lambada_requests(tokenizer, texts: Sequence[str], strict: bool) -> List[Tuple[List[int], List[int]]]:
    """(context tokens, target tokens) per passage for the strict or non-strict variant."""
    reqs = []
    for text in texts:
        if strict:
            word = text.split()[-1]
            start = text.rfind(word)
            context = _tokenize(tokenizer, text[:start].strip())
            target = _tokenize(tokenizer, " " + word)
        else:
            ids = _tokenize(tokenizer, text)
            context, target = ids[:-1], ids[-1:]
        if not context:
            context = [tokenizer.eod]
        reqs.append((list(context), list(target)))
    return reqs


def evaluate_lambada(loaded, data_path: str, batch_size: int = 8, variants: Sequence[str] = ("strict", "non-strict"),
                     limit: Optional[int] = None, text_key: str = "text", progress: bool = True,
                     tokenizer=None) -> Dict[str, Any]:
    """Last-word accuracy for each variant, plus the strict target's perplexity."""
    tokenizer = tokenizer or loaded.tokenizer
    if tokenizer is None:
        raise EvalDataError("the checkpoint records no tokenizer: pass --tokenizer-type/--tokenizer-model")
    texts = read_lambada_jsonl(data_path, text_key=text_key, limit=limit)
    result: Dict[str, Any] = {"task": "lambada", "data": os.path.abspath(data_path), "examples": len(texts)}
    for variant in variants:
        if variant not in ("strict", "non-strict"):
            raise ValueError(f"unknown LAMBADA variant {variant!r} (strict, non-strict)")
        reqs = lambada_requests(tokenizer, texts, strict=variant == "strict")
        update, close = _progress(len(reqs), f"lambada ({variant})", progress)
        try:
            scores = score_continuations(loaded.logits, reqs, loaded.seq_length, batch_size,
                                         pad_id=_pad_id(tokenizer), progress=update)
        finally:
            close()
        key = variant.replace("-", "_")
        correct = sum(s.is_greedy for s in scores)
        result[f"accuracy_{key}"] = correct / len(scores)
        result[f"correct_{key}"] = correct
        if variant == "strict":
            nll = -sum(s.logprob for s in scores)
            result["target_ppl_strict"] = math.exp(nll / max(1, sum(s.num_tokens for s in scores)))
    return result


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad", None)
    if pad is None:
        pad = getattr(tokenizer, "eod", 0)
    return int(pad)


# ---------------------------------------------------------------------------------- perplexity


@dataclass(frozen=True)
class Window:
    start: int  # first input token
    end: int  # one past the last input token; targets are tokens start+1 .. end
    num_scored: int  # the last num_scored targets are scored


def perplexity_windows(num_tokens: int, seq_length: int, stride: Optional[int] = None) -> List[Window]:
    """Windows that score tokens 1..num_tokens-1 exactly once (see the module docstring)."""
    stride = seq_length if stride is None else stride
    if not 1 <= stride <= seq_length:
        raise ValueError(f"stride must be in [1, seq_length={seq_length}], got {stride}")
    windows, covered = [], 0  # targets 1..covered are scored
    while covered < num_tokens - 1:
        end = min(covered + (seq_length if covered == 0 else stride), num_tokens - 1)
        start = max(0, end - seq_length)
        windows.append(Window(start, end, end - covered))
        covered = end
    return windows


def read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise EvalDataError(f"text file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if not text.strip():
        raise EvalDataError(f"text file {path!r} is empty")
    return text


def evaluate_perplexity(loaded, data_path: str, stride: Optional[int] = None, batch_size: int = 8,
                        detokenize: bool = False, max_tokens: Optional[int] = None, progress: bool = True,
                        tokenizer=None, seq_length: Optional[int] = None) -> Dict[str, Any]:
    """Token- and word-level perplexity of a raw text file (see the module docstring).
    ``max_tokens`` caps the work (the word count is then scaled to the evaluated fraction)."""
    tokenizer = tokenizer or loaded.tokenizer
    if tokenizer is None:
        raise EvalDataError("the checkpoint records no tokenizer: pass --tokenizer-type/--tokenizer-model")
    original = read_text(data_path)
    text = wikitext_detokenize(original) if detokenize else original
    ids = _tokenize(tokenizer, text)
    total_tokens = len(ids)
    words = count_words(original)
    if max_tokens is not None and total_tokens > max_tokens:
        ids = ids[:max_tokens]
        words = words * len(ids) / total_tokens  # words in the evaluated prefix, proportionally
    if len(ids) < 2:
        raise EvalDataError(f"{data_path!r} tokenizes to {len(ids)} token(s): nothing to predict")
    seq = seq_length or loaded.seq_length
    windows = perplexity_windows(len(ids), seq, stride)
    data = torch.tensor(ids, dtype=torch.long)
    pad = _pad_id(tokenizer)
    nll, scored = 0.0, 0
    update, close = _progress(len(windows), "perplexity", progress)
    try:
        for b in range(0, len(windows), batch_size):
            batch = windows[b:b + batch_size]
            width = max(w.end - w.start for w in batch)
            tokens = torch.full((len(batch), width), pad, dtype=torch.long)
            for row, w in enumerate(batch):
                tokens[row, : w.end - w.start] = data[w.start:w.end]
            logits = loaded.logits(tokens)
            for row, w in enumerate(batch):
                n, length = w.num_scored, w.end - w.start
                lp = F.log_softmax(logits[row, length - n:length].float(), dim=-1)
                tgt = data[w.end - n + 1:w.end + 1].to(lp.device)
                nll -= float(lp.gather(1, tgt.unsqueeze(1)).double().sum())
                scored += n
            update(len(batch))
    finally:
        close()
    assert scored == len(ids) - 1, (scored, len(ids))
    return {
        "task": "wikitext" if detokenize else "perplexity",
        "data": os.path.abspath(data_path),
        "detokenized": detokenize,
        "seq_length": seq,
        "stride": stride or seq,
        "tokens": len(ids),
        "scored_tokens": scored,
        "words": words,
        "nll": nll,
        "token_loss": nll / scored,
        "token_ppl": math.exp(nll / scored),
        "word_ppl": math.exp(nll / words) if words else float("nan"),
        "truncated_to_tokens": max_tokens if max_tokens is not None and total_tokens > max_tokens else None,
    }

