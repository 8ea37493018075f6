"""Checkpoints: packaged faster-whisper models (model files + ``manifest.json``), fetched, verified
and cached. Usable alone: imports neither ``web`` nor ``workers``.

Typical use (the worker at start-up)::

    from checkpoints import resolve_configured
    for checkpoint in resolve_configured(settings, hold=True):  # MODEL_PATH or MODEL_URL, leased
        load(checkpoint.path, checkpoint.manifest)

Sources: local paths, file://, http(s):// and s3:// (archives, or unpacked directories ending in
``/``), downloaded with parallel ranges and resumed after a crash (:mod:`checkpoints.transfer`), into
a cache that many hosts can share (:mod:`checkpoints.cache`, :mod:`checkpoints.space`,
:mod:`checkpoints.leases`). See docs/model-storage.md.

The functions ``resolve`` and ``pack`` are not re-exported here, so ``checkpoints.resolve`` and
``checkpoints.pack`` stay the modules: ``from checkpoints.resolve import resolve``.
"""

from checkpoints.bundled import build_bundled, bundled_model_urls
from checkpoints.errors import (
    BundleError,
    CheckpointError,
    ChecksumError,
    FetchError,
    ManifestError,
    MissingFileError,
    ModelUrlError,
    StorageError,
    UnsafeArchiveError,
)
from checkpoints.extract import safe_extract
from checkpoints.leases import Lease, hold
from checkpoints.manifest import Manifest, load_manifest
from checkpoints.options import FetchOptions
from checkpoints.resolve import LocalCheckpoint, parse_model_urls, resolve_all, resolve_configured
from checkpoints.verify import verify_checkpoint

__all__ = [
    "BundleError",
    "CheckpointError",
    "ChecksumError",
    "FetchError",
    "FetchOptions",
    "Lease",
    "LocalCheckpoint",
    "Manifest",
    "ManifestError",
    "MissingFileError",
    "ModelUrlError",
    "StorageError",
    "UnsafeArchiveError",
    "build_bundled",
    "bundled_model_urls",
    "hold",
    "load_manifest",
    "parse_model_urls",
    "resolve_all",
    "resolve_configured",
    "safe_extract",
    "verify_checkpoint",
]
