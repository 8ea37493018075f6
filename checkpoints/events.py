"""Optional hooks on what the checkpoint cache does, for whoever embeds the package.

The package stays usable alone (the ``hark checkpoints`` CLI, pre-warming jobs): it only calls the
listeners registered here, and there are none unless a host process adds them. The worker supervisor
wires them to Prometheus counters (``hark_checkpoint_cache_events_total``,
``hark_checkpoint_download_bytes_total``). A listener must be cheap and must not raise; one that does is
logged and ignored, so metrics can never break a fetch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

logger = logging.getLogger(__name__)

CacheEvent = Literal["hit", "miss", "eviction"]
EventListener = Callable[[CacheEvent], None]
BytesListener = Callable[[int], None]

_lock = threading.Lock()
_event_listeners: list[EventListener] = []
_bytes_listeners: list[BytesListener] = []


def on_cache_event(listener: EventListener) -> None:
    """Call `listener("hit" | "miss" | "eviction")` for every cache lookup outcome and every eviction."""
    with _lock:
        _event_listeners.append(listener)


def on_download_bytes(listener: BytesListener) -> None:
    """Call `listener(n)` for every `n` bytes of checkpoint data received from a remote source."""
    with _lock:
        _bytes_listeners.append(listener)


def clear() -> None:
    """Remove every listener (tests)."""
    with _lock:
        _event_listeners.clear()
        _bytes_listeners.clear()


def cache_event(event: CacheEvent) -> None:
    """Report a cache hit, a miss (a fetch follows) or the eviction of a checkpoint."""
    for listener in list(_event_listeners):
        try:
            listener(event)
        except Exception:
            logger.exception("a checkpoint cache listener failed (ignored)")


def downloaded(count: int) -> None:
    """Report `count` bytes received from a remote source."""
    for listener in list(_bytes_listeners):
        try:
            listener(count)
        except Exception:
            logger.exception("a checkpoint download listener failed (ignored)")
