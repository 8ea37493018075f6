"""Leases: which checkpoints of a shared cache are in use by a live process, on any host.

A process that uses ``<cache>/<name>/<version>`` holds a lease file
``<cache>/.leases/<name>/<version>/<host>.<pid>.<token>.lease`` (JSON: host, pid, label, since) and
a background thread touches its mtime every :data:`RENEW_SECONDS`. A lease is *live* while its mtime
is younger than :data:`TTL_SECONDS` by the volume's own clock (read from a file touched just
before, so hosts with skewed clocks agree), and, for a lease of this very host, while its process
exists. Eviction never removes a checkpoint with a live lease; a crashed worker's lease dies with it
(at once on the same host, after the TTL elsewhere).

Lease creation and eviction both happen under the checkpoint's cache lock, so a checkpoint is either
leased before an evictor looks at it or gone before the lease holder checks that it exists.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from checkpoints.last_use import touch_last_used
from hark.proc import pid_alive

logger = logging.getLogger(__name__)

LEASES_DIR = ".leases"
LEASE_SUFFIX = ".lease"
RENEW_SECONDS = 15.0
TTL_SECONDS = 90.0

_HOST = socket.gethostname()


@dataclass(frozen=True)
class LeaseInfo:
    """A lease file as another process sees it."""

    path: Path
    host: str
    pid: int
    age: float
    """Seconds since the holder last renewed it (by the volume's clock)."""

    @property
    def holder(self) -> str:
        return f"{self.host}:{self.pid}"


def lease_dir(cache_dir: Path, name: str, version: str) -> Path:
    """Where the leases of ``name@version`` live."""
    return Path(cache_dir) / LEASES_DIR / name / version


def cache_of(path: Path) -> Path | None:
    """The cache directory holding the checkpoint directory ``path``, or None when it is not in one."""
    root = Path(path).absolute().parent.parent
    markers = (".locks", ".sources", ".leases", ".staging")
    return root if any((root / marker).is_dir() for marker in markers) else None


class Lease:
    """This process's claim on one cached checkpoint; renewed in the background until released.

    Use it as a context manager, or keep it and call :meth:`release` (it is also released when the
    process exits normally). A lease of a directory outside any cache is a harmless no-op.
    """

    def __init__(self, path: Path, cache_dir: Path | None) -> None:
        self.checkpoint = Path(path)
        self.file: Path | None = None
        self._pid = os.getpid()
        if cache_dir is None:
            return
        folder = lease_dir(cache_dir, self.checkpoint.parent.name, self.checkpoint.name)
        token = secrets.token_hex(4)
        record = {"host": _HOST, "pid": self._pid, "checkpoint": f"{self.checkpoint.parent.name}@"
                  f"{self.checkpoint.name}", "since": datetime.now(UTC).isoformat()}  # fmt: skip
        try:
            folder.mkdir(parents=True, exist_ok=True)
            file = folder / f"{_HOST}.{self._pid}.{token}{LEASE_SUFFIX}"
            file.write_text(json.dumps(record), encoding="utf-8")
        except OSError as error:  # a read-only cache mount: nobody can evict from it either
            logger.debug("cannot write a lease for %s: %s", path, error)
            return
        self.file = file
        _renewer.add(self)

    @property
    def held(self) -> bool:
        return self.file is not None

    def renew(self) -> None:
        """Touch the lease file (the background thread does this every RENEW_SECONDS)."""
        if self.file is not None:
            try:
                os.utime(self.file)
            except FileNotFoundError:  # removed by hand or by a cleaner: put it back
                with contextlib.suppress(OSError):
                    self.file.write_text(json.dumps({"host": _HOST, "pid": self._pid}), encoding="utf-8")
            except OSError as error:
                logger.warning("cannot renew the lease on %s: %s", self.checkpoint, error)

    def release(self) -> None:
        """Give the checkpoint up (and record the moment as its last use)."""
        file, self.file = self.file, None
        if file is None or os.getpid() != self._pid:  # a forked child never drops its parent's lease
            return
        _renewer.discard(self)
        with contextlib.suppress(OSError):
            file.unlink()
        touch_last_used(self.checkpoint)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:  # fmt: skip
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.checkpoint}, held={self.held})"


class _Renewer:
    """One daemon thread per process renewing every held lease."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases.add(lease)
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._loop, name="hark-lease-renewer", daemon=True)
                self._thread.start()

    def discard(self, lease: Lease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def _loop(self) -> None:
        while True:
            time.sleep(RENEW_SECONDS)
            with self._lock:
                leases = list(self._leases)
            for lease in leases:
                lease.renew()

    def release_all(self) -> None:
        with self._lock:
            leases = list(self._leases)
        for lease in leases:
            lease.release()


_renewer = _Renewer()
atexit.register(_renewer.release_all)


def hold(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None) -> Lease:
    """Mark the cached checkpoint at ``path`` as in use by this process until released.

    Args:
        path: The checkpoint directory (``LocalCheckpoint.path``), ``<cache>/<name>/<version>``.
        cache_dir: The cache holding it; found from ``path`` when omitted.

    Returns:
        The lease (a context manager; ``release()`` ends it). Directories outside a cache (baked
        images, ``MODEL_PATH``) get a no-op lease.
    """
    path = Path(path)
    root = Path(cache_dir) if cache_dir is not None else cache_of(path)
    if root is not None and Path(path).absolute().parent.parent != root.absolute():
        root = None
    return Lease(path, root)


    return True


def volume_now(cache_dir: Path) -> float:
    """The current time by the clock that stamps files on the cache volume (local time as a fallback)."""
    clock = Path(cache_dir) / LEASES_DIR / f".clock.{_HOST}.{os.getpid()}"
    try:
        clock.parent.mkdir(parents=True, exist_ok=True)
        clock.touch()
        now = clock.stat().st_mtime
        clock.unlink(missing_ok=True)
        return now
    except OSError:
        return time.time()


def leases_of(cache_dir: Path, name: str, version: str, *, now: float | None = None) -> list[LeaseInfo]:
    """The live leases on ``name@version`` (stale ones are deleted on the way)."""
    folder = lease_dir(cache_dir, name, version)
    if not folder.is_dir():
        return []
    now = volume_now(cache_dir) if now is None else now
    live = []
    for file in folder.glob(f"*{LEASE_SUFFIX}"):
        host, _, rest = file.name.rpartition(LEASE_SUFFIX)[0].rpartition(".")[0].rpartition(".")
        try:
            age = now - file.stat().st_mtime
            pid = int(rest)
        except (OSError, ValueError):
            continue
        dead = age > TTL_SECONDS or (host == _HOST and not pid_alive(pid))
        if dead:
            logger.info("removing the stale lease %s (holder %s:%s gone)", file.name, host, pid)
            with contextlib.suppress(OSError):
                file.unlink()
            continue
        live.append(LeaseInfo(path=file, host=host, pid=pid, age=age))
    return live


def newest_lease_time(cache_dir: Path, name: str, version: str) -> float | None:
    """mtime of the most recently renewed lease file of ``name@version`` (live or not), if any."""
    times = []
    for file in lease_dir(cache_dir, name, version).glob(f"*{LEASE_SUFFIX}"):
        with contextlib.suppress(OSError):
            times.append(file.stat().st_mtime)
    return max(times, default=None)
