"""Integrity and configuration: MODEL_CHECKSUM (re-download once, then fail), the manifest's per-file
sha256, MODEL_VALIDATE on every start, MODEL_VERSION keying, and the MODEL_PATH baked strategy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from storage_support import RangeServer, fake_checkpoint

from checkpoints import cache
from checkpoints.errors import ChecksumError, FetchError, ModelUrlError
from checkpoints.manifest import load_manifest
from checkpoints.options import FetchOptions
from checkpoints.resolve import resolve, resolve_all, resolve_configured
from checkpoints.verify import MARKER_NAME, source_checksum
from hark.settings import load_settings

MB = 1024 * 1024
FAST = FetchOptions(retries=1, backoff_base=0.01, stall_timeout=5.0, min_segment=256 * 1024)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server() -> RangeServer:
    with RangeServer() as running:
        yield running


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment with MODEL_CACHE_DIR in the test's directory."""
    for name in list(os.environ):
        if name.startswith(("MODEL_", "HARK_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MODEL_DOWNLOAD_RETRIES", "1")
    return monkeypatch


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_checksum_mismatch_downloads_twice_then_fails(tmp_path: Path, server: RangeServer) -> None:
    data = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar").read_bytes()
    url = server.add("/m.tar", data)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(ChecksumError) as caught:
        resolve(url, tmp_path / "cache", options=FAST, checksum=wrong)
    message = str(caught.value)
    assert f"the sha256 of m.tar is {hashlib.sha256(data).hexdigest()}, but MODEL_CHECKSUM says {'0' * 64}" in message
    assert "fetched twice" in message
    assert server.served("/m.tar") == 2 * len(data) + 2  # two full downloads (+ two one-byte probes)
    assert cache.list_cached(tmp_path / "cache") == []


def test_a_copy_damaged_in_transit_is_deleted_and_fetched_again(tmp_path: Path, server: RangeServer) -> None:
    data = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar").read_bytes()
    url = server.add("/m.tar", data, corrupt_at=len(data) // 2, corrupt_times=1)  # inside model.bin
    local = resolve(url, tmp_path / "cache", options=FAST, checksum=_sha(data))
    assert local.label == "fake-en@1.0.0"
    assert server.served("/m.tar") == 2 * len(data) + 2


def test_the_manifest_is_checked_even_without_model_checksum(tmp_path: Path, server: RangeServer) -> None:
    checkpoint = fake_checkpoint(tmp_path / "src", size=MB)
    url = server.add_directory("/d", checkpoint)
    server.behaviour("/d/model.bin").corrupt_at, server.behaviour("/d/model.bin").corrupt_times = 1000, 2
    with pytest.raises(ChecksumError, match=r"sha256 of model.bin is .* the manifest says .*fetched twice"):
        resolve(url, tmp_path / "cache", options=FAST)
    server.behaviour("/d/model.bin").corrupt_times = 1
    assert resolve(url, tmp_path / "cache", options=FAST).label == "fake-en@1.0.0"


def test_directory_checksum_is_the_manifests(tmp_path: Path, server: RangeServer) -> None:
    checkpoint = fake_checkpoint(tmp_path / "src", size=MB)
    url = server.add_directory("/d", checkpoint)
    good = source_checksum(checkpoint)
    assert good == _sha((checkpoint / "manifest.json").read_bytes())
    assert resolve(url, tmp_path / "cache", options=FAST, checksum=good).label == "fake-en@1.0.0"
    assert resolve(str(checkpoint), tmp_path / "cache", checksum=good).path == checkpoint
    with pytest.raises(ChecksumError, match=r"the sha256 of manifest\.json is"):
        resolve(str(checkpoint), tmp_path / "cache", checksum="sha256:" + "1" * 64)


def test_every_start_checks_the_cached_copy(tmp_path: Path, server: RangeServer) -> None:
    data = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar").read_bytes()
    url = server.add("/m.tar", data)
    local = resolve(url, tmp_path / "cache", options=FAST, checksum=_sha(data))
    downloads = server.served("/m.tar")
    assert resolve(url, tmp_path / "cache", options=FAST, checksum=_sha(data)).path == local.path
    assert server.served("/m.tar") == downloads  # warm start: nothing fetched
    model = local.path / "model.bin"
    stat = model.stat()
    model.write_bytes(b"\0" * stat.st_size)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: only a full check sees it
    assert resolve(url, tmp_path / "cache", options=FAST.with_(validation="false")).path == local.path
    assert server.served("/m.tar") == downloads
    again = resolve(url, tmp_path / "cache", options=FAST.with_(validation="full"))
    assert server.served("/m.tar") == 2 * downloads  # deleted and fetched again
    assert (again.path / "model.bin").read_bytes() != b"\0" * stat.st_size


def test_changing_model_checksum_refetches(tmp_path: Path, server: RangeServer) -> None:
    first = fake_checkpoint(tmp_path / "src", version="1.0.0", size=MB, output="v1.tar").read_bytes()
    second = fake_checkpoint(tmp_path / "src", version="2.0.0", size=MB, output="v2.tar").read_bytes()
    url = server.add("/latest.tar", first)
    assert resolve(url, tmp_path / "cache", options=FAST, checksum=_sha(first)).label == "fake-en@1.0.0"
    server.add("/latest.tar", second)  # the moving URL now serves v2
    assert resolve(url, tmp_path / "cache", options=FAST).label == "fake-en@1.0.0"  # no pin: the cache wins
    assert resolve(url, tmp_path / "cache", options=FAST, checksum=_sha(second)).label == "fake-en@2.0.0"


def test_model_version_keys_the_cache_and_is_enforced(tmp_path: Path, server: RangeServer) -> None:
    cache_dir = tmp_path / "cache"
    one = fake_checkpoint(tmp_path / "src", version="1.0.0", size=MB, output="v1.tar").read_bytes()
    two = fake_checkpoint(tmp_path / "src", version="2.0.0", size=MB, output="v2.tar").read_bytes()
    url = server.add("/latest.tar", one)
    assert resolve(url, cache_dir, options=FAST, version="1.0.0").label == "fake-en@1.0.0"
    server.add("/latest.tar", two)
    assert resolve(url, cache_dir, options=FAST, version="1.0.0").label == "fake-en@1.0.0"  # cached
    assert resolve(url, cache_dir, options=FAST, version="2.0.0").label == "fake-en@2.0.0"
    assert sorted(c.label for c in cache.list_cached(cache_dir)) == ["fake-en@1.0.0", "fake-en@2.0.0"]  # blue-green
    with pytest.raises(FetchError, match=r"is fake-en@2.0.0, but MODEL_VERSION expects version 3.0.0"):
        resolve(url, cache_dir, options=FAST, version="3.0.0")


def test_settings_drive_the_worker_resolve(tmp_path: Path, server: RangeServer, env: pytest.MonkeyPatch) -> None:
    en = fake_checkpoint(tmp_path / "src", name="fake-en", size=MB, output="en.tar").read_bytes()
    hi = fake_checkpoint(tmp_path / "src", name="fake-hi", size=MB)
    env.setenv("MODEL_URL", f"{server.add('/en.tar', en)},{server.add_directory('/hi', hi)}")
    env.setenv("MODEL_CHECKSUM", f"{_sha(en)},")
    env.setenv("MODEL_VERSION", ",1.0.0")
    env.setenv("MODEL_DOWNLOAD_WORKERS", "2")
    checkpoints = resolve_configured(load_settings(), hold=True)
    try:
        assert [c.label for c in checkpoints] == ["fake-en@1.0.0", "fake-hi@1.0.0"]
        assert all(c.lease is not None and c.lease.held and c.lease.file.exists() for c in checkpoints)
    finally:
        for checkpoint in checkpoints:
            checkpoint.release()
    assert not any(c.lease.file for c in checkpoints)
    env.setenv("MODEL_CHECKSUM", _sha(en))
    with pytest.raises(ModelUrlError, match=r"MODEL_CHECKSUM has 1 entries but MODEL_URL has 2"):
        resolve_configured(load_settings())


def test_baked_model_path_downloads_nothing(tmp_path: Path, env: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    baked = fake_checkpoint(tmp_path / "image", size=MB)
    env.setenv("MODEL_PATH", str(baked))
    env.setenv("MODEL_URL", "https://models.invalid/never.tar")
    (checkpoint,) = resolve_configured(load_settings())
    assert checkpoint.path == baked and checkpoint.lease is None
    assert "MODEL_URL is ignored" in caplog.text
    assert not (tmp_path / "cache").exists()  # not even the cache directory was created
    env.setenv("MODEL_PATH", str(fake_checkpoint(tmp_path / "image", name="packed", output="x.tar")))
    with pytest.raises(FetchError, match=r"MODEL_PATH entry 1 of 1: .*x.tar is not a directory: MODEL_PATH names"):
        resolve_configured(load_settings())


def test_validate_false_trusts_sizes_on_start(tmp_path: Path) -> None:
    checkpoint = fake_checkpoint(tmp_path, size=MB)
    (checkpoint / MARKER_NAME).unlink()
    local = resolve_all(str(checkpoint), tmp_path / "cache", options=FAST.with_(validation="false"))[0]
    assert local.label == "fake-en@1.0.0" and not (checkpoint / MARKER_NAME).exists()  # nothing hashed
    assert load_manifest(checkpoint).label == "fake-en@1.0.0"
