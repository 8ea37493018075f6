"""The keys an API process accepts, with ``HARK_API_KEYS_FILE`` re-read when it changes (rotation without restart).

At most once a second a request stats the file (one cheap ``stat``); when its device, inode, size or mtime
differ from the file last loaded, the file is read and parsed again. An atomic rename (``hark keys``) and a
Kubernetes secret volume's symlink swap both give a new inode, so both are seen. A file that is malformed
or missing on reload is logged (with line numbers, never a key) and the previous good set stays in force;
the next change is tried again. Startup is stricter: :meth:`Settings.api_key_ring` refuses a bad file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from hark.api_keys import KeyEntry, KeyRing, KeysFileError, env_entries, read_keys_file
from hark.settings import Settings

log = logging.getLogger(__name__)

#: WSGI environ entry holding the authenticated key's name (web.auth sets it, the access log prints it).
ENVIRON_KEY_NAME = "hark.api_key_name"
#: Seconds between two looks at the keys file.
CHECK_INTERVAL_SECONDS = 1.0

Signature = tuple[int, int, int, int]
#: The signature of a file that cannot be stat'ed (gone, or a dangling link mid-swap).
MISSING: Signature = (-1, -1, -1, -1)


def _signature(stat: os.stat_result) -> Signature:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


class LiveKeyRing:
    """``HARK_API_KEYS`` plus the keys file as it is now; :meth:`lookup` is safe from many threads."""

    def __init__(self, env: list[KeyEntry], path: Path | None, *, interval: float = CHECK_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        """Load the keys.

        Raises:
            KeysFileError: The file is unreadable or malformed.
            ValueError: A name or a key is in both sources.
        """
        self.path = path
        self.interval = interval
        self.clock = clock
        self._env = env
        self._lock = threading.Lock()
        self._failed: Signature | None = None
        file_entries, stat = read_keys_file(path) if path is not None else ([], None)
        self._ring = KeyRing(env + file_entries)
        self._loaded: Signature | None = _signature(stat) if stat is not None else None
        self._checked_at = clock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveKeyRing:
        return cls(env_entries(settings.api_key_pairs), settings.api_keys_file)

    @property
    def ring(self) -> KeyRing:
        """The keys in force, after reloading the file if it changed (checked at most once per interval)."""
        if self.path is not None and self.clock() - self._checked_at >= self.interval:
            self._refresh()
        return self._ring

    def lookup(self, token: str) -> str | None:
        """The name of the key `token`, or None."""
        return self.ring.lookup(token)

    def _refresh(self) -> None:
        if not self._lock.acquire(blocking=False):
            return  # another thread is looking; this request uses the keys in force
        try:
            self._checked_at = self.clock()
            self._reload_if_changed()
        finally:
            self._lock.release()

    def _reload_if_changed(self) -> None:
        assert self.path is not None
        try:
            current = _signature(os.stat(self.path))
        except OSError as error:
            self._report(MISSING, f"cannot read the file: {error.strerror or error}")
            return
        if current == self._loaded:
            self._failed = None
            return
        if current == self._failed:
            return  # this version was already refused and logged
        try:
            entries, stat = read_keys_file(self.path)
            ring = KeyRing(self._env + entries)
        except KeysFileError as error:
            self._report(current, "; ".join(f"line {n}: {text}" if n else text for n, text in error.problems))
            return
        except ValueError as error:
            self._report(current, str(error))
            return
        before, after = set(self._ring.names), set(ring.names)
        self._ring, self._loaded, self._failed = ring, _signature(stat), None
        log.info("API keys file %s reloaded: %d key(s) in force; added %s; removed %s", self.path, len(ring),
                 ", ".join(sorted(after - before)) or "none", ", ".join(sorted(before - after)) or "none")

    def _report(self, signature: Signature, problem: str) -> None:
        """Log a failed reload once per version of the file; the previous keys stay in force."""
        if signature == self._failed:
            return
        self._failed = signature
        log.error("API keys file %s not reloaded, keeping the %d key(s) in force: %s", self.path, len(self._ring),
                  problem)  # fmt: skip
