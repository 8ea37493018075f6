"""What the transfer engine needs from a protocol (:class:`RangeSource`), and retrying transient failures.

HTTP(S) (:mod:`checkpoints.fetch_http`) and S3 (:mod:`checkpoints.fetch_s3`) implement
:class:`RangeSource`; :mod:`checkpoints.transfer` drives them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from checkpoints.errors import FetchError
from checkpoints.options import FetchOptions

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


class TransientError(Exception):
    """A failure worth retrying (connection lost, stall, 5xx, truncated body). The message is safe to show."""


@dataclass(frozen=True)
class RemoteInfo:
    """What a probe learned about a remote file."""

    size: int | None
    """Total bytes, or None when the server does not say."""
    ranges: bool
    """The server answers byte-range requests (so downloads can be split and resumed)."""
    validator: str | None = None
    """ETag or Last-Modified: a resumed download is only continued while it is unchanged."""


class RangeSource(Protocol):
    """One remote file."""

    shown: str
    """The location with credentials redacted, for messages."""

    def probe(self) -> RemoteInfo:
        """Size, range support and validator. Raises FetchError (permanent) or TransientError."""
        ...

    def stream(self, start: int, end: int | None) -> AbstractContextManager[Iterable[bytes]]:
        """Bytes ``start..end`` (inclusive; ``end=None``: to the end) as chunks.

        Raises FetchError (permanent) or TransientError, also while iterating.
        """
        ...


@dataclass
class FileJob:
    """One file to download."""

    source: RangeSource
    dest: Path
    expected_size: int | None = None
    """Known size (from a manifest): a server announcing another size is an error."""


def backoff_delay(failures: int, base: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, base * 2**(failures-1)], capped."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, base * 2 ** max(failures - 1, 0)))


def with_retries(call: Callable[[], object], what: str, options: FetchOptions, deadline: float) -> object:
    """Run ``call`` (a probe, a small read), retrying TransientError like a segment would."""
    failures = 0
    while True:
        try:
            return call()
        except TransientError as error:
            failures += 1
            if failures > options.retries:
                raise FetchError(f"{what}: {error} (gave up after {options.retries} retries)") from None
            delay = backoff_delay(failures, options.backoff_base)
            if time.monotonic() + delay > deadline:
                raise FetchError(f"{what}: {error}; no time left within MODEL_DOWNLOAD_TIMEOUT") from None
            logger.warning("%s: %s; retry %d of %d in %.1f s", what, error, failures, options.retries, delay)
            time.sleep(delay)
