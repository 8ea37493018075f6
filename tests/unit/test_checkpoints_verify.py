"""verify_checkpoint: sizes, sha256, engine files, and the cheap path through the marker file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_checkpoints_support import ENGINE_FILES, make_checkpoint, make_model_dir

from checkpoints.errors import ChecksumError, MissingFileError
from checkpoints.manifest import load_manifest, parse_manifest, write_manifest
from checkpoints.pack import pack
from checkpoints.verify import MARKER_NAME, sha256_file, verify_checkpoint


def _fresh(tmp_path: Path) -> Path:
    path = make_checkpoint(tmp_path)
    (path / MARKER_NAME).unlink()  # as if copied from elsewhere
    return path


def test_full_then_cheap_then_forced_full(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    first = verify_checkpoint(path)
    assert first.hashed and first.files == 4 and first.bytes == sum(map(len, ENGINE_FILES.values()))
    assert (path / MARKER_NAME).exists()
    assert verify_checkpoint(path).hashed is False
    assert verify_checkpoint(path, full=True).hashed is True


def test_same_size_corruption_is_caught_by_a_full_check(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    verify_checkpoint(path)
    model = path / "model.bin"
    stat = model.stat()
    data = bytearray(model.read_bytes())
    data[100] ^= 0xFF
    model.write_bytes(bytes(data))
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime: the marker still matches
    assert verify_checkpoint(path).hashed is False
    with pytest.raises(ChecksumError) as caught:
        verify_checkpoint(path, full=True)
    error = caught.value
    assert error.path == "model.bin"
    assert error.actual == sha256_file(model)
    assert error.expected == load_manifest(path).files["model.bin"].sha256
    assert "sha256 of model.bin is" in str(error) and "the manifest says" in str(error)
    assert not (path / MARKER_NAME).exists()  # a failed check never leaves a trusted marker


def test_modified_file_invalidates_the_marker(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    verify_checkpoint(path)
    model = path / "model.bin"
    data = bytearray(model.read_bytes())
    data[0] ^= 0xFF
    model.write_bytes(bytes(data))
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns + 1_000_000))
    with pytest.raises(ChecksumError, match=r"model.bin"):
        verify_checkpoint(path)


def test_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    (path / "config.json").write_bytes(b"{}")
    with pytest.raises(ChecksumError, match=r"config.json has 2 bytes, the manifest says \d+"):
        verify_checkpoint(path)


def test_missing_listed_file(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    (path / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match=r"tokenizer.json is listed in the manifest but missing") as caught:
        verify_checkpoint(path)
    assert caught.value.path == "tokenizer.json"


def test_manifest_without_required_engine_file(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    manifest = load_manifest(path)
    files = {k: v.model_dump() for k, v in manifest.files.items() if k != "tokenizer.json"}
    write_manifest(path, parse_manifest({**manifest.model_dump(mode="json"), "files": files}))
    with pytest.raises(MissingFileError, match=r"lacks tokenizer.json, which faster-whisper needs"):
        verify_checkpoint(path)


def test_vocabulary_json_is_an_accepted_alternative(tmp_path: Path) -> None:
    files = {k: v for k, v in ENGINE_FILES.items() if k != "vocabulary.txt"} | {"vocabulary.json": b"[]"}
    model = make_model_dir(tmp_path, files)
    path = pack(model, tmp_path / "ckpt", name="x", version="1", languages="en", progress=False)
    assert verify_checkpoint(path).files == 4


def test_changed_manifest_invalidates_the_marker(tmp_path: Path) -> None:
    path = _fresh(tmp_path)
    verify_checkpoint(path)
    data = json.loads((path / "manifest.json").read_text())
    data["languages"] = ["en", "hi"]
    (path / "manifest.json").write_text(json.dumps(data))
    assert verify_checkpoint(path).hashed is True
