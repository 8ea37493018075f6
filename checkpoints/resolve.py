"""From ``MODEL_URL`` entries to verified checkpoint directories on local disk.

Sources:

- a plain path or ``file://`` URL of a checkpoint **directory**: used in place;
- a plain path or ``file://`` URL of an **archive** (``.tar``, ``.tar.gz``, ``.tgz``): extracted into
  the cache;
- an ``http://`` / ``https://`` URL of an archive: downloaded and extracted into the cache.

Whatever the source, the checkpoint is verified against its manifest before it is returned.
Fetching happens under a per-source file lock in the cache, so concurrent processes fetch once.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from checkpoints import cache, fetch_http
from checkpoints.errors import CheckpointError, FetchError, ModelUrlError
from checkpoints.extract import archive_kind, safe_extract
from checkpoints.manifest import Manifest, load_manifest
from checkpoints.urls import SUPPORTED_SCHEMES, file_name, local_path, redact_url, scheme_of
from checkpoints.verify import verify_checkpoint
from hark.settings import MAX_CHECKPOINTS_PER_WORKER

logger = logging.getLogger(__name__)

ARCHIVE_HINT = (
    "the archive is corrupt or does not match its manifest: download it again, or rebuild it with "
    "`hark checkpoints pack`"
)
EXAMPLE_MODEL_URL = "/srv/models/whisper-base,https://models.example.com/whisper-hi-1.0.tar.gz"


@dataclass(frozen=True)
class LocalCheckpoint:
    """A verified checkpoint on local disk, ready to load."""

    path: Path
    """Directory holding manifest.json and the engine's files (pass it to the engine)."""
    manifest: Manifest
    source: str
    """Where it came from, with credentials redacted (safe to log)."""

    @property
    def label(self) -> str:
        return self.manifest.label


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


def parse_model_urls(value: str | Sequence[str]) -> list[str]:
    """Split and check ``MODEL_URL``: 1 to 3 distinct checkpoint locations.

    Args:
        value: The comma-separated string, or an already split list.

    Returns:
        The locations, stripped, in order.

    Raises:
        ModelUrlError: Empty, more than three entries, or the same location twice.
    """
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    urls = [item.strip() for item in items if item.strip()]
    if not urls:
        raise ModelUrlError(
            f"MODEL_URL is empty: set it to 1-{MAX_CHECKPOINTS_PER_WORKER} comma-separated checkpoint "
            f"locations, e.g. MODEL_URL={EXAMPLE_MODEL_URL} (`hark checkpoints bundle` prints one for "
            "the bundled checkpoints)"
        )
    if len(urls) > MAX_CHECKPOINTS_PER_WORKER:
        raise ModelUrlError(
            f"MODEL_URL lists {len(urls)} checkpoints but a worker serves at most "
            f"{MAX_CHECKPOINTS_PER_WORKER}: keep {MAX_CHECKPOINTS_PER_WORKER} and serve the others "
            "from another deployment"
        )
    seen: dict[str, int] = {}
    for index, url in enumerate(urls, start=1):
        key = _identity(url)
        if key in seen:
            raise ModelUrlError(
                f"MODEL_URL lists {redact_url(url)} twice (entries {seen[key]} and {index}): remove the duplicate"
            )
        seen[key] = index
    return urls


def resolve(
    url: str,
    cache_dir: str | os.PathLike[str],
    *,
    full_verify: bool = False,
    progress: bool | None = None,
    lock_timeout: float | None = None,
) -> LocalCheckpoint:
    """Make the checkpoint at ``url`` available on local disk, verified.

    Args:
        url: A path or ``file://`` URL of a checkpoint directory or archive, or an ``http(s)://``
            URL of an archive.
        cache_dir: The checkpoint cache (``MODEL_CACHE_DIR``).
        full_verify: Re-hash every file even when an earlier verification marker matches.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        lock_timeout: Seconds to wait for another process fetching the same source; None = no limit.

    Returns:
        The checkpoint directory, its manifest and the (redacted) source.

    Raises:
        CheckpointError: The location is unsupported, missing, unreachable, unsafe or fails
            verification; the message names the location (credentials redacted).
    """
    cache_dir = Path(cache_dir).expanduser()
    shown = redact_url(url)
    scheme = scheme_of(url)
    if scheme not in ("", *SUPPORTED_SCHEMES):
        raise FetchError(
            f"{shown}: unsupported location scheme {scheme}://; use a local path, file://, http:// or "
            "https:// (s3:// is not supported yet: download the archive or mount the bucket)"
        )
    try:
        if scheme in ("http", "https"):
            return _fetch_archive(
                f"url:{url}", shown, cache_dir,
                lambda staging: _download(url, staging, progress),
                full_verify, progress, lock_timeout,
            )  # fmt: skip
        return _resolve_local(url, shown, cache_dir, full_verify, progress, lock_timeout)
    except CheckpointError as error:
        if shown in str(error):
            raise
        raise with_context(error, f"{shown}: ") from None


def _download(url: str, staging: Path, progress: bool | None) -> Path:
    folder = staging / "download"
    folder.mkdir()
    return fetch_http.download(url, folder / file_name(url), progress=progress)


def _resolve_local(url: str, shown: str, cache_dir: Path, full_verify: bool, progress: bool | None,
                   lock_timeout: float | None) -> LocalCheckpoint:  # fmt: skip
    try:
        path = local_path(url)
    except ValueError as error:
        raise FetchError(str(error)) from None
    if not path.exists():
        raise FetchError(f"{path} does not exist; check the path (relative paths start at {Path.cwd()})")
    if path.is_dir():
        manifest = load_manifest(path)
        verify_checkpoint(path, manifest, full=full_verify, progress=progress)
        if cache.is_inside(cache_dir, path):
            cache.touch_last_used(path)
        return LocalCheckpoint(path=path, manifest=manifest, source=shown)
    if archive_kind(path.name) is None:
        raise FetchError(f"{path} is neither a checkpoint directory nor a .tar/.tar.gz/.tgz archive")
    stat = path.stat()
    key = f"file:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    return _fetch_archive(key, shown, cache_dir, lambda staging: path, full_verify, progress, lock_timeout)


def _cached(key: str, cache_dir: Path, full_verify: bool, progress: bool | None) -> LocalCheckpoint | None:
    record = cache.read_source(cache_dir, key)
    if record is None:
        return None
    path = cache.checkpoint_path(cache_dir, record["name"], record["version"])
    if not path.is_dir():
        return None
    try:
        manifest = load_manifest(path)
        verify_checkpoint(path, manifest, full=full_verify, progress=progress)
    except CheckpointError as error:
        logger.warning("cached copy at %s is unusable, fetching again: %s", path, error)
        return None
    return LocalCheckpoint(path=path, manifest=manifest, source=record.get("source", ""))


def _fetch_archive(
    key: str,
    shown: str,
    cache_dir: Path,
    obtain: Callable[[Path], Path],
    full_verify: bool,
    progress: bool | None,
    lock_timeout: float | None,
) -> LocalCheckpoint:
    """Reuse the cached checkpoint of ``key`` or obtain, extract, verify and install its archive."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with cache.locked(cache_dir, key, shown, lock_timeout):
        hit = _cached(key, cache_dir, full_verify, progress)
        if hit is not None:
            cache.touch_last_used(hit.path)
            return LocalCheckpoint(path=hit.path, manifest=hit.manifest, source=shown)
        staging = cache.new_staging_dir(cache_dir)
        try:
            archive = obtain(staging)
            root = safe_extract(archive, staging / "extracted", progress=progress)
            manifest = load_manifest(root)
            verify_checkpoint(root, manifest, full=True, progress=progress, hint=ARCHIVE_HINT)
            target = cache.install(root, cache_dir, manifest, lock_timeout=lock_timeout)
            cache.write_source(cache_dir, key, shown, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("%s is ready at %s (from %s)", manifest.label, target, shown,
                    extra={"checkpoint": manifest.label})  # fmt: skip
        cache.touch_last_used(target)
        return LocalCheckpoint(path=target, manifest=manifest, source=shown)


def resolve_all(
    urls: str | Sequence[str],
    cache_dir: str | os.PathLike[str],
    *,
    full_verify: bool = False,
    progress: bool | None = None,
    lock_timeout: float | None = None,
) -> list[LocalCheckpoint]:
    """Parse ``MODEL_URL`` and resolve every entry; fail on the first unusable one.

    Args:
        urls: ``MODEL_URL`` as a string, or its entries.
        cache_dir: The checkpoint cache (``MODEL_CACHE_DIR``).
        full_verify: Re-hash every file even when an earlier verification marker matches.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        lock_timeout: Seconds to wait for another process fetching the same source; None = no limit.

    Returns:
        One verified checkpoint per entry, in ``MODEL_URL`` order.

    Raises:
        ModelUrlError: ``MODEL_URL`` is empty, too long, has duplicates, or two entries are the same
            checkpoint name.
        CheckpointError: An entry cannot be resolved; the message starts with "MODEL_URL entry N".
    """
    entries = parse_model_urls(urls)
    resolved: list[LocalCheckpoint] = []
    for index, url in enumerate(entries, start=1):
        try:
            checkpoint = resolve(url, cache_dir, full_verify=full_verify, progress=progress,
                                 lock_timeout=lock_timeout)  # fmt: skip
        except CheckpointError as error:
            raise with_context(error, f"MODEL_URL entry {index} of {len(entries)}: ") from None
        for other_index, other in enumerate(resolved, start=1):
            if other.manifest.name == checkpoint.manifest.name:
                raise ModelUrlError(
                    f"MODEL_URL entries {other_index} ({other.source}) and {index} ({checkpoint.source}) are "
                    f"both checkpoint {checkpoint.manifest.name!r} ({other.label} and {checkpoint.label}); "
                    "a worker serves each checkpoint name once: remove one of them"
                )
        resolved.append(checkpoint)
    return resolved
