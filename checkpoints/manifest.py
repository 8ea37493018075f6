"""The checkpoint manifest: ``manifest.json`` beside the engine's model files.

Example::

    {
      "format": 1,
      "name": "whisper-base",
      "version": "1.0.0",
      "engine": "faster-whisper",
      "languages": ["en", "zh", "..."],
      "multilingual": true,
      "default_compute_type": "int8",
      "files": {"model.bin": {"sha256": "<64 hex>", "size": 145217532}, "...": {}},
      "created_at": "2025-01-01T00:00:00Z"
    }
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from checkpoints.errors import ManifestError
from hark.languages import is_language_code

MANIFEST_NAME = "manifest.json"

#: Files Hark itself keeps beside a checkpoint's files; never listed in a manifest.
BOOKKEEPING_FILES = frozenset({MANIFEST_NAME, ".hark-verified.json", ".hark-last-used"})

#: Newest manifest format this code understands.
MANIFEST_FORMAT = 1

ENGINES = ("faster-whisper",)

#: CTranslate2 compute types (``WhisperModel(compute_type=...)``).
COMPUTE_TYPES = (
    "default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
    "float16", "bfloat16", "float32",
)  # fmt: skip

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class FileEntry(BaseModel):
    """Size and sha256 of one file of the checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    size: int = Field(ge=0)

    @field_validator("sha256")
    @classmethod
    def _check_sha256(cls, value: str) -> str:
        value = value.lower()
        if not SHA256_RE.match(value):
            raise ValueError(f"must be 64 hexadecimal characters (got {value!r})")
        return value


class Manifest(BaseModel):
    """What a checkpoint is, what it serves, and the checksum of every file in it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    format: int = MANIFEST_FORMAT
    name: str
    """Checkpoint name, used in queue names (``hark.<deployment>.<name>``) and ``model=`` pinning."""
    version: str
    """Free-form version (``1.0.0``, ``2024-06-01``); name and version key the cache directory."""
    engine: Literal["faster-whisper"] = "faster-whisper"
    languages: list[str]
    """ISO 639-1 codes (Whisper's 3-letter extras allowed) this checkpoint transcribes."""
    multilingual: bool
    """True when the model detects and switches languages; False for dedicated (e.g. English-only)."""
    default_compute_type: str = "int8"
    files: dict[str, FileEntry]
    """Relative POSIX path -> size and sha256, for every file of the checkpoint except the manifest."""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("format")
    @classmethod
    def _check_format(cls, value: int) -> int:
        if value < 1 or value > MANIFEST_FORMAT:
            raise ValueError(
                f"format {value} is not supported: this Hark reads manifest format {MANIFEST_FORMAT}; "
                "upgrade Hark or repack the checkpoint"
            )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                "must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', starting with "
                f"a letter or digit (it is used in queue names; got {value!r})"
            )
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not VERSION_RE.match(value):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '.', '_', '+' or '-', starting with a "
                f"letter or digit (it names a cache directory; got {value!r})"
            )
        return value

    @field_validator("languages")
    @classmethod
    def _check_languages(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('must list at least one language code, e.g. ["en"]')
        bad = [code for code in value if not is_language_code(code)]
        if bad:
            raise ValueError(f"not ISO 639-1 language codes: {', '.join(map(repr, bad))} (use e.g. 'en', 'hi')")
        duplicates = sorted({code for code in value if value.count(code) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
        return value

    @field_validator("default_compute_type")
    @classmethod
    def _check_compute_type(cls, value: str) -> str:
        if value not in COMPUTE_TYPES:
            raise ValueError(f"must be one of {', '.join(COMPUTE_TYPES)} (got {value!r})")
        return value

    @field_validator("files")
    @classmethod
    def _check_files(cls, value: dict[str, FileEntry]) -> dict[str, FileEntry]:
        if not value:
            raise ValueError("must list the checkpoint's files with their sha256 and size")
        for name in value:
            problem = relative_path_problem(name)
            if problem:
                raise ValueError(f"{name!r}: {problem}")
            if name in BOOKKEEPING_FILES:
                raise ValueError(f"{name!r} is Hark's own bookkeeping file and cannot be listed")
        return value

    @property
    def label(self) -> str:
        """``name@version``, as logs, metadata and the registry show it."""
        return f"{self.name}@{self.version}"

    @property
    def total_size(self) -> int:
        """Sum of the listed files' sizes in bytes."""
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> str:
        """The manifest as stable, human-readable JSON (sorted file list, trailing newline)."""
        data = self.model_dump(mode="json")
        data["files"] = {name: data["files"][name] for name in sorted(data["files"])}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def relative_path_problem(name: str) -> str | None:
    """Why ``name`` is not a safe relative POSIX path inside a checkpoint, or None when it is."""
    if not name or "\\" in name or "\x00" in name:
        return "must be a non-empty relative path using '/' separators"
    path = PurePosixPath(name)
    if path.is_absolute():
        return "must be relative to the checkpoint directory, not absolute"
    if any(part in ("..", ".", "") for part in name.split("/")):
        return "must not contain '.', '..' or empty path components"
    return None


def describe_manifest_error(error: ValidationError, where: str) -> str:
    """One line per invalid field of a manifest, naming the field and the problem."""
    lines = [f"{where} is invalid:"]
    for item in error.errors():
        field = ".".join(str(part) for part in item.get("loc", ())) or "manifest"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") == "missing":
            message = "is required but missing"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


def parse_manifest(data: object, where: str = MANIFEST_NAME) -> Manifest:
    """Validate already-decoded JSON as a manifest.

    Args:
        data: The decoded JSON value.
        where: How to name the manifest in error messages (usually its path).

    Raises:
        ManifestError: The value is not an object or a field is invalid.
    """
    if not isinstance(data, dict):
        raise ManifestError(f"{where} must hold a JSON object, not {type(data).__name__}")
    try:
        return Manifest.model_validate(data)
    except ValidationError as error:
        raise ManifestError(describe_manifest_error(error, where)) from None


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a checkpoint's manifest.

    Args:
        path: The checkpoint directory, or the ``manifest.json`` file itself.

    Returns:
        The validated manifest.

    Raises:
        ManifestError: The file is missing, unreadable, not JSON or has an invalid field.
    """
    path = Path(path)
    file = path / MANIFEST_NAME if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(
            f"{file} does not exist: a checkpoint directory needs a manifest.json; build one with "
            "`hark checkpoints pack DIR -o OUTPUT --name NAME --version VERSION --languages en`"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read {file}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(
            f"{file} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    return parse_manifest(data, str(file))


def write_manifest(directory: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest.json`` into ``directory`` atomically and return its path."""
    target = Path(directory) / MANIFEST_NAME
    temp = target.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    temp.write_text(manifest.to_json(), encoding="utf-8")
    os.replace(temp, target)
    return target
