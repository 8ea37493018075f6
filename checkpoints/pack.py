"""Build a checkpoint (model files + ``manifest.json`` with checksums) from a model directory.

The output is a ``.tar`` or ``.tar.gz``/``.tgz`` archive (by suffix) or, for any other name, a
checkpoint directory. Each file is read once: hashed while it is archived or copied.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from checkpoints.errors import CheckpointError, ManifestError
from checkpoints.extract import archive_kind
from checkpoints.manifest import (
    BOOKKEEPING_FILES,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    parse_manifest,
    write_manifest,
)
from checkpoints.progress import byte_progress
from checkpoints.verify import CHUNK_SIZE, check_engine_files, write_marker

ENGINE = "faster-whisper"
DEFAULT_COMPUTE_TYPE = "int8"
#: Model weights barely compress; level 1 keeps packing fast.
GZIP_LEVEL = 1


def list_model_files(model_dir: Path) -> list[str]:
    """Relative POSIX paths of the files to pack: every regular file (symlinks followed), except
    hidden files and directories (``.git``, ``.cache``...) and Hark's bookkeeping files."""
    found = []
    for root, dirs, files in os.walk(model_dir, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for file in sorted(files):
            relative = (Path(root) / file).relative_to(model_dir).as_posix()
            if file.startswith(".") or relative in BOOKKEEPING_FILES:
                continue
            if (Path(root) / file).is_file():
                found.append(relative)
    return found


class _HashingReader(io.RawIOBase):
    """Passes reads through while feeding a sha256 and a progress callback."""

    def __init__(self, handle: BinaryIO, digest: hashlib._Hash, advance: Callable[[int], None]) -> None:
        super().__init__()
        self._handle, self._digest, self._advance = handle, digest, advance

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        self._advance(len(data))
        return data


def hash_copy(sources: Sequence[Path], dest: Path | None, advance: Callable[[int], None]) -> FileEntry:
    """Concatenate ``sources`` into ``dest`` (or just read them when None); return size and sha256."""
    digest = hashlib.sha256()
    size = 0
    out = dest.open("wb") if dest is not None else None
    try:
        for source in sources:
            with source.open("rb") as handle:
                while chunk := handle.read(CHUNK_SIZE):
                    digest.update(chunk)
                    size += len(chunk)
                    if out is not None:
                        out.write(chunk)
                    advance(len(chunk))
    finally:
        if out is not None:
            out.close()
    return FileEntry(sha256=digest.hexdigest(), size=size)


def _defaults_from(model_dir: Path) -> dict[str, object]:
    file = model_dir / MANIFEST_NAME
    if not file.exists():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ManifestError(f"{file} exists but cannot be read as JSON ({error}); fix or delete it") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{file} must hold a JSON object; fix or delete it")
    return data


def _split_languages(languages: str | Sequence[str] | None) -> list[str] | None:
    if languages is None:
        return None
    items = languages.split(",") if isinstance(languages, str) else list(languages)
    return [item.strip().lower() for item in items if item.strip()]


def build_manifest(
    files: dict[str, FileEntry],
    *,
    defaults: dict[str, object] | None = None,
    name: str | None = None,
    version: str | None = None,
    languages: str | Sequence[str] | None = None,
    multilingual: bool | None = None,
    compute_type: str | None = None,
) -> Manifest:
    """A validated manifest from file checksums, explicit values and (for the rest) ``defaults``.

    When neither gives ``multilingual`` it is true for more than one language.

    Raises:
        ManifestError: A required value is missing or a value is invalid.
    """
    defaults = defaults or {}
    langs = _split_languages(languages) or defaults.get("languages")
    data = {
        "name": name or defaults.get("name"),
        "version": version or defaults.get("version"),
        "engine": defaults.get("engine", ENGINE),
        "languages": langs,
        "multilingual": multilingual if multilingual is not None else defaults.get("multilingual"),
        "default_compute_type": compute_type or defaults.get("default_compute_type", DEFAULT_COMPUTE_TYPE),
        "files": {key: entry.model_dump() for key, entry in files.items()},
    }
    missing = [flag for flag, key in (("--name", "name"), ("--version", "version"), ("--languages", "languages"))
               if not data[key]]  # fmt: skip
    if missing:
        raise ManifestError(
            f"cannot build the manifest: pass {', '.join(missing)} (or put the value(s) in the model "
            "directory's manifest.json)"
        )
    if data["multilingual"] is None:
        data["multilingual"] = isinstance(langs, list) and len(langs) > 1
    return parse_manifest(data, "the new manifest")


def pack(
    model_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    name: str | None = None,
    version: str | None = None,
    languages: str | Sequence[str] | None = None,
    multilingual: bool | None = None,
    compute_type: str | None = None,
    *,
    progress: bool | None = None,
) -> Path:
    """Package ``model_dir`` as a checkpoint at ``output``.

    Args:
        model_dir: A faster-whisper model directory (model.bin, config.json, tokenizer.json,
            vocabulary.*). A ``manifest.json`` already in it provides defaults for the values below.
        output: ``*.tar`` / ``*.tar.gz`` / ``*.tgz`` for an archive, anything else for a checkpoint
            directory (which must not exist yet, or be ``model_dir`` itself to add the manifest in place).
        name: Checkpoint name (lowercase; used in queue names).
        version: Checkpoint version.
        languages: Language codes, as a list or comma-separated string.
        multilingual: Whether the model detects languages; default: more than one language.
        compute_type: Default CTranslate2 compute type (default int8).
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).

    Returns:
        The path of the written archive or directory.

    Raises:
        CheckpointError: The model directory is unusable, a value is missing or invalid, or the
            output exists.
    """
    source = Path(model_dir).expanduser()
    target = Path(output).expanduser()
    if not source.is_dir():
        raise CheckpointError(f"model directory {source} does not exist or is not a directory")
    names = list_model_files(source)
    check_engine_files(ENGINE, names, f"model directory {source}")
    defaults = _defaults_from(source)
    # Validate the values before reading gigabytes (with a placeholder file list).
    placeholder = {n: FileEntry(sha256="0" * 64, size=0) for n in names}
    build_manifest(placeholder, defaults=defaults, name=name, version=version, languages=languages,
                   multilingual=multilingual, compute_type=compute_type)  # fmt: skip
    values = {"defaults": defaults, "name": name, "version": version, "languages": languages,
              "multilingual": multilingual, "compute_type": compute_type}  # fmt: skip
    total = sum((source / n).stat().st_size for n in names)
    kind = archive_kind(target.name)
    if kind is not None:
        return _pack_archive(source, names, target, kind, total, values, progress)
    if target.exists() and target.resolve() == source.resolve():
        with byte_progress(f"hashing {source.name}", total, progress) as advance:
            files = {n: hash_copy([source / n], None, advance) for n in names}
        manifest = build_manifest(files, **values)
        write_manifest(source, manifest)
        write_marker(source, manifest)
        return source
    if target.exists():
        raise CheckpointError(f"output {target} already exists; choose a new directory or remove it")
    return _pack_directory(source, names, target, total, values, progress)


def _pack_directory(source: Path, names: list[str], target: Path, total: int, values: dict,
                    progress: bool | None) -> Path:  # fmt: skip
    temp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        files = {}
        with byte_progress(f"copying {source.name}", total, progress) as advance:
            for name in names:
                (temp / name).parent.mkdir(parents=True, exist_ok=True)
                files[name] = hash_copy([source / name], temp / name, advance)
        manifest = build_manifest(files, **values)
        write_manifest(temp, manifest)
        write_marker(temp, manifest)
        os.rename(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


def _pack_archive(source: Path, names: list[str], target: Path, kind: str, total: int, values: dict,
                  progress: bool | None) -> Path:  # fmt: skip
    if target.is_dir():
        raise CheckpointError(f"output {target} is a directory; give an archive file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    options: dict[str, object] = {"compresslevel": GZIP_LEVEL} if kind == "gz" else {}
    try:
        with (
            tarfile.open(temp, f"w:{kind}", format=tarfile.PAX_FORMAT, copybufsize=CHUNK_SIZE, **options) as tar,
            byte_progress(f"packing {target.name}", total, progress) as advance,
        ):
            files = {}
            for name in names:
                path = source / name
                info = _file_info(name, path.stat().st_size, int(path.stat().st_mtime))
                digest = hashlib.sha256()
                with path.open("rb") as handle:
                    tar.addfile(info, _HashingReader(handle, digest, advance))
                files[name] = FileEntry(sha256=digest.hexdigest(), size=info.size)
            manifest = build_manifest(files, **values)
            data = manifest.to_json().encode("utf-8")
            tar.addfile(_file_info(MANIFEST_NAME, len(data), int(time.time())), io.BytesIO(data))
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return target


def _file_info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uname = info.gname = ""
    return info
