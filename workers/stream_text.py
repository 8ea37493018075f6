"""Text of live messages: the client's punctuate / capitalize choices and sentence splitting.

Whisper always writes cased, punctuated text; a session that asked for neither gets it stripped and
lowercased here, after sentences were split on the original punctuation.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

#: Characters stripped from the edges of each word when ``punctuate`` is off (inside a word they stay:
#: "don't", "e-mail", "3.5").
_EDGE_PUNCTUATION = string.punctuation + "¿¡“”‘’«»…–—、。，！？：；"
_SENTENCE_END = (".", "?", "!", "。", "？", "！", "…")
_CLOSERS = "\"'”’)]}»"


def format_word(word: str, punctuate: bool, capitalize: bool) -> str:
    """One word as the client wants it ("" when nothing but punctuation is left)."""
    word = word.strip()
    if not punctuate:
        word = word.strip(_EDGE_PUNCTUATION)
    return word if capitalize else word.lower()


def format_text(text: str, punctuate: bool, capitalize: bool) -> str:
    """A transcript as the client wants it: words formatted one by one, single spaces."""
    words = (format_word(w, punctuate, capitalize) for w in text.split())
    return " ".join(w for w in words if w)


def ends_sentence(word: str) -> bool:
    """Whether `word` closes a sentence ("dog." "right?" "stop!\"")."""
    return word.rstrip(_CLOSERS).endswith(_SENTENCE_END)


def split_sentences(words: Sequence[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """Sentences ``(text, start, end)`` from timed words, split after words ending in . ? or !."""
    sentences: list[tuple[str, float, float]] = []
    current: list[tuple[str, float, float]] = []
    for word in words:
        current.append(word)
        if ends_sentence(word[0]):
            sentences.append(_sentence(current))
            current = []
    if current:
        sentences.append(_sentence(current))
    return sentences


def _sentence(words: list[tuple[str, float, float]]) -> tuple[str, float, float]:
    return " ".join(w[0].strip() for w in words), words[0][1], words[-1][2]


def tail_text(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters, starting at a word boundary."""
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    return tail.split(" ", 1)[-1] if " " in tail else tail
