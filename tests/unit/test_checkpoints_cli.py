"""`hark checkpoints ...`: exit codes and messages, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_checkpoints_support import make_checkpoint, make_model_dir

from checkpoints.cli import main
from checkpoints.manifest import load_manifest
from hark.cli import main as hark_main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` points the root logger at this test's captured stderr; undo it for the next tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_pack_pull_ls_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    model = make_model_dir(tmp_path)
    archive = tmp_path / "hi.tar.gz"
    assert main(["pack", str(model), "-o", str(archive), "--name", "fake-hi", "--version", "3",
                 "--languages", "hi,en", "--no-multilingual", "--compute-type", "int8_float32"]) == 0  # fmt: skip
    assert f"wrote {archive}" in capsys.readouterr().out

    assert hark_main(["checkpoints", "pull", f"file://{archive}", "--cache-dir", str(cache)]) == 0
    assert f"fake-hi@3 {' ' * 14} {cache / 'fake-hi' / '3'}".split() == capsys.readouterr().out.split()
    manifest = load_manifest(cache / "fake-hi" / "3")
    assert manifest.multilingual is False and manifest.languages == ["hi", "en"]

    assert main(["--cache-dir", str(cache), "ls"]) == 0
    listing = capsys.readouterr().out
    assert "fake-hi" in listing and "hi, en" in listing and "just now" in listing

    assert main(["verify", "fake-hi@3", "--cache-dir", str(cache)]) == 0
    assert "ok     fake-hi@3" in capsys.readouterr().out
    (cache / "fake-hi" / "3" / "tokenizer.json").write_bytes(b"tampered")
    assert main(["verify", "--full", "--cache-dir", str(cache)]) == 1
    captured = capsys.readouterr()
    assert "FAILED" in captured.err and "tokenizer.json" in captured.err


def test_failures_exit_non_zero_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = ["--cache-dir", str(tmp_path / "cache")]
    good = make_checkpoint(tmp_path)
    assert main(["pull", str(tmp_path / "missing"), str(good), *cache]) == 1
    captured = capsys.readouterr()
    assert "error: " in captured.err and "missing does not exist" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "fake-en@1.0.0" in captured.out  # the other URL was still pulled

    assert main(["verify", "nothing@1", *cache]) == 1
    assert "is not in the cache" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "nope"), "-o", str(tmp_path / "x.tar"), *cache]) == 1
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["pack", str(tmp_path)])
    assert usage.value.code == 2


def test_empty_cache_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", "--cache-dir", str(tmp_path)]) == 0
    assert "no checkpoints in" in capsys.readouterr().out
