"""The per-process worker state that tasks use: set once by the child bootstrap (:mod:`workers.child`).

A model child holds one checkpoint's executor; the webhook child holds none. Tasks call
:func:`current` and never build engines or connections themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from hark.jobs import JobStore
from hark.schemas import CheckpointInfo
from hark.sessions import SessionStore
from hark.settings import Settings
from workers.executor import CheckpointExecutor

if TYPE_CHECKING:
    from workers.stream_transcriber import UtteranceDecoder


@dataclass
class WorkerContext:
    """Everything a task needs in this process."""

    settings: Settings
    redis: redis.Redis
    store: JobStore
    worker_id: str
    checkpoint: CheckpointInfo | None = None
    """The checkpoint this child serves (None in the webhook child)."""
    executor: CheckpointExecutor | None = None
    sessions: SessionStore | None = None
    """Live sessions' Redis state (model children only)."""
    engine_decoder: UtteranceDecoder | None = None
    """Runs live sessions' partial and final decodes on the executor's lanes (model children only)."""

    @property
    def deployment(self) -> str:
        return self.settings.deployment


_lock = threading.Lock()
_current: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    """Make `context` the process's worker state."""
    global _current
    with _lock:
        _current = context


def clear() -> None:
    """Forget the process's worker state (shutdown, tests)."""
    global _current
    with _lock:
        _current = None


def current() -> WorkerContext:
    """The process's worker state.

    Raises:
        RuntimeError: The process was not started by :mod:`workers.child`.
    """
    context = _current
    if context is None:
        raise RuntimeError("no worker context: Hark tasks run only in processes started by `hark worker`")
    return context


def make_session_store(settings: Settings, client: redis.Redis) -> SessionStore:
    """The deployment's live-session store with the configured lease and idle timeout."""
    return SessionStore(client, settings.deployment, settings.stream_lease_seconds,
                        settings.stream_idle_timeout_seconds)  # fmt: skip


def make_store(settings: Settings, client: redis.Redis) -> JobStore:
    """The deployment's job store with the configured TTLs and job deadline."""
    return JobStore(client, settings.deployment, settings.result_ttl_seconds, settings.audio_ttl_seconds,
                    deadline=settings.job_deadline)
