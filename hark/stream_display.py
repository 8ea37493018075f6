"""What `hark stream` prints for the messages of a live session.

On a terminal the partial transcript is rewritten in place (carriage return, dimmed, cut to the
terminal's width so a wrapped line never has to be erased) and every final gets its own line with its
start and end times. Elsewhere (a pipe, a file) only finals are printed, so the output is the
transcript. ``--json`` prints every message as one JSON line instead. Errors are left to the command,
which prints them as it exits.
"""

from __future__ import annotations

import json
import shutil
from typing import Any, TextIO

DIM = "\x1b[2m"
RESET = "\x1b[0m"
CLEAR_LINE = "\r\x1b[2K"


def clock(seconds: float) -> str:
    """``mm:ss.s`` (``h:mm:ss.s`` past an hour)."""
    tenths = round(max(seconds, 0.0) * 10)
    minutes, tenth_seconds = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    body = f"{minutes:02d}:{tenth_seconds // 10:02d}.{tenth_seconds % 10}"
    return f"{hours}:{body}" if hours else body


def final_line(message: dict[str, Any]) -> str:
    """``[00:01.2 → 00:03.4] text`` (no bracket when the server sent no times)."""
    text = str(message.get("transcript") or "").strip()
    start, end = message.get("start"), message.get("end")
    if isinstance(start, int | float) and isinstance(end, int | float):
        return f"[{clock(start)} → {clock(end)}] {text}"
    return text


def words_line(message: dict[str, Any]) -> str | None:
    """The final's words with their times (``--word-timestamps``), or None when it has none."""
    words = message.get("words") or []
    if not words:
        return None
    return "    " + " ".join(f"{w.get('word', '').strip()}@{float(w.get('start', 0.0)):.2f}" for w in words)


class Printer:
    """Prints the messages of one session (see the module docstring).

    Args:
        out: Where transcripts go (stdout).
        err: Where errors and notes go (stderr).
        tty: Whether `out` is a terminal (partials in place) or not (finals only).
        as_json: Print every message as a JSON line.
        width: Terminal columns (default: asked from the terminal).
    """

    def __init__(self, out: TextIO, err: TextIO, *, tty: bool, as_json: bool = False, width: int | None = None) -> None:
        self.out = out
        self.err = err
        self.tty = tty
        self.as_json = as_json
        self.width = width or shutil.get_terminal_size((100, 24)).columns
        self.partial_shown = False
        self.finals = 0

    def handle(self, message: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(json.dumps(message, ensure_ascii=False) + "\n")
            self.out.flush()
            return
        kind = message.get("type")
        if kind == "transcription":
            if message.get("is_final"):
                self._final(message)
            elif self.tty:
                self._partial(str(message.get("transcript") or ""))
        elif kind in ("speech_started", "speech_ended"):
            self._vad(kind, message)
        elif kind == "error":
            self.clear()  # the command prints the error when it exits

    def _partial(self, text: str) -> None:
        text = text.strip()
        room = max(self.width - 1, 10)
        if len(text) > room:
            text = "…" + text[-(room - 1) :]
        self.out.write(f"{CLEAR_LINE}{DIM}{text}{RESET}")
        self.out.flush()
        self.partial_shown = bool(text)

    def _final(self, message: dict[str, Any]) -> None:
        self.clear()
        if not str(message.get("transcript") or "").strip():
            return  # an empty final (the is_last of a silent tail): nothing to show
        self.finals += 1
        self.out.write(final_line(message) + "\n")
        words = words_line(message)
        if words:
            self.out.write((f"{DIM}{words}{RESET}" if self.tty else words) + "\n")
        self.out.flush()

    def _vad(self, kind: str, message: dict[str, Any]) -> None:
        note = f"· {kind.replace('_', ' ')} at {clock(float(message.get('timestamp', 0.0)))}"
        if self.tty:
            self.clear()
            self.out.write(f"{DIM}{note}{RESET}\n")
            self.out.flush()
        else:
            self.err.write(note + "\n")
            self.err.flush()

    def clear(self) -> None:
        """Erase a partial left on the terminal line."""
        if self.partial_shown:
            self.out.write(CLEAR_LINE)
            self.out.flush()
            self.partial_shown = False
