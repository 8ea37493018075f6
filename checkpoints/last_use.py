"""When a cached checkpoint was last used: one marker file per checkpoint directory.

Its own module because both :mod:`checkpoints.cache` (listing, LRU order) and
:mod:`checkpoints.leases` (a released lease counts as a use) record it, and the cache imports the
leases; keeping it here lets both import it without an import circle.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger(__name__)

LAST_USED_NAME = ".hark-last-used"


def touch_last_used(path: Path) -> None:
    """Record that the checkpoint at ``path`` was just used (for least-recently-used eviction)."""
    try:
        (path / LAST_USED_NAME).write_text(datetime.now(UTC).isoformat() + "\n", encoding="utf-8")
    except OSError as error:  # a read-only (baked) cache is fine
        logger.debug("cannot record last use of %s: %s", path, error)


def last_used(path: Path) -> datetime | None:
    """When the checkpoint at ``path`` was last resolved, if ever recorded."""
    try:
        return datetime.fromtimestamp((path / LAST_USED_NAME).stat().st_mtime, UTC)
    except OSError:
        return None
