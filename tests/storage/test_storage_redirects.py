"""Redirects against real local servers: an HTTPS server (self-signed certificate, trusted through
``REQUESTS_CA_BUNDLE``) and a plain HTTP one. Leaving https for http is refused at every hop, the
ranged requests of a parallel download included, before the http server is asked for anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_support import RangeServer, fake_checkpoint, make_tls_cert

from checkpoints import cache
from checkpoints.errors import CheckpointError
from checkpoints.options import FetchOptions
from checkpoints.resolve import resolve

MB = 1024 * 1024
FAST = FetchOptions(workers=4, retries=2, backoff_base=0.01, stall_timeout=5.0, min_segment=256 * 1024,
                    chunk_size=64 * 1024)  # fmt: skip

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_tls_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https(tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeServer]:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files[0]))
    with RangeServer(tls=tls_files) as running:
        yield running


@pytest.fixture
def http() -> Iterator[RangeServer]:
    with RangeServer() as running:
        yield running


@pytest.fixture
def archive(tmp_path: Path) -> bytes:
    return fake_checkpoint(tmp_path / "src", size=2 * MB, output="m.tar").read_bytes()


def _refused(error: CheckpointError, origin: str, target: str) -> None:
    message = str(error)
    assert f"{origin} redirected to {target}" in message, message
    assert "from https to http" in message, message


def test_https_redirects_within_https_are_followed(tmp_path: Path, https: RangeServer, archive: bytes) -> None:
    https.add("/m.tar", archive)
    old = https.add("/old.tar", b"", location=f"{https.base}/m.tar")
    assert resolve(old, tmp_path / "cache", options=FAST).label == "fake-en@1.0.0"


@pytest.mark.parametrize("hops", [1, 2], ids=["direct", "after-an-https-hop"])
def test_a_redirect_from_https_to_http_is_refused_before_asking_the_http_server(
    tmp_path: Path, https: RangeServer, http: RangeServer, archive: bytes, hops: int
) -> None:
    plain = http.add("/m.tar", archive)
    secure = https.add("/m.tar", b"", location=plain)
    url = https.add("/first.tar", b"", location=secure) if hops == 2 else secure
    with pytest.raises(CheckpointError) as caught:
        resolve(url, tmp_path / "cache", options=FAST)
    _refused(caught.value, secure, plain)
    assert http.stats.requests == []  # not a byte travelled in clear
    assert [status for _, _, status in https.gets("/m.tar")] == [302]  # refused at once, not retried
    assert cache.list_cached(tmp_path / "cache") == []


def test_a_downgrade_on_the_ranged_requests_of_a_parallel_download_is_refused(
    tmp_path: Path, https: RangeServer, http: RangeServer, archive: bytes
) -> None:
    plain = http.add("/m.tar", archive)
    url = https.add("/m.tar", archive, location=plain, redirect_after=1)  # the probe is answered, ranges are not
    with pytest.raises(CheckpointError) as caught:
        resolve(url, tmp_path / "cache", options=FAST)
    _refused(caught.value, url, plain)
    assert http.stats.requests == []
    (probe, *ranged) = https.gets("/m.tar")
    assert probe[1:] == ("bytes=0-0", 206) and ranged and all(status == 302 for _, _, status in ranged)
    assert len({header for _, header, _ in ranged}) == len(ranged)  # no range asked twice: a refusal is not retried
    assert cache.list_cached(tmp_path / "cache") == []


def test_a_redirect_from_http_to_https_is_followed(tmp_path: Path, https: RangeServer, http: RangeServer,
                                                   archive: bytes) -> None:  # fmt: skip
    secure = https.add("/m.tar", archive)
    url = http.add("/m.tar", b"", location=secure)
    assert resolve(url, tmp_path / "cache", options=FAST).label == "fake-en@1.0.0"
    assert sum(https.stats.served.values()) == len(archive) + 1  # the archive and the one-byte probe
