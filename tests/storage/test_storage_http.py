"""HTTP(S) sources against a real local server: parallel ranges, resume after a kill, retries, stalls,
timeouts, servers without range support, unpacked directories, and clear redacted errors."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from storage_support import RangeServer, clean_env, fake_checkpoint, start_hark, wait_for

from checkpoints import space, transfer
from checkpoints.errors import FetchError
from checkpoints.fetch_http import download
from checkpoints.manifest import load_manifest
from checkpoints.options import FetchOptions
from checkpoints.resolve import resolve

FAST = FetchOptions(workers=4, retries=2, backoff_base=0.01, stall_timeout=2.0, min_segment=256 * 1024,
                    chunk_size=64 * 1024)  # fmt: skip
MB = 1024 * 1024

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server() -> RangeServer:
    with RangeServer() as running:
        yield running


def test_parallel_ranges_download_the_exact_bytes(tmp_path: Path, server: RangeServer) -> None:
    data = os.urandom(3 * MB + 12345)
    url = server.add("/big.bin", data, rate=4 * MB)
    result = transfer.transfer([transfer.FileJob(transfer_source(url), tmp_path / "big.bin")], FAST, label="t")
    assert (tmp_path / "big.bin").read_bytes() == data
    ranged = [r for r in server.gets("/big.bin") if r[1] and r[1] != "bytes=0-0"]
    assert len(ranged) == 13 and all(status == 206 for _, _, status in ranged)  # 3 MiB / 256 KiB segments
    assert server.stats.max_active >= 3  # really in parallel
    assert result.transferred == len(data) and result.resumed == 0
    assert server.served("/big.bin") == len(data) + 1  # + the one-byte probe
    assert not list(tmp_path.glob("*.part*"))


def transfer_source(url: str) -> object:
    from checkpoints.fetch_http import HttpSource

    return HttpSource(url, FAST)


def test_server_without_range_support_still_works(tmp_path: Path, server: RangeServer) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=MB, output="plain.tar")
    url = server.add("/plain.tar", archive.read_bytes(), ranges=False)
    local = resolve(url, tmp_path / "cache", options=FAST)
    assert local.label == "fake-en@1.0.0"
    assert [r[2] for r in server.gets("/plain.tar")] == [200, 200]  # the probe (dropped) + one plain stream


def _pull(url: str, cache: Path, log: Path, **env: str) -> object:
    return start_hark(["checkpoints", "pull", url, "--cache-dir", str(cache)],
                      clean_env(MODEL_DOWNLOAD_WORKERS="2", **env), log)  # fmt: skip


@pytest.mark.timeout(120)
def test_killed_download_resumes_with_only_the_missing_bytes(tmp_path: Path, server: RangeServer) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=4 * MB, output="model.tar")
    data = archive.read_bytes()
    url = server.add("/model.tar", data, rate=MB)  # 1 MB/s per connection: ~2 s with 2 workers
    cache, log = tmp_path / "cache", tmp_path / "pull.log"
    first = _pull(url, cache, log)
    try:
        wait_for(lambda: server.served("/model.tar") > 0.4 * len(data), 60, "40% of the download")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    partial = space.partial_dir(cache, f"url:{url}") / "download" / "model.tar"
    on_disk = transfer.partial_bytes(partial)
    assert 0.3 * len(data) < on_disk < len(data), on_disk
    before = server.served("/model.tar")

    second = _pull(url, cache, log)
    assert second.wait(timeout=60) == 0, log.read_text()
    resumed_bytes = server.served("/model.tar") - before
    missing = len(data) - on_disk
    chunk = 256 * 1024  # FetchOptions.chunk_size, the resume granularity
    assert missing <= resumed_bytes <= missing + chunk + 1, (missing, resumed_bytes)
    assert "resuming" in log.read_text()
    assert load_manifest(cache / "fake-en" / "1.0.0").label == "fake-en@1.0.0"
    assert not space.partial_dir(cache, f"url:{url}").exists()


def test_resume_off_starts_over(tmp_path: Path, server: RangeServer) -> None:
    data = os.urandom(2 * MB)
    url = server.add("/f.bin", data, stall_after=MB, stall_seconds=5)
    dest = tmp_path / "f.bin"
    one = FAST.with_(workers=1, retries=0, min_segment=4 * MB, stall_timeout=0.5)
    with pytest.raises(FetchError, match="stalled"):
        transfer.transfer([transfer.FileJob(transfer_source(url), dest)], one, label="t")
    assert transfer.partial_bytes(dest) >= MB - 64 * 1024
    before = server.served("/f.bin")
    transfer.transfer([transfer.FileJob(transfer_source(url), dest)], one.with_(resume=False), label="t")
    assert server.served("/f.bin") - before == len(data) + 1
    assert dest.read_bytes() == data


def test_a_file_changed_on_the_server_is_not_spliced(tmp_path: Path, server: RangeServer) -> None:
    old = os.urandom(2 * MB)
    url = server.add("/f.bin", old, stall_after=MB, stall_seconds=5)
    dest = tmp_path / "f.bin"
    one = FAST.with_(workers=1, retries=0, min_segment=4 * MB, stall_timeout=0.5)
    with pytest.raises(FetchError):
        transfer.transfer([transfer.FileJob(transfer_source(url), dest)], one, label="t")
    new = os.urandom(2 * MB)
    server.add("/f.bin", new)  # same size, new ETag
    transfer.transfer([transfer.FileJob(transfer_source(url), dest)], one, label="t")
    assert dest.read_bytes() == new


def test_503s_and_a_stall_are_retried(tmp_path: Path, server: RangeServer, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(2 * MB)
    url = server.add("/f.bin", data, fail_first=2, stall_after=100 * 1024, stall_seconds=10)
    started = time.monotonic()
    download(url, tmp_path / "f.bin", options=FAST.with_(stall_timeout=1.0))
    assert (tmp_path / "f.bin").read_bytes() == data
    assert time.monotonic() - started < 8  # the stalled connection was dropped, not waited out
    statuses = [r[2] for r in server.gets("/f.bin")]
    assert statuses[:2] == [503, 503] and statuses.count(206) >= 9  # probe + 8 segments + the retried one
    assert "HTTP 503 Service Unavailable; retry 1 of 2" in caplog.text
    assert "the connection stalled" in caplog.text


def test_retries_are_bounded_and_the_error_is_clear(tmp_path: Path, server: RangeServer) -> None:
    url = server.add("/f.bin", b"x" * 1000, fail_first=100)
    with pytest.raises(FetchError) as caught:
        download(url.replace("http://", "http://bob:hunter2@") + "?X-Amz-Signature=s3cr3t", tmp_path / "f",
                 options=FAST)  # fmt: skip
    message = str(caught.value)
    assert "HTTP 503" in message and "gave up after 2 retries" in message and "***@127.0.0.1" in message
    assert "hunter2" not in message and "s3cr3t" not in message
    assert len(server.gets("/f.bin")) == 3  # 1 try + 2 retries


def test_the_overall_timeout_keeps_the_partial_download(tmp_path: Path, server: RangeServer) -> None:
    url = server.add("/slow.bin", os.urandom(2 * MB), rate=256 * 1024)
    dest = tmp_path / "slow.bin"
    with pytest.raises(FetchError, match=r"did not finish within MODEL_DOWNLOAD_TIMEOUT=1 s .* resumes"):
        download(url, dest, options=FAST.with_(timeout=1.0, workers=2))
    assert transfer.partial_bytes(dest) > 0


@pytest.mark.parametrize(("status", "hint"), [(404, "no file at this address"), (403, "access denied"),
                                             (401, "wants credentials")])  # fmt: skip
def test_permanent_errors_are_not_retried(tmp_path: Path, server: RangeServer, status: int, hint: str) -> None:
    url = server.add("/x.tar", b"", status=status)
    with pytest.raises(FetchError) as caught:
        resolve(url + "?token=abc", tmp_path / "cache", options=FAST)
    assert f"HTTP {status}" in str(caught.value) and hint in str(caught.value) and "abc" not in str(caught.value)
    assert len(server.gets("/x.tar")) == 1


def test_basic_auth_in_the_url_works_and_is_never_shown(tmp_path: Path, server: RangeServer) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar")
    url = server.add("/m.tar", archive.read_bytes(), auth=("bob", "hunter2"))
    local = resolve(url.replace("http://", "http://bob:hunter2@"), tmp_path / "cache", options=FAST)
    assert "hunter2" not in local.source and local.source.startswith("http://***@")


def test_truncated_bodies_are_retried_then_reported(tmp_path: Path, server: RangeServer) -> None:
    url = server.add("/cut.tar", os.urandom(MB), truncate=True, ranges=False)
    with pytest.raises(FetchError, match=r"truncated.*gave up after 2 retries"):
        resolve(url, tmp_path / "cache", options=FAST)


def test_unreachable_host(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"http://127.0.0.1:9/m.tar: connection failed .* check the host name"):
        resolve("http://127.0.0.1:9/m.tar", tmp_path / "cache", options=FAST)


def test_unpacked_directory_downloads_files_in_parallel(tmp_path: Path, server: RangeServer) -> None:
    checkpoint = fake_checkpoint(tmp_path / "src", size=2 * MB)
    url = server.add_directory("/models/fake-en/1.0.0", checkpoint, rate=2 * MB)
    local = resolve(url, tmp_path / "cache", options=FAST)
    assert local.path == tmp_path / "cache" / "fake-en" / "1.0.0"
    assert (local.path / "model.bin").read_bytes() == (checkpoint / "model.bin").read_bytes()
    assert (local.path / "manifest.json").read_bytes() == (checkpoint / "manifest.json").read_bytes()
    assert server.stats.max_active >= 3
    assert not (tmp_path / "cache" / ".partial").exists() or not list((tmp_path / "cache" / ".partial").iterdir())


def test_unpacked_directory_whose_server_files_do_not_match(tmp_path: Path, server: RangeServer) -> None:
    checkpoint = fake_checkpoint(tmp_path / "src", size=MB)
    url = server.add_directory("/m", checkpoint)
    server.add("/m/config.json", b'{"other": 1}')
    with pytest.raises(FetchError, match=r"config.json has 12 bytes but the manifest says \d+"):
        resolve(url, tmp_path / "cache", options=FAST)
