"""What is asked for (an :class:`Entry`: location + expected checksum and version) and what is handed
back (a :class:`LocalCheckpoint`: a verified directory on local disk, optionally leased)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from checkpoints.errors import ChecksumError, FetchError
from checkpoints.leases import Lease
from checkpoints.manifest import Manifest

_CHECKSUM_RE = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class LocalCheckpoint:
    """A verified checkpoint on local disk, ready to load."""

    path: Path
    """Directory holding manifest.json and the engine's files (pass it to the engine)."""
    manifest: Manifest
    source: str
    """Where it came from, with credentials redacted (safe to log)."""
    lease: Lease | None = field(default=None, compare=False, repr=False)
    """Held while the caller uses a cached checkpoint (``hold=True``), so eviction leaves it alone."""

    @property
    def label(self) -> str:
        return self.manifest.label

    def release(self) -> None:
        """Give up the lease, if any (also happens when the process exits)."""
        if self.lease is not None:
            self.lease.release()


@dataclass(frozen=True)
class Entry:
    """One checkpoint to resolve."""

    url: str
    """Path, file://, http(s):// or s3:// location."""
    checksum: str | None = None
    """Expected sha256 (hex) of the archive, or of manifest.json for a checkpoint directory."""
    version: str | None = None
    """Expected manifest version (``MODEL_VERSION``); also part of the cache key."""
    baked: bool = False
    """From ``MODEL_PATH``: an unpacked directory used in place, never downloaded."""

    @property
    def key_suffix(self) -> str:
        return f"#version={self.version}" if self.version else ""


def normalize_checksum(value: str | None) -> str | None:
    """``"sha256:<HEX>"`` or ``"<hex>"`` -> lowercase hex; empty -> None.

    Raises:
        FetchError: Not a sha256 checksum.
    """
    if value is None or not value.strip():
        return None
    match = _CHECKSUM_RE.match(value.strip())
    if not match:
        raise FetchError(f"checksum {value!r} is not sha256:<64 hexadecimal characters>")
    return match.group(1).lower()


def check_checksum(shown: str, what: str, actual: str, expected: str | None) -> None:
    """Raise ChecksumError when ``expected`` is set and differs from ``actual``."""
    if expected is not None and actual != expected:
        raise ChecksumError(
            f"{shown}: the sha256 of {what} is {actual}, but MODEL_CHECKSUM says {expected}", what,
            f"sha256:{expected}", f"sha256:{actual}",
        )  # fmt: skip


def check_version(shown: str, manifest: Manifest, version: str | None) -> None:
    """Raise FetchError when the checkpoint is not the expected version."""
    if version and manifest.version != version:
        raise FetchError(
            f"{shown} is {manifest.label}, but MODEL_VERSION expects version {version}; point MODEL_URL at "
            f"version {version} or change MODEL_VERSION"
        )
