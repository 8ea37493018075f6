"""Progress for long byte-moving work (hashing, copying, archiving, downloading).

On a terminal a rich progress bar (bytes, rate, ETA) on stderr; elsewhere (container logs) an INFO log
line at most every ``LOG_EVERY_SECONDS``, so ``kubectl logs -f`` stays readable.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

logger = logging.getLogger(__name__)

#: Work smaller than this finishes too fast to be worth a bar.
MIN_BYTES_FOR_PROGRESS = 32 * 1024 * 1024
LOG_EVERY_SECONDS = 15.0


class Advance(Protocol):
    def __call__(self, count: int) -> None: ...


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def human_size(count: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    return _human(count)


@contextmanager
def byte_progress(
    description: str, total: int | None, enabled: bool | None = None, *, start: int = 0
) -> Iterator[Advance]:
    """Report progress over ``total`` bytes; yields ``advance(count)``.

    Args:
        description: What is happening ("hashing model.bin").
        total: Expected byte count, or None when unknown.
        enabled: True forces the bar, False disables all progress output, None (default) shows a bar
            on a terminal and periodic log lines elsewhere, both only for large work.
        start: Bytes already done before this run (a resumed download); the rate counts only new ones.
    """
    if enabled is False or (enabled is None and total is not None and total < MIN_BYTES_FOR_PROGRESS):
        yield lambda count: None
        return
    if enabled or sys.stderr.isatty():
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn(),
        )  # fmt: skip
        from rich.console import Console

        with Progress(*columns, transient=True, console=Console(stderr=True)) as bar:
            task = bar.add_task(description, total=total, completed=start)
            yield lambda count: bar.advance(task, count)
        return
    yield from _log_progress(description, total, start)


def _log_progress(description: str, total: int | None, start: int = 0) -> Iterator[Advance]:
    started = last = time.monotonic()
    done = start

    def advance(count: int) -> None:
        nonlocal done, last
        done += count
        now = time.monotonic()
        if now - last >= LOG_EVERY_SECONDS:
            last = now
            rate = (done - start) / max(now - started, 1e-6)
            share = f" of {_human(total)} ({100 * done / total:.0f}%)" if total else ""
            eta = f", ~{(total - done) / rate:.0f} s left" if total and rate > 0 else ""
            logger.info("%s: %s%s at %s/s%s", description, _human(done), share, _human(rate), eta)

    yield advance
    if time.monotonic() - started >= LOG_EVERY_SECONDS:
        logger.info("%s: done, %s in %.0f s", description, _human(done - start), time.monotonic() - started)
