"""Check a checkpoint directory against its manifest before anything loads it.

A full verification streams every file through sha256. Afterwards a marker file
(``.hark-verified.json``) records each file's size and ``mtime_ns``; while neither changes (and the
manifest is the same), later verifications trust the marker and skip hashing unless ``full=True``.
Sizes are always compared.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from checkpoints.errors import CheckpointError, ChecksumError, MissingFileError
from checkpoints.manifest import MANIFEST_NAME, Manifest, load_manifest
from checkpoints.progress import byte_progress

logger = logging.getLogger(__name__)

MARKER_NAME = ".hark-verified.json"
CHUNK_SIZE = 1024 * 1024

#: Files each engine needs, as groups of alternatives (one file of each group must be present).
#: faster-whisper without tokenizer.json tries to fetch one from the Hugging Face hub.
REQUIRED_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "faster-whisper": (
        ("model.bin",),
        ("config.json",),
        ("tokenizer.json",),
        ("vocabulary.json", "vocabulary.txt"),
    ),
}


@dataclass(frozen=True)
class Verification:
    """What a verification did."""

    files: int
    bytes: int
    hashed: bool
    """False when the marker of an earlier full verification was trusted."""


def sha256_file(path: Path, progress: bool | None = None) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as handle, byte_progress(f"hashing {path.name}", size, progress) as advance:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def missing_engine_files(engine: str, names: Iterable[str]) -> list[str]:
    """The required files of ``engine`` absent from ``names``, as readable alternatives."""
    present = set(names)
    groups = REQUIRED_FILES.get(engine, ())
    return [" or ".join(group) for group in groups if not present.intersection(group)]


def check_engine_files(engine: str, names: Iterable[str], where: str) -> None:
    """Raise MissingFileError when ``names`` lacks a file ``engine`` needs to load offline."""
    missing = missing_engine_files(engine, names)
    if missing:
        raise MissingFileError(
            f"{where} lacks {', '.join(missing)}, which {engine} needs to load the model offline; "
            "copy the file(s) from the original model (a converted CTranslate2 Whisper model "
            "directory has model.bin, config.json, tokenizer.json and vocabulary.*) and repack",
            missing[0],
        )


def _manifest_digest(path: Path) -> str:
    return hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()


def _stat_record(path: Path, manifest: Manifest) -> dict[str, dict[str, int]]:
    record = {}
    for name in manifest.files:
        stat = (path / name).stat()
        record[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return record


def _marker_matches(path: Path, manifest: Manifest) -> bool:
    try:
        marker = json.loads((path / MARKER_NAME).read_text(encoding="utf-8"))
        return (
            isinstance(marker, dict)
            and marker.get("manifest_sha256") == _manifest_digest(path)
            and marker.get("files") == _stat_record(path, manifest)
        )
    except (OSError, ValueError):
        return False


def write_marker(path: Path, manifest: Manifest, record: dict[str, dict[str, int]] | None = None) -> None:
    """Record that ``path`` matched ``manifest`` in full; silently skipped on a read-only directory.

    Args:
        path: The checkpoint directory.
        manifest: The manifest its files were checked against.
        record: File sizes and mtimes taken *before* hashing; by default taken now.
    """
    marker = {
        "manifest_sha256": _manifest_digest(path),
        "verified_at": datetime.now(UTC).isoformat(),
        "files": record if record is not None else _stat_record(path, manifest),
    }
    temp = path / f"{MARKER_NAME}.{os.getpid()}.tmp"
    try:
        temp.write_text(json.dumps(marker, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temp, path / MARKER_NAME)
    except OSError as error:
        logger.debug("cannot write %s in %s: %s", MARKER_NAME, path, error)
        temp.unlink(missing_ok=True)


def drop_marker(path: Path) -> None:
    """Forget an earlier verification, so the next one hashes everything."""
    with contextlib.suppress(OSError):
        (path / MARKER_NAME).unlink(missing_ok=True)


def verify_checkpoint(
    path: str | os.PathLike[str],
    manifest: Manifest | None = None,
    *,
    full: bool = False,
    progress: bool | None = None,
    hint: str | None = None,
    sizes_only: bool = False,
) -> Verification:
    """Check every file the manifest lists, and that the engine's required files are there.

    Args:
        path: The checkpoint directory.
        manifest: Its manifest; read from ``path/manifest.json`` when None.
        full: Hash every file even when a matching verification marker exists.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        hint: What to do about a mismatch (default: delete this copy and fetch or rebuild it).
        sizes_only: Check presence and sizes but hash nothing (``MODEL_VALIDATE=false``).

    Returns:
        What was checked and whether files were hashed.

    Raises:
        MissingFileError: A listed or required file is absent.
        ChecksumError: A file's size or sha256 differs from the manifest.
        ManifestError: No manifest was given and ``manifest.json`` is missing or invalid.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist or is not a directory")
    if manifest is None:
        manifest = load_manifest(path)
    check_engine_files(manifest.engine, manifest.files, f"checkpoint {manifest.label} ({path}/manifest.json)")
    fix = hint or f"the copy at {path} is corrupt or was modified; delete it and fetch or rebuild the checkpoint"
    for name, entry in manifest.files.items():
        file = path / name
        if not file.is_file():
            raise MissingFileError(
                f"checkpoint {manifest.label}: {name} is listed in the manifest but missing from {path}",
                name,
            )
        size = file.stat().st_size
        if size != entry.size:
            raise ChecksumError(
                f"checkpoint {manifest.label}: {name} has {size} bytes, the manifest says {entry.size}; "
                + fix,
                name, str(entry.size), str(size),
            )  # fmt: skip
    if sizes_only and not full:
        return Verification(files=len(manifest.files), bytes=manifest.total_size, hashed=False)
    if not full and _marker_matches(path, manifest):
        logger.debug("%s: trusted the verification marker", manifest.label, extra={"checkpoint": manifest.label})
        return Verification(files=len(manifest.files), bytes=manifest.total_size, hashed=False)
    drop_marker(path)
    before = _stat_record(path, manifest)
    for name, entry in sorted(manifest.files.items()):
        actual = sha256_file(path / name, progress)
        if actual != entry.sha256:
            raise ChecksumError(
                f"checkpoint {manifest.label}: sha256 of {name} is {actual}, the manifest says "
                f"{entry.sha256}; " + fix,
                name, entry.sha256, actual,
            )  # fmt: skip
    if _stat_record(path, manifest) == before:  # nothing changed while hashing
        write_marker(path, manifest, before)
    logger.info(
        "%s: verified %d files (%d bytes)", manifest.label, len(manifest.files), manifest.total_size,
        extra={"checkpoint": manifest.label},
    )  # fmt: skip
    return Verification(files=len(manifest.files), bytes=manifest.total_size, hashed=True)


def source_checksum(path: str | os.PathLike[str]) -> str:
    """What ``MODEL_CHECKSUM`` pins for a location: ``sha256:`` of the archive file, or of the
    ``manifest.json`` of a checkpoint directory (which pins every other file by its sha256)."""
    path = Path(path)
    target = path / MANIFEST_NAME if path.is_dir() else path
    return f"sha256:{sha256_file(target, progress=False)}"
