"""Fetching a checkpoint into the cache: archives (local, HTTP, S3) and unpacked remote directories.

Every fetch runs under the source's cache lock (one process fetches, the others wait and reuse):

1. **cache hit**: the source was fetched before (``.sources/``), its checkpoint directory exists,
   matches ``MODEL_VERSION`` / ``MODEL_CHECKSUM`` and passes verification -> leased and returned;
2. **archive**: downloaded (resumable, parallel ranges) into ``.partial/<hash>/``, then read once
   without writing anything: hashed (checked against ``MODEL_CHECKSUM``, or recorded) and indexed
   (the size it unpacks to, checked against the free space and ``MODEL_CACHE_MAX_SIZE``). Only then
   is it unpacked into a staging directory, checked against its manifest and renamed into
   ``<name>/<version>``;
3. **unpacked directory** (a URL ending in ``/``): ``manifest.json`` first (checked against
   ``MODEL_CHECKSUM``), then every file it lists in parallel into ``.partial/<hash>/files/``,
   hashed against the manifest and renamed into place. No unpacking, so no second copy on disk.

A checksum failure deletes the download and fetches once more; a second failure is final. Room is
made (and the free space checked) before a byte is downloaded, and for an archive again before a
byte is unpacked, with its real unpacked size; see :mod:`checkpoints.space`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from checkpoints import cache, events, space, transfer
from checkpoints.entries import Entry, LocalCheckpoint, check_checksum, check_version
from checkpoints.errors import CheckpointError, ChecksumError, CorruptDownloadError, FetchError, UnsafeArchiveError
from checkpoints.extract import ArchiveIndex, index_archive, safe_extract
from checkpoints.fetch_http import HttpSource, child_url, read_small
from checkpoints.fetch_s3 import S3Source
from checkpoints.leases import Lease, hold
from checkpoints.manifest import MANIFEST_NAME, Manifest, load_manifest, parse_manifest
from checkpoints.options import FetchOptions
from checkpoints.progress import human_size
from checkpoints.urls import file_name, scheme_of
from checkpoints.verify import verify_checkpoint

logger = logging.getLogger(__name__)

ARCHIVE_HINT = (
    "the archive is corrupt or does not match its manifest: download it again, or rebuild it with "
    "`hark checkpoints pack`"
)
DIRECTORY_HINT = "the files on the server do not match its manifest.json: upload the checkpoint again"

Source = HttpSource | S3Source


def is_directory_url(url: str) -> bool:
    """A remote location of an unpacked checkpoint: its path ends in ``/`` or ``/manifest.json``."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    return path.endswith("/") or path.endswith(f"/{MANIFEST_NAME}")


def remote_source(url: str, options: FetchOptions) -> Source:
    """The source object for an ``http(s)://`` or ``s3://`` URL."""
    return S3Source(url, options) if scheme_of(url) == "s3" else HttpSource(url, options)


def check_existing(path: Path, manifest: Manifest, options: FetchOptions, progress: bool | None,
                   hint: str | None = None) -> None:  # fmt: skip
    """Verify a checkpoint already on disk as ``MODEL_VALIDATE`` says."""
    verify_checkpoint(path, manifest, full=options.validation == "full", progress=progress,
                      sizes_only=options.validation == "false", hint=hint)  # fmt: skip


def claim(path: Path, cache_dir: Path | None = None) -> Lease | None:
    """Lease a cached checkpoint under its lock (so an evictor either saw the lease or already removed
    it); None when it is gone."""
    root = cache_dir if cache_dir is not None else path.absolute().parent.parent
    label = f"{path.parent.name}@{path.name}"
    with cache.locked(root, f"checkpoint:{label}", label):
        if not path.is_dir():
            return None
        return hold(path, root)


def _manifest_sha(path: Path) -> str:
    return hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()


def cached(key: str, entry: Entry, shown: str, cache_dir: Path, options: FetchOptions,
           progress: bool | None, *, directory: bool) -> LocalCheckpoint | None:  # fmt: skip
    """The cached checkpoint ``key`` resolved to before, leased, if it is still usable."""
    record = cache.read_source(cache_dir, key)
    if record is None:
        return None
    if entry.checksum is not None and record.get("sha256") != entry.checksum and not directory:
        logger.warning("%s: the cached copy was fetched with sha256 %s, MODEL_CHECKSUM says %s; fetching again",
                       shown, record.get("sha256"), entry.checksum)  # fmt: skip
        return None
    path = cache.checkpoint_path(cache_dir, record["name"], record["version"])
    lease = claim(path, cache_dir)
    if lease is None:
        return None
    try:
        manifest = load_manifest(path)
        check_version(shown, manifest, entry.version)
        if directory and entry.checksum is not None and _manifest_sha(path) != entry.checksum:
            raise ChecksumError(f"{shown}: cached manifest.json does not match MODEL_CHECKSUM", MANIFEST_NAME,
                                entry.checksum, _manifest_sha(path))  # fmt: skip
        check_existing(path, manifest, options, progress)
    except CheckpointError as error:
        lease.release()
        logger.warning("cached copy at %s is unusable, fetching again: %s", path, error)
        if isinstance(error, ChecksumError):
            _trash(cache_dir, path)
        return None
    cache.touch_last_used(path)
    return LocalCheckpoint(path=path, manifest=manifest, source=shown, lease=lease)


def _trash(cache_dir: Path, path: Path) -> None:
    """Remove a corrupt cached copy (under its lock, unless another live process holds it)."""
    for checkpoint in cache.find_cached(cache_dir, path.parent.name, path.name):
        holders = space.remove_checkpoint(cache_dir, checkpoint)
        if holders:
            logger.warning("%s is corrupt but in use by %s; leaving it for them", checkpoint.label,
                           ", ".join(holders))  # fmt: skip


def fetch(
    entry: Entry,
    key: str,
    shown: str,
    cache_dir: Path,
    options: FetchOptions,
    *,
    progress: bool | None,
    lock_timeout: float | None,
    local_archive: Path | None = None,
    protect: frozenset[str] = frozenset(),
) -> LocalCheckpoint:
    """Reuse or fetch the checkpoint of ``entry`` into the cache (see the module docstring).

    Args:
        entry: What to fetch and what to expect.
        key: The source key (cache records and locks).
        shown: The location, redacted, for messages.
        cache_dir: The cache.
        options: Download, cache and validation policy.
        progress: Progress display.
        lock_timeout: Seconds to wait for another process fetching the same source.
        local_archive: The archive file when the source is local.
        protect: Labels of checkpoints this worker also uses (never evicted to make room).
    """
    directory = local_archive is None and is_directory_url(entry.url)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with cache.locked(cache_dir, key, shown, lock_timeout):
        hit = cached(key, entry, shown, cache_dir, options, progress, directory=directory)
        if hit is not None:
            events.cache_event("hit")
            return hit
        events.cache_event("miss")
        partial = space.partial_dir(cache_dir, key)
        if not options.resume and local_archive is None:
            shutil.rmtree(partial, ignore_errors=True)
        for attempt in (1, 2):
            try:
                if directory:
                    return _fetch_directory(entry, key, shown, cache_dir, options, partial, progress, protect)
                return _fetch_archive(entry, key, shown, cache_dir, options, partial, progress, protect,
                                      local_archive)  # fmt: skip
            except (ChecksumError, CorruptDownloadError) as error:
                shutil.rmtree(partial, ignore_errors=True)
                if attempt == 2 or local_archive is not None:
                    if local_archive is not None:
                        raise
                    message = (f"{error}; fetched twice and the copy was bad both times, so the file at the source "
                               "is corrupt (or MODEL_CHECKSUM is wrong): re-upload the checkpoint or fix "
                               "MODEL_CHECKSUM")  # fmt: skip
                    if isinstance(error, ChecksumError):
                        raise ChecksumError(message, error.path, error.expected, error.actual) from None
                    raise CorruptDownloadError(message) from None
                logger.warning("%s failed its checksum (%s); deleted the download, fetching once more", shown,
                               error)  # fmt: skip
    raise AssertionError("unreachable")  # pragma: no cover


def _install(staged: Path, cache_dir: Path, manifest: Manifest, key: str, shown: str, sha: str) -> LocalCheckpoint:
    target = cache.install(staged, cache_dir, manifest)
    cache.write_source(cache_dir, key, shown, manifest, sha)
    lease = claim(target, cache_dir)
    cache.touch_last_used(target)
    logger.info("%s is ready at %s (from %s)", manifest.label, target, shown, extra={"checkpoint": manifest.label})
    return LocalCheckpoint(path=target, manifest=manifest, source=shown, lease=lease)


def _fetch_archive(
    entry: Entry, key: str, shown: str, cache_dir: Path, options: FetchOptions, partial: Path,
    progress: bool | None, protect: frozenset[str], local_archive: Path | None,
) -> LocalCheckpoint:  # fmt: skip
    deadline = time.monotonic() + options.timeout
    if local_archive is not None:
        archive = local_archive
    else:
        source = remote_source(entry.url, options)
        info = transfer.with_retries(source.probe, shown, options, deadline)
        assert isinstance(info, transfer.RemoteInfo)
        archive = partial / "download" / file_name(entry.url, "checkpoint.tar")
        size = info.size or 0
        missing = size - transfer.partial_bytes(archive) if options.resume else size
        # what it unpacks to is unknown until it is here: assume its own size, checked exactly below
        space.ensure_space(cache_dir, what=shown, final_size=size, download_bytes=missing, unpack_bytes=size,
                           archive_bytes=size, estimated=True, options=options, key=key, own=partial,
                           protect=protect)  # fmt: skip
        transfer.transfer([transfer.FileJob(source, archive)], options, label=f"downloading {archive.name}",
                          progress=progress, deadline=deadline, infos=[info])  # fmt: skip
    sha, index = _check_archive(entry, shown, archive, progress, local=local_archive is not None)
    space.ensure_space(cache_dir, what=shown, final_size=index.unpacked_bytes, download_bytes=0,
                       unpack_bytes=index.unpacked_bytes, options=options, key=key,
                       archive_bytes=0 if local_archive is not None else archive.stat().st_size,
                       own=None if local_archive is not None else partial, protect=protect)  # fmt: skip
    staging = cache.new_staging_dir(cache_dir)
    try:
        try:
            root = safe_extract(archive, staging / "extracted", progress=progress)
        except UnsafeArchiveError:
            raise
        except CheckpointError as error:
            if local_archive is not None:
                raise
            raise CorruptDownloadError(f"{shown}: the downloaded archive is damaged: {error}") from None
        manifest = load_manifest(root)
        check_version(shown, manifest, entry.version)
        verify_checkpoint(root, manifest, full=True, progress=progress, hint=ARCHIVE_HINT)
        result = _install(root, cache_dir, manifest, key, shown, sha)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    return result


def _check_archive(entry: Entry, shown: str, archive: Path, progress: bool | None, *,
                   local: bool) -> tuple[str, ArchiveIndex]:  # fmt: skip
    """Hash and index ``archive`` without extracting it; check it against ``MODEL_CHECKSUM``.

    Nothing of an archive is written before its checksum matches, and its unpacked size is known
    before the free space is checked. Without ``MODEL_CHECKSUM`` the hash is still taken (recorded
    for later starts, and logged so it can be pinned).

    Returns:
        The archive's sha256 (hex) and its index.

    Raises:
        ChecksumError: It does not match ``MODEL_CHECKSUM`` (the caller deletes a download).
        UnsafeArchiveError: It exceeds the member or size limits.
        CorruptDownloadError: A download that is not a readable archive (fetched again once).
        CheckpointError: A local file that is not a readable archive.
    """
    digest = hashlib.sha256()
    try:
        index = index_archive(archive, digest=digest, progress=progress)
    except CheckpointError as error:
        check_checksum(shown, archive.name, digest.hexdigest(), entry.checksum)  # a mismatch says so first
        if local or isinstance(error, UnsafeArchiveError):
            raise
        raise CorruptDownloadError(f"{shown}: the downloaded archive is damaged: {error}") from None
    sha = digest.hexdigest()
    check_checksum(shown, archive.name, sha, entry.checksum)
    if entry.checksum is None:
        logger.info("%s: the sha256 of %s is %s (set MODEL_CHECKSUM=sha256:%s to pin it); it unpacks to %s",
                    shown, archive.name, sha, sha, human_size(index.unpacked_bytes))  # fmt: skip
    return sha, index


def _fetch_directory(
    entry: Entry, key: str, shown: str, cache_dir: Path, options: FetchOptions, partial: Path,
    progress: bool | None, protect: frozenset[str],
) -> LocalCheckpoint:  # fmt: skip
    deadline = time.monotonic() + options.timeout
    base = remote_source(entry.url, options)
    manifest_source = child_source(base, MANIFEST_NAME, options)
    data = read_small(manifest_source, options, deadline)
    sha = hashlib.sha256(data).hexdigest()
    check_checksum(shown, MANIFEST_NAME, sha, entry.checksum)
    try:
        manifest = parse_manifest(json.loads(data), f"{manifest_source.shown}")
    except ValueError as error:
        if isinstance(error, CheckpointError):
            raise
        raise FetchError(f"{manifest_source.shown} is not valid JSON ({error}); upload the checkpoint again") from None
    check_version(shown, manifest, entry.version)
    target = cache.checkpoint_path(cache_dir, manifest.name, manifest.version)
    lease = claim(target, cache_dir) if target.is_dir() else None
    if lease is not None:  # fetched before from another location
        try:
            existing = load_manifest(target)
            if existing.files == manifest.files:
                check_existing(target, existing, options, progress)
                cache.write_source(cache_dir, key, shown, existing, sha)
                cache.touch_last_used(target)
                return LocalCheckpoint(path=target, manifest=existing, source=shown, lease=lease)
        except CheckpointError as error:
            logger.warning("cached copy at %s is unusable, fetching again: %s", target, error)
        lease.release()
    files = partial / "files"
    jobs = [transfer.FileJob(child_source(base, name, options), files / name, expected_size=file.size)
            for name, file in sorted(manifest.files.items())]  # fmt: skip
    done = sum(_done(job.dest) for job in jobs) if options.resume else 0
    space.ensure_space(cache_dir, what=manifest.label, final_size=manifest.total_size,
                       download_bytes=manifest.total_size - done, unpack_bytes=0, options=options, key=key,
                       own=partial, protect=protect | {manifest.label})  # fmt: skip
    for job in jobs:
        job.dest.parent.mkdir(parents=True, exist_ok=True)
    transfer.transfer(jobs, options, label=f"downloading {manifest.label}", progress=progress, deadline=deadline)
    (files / MANIFEST_NAME).write_bytes(data)
    verify_checkpoint(files, manifest, full=True, progress=progress, hint=DIRECTORY_HINT)
    result = _install(files, cache_dir, manifest, key, shown, sha)
    shutil.rmtree(partial, ignore_errors=True)
    return result


def _done(dest: Path) -> int:
    return dest.stat().st_size if dest.exists() else transfer.partial_bytes(dest)


def child_source(base: Source, name: str, options: FetchOptions) -> Source:
    """The source of file ``name`` inside the unpacked checkpoint at ``base``."""
    if isinstance(base, S3Source):
        return base.child(name)
    return HttpSource(child_url(base.url, name), options)

