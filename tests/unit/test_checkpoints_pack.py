"""pack(): checkpoint directories and archives with correct checksums."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from test_checkpoints_support import ENGINE_FILES, make_model_dir, sha256

from checkpoints.errors import CheckpointError, ManifestError, MissingFileError
from checkpoints.extract import safe_extract
from checkpoints.manifest import load_manifest
from checkpoints.pack import pack
from checkpoints.verify import verify_checkpoint


def test_pack_directory(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path)
    (model / ".gitattributes").write_text("hidden files are not packed")
    out = pack(model, tmp_path / "out", name="fake-en", version="2.1", languages="en", progress=False)
    manifest = load_manifest(out)
    assert manifest.label == "fake-en@2.1"
    assert manifest.languages == ["en"] and manifest.multilingual is False
    assert manifest.default_compute_type == "int8" and manifest.engine == "faster-whisper"
    assert {name: entry.sha256 for name, entry in manifest.files.items()} == {
        name: sha256(data) for name, data in ENGINE_FILES.items()
    }
    assert verify_checkpoint(out).hashed is False  # pack leaves a verification marker
    assert not (out / ".gitattributes").exists()


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz"])
def test_pack_archive(tmp_path: Path, suffix: str) -> None:
    model = make_model_dir(tmp_path)
    archive = pack(model, tmp_path / f"ckpt{suffix}", name="multi", version="1", languages="en, HI",
                   compute_type="float32", progress=False)  # fmt: skip
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == sorted([*ENGINE_FILES, "manifest.json"])
        assert all(m.isreg() and m.mode == 0o644 for m in tar.getmembers())
    root = safe_extract(archive, tmp_path / "x")
    manifest = load_manifest(root)
    assert manifest.languages == ["en", "hi"] and manifest.multilingual is True
    assert manifest.default_compute_type == "float32"
    assert verify_checkpoint(root).hashed is True
    assert not list(tmp_path.glob(".*partial*"))


def test_existing_manifest_provides_defaults(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path)
    (model / "manifest.json").write_text(json.dumps(
        {"name": "hi-model", "version": "1.0.0", "languages": ["hi"], "multilingual": False,
         "default_compute_type": "int8_float32", "files": {}}
    ))  # fmt: skip
    out = pack(model, tmp_path / "out", version="1.1.0", progress=False)
    manifest = load_manifest(out)
    assert (manifest.name, manifest.version, manifest.languages) == ("hi-model", "1.1.0", ["hi"])
    assert manifest.default_compute_type == "int8_float32"
    assert "manifest.json" not in manifest.files


def test_pack_in_place(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path)
    assert pack(model, model, name="inplace", version="1", languages="en", progress=False) == model
    assert verify_checkpoint(model, full=True).files == 4


def test_missing_values_name_the_flags(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path)
    with pytest.raises(ManifestError, match=r"pass --name, --version"):
        pack(model, tmp_path / "out.tar", languages="en")
    with pytest.raises(ManifestError, match=r"name: must be"):
        pack(model, tmp_path / "out.tar", name="Bad Name", version="1", languages="en")
    assert not (tmp_path / "out.tar").exists()


def test_missing_engine_file(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path, {k: v for k, v in ENGINE_FILES.items() if k != "model.bin"})
    with pytest.raises(MissingFileError, match=r"lacks model.bin"):
        pack(model, tmp_path / "out", name="x", version="1", languages="en")


def test_refuses_existing_output_and_missing_input(tmp_path: Path) -> None:
    model = make_model_dir(tmp_path)
    (tmp_path / "taken").mkdir()
    with pytest.raises(CheckpointError, match=r"already exists"):
        pack(model, tmp_path / "taken", name="x", version="1", languages="en")
    with pytest.raises(CheckpointError, match=r"does not exist"):
        pack(tmp_path / "nope", tmp_path / "out", name="x", version="1", languages="en")
