"""LocalAgreement for live partials: commit the words two consecutive hypotheses agree on.

Each partial re-decodes the whole growing utterance, so the newest words flicker while the audio of
the word is still arriving. A word is committed once two hypotheses in a row put it at the same place
after the committed prefix (LocalAgreement-2, as in whisper_streaming); committed words never change
until the utterance ends. The next decode is asked to start with them (Whisper's ``prefix``), so its
hypothesis continues them instead of contradicting them.
"""

from __future__ import annotations

import re

_NOT_WORD = re.compile(r"[^\w']+")


def word_key(word: str) -> str:
    """How words are compared: lowercase, punctuation dropped ("Dog." and "dog" agree)."""
    return _NOT_WORD.sub("", word.lower())


class LocalAgreement:
    """The committed prefix of one utterance and the previous hypothesis' unstable tail."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self._previous: list[str] = []

    @property
    def prefix(self) -> str:
        """The committed words as text ("" before any commit)."""
        return " ".join(self.committed)

    def update(self, hypothesis: list[str]) -> list[str]:
        """Take a new hypothesis of the whole utterance; returns the words shown after the committed prefix.

        Words of the hypothesis' tail that match the previous hypothesis' tail, from its start on, are
        committed; the rest stays unstable until the next hypothesis confirms or replaces it.
        """
        tail = hypothesis[self._skip(hypothesis) :]
        agreed = 0
        for new, old in zip(tail, self._previous, strict=False):
            if word_key(new) != word_key(old):
                break
            agreed += 1
        self.committed.extend(tail[:agreed])
        self._previous = tail[agreed:]
        return list(self._previous)

    def _skip(self, hypothesis: list[str]) -> int:
        """Words of `hypothesis` that cover the committed prefix (their letters match, however split)."""
        if not self.committed:
            return 0
        head = [word_key(w) for w in hypothesis[: len(self.committed)]]
        if head == [word_key(w) for w in self.committed]:
            return len(self.committed)
        target = "".join(word_key(w) for w in self.committed)
        joined = ""
        for index, word in enumerate(hypothesis):
            joined += word_key(word)
            if joined == target:
                return index + 1
            if not target.startswith(joined):
                break
        return len(self.committed)  # the decode disagreed with the prefix: assume word-for-word
