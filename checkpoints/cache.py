"""The checkpoint cache directory (``MODEL_CACHE_DIR``), shareable between processes and hosts.

Layout::

    <cache_dir>/<name>/<version>/      one verified checkpoint (manifest.json + files +
                                       .hark-verified.json + .hark-last-used)
    <cache_dir>/.locks/<hash>.lock     one file lock per source (URL) and per name@version
    <cache_dir>/.sources/<hash>.json   which name@version a source resolved to (reuse without fetching)
    <cache_dir>/.staging/<tmp>/        extractions in progress; renamed into place when verified, so
                                       readers never see a half-written checkpoint
    <cache_dir>/.partial/<hash>/       resumable downloads of one source (see checkpoints.transfer)
                                       with a reservation.json (see checkpoints.space)
    <cache_dir>/.leases/<name>/<version>/<host>.<pid>.<token>.lease
                                       live processes using a checkpoint (see checkpoints.leases);
                                       ``hold(path)`` takes one
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from checkpoints.errors import CheckpointError
from checkpoints.last_use import LAST_USED_NAME as LAST_USED_NAME
from checkpoints.last_use import last_used as last_used
from checkpoints.last_use import touch_last_used as touch_last_used
from checkpoints.leases import Lease as Lease
from checkpoints.leases import hold as hold
from checkpoints.manifest import MANIFEST_NAME, Manifest, load_manifest
from checkpoints.verify import verify_checkpoint

logger = logging.getLogger(__name__)

LOCKS_DIR = ".locks"
SOURCES_DIR = ".sources"
STAGING_DIR = ".staging"
#: How often a process waiting for a lock says so in the log.
WAIT_LOG_SECONDS = 30.0


def checkpoint_path(cache_dir: Path, name: str, version: str) -> Path:
    """Where ``name@version`` lives in the cache."""
    return Path(cache_dir) / name / version


def key_digest(key: str) -> str:
    """A short, filesystem-safe hash of a source key (never store the URL itself in a file name)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def is_inside(cache_dir: Path, path: Path) -> bool:
    """True when ``path`` lies under ``cache_dir``."""
    root, candidate = Path(cache_dir).resolve(), Path(path).resolve()
    return root == candidate or root in candidate.parents


@contextmanager
def locked(cache_dir: Path, key: str, what: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the cache-wide lock for ``key`` (an flock: released by the OS if the holder dies).

    Args:
        cache_dir: The cache directory.
        key: What is locked (a source URL, ``checkpoint:name@version``).
        what: How to name it in the "waiting" log line and the timeout error.
        timeout: Seconds to wait for another process; None waits as long as it takes.
    """
    locks = Path(cache_dir) / LOCKS_DIR
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(locks / f"{key_digest(key)}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = 0.0
        while True:
            step = WAIT_LOG_SECONDS if timeout is None else min(WAIT_LOG_SECONDS, timeout - waited)
            logger.info("waiting for another process that is fetching %s%s", what,
                        f" ({waited:.0f} s so far)" if waited else "")  # fmt: skip
            try:
                lock.acquire(timeout=max(step, 0))
                break
            except Timeout:
                waited += step
                if timeout is not None and waited >= timeout:
                    raise CheckpointError(
                        f"gave up after {timeout:.0f} s waiting for another process fetching {what} into "
                        f"{cache_dir}; if none is running, check the volume supports file locks"
                    ) from None
    try:
        yield
    finally:
        lock.release()


def new_staging_dir(cache_dir: Path) -> Path:
    """A fresh private directory on the cache volume (so the final rename is atomic)."""
    staging = Path(cache_dir) / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=staging))


def read_source(cache_dir: Path, key: str) -> dict[str, str] | None:
    """The name and version a source key resolved to earlier, if recorded."""
    try:
        data = json.loads((Path(cache_dir) / SOURCES_DIR / f"{key_digest(key)}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"name", "version"} <= data.keys() else None


def write_source(cache_dir: Path, key: str, shown: str, manifest: Manifest, sha256: str | None = None) -> None:
    """Remember that a source key (shown redacted) resolved to ``manifest``'s name@version.

    ``sha256`` is the checksum of what the source names (the archive, or the manifest of an unpacked
    checkpoint), compared with ``MODEL_CHECKSUM`` on later starts without fetching again.
    """
    folder = Path(cache_dir) / SOURCES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key_digest(key)}.json"
    temp = target.with_suffix(f".{os.getpid()}.tmp")
    record = {"source": shown, "name": manifest.name, "version": manifest.version,
              "fetched_at": datetime.now(UTC).isoformat()}  # fmt: skip
    if sha256:
        record["sha256"] = sha256
    temp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(temp, target)


def forget_sources(cache_dir: Path, name: str, version: str) -> None:
    """Drop the source records pointing at ``name@version`` (after it was evicted)."""
    for file in (Path(cache_dir) / SOURCES_DIR).glob("*.json"):
        try:
            data = json.loads(file.read_text("utf-8"))
            if data.get("name") == name and data.get("version") == version:
                file.unlink()
        except (OSError, ValueError, AttributeError):
            continue


def install(staged: Path, cache_dir: Path, manifest: Manifest, *, lock_timeout: float | None = None) -> Path:
    """Move a verified, staged checkpoint directory to ``<cache_dir>/<name>/<version>`` atomically.

    If that place already holds a verified copy with the same files, it is kept (and ``staged`` is
    left for the caller to delete). A broken copy there is replaced.

    Raises:
        CheckpointError: The cache already holds ``name@version`` with different files.
    """
    target = checkpoint_path(cache_dir, manifest.name, manifest.version)
    with locked(cache_dir, f"checkpoint:{manifest.label}", manifest.label, lock_timeout):
        if target.exists():
            try:
                existing = load_manifest(target)
                verify_checkpoint(target, existing)
            except CheckpointError as error:
                logger.warning("replacing the broken cached copy of %s: %s", manifest.label, error,
                               extra={"checkpoint": manifest.label})  # fmt: skip
                trash = new_staging_dir(cache_dir)
                os.rename(target, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            else:
                if existing.files != manifest.files:
                    raise CheckpointError(
                        f"the cache already holds {manifest.label} at {target} with different files; "
                        "give the new checkpoint a new version, or delete the cached copy "
                        f"(rm -r {target}) if it is obsolete"
                    )
                return target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target)
    return target


@dataclass(frozen=True)
class CachedCheckpoint:
    """One ``<name>/<version>`` directory of the cache."""

    path: Path
    name: str
    version: str
    manifest: Manifest | None
    """None when the manifest is missing or invalid (see ``problem``)."""
    size: int
    last_used: datetime | None
    problem: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def _directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def list_cached(cache_dir: Path) -> list[CachedCheckpoint]:
    """Every checkpoint directory in the cache, sorted by name and version."""
    found: list[CachedCheckpoint] = []
    root = Path(cache_dir)
    if not root.is_dir():
        return found
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (version_dir / MANIFEST_NAME).exists():
                continue
            manifest, problem = None, None
            try:
                manifest = load_manifest(version_dir)
            except CheckpointError as error:
                problem = str(error)
            found.append(CachedCheckpoint(
                path=version_dir, name=name_dir.name, version=version_dir.name, manifest=manifest,
                size=manifest.total_size if manifest else _directory_size(version_dir),
                last_used=last_used(version_dir), problem=problem,
            ))  # fmt: skip
    return found


def find_cached(cache_dir: Path, name: str, version: str | None = None) -> list[CachedCheckpoint]:
    """The cached versions of checkpoint ``name`` (just ``version`` when given)."""
    return [c for c in list_cached(cache_dir) if c.name == name and (version is None or c.version == version)]
