"""Safe extraction of checkpoint archives (``.tar``, ``.tar.gz``/``.tgz``).

An archive may come from anywhere, so every member is checked before it is written: no absolute paths,
no ``..`` components, no links leading outside the target, no device files or fifos, and limits on the
total size and member count (tar bombs). ``tarfile``'s ``data`` filter runs on top of these checks. The
archive is read in one pass, so partial output is left behind on error: extract into a temporary
directory and delete it when this raises.

:func:`index_archive` reads an archive without writing anything: its sha256 and the size it unpacks
to, so the checksum and the free space can be checked before a single member is extracted.
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from checkpoints.errors import CheckpointError, UnsafeArchiveError
from checkpoints.manifest import MANIFEST_NAME
from checkpoints.progress import byte_progress

DEFAULT_MAX_BYTES = 64 * 1024**3
DEFAULT_MAX_MEMBERS = 10_000

#: Suffix -> tarfile compression ("" for none).
ARCHIVE_SUFFIXES: dict[str, str] = {".tar": "", ".tar.gz": "gz", ".tgz": "gz"}


def archive_kind(filename: str) -> str | None:
    """``"gz"`` or ``""`` (plain tar) for an archive file name, None when it is not one."""
    lowered = filename.lower()
    for suffix, kind in sorted(ARCHIVE_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if lowered.endswith(suffix):
            return kind
    return None


def _inside(root: Path, candidate: Path) -> bool:
    return candidate == root or root in candidate.parents


class _HashingFile(io.RawIOBase):
    """Reads through ``handle`` while feeding every byte to ``digest``."""

    def __init__(self, handle: BinaryIO, digest: Any) -> None:
        super().__init__()
        self._handle, self._digest = handle, digest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        return data

    def drain(self) -> None:
        while self.read(1024 * 1024):
            pass


@dataclass(frozen=True)
class ArchiveIndex:
    """What an archive holds, read from its member headers."""

    members: int
    unpacked_bytes: int
    """Sum of the member sizes: what extracting it writes."""


def _limits(archive: Path, members: int, total: int, max_bytes: int, max_members: int) -> None:
    if members > max_members:
        raise UnsafeArchiveError(
            f"archive {archive.name} has more than {max_members} members; a checkpoint has a handful of files, "
            "refusing it"
        )
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"archive {archive.name} expands to more than {max_bytes} bytes (the limit); refusing it"
        )


def index_archive(
    archive: str | os.PathLike[str],
    *,
    digest: Any = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    progress: bool | None = None,
) -> ArchiveIndex:
    """Read a tar archive (optionally gzip-compressed) to its end without extracting anything.

    One pass feeds every byte of the file to ``digest`` and sums the member sizes, so the caller can
    check the checksum and the room the archive needs before a byte of it is written. ``digest``
    has seen the whole file even when this raises (a damaged archive can still be told apart from
    one that does not match its checksum).

    Args:
        archive: The archive file.
        digest: A ``hashlib`` object fed with every byte of the file.
        max_bytes: Refuse archives whose members add up to more than this (default 64 GiB).
        max_members: Refuse archives with more members than this (default 10,000).
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).

    Returns:
        The member count and the unpacked size.

    Raises:
        UnsafeArchiveError: A limit is exceeded.
        CheckpointError: The file is not a readable tar archive.
    """
    archive = Path(archive)
    members = total = 0
    try:
        with archive.open("rb") as raw:
            source = _HashingFile(raw, digest) if digest is not None else raw
            try:
                with (
                    tarfile.open(fileobj=source, mode="r|*") as tar,
                    byte_progress(f"checking {archive.name}", archive.stat().st_size, progress) as advance,
                ):
                    position = 0
                    for member in tar:
                        members += 1
                        total += max(member.size, 0) if member.isreg() else 0
                        _limits(archive, members, total, max_bytes, max_members)
                        advance(raw.tell() - position)
                        position = raw.tell()
            finally:
                if isinstance(source, _HashingFile):
                    source.drain()  # the padding tarfile does not read, or the rest after an error
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError) and not archive.exists():
            raise CheckpointError(f"archive {archive} does not exist") from None
        raise CheckpointError(f"cannot read {archive.name}: {error} (is it a complete .tar or .tar.gz file?)") from None
    if members == 0:
        raise CheckpointError(f"archive {archive.name} is empty or not a tar archive")
    return ArchiveIndex(members=members, unpacked_bytes=total)


def check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Raise UnsafeArchiveError when writing ``member`` under ``dest`` is not safe."""
    name = member.name
    shown = repr(name)
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"archive member {shown} has an empty or invalid name")
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"archive member {shown} has an absolute path; refusing to extract it")
    if ".." in name.replace("\\", "/").split("/"):
        raise UnsafeArchiveError(f"archive member {shown} contains a '..' component; refusing to extract it")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeArchiveError(f"archive member {shown} is a device file or fifo; a checkpoint holds plain files")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArchiveError(f"archive member {shown} has an unsupported type ({member.type!r})")
    root = dest.resolve()
    target = Path(os.path.realpath(dest / name))
    if not _inside(root, target):
        raise UnsafeArchiveError(f"archive member {shown} would be written outside the target (through a link)")
    if member.issym() or member.islnk():
        link = member.linkname
        if not link or PurePosixPath(link).is_absolute():
            raise UnsafeArchiveError(f"archive member {shown} links to the absolute path {link!r}; refusing it")
        base = (dest / name).parent if member.issym() else dest
        if not _inside(root, Path(os.path.realpath(base / link))):
            raise UnsafeArchiveError(f"archive member {shown} links to {link!r}, outside the archive; refusing it")


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    progress: bool | None = None,
    digest: Any = None,
) -> Path:
    """Extract a tar archive (optionally gzip-compressed) into ``dest`` after checking every member.

    Args:
        archive: The archive file.
        dest: Target directory (created when missing); use a fresh temporary directory.
        max_bytes: Refuse archives whose members add up to more than this (default 64 GiB).
        max_members: Refuse archives with more members than this (default 10,000).
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        digest: A ``hashlib`` object fed with every byte of the archive file as it is read (so its
            checksum costs no second pass).

    Returns:
        The checkpoint root inside ``dest``: ``dest`` itself when ``manifest.json`` is at the top of
        the archive, or its single top-level directory when the archive wraps one.

    Raises:
        UnsafeArchiveError: A member is unsafe or a limit is exceeded.
        CheckpointError: The file is not a readable tar archive, or holds no manifest.json.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    total = members = 0
    try:
        with (
            archive.open("rb") as raw,
            tarfile.open(fileobj=raw if digest is None else _HashingFile(raw, digest), mode="r|*") as tar,
            byte_progress(f"extracting {archive.name}", archive.stat().st_size, progress) as advance,
        ):
            position = 0
            for member in tar:
                members += 1
                _limits(archive, members, total, max_bytes, max_members)
                check_member(member, dest)
                total += max(member.size, 0)
                _limits(archive, members, total, max_bytes, max_members)
                tar.extract(member, dest, filter="data")
                advance(raw.tell() - position)
                position = raw.tell()
            if digest is not None:
                _HashingFile(raw, digest).drain()  # the end-of-archive padding tarfile does not read
    except tarfile.FilterError as error:
        raise UnsafeArchiveError(f"archive {archive.name}: {error}") from None
    except (tarfile.TarError, EOFError, OSError) as error:
        if isinstance(error, FileNotFoundError) and not archive.exists():
            raise CheckpointError(f"archive {archive} does not exist") from None
        raise CheckpointError(
            f"cannot extract {archive.name}: {error} (is it a complete .tar or .tar.gz file?)"
        ) from None
    if members == 0:
        raise CheckpointError(f"archive {archive.name} is empty or not a tar archive")
    return checkpoint_root(dest, archive.name)


def checkpoint_root(dest: Path, label: str) -> Path:
    """Where manifest.json is: ``dest`` or its single top-level directory."""
    if (dest / MANIFEST_NAME).is_file():
        return dest
    entries = [entry for entry in dest.iterdir() if not entry.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST_NAME).is_file():
        return entries[0]
    raise CheckpointError(
        f"archive {label} holds no manifest.json at its top level (or in its single top-level "
        "directory); build checkpoint archives with `hark checkpoints pack`"
    )
