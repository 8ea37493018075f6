"""Checkpoints: packaged faster-whisper models (model files + ``manifest.json``), fetched, verified
and cached. Usable alone: imports neither ``web`` nor ``workers``.

Typical use (the worker at start-up)::

    from checkpoints import resolve_all
    for checkpoint in resolve_all(settings.model_url, settings.model_cache_dir):
        load(checkpoint.path, checkpoint.manifest)

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
    UnsafeArchiveError,
)
from checkpoints.extract import safe_extract
from checkpoints.manifest import Manifest, load_manifest
from checkpoints.resolve import LocalCheckpoint, parse_model_urls, resolve_all
from checkpoints.verify import verify_checkpoint

__all__ = [
    "BundleError",
    "CheckpointError",
    "ChecksumError",
    "FetchError",
    "LocalCheckpoint",
    "Manifest",
    "ManifestError",
    "MissingFileError",
    "ModelUrlError",
    "UnsafeArchiveError",
    "build_bundled",
    "bundled_model_urls",
    "load_manifest",
    "parse_model_urls",
    "resolve_all",
    "safe_extract",
    "verify_checkpoint",
]
