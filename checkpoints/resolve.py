"""From ``MODEL_URL`` (or ``MODEL_PATH``) entries to verified checkpoint directories on local disk.

Sources:

- a plain path or ``file://`` URL of a checkpoint **directory**: used in place;
- a plain path or ``file://`` URL of an **archive** (``.tar``, ``.tar.gz``, ``.tgz``): unpacked into
  the cache;
- an ``http(s)://`` or ``s3://`` URL of an archive: downloaded (parallel ranges, resumable) and
  unpacked into the cache;
- an ``http(s)://`` or ``s3://`` URL ending in ``/``: an unpacked checkpoint directory (its
  ``manifest.json`` and every file it lists), downloaded file by file into the cache;
- ``MODEL_PATH``: unpacked directories baked into the image, used in place, never downloaded.

Whatever the source, the checkpoint is verified against its manifest before it is returned, and
``MODEL_CHECKSUM`` / ``MODEL_VERSION`` are enforced. Fetching happens under a per-source file lock in
the cache, so concurrent processes (on any host sharing the volume) fetch once.

The worker calls :func:`resolve_configured` with ``hold=True``: every cached checkpoint it returns is
leased (see :mod:`checkpoints.leases`) until the process exits, so no other process evicts it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from checkpoints import cache, events, leases
from checkpoints.entries import Entry, LocalCheckpoint, check_checksum, check_version, normalize_checksum
from checkpoints.errors import CheckpointError, FetchError, ModelUrlError
from checkpoints.extract import archive_kind
from checkpoints.fetch import ARCHIVE_HINT, check_existing, claim, fetch
from checkpoints.manifest import MANIFEST_NAME, load_manifest
from checkpoints.options import FetchOptions
from checkpoints.urls import SUPPORTED_SCHEMES, local_path, redact_url, scheme_of
from hark.settings import MAX_CHECKPOINTS_PER_WORKER, Settings

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHIVE_HINT",
    "Entry",
    "LocalCheckpoint",
    "configured_entries",
    "parse_model_urls",
    "per_entry",
    "resolve",
    "resolve_all",
    "resolve_configured",
    "resolve_entries",
]

EXAMPLE_MODEL_URL = "/srv/models/whisper-base,https://models.example.com/whisper-hi-1.0.tar.gz"


def with_context(error: CheckpointError, prefix: str) -> CheckpointError:
    """The same error (same class and attributes) with ``prefix`` before its message."""
    new = type(error).__new__(type(error))
    new.__dict__.update(error.__dict__)
    new.args = (f"{prefix}{error}",)
    return new


def _identity(url: str) -> str:
    """A comparison key: local sources by absolute path, URLs as written."""
    if scheme_of(url) in ("", "file"):
        try:
            return str(local_path(url)).rstrip("/")
        except ValueError:
            return url
    return url


def parse_model_urls(value: str | Sequence[str], name: str = "MODEL_URL") -> list[str]:
    """Split and check ``MODEL_URL`` (or ``MODEL_PATH``): 1 to 3 distinct checkpoint locations.

    Args:
        value: The comma-separated string, or an already split list.
        name: The variable, for messages.

    Returns:
        The locations, stripped, in order.

    Raises:
        ModelUrlError: Empty, more than three entries, or the same location twice.
    """
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    urls = [item.strip() for item in items if item.strip()]
    if not urls:
        raise ModelUrlError(
            f"{name} is empty: set it to 1-{MAX_CHECKPOINTS_PER_WORKER} comma-separated checkpoint "
            f"locations, e.g. {name}={EXAMPLE_MODEL_URL} (`hark checkpoints bundle` prints one for "
            "the bundled checkpoints)"
        )
    if len(urls) > MAX_CHECKPOINTS_PER_WORKER:
        raise ModelUrlError(
            f"{name} lists {len(urls)} checkpoints but a worker serves at most "
            f"{MAX_CHECKPOINTS_PER_WORKER}: keep {MAX_CHECKPOINTS_PER_WORKER} and serve the others "
            "from another deployment"
        )
    seen: dict[str, int] = {}
    for index, url in enumerate(urls, start=1):
        key = _identity(url)
        if key in seen:
            raise ModelUrlError(
                f"{name} lists {redact_url(url)} twice (entries {seen[key]} and {index}): remove the duplicate"
            )
        seen[key] = index
    return urls


def source_key(entry: Entry) -> str | None:
    """The cache key of a fetched source (None for a directory used in place)."""
    scheme = scheme_of(entry.url)
    if scheme in ("http", "https", "s3"):
        return f"url:{entry.url}{entry.key_suffix}"
    try:
        path = local_path(entry.url)
        if path.is_file():
            stat = path.stat()
            return f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}{entry.key_suffix}"
    except (ValueError, OSError):
        return None
    return None


def _resolve_entry(entry: Entry, cache_dir: Path, options: FetchOptions, progress: bool | None,
                   lock_timeout: float | None, protect: frozenset[str]) -> LocalCheckpoint:  # fmt: skip
    shown = redact_url(entry.url)
    scheme = scheme_of(entry.url)
    if scheme not in ("", *SUPPORTED_SCHEMES):
        raise FetchError(
            f"{shown}: unsupported location scheme {scheme}://; use a local path, file://, http://, https:// "
            "or s3://"
        )
    if entry.baked and scheme not in ("", "file"):
        raise FetchError(f"MODEL_PATH must name unpacked checkpoint directories on local disk, not {shown}; "
                         "put URLs in MODEL_URL")  # fmt: skip
    try:
        if scheme in ("http", "https", "s3"):
            key = source_key(entry)
            assert key is not None
            return fetch(entry, key, shown, cache_dir, options, progress=progress, lock_timeout=lock_timeout,
                         protect=protect)  # fmt: skip
        return _resolve_local(entry, shown, cache_dir, options, progress, lock_timeout, protect)
    except CheckpointError as error:
        if shown in str(error):
            raise
        raise with_context(error, f"{shown}: ") from None


def _resolve_local(entry: Entry, shown: str, cache_dir: Path, options: FetchOptions, progress: bool | None,
                   lock_timeout: float | None, protect: frozenset[str]) -> LocalCheckpoint:  # fmt: skip
    try:
        path = local_path(entry.url)
    except ValueError as error:
        raise FetchError(str(error)) from None
    if not path.exists():
        raise FetchError(f"{path} does not exist; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        return _resolve_directory(entry, path, shown, cache_dir, options, progress)
    if entry.baked:
        raise FetchError(f"{path} is not a directory: MODEL_PATH names unpacked checkpoints (put archives in "
                         "MODEL_URL, or unpack them into the image with `hark checkpoints pull`)")  # fmt: skip
    if archive_kind(path.name) is None:
        raise FetchError(f"{path} is neither a checkpoint directory nor a .tar/.tar.gz/.tgz archive")
    key = source_key(entry)
    assert key is not None
    return fetch(entry, key, shown, cache_dir, options, progress=progress, lock_timeout=lock_timeout,
                 local_archive=path, protect=protect)  # fmt: skip


def _resolve_directory(entry: Entry, path: Path, shown: str, cache_dir: Path, options: FetchOptions,
                       progress: bool | None) -> LocalCheckpoint:  # fmt: skip
    """A checkpoint directory used in place (leased when it lives in a cache)."""
    manifest = load_manifest(path)
    check_version(shown, manifest, entry.version)
    if entry.checksum is not None:
        actual = hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()
        check_checksum(shown, MANIFEST_NAME, actual, entry.checksum)
    root = None
    if not entry.baked:
        in_cache = cache.is_inside(cache_dir, path) and path.resolve().parent.parent == cache_dir.resolve()
        root = cache_dir if in_cache else leases.cache_of(path)
    lease = claim(path, root) if root is not None else None
    try:
        check_existing(path, manifest, options, progress)
    except BaseException:
        if lease is not None:
            lease.release()
        raise
    if lease is not None:
        cache.touch_last_used(path)
        events.cache_event("hit")  # a cached checkpoint named by its directory
    return LocalCheckpoint(path=path, manifest=manifest, source=shown, lease=lease)


def resolve(
    url: str,
    cache_dir: str | os.PathLike[str],
    *,
    full_verify: bool = False,
    progress: bool | None = None,
    lock_timeout: float | None = None,
    options: FetchOptions | None = None,
    checksum: str | None = None,
    version: str | None = None,
    hold: bool = False,
) -> LocalCheckpoint:
    """Make the checkpoint at ``url`` available on local disk, verified.

    Args:
        url: A path or ``file://`` URL of a checkpoint directory or archive, an ``http(s)://`` or
            ``s3://`` URL of an archive, or such a URL ending in ``/`` for an unpacked checkpoint.
        cache_dir: The checkpoint cache (``MODEL_CACHE_DIR``).
        full_verify: Re-hash every file even when an earlier verification marker matches.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        lock_timeout: Seconds to wait for another process fetching the same source; None = no limit.
        options: Download, cache and validation policy (default: the documented defaults).
        checksum: Expected ``sha256:<hex>`` of the archive (or of manifest.json of a directory).
        version: Expected manifest version.
        hold: Keep the returned checkpoint leased (see :func:`checkpoints.leases.hold`).

    Returns:
        The checkpoint directory, its manifest and the (redacted) source.

    Raises:
        CheckpointError: The location is unsupported, missing, unreachable, unsafe or fails
            verification; the message names the location (credentials redacted).
    """
    entry = Entry(url=url, checksum=normalize_checksum(checksum), version=version or None)
    return resolve_entries([entry], cache_dir, full_verify=full_verify, progress=progress, lock_timeout=lock_timeout,
                           options=options, hold=hold, context=False)[0]  # fmt: skip


def resolve_entries(
    entries: Sequence[Entry],
    cache_dir: str | os.PathLike[str],
    *,
    full_verify: bool = False,
    progress: bool | None = None,
    lock_timeout: float | None = None,
    options: FetchOptions | None = None,
    hold: bool = False,
    variable: str = "MODEL_URL",
    context: bool = True,
) -> list[LocalCheckpoint]:
    """Resolve several entries; fail on the first unusable one (releasing what was leased).

    While it runs, every checkpoint already resolved is leased, so making room for a later entry
    never evicts an earlier one. With ``hold=False`` the leases end when it returns.
    """
    cache_dir = Path(cache_dir).expanduser()
    options = options or FetchOptions()
    if full_verify:
        options = options.with_(validation="full")
    protect = set()
    for entry in entries:  # what the entries resolved to last time must not make room for each other
        key = source_key(entry)
        record = cache.read_source(cache_dir, key) if key else None
        if record:
            protect.add(f"{record['name']}@{record['version']}")
    resolved: list[LocalCheckpoint] = []
    try:
        for index, entry in enumerate(entries, start=1):
            try:
                checkpoint = _resolve_entry(entry, cache_dir, options, progress, lock_timeout,
                                            frozenset(protect | {c.label for c in resolved}))  # fmt: skip
            except CheckpointError as error:
                if not context:
                    raise
                raise with_context(error, f"{variable} entry {index} of {len(entries)}: ") from None
            for other_index, other in enumerate(resolved, start=1):
                if other.manifest.name == checkpoint.manifest.name:
                    checkpoint.release()
                    raise ModelUrlError(
                        f"{variable} entries {other_index} ({other.source}) and {index} ({checkpoint.source}) are "
                        f"both checkpoint {checkpoint.manifest.name!r} ({other.label} and {checkpoint.label}); "
                        "a worker serves each checkpoint name once: remove one of them"
                    )
            resolved.append(checkpoint)
    except BaseException:
        for checkpoint in resolved:
            checkpoint.release()
        raise
    if not hold:
        for checkpoint in resolved:
            checkpoint.release()
    return resolved


def per_entry(values: Sequence[str] | None, count: int, name: str, variable: str) -> list[str | None]:
    """Line a per-entry list (checksums, versions) up with ``count`` entries; [] means none for all."""
    items = list(values or [])
    if items and len(items) != count:
        raise ModelUrlError(
            f"{name} has {len(items)} entries but {variable} has {count}: give one per {variable} entry, in the "
            f"same order, and leave an entry empty for none (e.g. {name}=sha256:<hex>,,sha256:<hex>)"
        )
    return [item or None for item in items] if items else [None] * count


def resolve_all(
    urls: str | Sequence[str],
    cache_dir: str | os.PathLike[str],
    *,
    full_verify: bool = False,
    progress: bool | None = None,
    lock_timeout: float | None = None,
    options: FetchOptions | None = None,
    checksums: Sequence[str] | None = None,
    versions: Sequence[str] | None = None,
    hold: bool = False,
) -> list[LocalCheckpoint]:
    """Parse ``MODEL_URL`` and resolve every entry; fail on the first unusable one.

    Args:
        urls: ``MODEL_URL`` as a string, or its entries.
        cache_dir: The checkpoint cache (``MODEL_CACHE_DIR``).
        full_verify: Re-hash every file even when an earlier verification marker matches.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        lock_timeout: Seconds to wait for another process fetching the same source; None = no limit.
        options: Download, cache and validation policy (default: the documented defaults).
        checksums: ``sha256:<hex>`` per entry ("" for none), as ``MODEL_CHECKSUM``.
        versions: Expected version per entry ("" for any), as ``MODEL_VERSION``.
        hold: Keep the returned checkpoints leased until released or the process exits.

    Returns:
        One verified checkpoint per entry, in ``MODEL_URL`` order.

    Raises:
        ModelUrlError: ``MODEL_URL`` is empty, too long, has duplicates, two entries are the same
            checkpoint name, or the checksum / version lists do not match it.
        CheckpointError: An entry cannot be resolved; the message starts with "MODEL_URL entry N".
    """
    parsed = parse_model_urls(urls)
    sums = per_entry(checksums, len(parsed), "MODEL_CHECKSUM", "MODEL_URL")
    vers = per_entry(versions, len(parsed), "MODEL_VERSION", "MODEL_URL")
    entries = [Entry(url=u, checksum=normalize_checksum(c), version=v)
               for u, c, v in zip(parsed, sums, vers, strict=True)]  # fmt: skip
    return resolve_entries(entries, cache_dir, full_verify=full_verify, progress=progress, lock_timeout=lock_timeout,
                           options=options, hold=hold)  # fmt: skip


def configured_entries(settings: Settings) -> tuple[list[Entry], str]:
    """The entries the settings ask for, and the variable they come from (MODEL_PATH or MODEL_URL).

    ``MODEL_PATH`` (baked checkpoints) wins over ``MODEL_URL`` when both are set.

    Raises:
        ModelUrlError: The lists are empty, too long, or do not line up.
    """
    variable = "MODEL_PATH" if settings.model_paths else "MODEL_URL"
    if settings.model_paths and settings.model_urls:
        logger.warning("MODEL_PATH is set, so the baked checkpoints %s are served and MODEL_URL is ignored",
                       ", ".join(settings.model_paths))  # fmt: skip
    urls = parse_model_urls(settings.model_path if settings.model_paths else settings.model_url, variable)
    sums = per_entry(settings.model_checksums, len(urls), "MODEL_CHECKSUM", variable)
    vers = per_entry(settings.model_versions, len(urls), "MODEL_VERSION", variable)
    try:
        entries = [Entry(url=u, checksum=normalize_checksum(c), version=v, baked=variable == "MODEL_PATH")
                   for u, c, v in zip(urls, sums, vers, strict=True)]  # fmt: skip
    except FetchError as error:
        raise ModelUrlError(f"MODEL_CHECKSUM: {error}") from None
    return entries, variable


def resolve_configured(
    settings: Settings,
    *,
    hold: bool = True,
    progress: bool | None = None,
    lock_timeout: float | None = None,
) -> list[LocalCheckpoint]:
    """Resolve the checkpoints the settings configure, the way the worker does at start-up.

    Reads ``MODEL_PATH`` or ``MODEL_URL`` (with ``MODEL_CHECKSUM``, ``MODEL_VERSION``),
    ``MODEL_CACHE_DIR`` and the ``MODEL_DOWNLOAD_*`` / ``MODEL_CACHE_*`` / ``MODEL_VALIDATE`` policy.

    Args:
        settings: The process settings.
        hold: Lease the cached checkpoints until the process exits (a worker wants this).
        progress: Progress display.
        lock_timeout: Seconds to wait for another process fetching the same source.

    Raises:
        CheckpointError: Something is misconfigured or unusable; the message says what to fix.
    """
    entries, variable = configured_entries(settings)
    return resolve_entries(entries, settings.model_cache_dir, progress=progress, lock_timeout=lock_timeout,
                           options=FetchOptions.from_settings(settings), hold=hold, variable=variable)  # fmt: skip
