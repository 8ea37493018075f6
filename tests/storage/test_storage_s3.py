"""s3:// sources against a real S3-compatible server (moto in server mode, over HTTP; boto3 is not
patched): archives and unpacked prefixes, parallel ranged GETs, resume after a kill, clear errors."""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer
from storage_support import ThrottledProxy, clean_env, fake_checkpoint, start_hark, wait_for

from checkpoints import space, transfer
from checkpoints.errors import FetchError
from checkpoints.options import FetchOptions
from checkpoints.resolve import resolve

FAST = FetchOptions(workers=4, retries=1, backoff_base=0.01, stall_timeout=5.0, min_segment=256 * 1024,
                    chunk_size=64 * 1024)  # fmt: skip
MB = 1024 * 1024
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, int]]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server.get_host_and_port()
    finally:
        server.stop()


@pytest.fixture
def bucket(moto: tuple[str, int], monkeypatch: pytest.MonkeyPatch) -> tuple[object, str]:
    """A fresh bucket; the AWS environment points boto3 at moto (as an operator's env would)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{moto[0]}:{moto[1]}"}.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3")
    name = f"models-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    return client, name


def test_archive_from_s3_in_parallel_ranges(tmp_path: Path, bucket: tuple[object, str], moto: tuple[str, int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    client, name = bucket
    archive = fake_checkpoint(tmp_path / "src", size=3 * MB, output="fake.tar.gz")
    client.upload_file(str(archive), name, "releases/fake-1.0.tar.gz")  # type: ignore[attr-defined]
    with ThrottledProxy(moto, rate=2 * MB) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        local = resolve(f"s3://{name}/releases/fake-1.0.tar.gz", tmp_path / "cache", options=FAST)
    assert local.label == "fake-en@1.0.0" and local.source == f"s3://{name}/releases/fake-1.0.tar.gz"
    assert proxy.max_active >= 3  # several ranged GETs at once
    assert archive.stat().st_size <= proxy.downstream < archive.stat().st_size + 64 * 1024


def test_unpacked_prefix_from_s3(tmp_path: Path, bucket: tuple[object, str]) -> None:
    client, name = bucket
    checkpoint = fake_checkpoint(tmp_path / "src", name="fake-hi", size=MB)
    for file in checkpoint.iterdir():
        client.upload_file(str(file), name, f"fake-hi/1.0.0/{file.name}")  # type: ignore[attr-defined]
    local = resolve(f"s3://{name}/fake-hi/1.0.0/", tmp_path / "cache", options=FAST)
    assert local.path == tmp_path / "cache" / "fake-hi" / "1.0.0"
    assert (local.path / "model.bin").read_bytes() == (checkpoint / "model.bin").read_bytes()


@pytest.mark.timeout(120)
def test_killed_s3_download_resumes(tmp_path: Path, bucket: tuple[object, str], moto: tuple[str, int]) -> None:
    client, name = bucket
    archive = fake_checkpoint(tmp_path / "src", size=4 * MB, output="fake.tar")
    client.upload_file(str(archive), name, "fake.tar")  # type: ignore[attr-defined]
    size, url, cache, log = archive.stat().st_size, f"s3://{name}/fake.tar", tmp_path / "cache", tmp_path / "log"
    with ThrottledProxy(moto, rate=MB) as proxy:
        env = clean_env(MODEL_DOWNLOAD_WORKERS="2", AWS_ENDPOINT_URL=proxy.url, **CREDENTIALS)
        first = start_hark(["checkpoints", "pull", url, "--cache-dir", str(cache)], env, log)
        try:
            wait_for(lambda: proxy.downstream > 0.4 * size, 60, "40% of the download")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        on_disk = transfer.partial_bytes(space.partial_dir(cache, f"url:{url}") / "download" / "fake.tar")
        assert 0.3 * size < on_disk < size
        before = proxy.downstream
        second = start_hark(["checkpoints", "pull", url, "--cache-dir", str(cache)], env, log)
        assert second.wait(timeout=60) == 0, log.read_text()
        again = proxy.downstream - before
    missing = size - on_disk
    # the missing bytes, at most one chunk more, and a few HTTP response headers
    assert missing <= again <= missing + 256 * 1024 + 16 * 1024, (missing, again)
    assert (cache / "fake-en" / "1.0.0" / "manifest.json").exists()


def test_missing_key_and_bucket_are_named(tmp_path: Path, bucket: tuple[object, str]) -> None:
    _, name = bucket
    with pytest.raises(FetchError, match=rf"s3://{name}/nope.tar: S3 error NoSuchKey: no object with this key"):
        resolve(f"s3://{name}/nope.tar", tmp_path / "cache", options=FAST)
    with pytest.raises(FetchError, match=r"S3 error NoSuchBucket: the bucket does not exist: check the bucket name"):
        resolve("s3://no-such-bucket-hark/x.tar", tmp_path / "cache", options=FAST)


def test_missing_credentials_are_explained(tmp_path: Path, bucket: tuple[object, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    _, name = bucket
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(FetchError, match=r"no AWS credentials found; set AWS_ACCESS_KEY_ID"):
        resolve(f"s3://{name}/x.tar", tmp_path / "cache", options=FAST)


def test_unreachable_endpoint_and_bad_urls(tmp_path: Path, bucket: tuple[object, str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(FetchError, match=r"cannot reach the S3 endpoint .* check AWS_ENDPOINT_URL"):
        resolve("s3://models/x.tar", tmp_path / "cache", options=FAST)
    with pytest.raises(FetchError, match=r"s3://\*\*\*@models/x.tar is not an s3://BUCKET/KEY location") as caught:
        resolve("s3://key:secret@models/x.tar", tmp_path / "cache", options=FAST)
    assert "secret" not in str(caught.value)
