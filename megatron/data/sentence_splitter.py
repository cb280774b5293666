"""A small offline sentence splitter for English (no nltk data download).

A boundary is a run of ``.``, ``!`` or ``?`` (optionally followed by closing quotes or brackets),
then whitespace, then something that can start a sentence (an upper-case letter, a digit, or an
opening quote/bracket). A period is *not* a boundary after a known abbreviation ("Dr.", "e.g.",
"U.S."), after a single letter (initials: "J. R. R. Tolkien"), or when the next word starts with a
lower-case letter. Line breaks that separate paragraphs (a blank line) are always boundaries.
"""

from __future__ import annotations

import re
from typing import List

# Lower-cased, without the final period.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al approx dept est inc ltd co corp
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
    no nos vol vols fig figs eq eqs ch sec p pp ed eds rev gen col lt sgt capt cmdr gov sen rep
    u.s u.k u.n a.m p.m ph.d b.a m.a b.sc m.sc
    """.split()
)

_BOUNDARY = re.compile(r"([.!?]+[\"'\u201d\u2019)\]]*)(\s+)(?=[\"'\u201c\u2018(\[]?[A-Z0-9])")
_PARAGRAPH = re.compile(r"\n\s*\n")
_LAST_WORD = re.compile(r"(\S+)$")


def _is_abbreviation(text_before: str, punct: str) -> bool:
    """Whether the period ending ``text_before`` belongs to an abbreviation or an initial."""
    if not punct.startswith(".") or len(punct.rstrip("\"'\u201d\u2019)]")) > 1:
        return False  # "!", "?" and "..." always end a sentence
    m = _LAST_WORD.search(text_before)
    if not m:
        return False
    word = m.group(1).lstrip("\"'\u201c\u2018([").lower()
    if word in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha():
        return True  # an initial such as "J."
    if re.fullmatch(r"(?:[a-z]\.)+[a-z]", word):
        return True  # dotted acronyms not in the list: "e.g", "n.b"
    return False


def split_sentences(text: str) -> List[str]:
    """Split ``text`` into sentences; each is stripped, empty ones are dropped."""
    sentences: List[str] = []
    for paragraph in _PARAGRAPH.split(text):
        start = 0
        for m in _BOUNDARY.finditer(paragraph):
            if _is_abbreviation(paragraph[start:m.start(1)], m.group(1)):
                continue
            piece = paragraph[start:m.end(1)].strip()
            if piece:
                sentences.append(piece)
            start = m.end(2)
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences
