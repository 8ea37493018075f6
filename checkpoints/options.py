"""How checkpoints are fetched, cached and checked: one value object built from the settings.

Every fetching function takes a :class:`FetchOptions`; the defaults are the documented defaults of
the ``MODEL_DOWNLOAD_*``, ``MODEL_CACHE_*`` and ``MODEL_VALIDATE`` variables, so code and tests that do
not care can omit it. :meth:`FetchOptions.from_settings` is the only bridge to the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from hark.settings import Settings

Validation = Literal["true", "false", "full"]


@dataclass(frozen=True)
class FetchOptions:
    """Download, cache and validation policy."""

    workers: int = 4
    """Parallel range requests (``MODEL_DOWNLOAD_WORKERS``), shared by all files of one checkpoint."""
    resume: bool = True
    """Continue a partial download left by a crash (``MODEL_DOWNLOAD_RESUME``)."""
    retries: int = 3
    """Retries of a request after a transient failure without progress (``MODEL_DOWNLOAD_RETRIES``)."""
    timeout: float = 3600.0
    """Seconds for the whole download of one checkpoint (``MODEL_DOWNLOAD_TIMEOUT``)."""
    stall_timeout: float = 30.0
    """Seconds without a byte on a connection before it counts as stalled and is retried."""
    connect_timeout: float = 15.0
    backoff_base: float = 1.0
    """First retry waits up to this many seconds, doubling per retry (full jitter), capped at 30 s."""
    chunk_size: int = 256 * 1024
    """Bytes read from the network and written (and recorded for resume) at a time."""
    min_segment: int = 1024 * 1024
    max_segment: int = 256 * 1024 * 1024
    """A large file is split in ``workers * 4`` range segments, each between these sizes."""
    max_cache_bytes: int | None = None
    """``MODEL_CACHE_MAX_SIZE`` in bytes; None = no limit but the disk."""
    eviction: Literal["lru", "none"] = "lru"
    """``MODEL_CACHE_EVICTION``: evict least-recently-used, unheld checkpoints to make room."""
    validation: Validation = "true"
    """``MODEL_VALIDATE`` for checkpoints already on disk (downloads are always hashed)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchOptions:
        """The options the environment configures."""
        return cls(
            workers=settings.model_download_workers,
            resume=settings.model_download_resume,
            retries=settings.model_download_retries,
            timeout=settings.model_download_timeout,
            max_cache_bytes=settings.model_cache_max_size,
            eviction=settings.model_cache_eviction,
            validation=settings.model_validation,
        )

    def with_(self, **changes: object) -> FetchOptions:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
