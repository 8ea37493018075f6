"""Errors raised by checkpoint handling. Every message says what is wrong and what to do about it.

All of them derive from :class:`CheckpointError` (itself a ``ValueError``), so a worker can refuse to
start with ``except CheckpointError as error: print(error)`` and no traceback.
"""

from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message says what to fix."""


class ManifestError(CheckpointError):
    """``manifest.json`` is missing, is not JSON, or has an invalid field."""


class MissingFileError(CheckpointError):
    """A file the manifest lists (or the engine needs) is not in the checkpoint directory."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class ChecksumError(CheckpointError):
    """A file's size or sha256 differs from the manifest: the copy is corrupt or was modified."""

    def __init__(self, message: str, path: str, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(CheckpointError):
    """An archive holds a member that would escape the target directory or is not a plain file."""


class FetchError(CheckpointError):
    """A checkpoint location cannot be read or downloaded."""


class ModelUrlError(CheckpointError):
    """``MODEL_URL`` is empty, too long, or lists the same checkpoint twice."""


class BundleError(CheckpointError):
    """The bundled default checkpoints cannot be built (usually: model packages not installed)."""


class StorageError(CheckpointError):
    """The cache cannot hold the checkpoint: too little free space, or larger than MODEL_CACHE_MAX_SIZE."""


class CorruptDownloadError(FetchError):
    """A downloaded archive cannot be read (damaged in transit or at the source); fetched again once."""


class InsecureRedirectError(FetchError):
    """An https download was redirected to plain http; never followed (not retried either)."""

    def __init__(self, message: str, origin: str, target: str) -> None:
        super().__init__(message)
        self.origin = origin
        self.target = target
