"""Undo WikiText's tokenization so a subword model sees ordinary text.

WikiText-103/-2 (the "tokenized" releases, ``wiki.test.tokens``) separate every punctuation mark
by spaces and escape in-word hyphens and number separators as `` @-@ ``, `` @,@ ``, `` @.@ ``.
Perplexity comparisons with published numbers (Megatron-LM, GPT-2) evaluate on detokenized text
and normalise by the ORIGINAL word count, so both steps live here.
"""

from __future__ import annotations

import re

__all__ = ["wikitext_detokenize", "count_words"]

_RULES = [
    # escaped separators inside words and numbers: 1 @,@ 000 -> 1,000 ; well @-@ known -> well-known
    (re.compile(r" @([-,.])@ "), r"\1"),
    # headings: "= = Title = =" -> "== Title =="
    (re.compile(r"(?<!\S)= = = = "), "==== "), (re.compile(r" = = = =(?!\S)"), " ===="),
    (re.compile(r"(?<!\S)= = = "), "=== "), (re.compile(r" = = =(?!\S)"), " ==="),
    (re.compile(r"(?<!\S)= = "), "== "), (re.compile(r" = =(?!\S)"), " =="),
    # contractions and possessives: do n't -> don't ; John 's -> John's
    (re.compile(r" n't\b"), "n't"),
    (re.compile(r" '(s|re|ve|ll|d|m)\b"), r"'\1"),
    (re.compile(r"(\w)s ' "), r"\1s' "),
    # spaces before closing punctuation and after opening brackets
    (re.compile(r" ([.,;:!?%])(?=\s|$)"), r"\1"),
    (re.compile(r"([(\[{]) "), r"\1"),
    (re.compile(r" ([)\]}])"), r"\1"),
    # quoted spans: " word word " -> "word word"
    (re.compile(r'" ([^"\n]*?) "'), r'"\1"'),
    # currency and units written apart: $ 5 -> $5
    (re.compile(r"([$£€]) (?=\d)"), r"\1"),
    # line edges: " \n" and "\n " -> "\n"
    (re.compile(r"[ \t]+\n"), "\n"),
    (re.compile(r"\n[ \t]+"), "\n"),
]


def wikitext_detokenize(text: str) -> str:
    """WikiText's tokenized text -> ordinary text (idempotent on text that is already plain)."""
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text


def count_words(text: str) -> int:
    """Whitespace-separated words: the denominator of word-level perplexity (count it on the
    original text, before any detokenization)."""
    return len(text.split())
