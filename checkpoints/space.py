"""Room in the cache: the size limit, free disk space, and least-recently-used eviction.

Before a checkpoint is downloaded or unpacked into the cache, :func:`ensure_space` (under the
cache-wide ``cache:space`` lock, so two fetches do not both count the same free bytes):

1. refuses a checkpoint larger than ``MODEL_CACHE_MAX_SIZE`` outright (an archive counts with its
   unpacked size plus itself, as both are in the cache while it unpacks);
2. with ``MODEL_CACHE_EVICTION=lru``, evicts the least-recently-used checkpoints until the cache
   (checkpoints + other downloads' reservations) plus the new one fits the limit, and until the
   volume has the free space the download (and, for an archive, its unpacking) needs. Checkpoints
   with a live lease (a worker on any host uses them) and downloads another process is running are
   never touched; abandoned partial downloads are fair game;
3. fails early with the numbers when that is not enough;
4. records a reservation beside the partial download, so concurrent fetches see the space as taken.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from checkpoints import cache, events, leases
from checkpoints.errors import CheckpointError, StorageError
from checkpoints.options import FetchOptions
from checkpoints.progress import human_size

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"
RESERVATION = "reservation.json"
#: Extra free space kept beyond what a download needs (filesystem overhead, logs, markers).
FREE_MARGIN = 64 * 1024 * 1024
#: Staging directories untouched this long belong to a crashed process.
STALE_STAGING_SECONDS = 6 * 3600
EVICT_LOCK_TIMEOUT = 5.0


def partial_dir(cache_dir: Path, key: str) -> Path:
    """The resumable download area of one source (survives crashes, unlike staging dirs)."""
    return Path(cache_dir) / PARTIAL_DIR / cache.key_digest(key)


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem holding ``path`` (for the unprivileged user)."""
    return shutil.disk_usage(path).free


@dataclass(frozen=True)
class Partial:
    """An unfinished download in ``.partial/``."""

    path: Path
    label: str
    size: int
    lock: str
    """Digest naming the source lock file; held while a process downloads."""
    mtime: float

    def busy(self, cache_dir: Path) -> bool:
        """True while some process holds the source lock (is downloading it)."""
        lock = FileLock(str(Path(cache_dir) / cache.LOCKS_DIR / f"{self.lock}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False


def reserve(partial: Path, key: str, label: str, size: int) -> None:
    """Record that ``partial`` will grow to ``size`` bytes in the cache."""
    partial.mkdir(parents=True, exist_ok=True)
    record = {"label": label, "size": size, "lock": cache.key_digest(key)}
    (partial / RESERVATION).write_text(json.dumps(record), encoding="utf-8")


def list_partials(cache_dir: Path) -> list[Partial]:
    """Every unfinished download in the cache."""
    found = []
    for folder in sorted((Path(cache_dir) / PARTIAL_DIR).glob("*")):
        try:
            record = json.loads((folder / RESERVATION).read_text("utf-8"))
            newest = max((f.stat().st_mtime for f in folder.rglob("*")), default=folder.stat().st_mtime)
            found.append(Partial(folder, str(record["label"]), int(record["size"]), str(record["lock"]), newest))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def cache_usage(cache_dir: Path, exclude: Path | None = None) -> int:
    """Bytes the cache holds or has promised: checkpoints plus reservations of other downloads."""
    total = sum(c.size for c in cache.list_cached(cache_dir))
    total += sum(p.size for p in list_partials(cache_dir) if exclude is None or p.path != exclude)
    return total


def last_use(cache_dir: Path, checkpoint: cache.CachedCheckpoint) -> float:
    """When the checkpoint was last resolved, released by a worker, or installed (epoch seconds)."""
    times = [checkpoint.path.stat().st_mtime]
    if checkpoint.last_used is not None:
        times.append(checkpoint.last_used.timestamp())
    lease_time = leases.newest_lease_time(cache_dir, checkpoint.name, checkpoint.version)
    if lease_time is not None:
        times.append(lease_time)
    return max(times)


def remove_checkpoint(cache_dir: Path, checkpoint: cache.CachedCheckpoint, *, force: bool = False) -> list[str]:
    """Delete one cached checkpoint unless a live process holds it.

    Returns:
        The holders (``host:pid``) that prevented it; empty when it was deleted.
    """
    label = checkpoint.label
    try:
        with cache.locked(cache_dir, f"checkpoint:{label}", label, EVICT_LOCK_TIMEOUT):
            holders = [lease.holder for lease in leases.leases_of(cache_dir, checkpoint.name, checkpoint.version)]
            if holders and not force:
                return holders
            if checkpoint.path.exists():
                trash = cache.new_staging_dir(cache_dir)
                os.rename(checkpoint.path, trash / "evicted")
                shutil.rmtree(trash, ignore_errors=True)
            with contextlib.suppress(OSError):
                checkpoint.path.parent.rmdir()  # the name's folder, once its last version is gone
            cache.forget_sources(cache_dir, checkpoint.name, checkpoint.version)
    except CheckpointError:
        return ["(busy: being installed or verified right now)"]
    events.cache_event("eviction")
    logger.info("evicted %s (%s) from %s", label, human_size(checkpoint.size), cache_dir,
                extra={"checkpoint": label})  # fmt: skip
    return []


def _remove_partial(cache_dir: Path, partial: Partial) -> bool:
    lock = FileLock(str(Path(cache_dir) / cache.LOCKS_DIR / f"{partial.lock}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    try:
        shutil.rmtree(partial.path, ignore_errors=True)
    finally:
        lock.release()
    logger.info("deleted the abandoned partial download of %s (%s reserved)", partial.label,
                human_size(partial.size))  # fmt: skip
    return True


def clean_stale_staging(cache_dir: Path, older_than: float = STALE_STAGING_SECONDS) -> None:
    """Delete staging directories of crashed processes (nothing written in them for ``older_than`` s)."""
    now = time.time()
    for folder in (Path(cache_dir) / cache.STAGING_DIR).glob("*"):
        try:
            newest = max((f.stat().st_mtime for f in folder.rglob("*")), default=folder.stat().st_mtime)
        except OSError:
            continue
        if now - newest > older_than:
            shutil.rmtree(folder, ignore_errors=True)


def _candidates(cache_dir: Path, protect: set[str], own: Path | None) -> list[tuple[float, object]]:
    found: list[tuple[float, object]] = []
    for checkpoint in cache.list_cached(cache_dir):
        if checkpoint.label not in protect:
            found.append((last_use(cache_dir, checkpoint), checkpoint))
    for partial in list_partials(cache_dir):
        if partial.path != own and not partial.busy(cache_dir):
            found.append((partial.mtime, partial))
    found.sort(key=lambda item: item[0])
    return found


def ensure_space(
    cache_dir: Path,
    *,
    what: str,
    final_size: int,
    download_bytes: int,
    unpack_bytes: int,
    options: FetchOptions,
    key: str,
    own: Path | None,
    protect: set[str] | frozenset[str] = frozenset(),
    archive_bytes: int = 0,
    estimated: bool = False,
) -> list[str]:
    """Make room for a checkpoint of ``final_size`` bytes and reserve it; evict if allowed.

    Args:
        cache_dir: The cache.
        what: How to name the checkpoint in messages (label or redacted URL).
        final_size: Bytes it occupies once installed: for an archive, its unpacked size.
        download_bytes: Bytes still to download (needed free now).
        unpack_bytes: Bytes an archive expands to (needed free too, while both exist).
        options: ``max_cache_bytes`` and ``eviction``.
        key: The source key (names the reservation's lock).
        own: This download's partial directory (not counted, never evicted); None when unpacking a
            local archive.
        protect: Labels that must not be evicted (the checkpoint itself, its siblings in MODEL_URL).
        archive_bytes: A downloaded archive kept in the cache while it unpacks: counted with
            ``final_size`` against ``MODEL_CACHE_MAX_SIZE``, since both are there at once.
        estimated: ``final_size`` / ``unpack_bytes`` are a guess (an archive not downloaded yet is
            assumed to unpack to its own size); messages say "at least".

    Returns:
        Labels of what was evicted.

    Raises:
        StorageError: Larger than the limit, or not enough room even after eviction.
    """
    limit = options.max_cache_bytes
    need = final_size + archive_bytes  # the peak: the archive is still there while it unpacks
    at_least = "at least " if estimated else ""
    needs = f"needs {at_least}{human_size(need)}"
    if archive_bytes:
        needs += (f" while unpacking (unpacked {at_least}{human_size(final_size)} + archive "
                  f"{human_size(archive_bytes)})")  # fmt: skip
    if limit is not None and need > limit:
        instead = ", or publish the checkpoint as an unpacked directory (no archive copy)" if archive_bytes else ""
        raise StorageError(
            f"{what} {needs} but MODEL_CACHE_MAX_SIZE is {human_size(limit)}; raise MODEL_CACHE_MAX_SIZE to at "
            f"least {human_size(need)}{instead}"
        )
    free_needed = download_bytes + unpack_bytes + FREE_MARGIN
    evicted: list[str] = []
    cache_dir.mkdir(parents=True, exist_ok=True)
    with cache.locked(cache_dir, "cache:space", "cache space"):
        clean_stale_staging(cache_dir)
        used = cache_usage(cache_dir, exclude=own)
        free = free_bytes(cache_dir)
        over = limit is not None and used + need > limit
        if (over or free < free_needed) and options.eviction == "lru":
            for _, candidate in _candidates(cache_dir, set(protect), own):
                if not (over or free < free_needed):
                    break
                if isinstance(candidate, Partial):
                    if _remove_partial(cache_dir, candidate):
                        evicted.append(f"partial download of {candidate.label}")
                elif isinstance(candidate, cache.CachedCheckpoint):
                    if remove_checkpoint(cache_dir, candidate):
                        continue  # in use
                    evicted.append(candidate.label)
                used = cache_usage(cache_dir, exclude=own)
                free = free_bytes(cache_dir)
                over = limit is not None and used + need > limit
        if over:
            assert limit is not None
            raise StorageError(
                f"{what} {needs} but the cache {cache_dir} already holds "
                f"{human_size(used)} of MODEL_CACHE_MAX_SIZE={human_size(limit)}, and "
                + _why_not_evicted(cache_dir, options)
            )
        if free < free_needed:
            parts = [f"download {human_size(download_bytes)}"] if download_bytes or not unpack_bytes else []
            parts += [f"unpacking {at_least}{human_size(unpack_bytes)}"] if unpack_bytes else []
            detail = " + ".join([*parts, "margin"])
            raise StorageError(
                f"not enough free space on the cache volume {cache_dir} for {what}: needs {at_least}"
                f"{human_size(free_needed)} "
                f"({detail}), only {human_size(free)} free; free some space, grow the volume, or evict checkpoints "
                "(`hark checkpoints ls` / `hark checkpoints evict NAME@VERSION`), "
                + _why_not_evicted(cache_dir, options)
            )
        if own is not None:
            reserve(own, key, what, need)
    if evicted:
        logger.info("made room for %s by evicting %s", what, ", ".join(evicted))
    return evicted


def _why_not_evicted(cache_dir: Path, options: FetchOptions) -> str:
    if options.eviction != "lru":
        return "MODEL_CACHE_EVICTION=none forbids evicting older checkpoints"
    held = []
    for checkpoint in cache.list_cached(cache_dir):
        holders = leases.leases_of(cache_dir, checkpoint.name, checkpoint.version)
        if holders:
            held.append(f"{checkpoint.label} ({human_size(checkpoint.size)}, used by "
                        f"{', '.join(lease.holder for lease in holders)})")  # fmt: skip
    if held:
        return "what is left is in use by live workers: " + "; ".join(held)
    return "nothing more can be evicted"


def evict(
    cache_dir: Path, name: str, version: str | None = None, *, force: bool = False
) -> tuple[list[str], dict[str, list[str]]]:
    """Delete cached versions of checkpoint ``name`` (just ``version`` when given).

    Args:
        cache_dir: The cache.
        name: Checkpoint name.
        version: One version, or None for all.
        force: Delete even checkpoints a live process holds (it may crash when it next reads them).

    Returns:
        (labels evicted, {label: holders} of those refused because they are in use).

    Raises:
        CheckpointError: Nothing in the cache matches.
    """
    matches = cache.find_cached(cache_dir, name, version)
    if not matches:
        label = f"{name}@{version}" if version else name
        raise CheckpointError(f"{label} is not in the cache {cache_dir} (see `hark checkpoints ls`)")
    evicted, refused = [], {}
    for checkpoint in matches:
        holders = remove_checkpoint(cache_dir, checkpoint, force=force)
        if holders:
            refused[checkpoint.label] = holders
        else:
            evicted.append(checkpoint.label)
    return evicted, refused
