"""Manifest model: valid values, and errors that name the field and the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from checkpoints.errors import CheckpointError, ManifestError
from checkpoints.manifest import Manifest, load_manifest, parse_manifest, write_manifest
from hark.languages import WHISPER_LANGUAGES

SHA = "a" * 64


def data(**changes: object) -> dict:
    base = {
        "name": "whisper-base",
        "version": "1.0.0",
        "engine": "faster-whisper",
        "languages": ["en", "hi"],
        "multilingual": True,
        "default_compute_type": "int8",
        "files": {"model.bin": {"sha256": SHA, "size": 10}, "sub/config.json": {"sha256": SHA, "size": 2}},
    }
    base.update(changes)
    return base


def test_valid_manifest_roundtrips_through_disk(tmp_path: Path) -> None:
    manifest = parse_manifest(data())
    write_manifest(tmp_path, manifest)
    loaded = load_manifest(tmp_path)
    assert loaded == manifest
    assert loaded.label == "whisper-base@1.0.0"
    assert loaded.total_size == 12
    assert load_manifest(tmp_path / "manifest.json") == manifest
    assert isinstance(ManifestError("x"), CheckpointError) and isinstance(ManifestError("x"), ValueError)


def test_all_whisper_languages_are_accepted() -> None:
    manifest = parse_manifest(data(languages=list(WHISPER_LANGUAGES)))
    assert "haw" in manifest.languages and "yue" in manifest.languages


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "Whisper"}, "name: must be 1-64 characters of lowercase"),
        ({"name": "-x"}, "name: must be"),
        ({"name": "a/b"}, "name: must be"),
        ({"version": "../1"}, "version: must be"),
        ({"languages": []}, "languages: must list at least one language code"),
        ({"languages": ["english"]}, "not ISO 639-1 language codes: 'english'"),
        ({"languages": ["en", "en"]}, "lists en more than once"),
        ({"engine": "openai-whisper"}, "engine:"),
        ({"default_compute_type": "int4"}, "default_compute_type: must be one of"),
        ({"files": {}}, "files: must list the checkpoint's files"),
        ({"files": {"../model.bin": {"sha256": SHA, "size": 1}}}, "must not contain '.', '..'"),
        ({"files": {"/etc/passwd": {"sha256": SHA, "size": 1}}}, "not absolute"),
        ({"files": {"manifest.json": {"sha256": SHA, "size": 1}}}, "bookkeeping file"),
        ({"files": {"model.bin": {"sha256": "xyz", "size": 1}}}, "must be 64 hexadecimal characters"),
        ({"files": {"model.bin": {"sha256": SHA, "size": -1}}}, "files.model.bin.size"),
        ({"format": 2}, "upgrade Hark or repack"),
        ({"multilingual": "maybe"}, "multilingual:"),
    ],
)
def test_invalid_fields_are_named(changes: dict, expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data(**changes), "ckpt/manifest.json")
    message = str(caught.value)
    assert message.startswith("ckpt/manifest.json is invalid:")
    assert expected in message


def test_missing_field_is_named() -> None:
    broken = data()
    del broken["version"]
    with pytest.raises(ManifestError, match=r"version: is required but missing"):
        parse_manifest(broken)


def test_missing_manifest_file_says_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"does not exist.*hark checkpoints pack"):
        load_manifest(tmp_path)


def test_bad_json_says_where(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"name": "x",\n  oops}')
    with pytest.raises(ManifestError, match=r"is not valid JSON \(line 2"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("[1, 2]")
    with pytest.raises(ManifestError, match=r"must hold a JSON object"):
        load_manifest(tmp_path)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    manifest = parse_manifest(data(future_field={"a": 1}))
    assert "future_field" not in json.loads(manifest.to_json())


def test_to_json_is_sorted_and_stable() -> None:
    text = parse_manifest(data()).to_json()
    assert list(json.loads(text)["files"]) == ["model.bin", "sub/config.json"]
    assert Manifest.model_validate_json(text) == parse_manifest(data(created_at=json.loads(text)["created_at"]))
