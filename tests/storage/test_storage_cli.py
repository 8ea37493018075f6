"""`hark checkpoints pull | ls | evict | pack` as operators run them: a progress bar on a terminal,
readable periodic log lines elsewhere, in-use flags, eviction that respects live workers."""

from __future__ import annotations

import logging
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_support import REPO, RangeServer, clean_env, fake_checkpoint

from checkpoints import cli, leases, progress
from checkpoints.cli import main
from checkpoints.fetch_http import download
from checkpoints.options import FetchOptions
from checkpoints.resolve import resolve

MB = 1024 * 1024

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server() -> Iterator[RangeServer]:
    with RangeServer() as running:
        yield running


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_pull_shows_a_progress_bar_on_a_terminal(tmp_path: Path, server: RangeServer) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=3 * MB, output="m.tar")
    url = server.add("/m.tar", archive.read_bytes(), rate=MB)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "hark.cli", "checkpoints", "pull", url, "--progress", "--cache-dir",
         str(tmp_path / "cache")],
        env=clean_env(MODEL_DOWNLOAD_WORKERS="2", COLUMNS="120", TERM="xterm"), cwd=REPO, stdin=terminal,
        stdout=terminal, stderr=terminal, close_fds=True,
    )  # fmt: skip
    os.close(terminal)
    screen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.wait(timeout=10) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert re.search(r"downloading m\.tar.*\d+(\.\d+)?/\d+(\.\d+)? MB", text), text[-2000:]  # bytes done / total
    assert re.search(r"\d+(\.\d+)? [kM]B/s", text)  # rate
    assert re.search(r"\d:\d\d:\d\d", text)  # ETA
    assert "fake-en@1.0.0" in text


def test_pull_without_urls_uses_model_url_and_fails_non_zero(tmp_path: Path, server: RangeServer,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    archive = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar")
    good = server.add("/m.tar", archive.read_bytes())
    for name in list(os.environ):
        if name.startswith(("MODEL_", "HARK_")):
            monkeypatch.delenv(name)
    from hark.settings import get_settings

    get_settings.cache_clear()
    monkeypatch.setenv("MODEL_URL", f"{good},{server.base}/missing.tar")
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MODEL_DOWNLOAD_RETRIES", "0")
    try:
        assert main(["pull", "--no-progress"]) == 1
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    assert "fake-en@1.0.0" in captured.out
    assert f"error: {server.base}/missing.tar answered HTTP 404" in captured.err
    assert "Traceback" not in captured.err


def test_ls_shows_in_use_and_evict_respects_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(cli.out, "width", 200)
    cache_dir = tmp_path / "cache"
    args = ["--cache-dir", str(cache_dir)]
    one = resolve(str(fake_checkpoint(tmp_path / "src", version="1", size=MB, output="a.tar")), cache_dir).path
    resolve(str(fake_checkpoint(tmp_path / "src", version="2", size=MB, output="b.tar")), cache_dir)
    with leases.hold(one):
        assert main(["ls", *args]) == 0
        listing = capsys.readouterr().out
        assert re.search(rf"fake-en .*1 .*1\.0 MiB.* yes \(\S+:{os.getpid()}\)", listing), listing
        assert re.search(r"fake-en .*2 .*1\.0 MiB.* no", listing), listing
        assert main(["evict", "fake-en", *args]) == 1
        captured = capsys.readouterr()
        assert "evicted fake-en@2" in captured.out
        assert "fake-en@1 is in use by" in captured.err and f":{os.getpid()}" in captured.err
        assert one.is_dir()
        assert main(["evict", "fake-en@1", "--force", *args]) == 0
        assert not one.exists()
    assert main(["evict", "fake-en@1", *args]) == 1
    assert "is not in the cache" in capsys.readouterr().err


def test_pack_prints_the_model_checksum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fake_checkpoint(tmp_path, size=1000)
    archive = tmp_path / "out.tar"
    assert main(["pack", str(model), "-o", str(archive)]) == 0
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("MODEL_CHECKSUM=")]
    assert resolve(str(archive), tmp_path / "cache", checksum=line.split("=", 1)[1]).label == "fake-en@1.0.0"


def test_download_logs_progress_at_a_sane_rate(tmp_path: Path, server: RangeServer,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setattr(progress, "MIN_BYTES_FOR_PROGRESS", 0)
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.5)
    url = server.add("/f.bin", os.urandom(2 * MB), rate=MB)
    caplog.set_level(logging.INFO)
    download(url, tmp_path / "f.bin", options=FetchOptions(workers=1, chunk_size=16 * 1024))
    lines = [r.getMessage() for r in caplog.records if r.name == "checkpoints.progress"]
    assert 2 <= len(lines) <= 6, lines  # ~2 s of download, 128 chunks: a line per half second, not per chunk
    pattern = r"downloading f\.bin: [\d.]+ [KM]iB of 2\.0 MiB \(\d+%\) at [\d.]+ [KM]iB/s, ~\d+ s left"
    assert re.search(pattern, lines[0])
