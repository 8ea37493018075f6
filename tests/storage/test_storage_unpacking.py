"""Archives are checked before a byte of them is unpacked: their sha256 (against MODEL_CHECKSUM, or
recorded when none is set) and the room their *unpacked* size needs (MODEL_CACHE_MAX_SIZE and free
space), against a real local HTTP server and local files.

What is written is observed through Python's audit events (every file this process opens for
writing under the cache's staging area), so "nothing was extracted" is seen, not inferred from the
staging directory, which is deleted on the way out either way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_support import RangeServer, fake_checkpoint

from checkpoints import cache, space
from checkpoints.errors import ChecksumError, StorageError
from checkpoints.options import FetchOptions
from checkpoints.progress import human_size
from checkpoints.resolve import resolve

MB = 1024 * 1024
FAST = FetchOptions(retries=1, backoff_base=0.01, stall_timeout=5.0, min_segment=256 * 1024)

pytestmark = pytest.mark.timeout(90)

_EVENTS: list[list[tuple[str, str]]] = []  # the recorders of running tests


def _audit(event: str, args: tuple) -> None:
    if not _EVENTS or event != "open":
        return
    path, mode, flags = args
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))  # fmt: skip
    if writing and isinstance(path, str | bytes | os.PathLike):
        for events in _EVENTS:
            events.append(("write", os.fsdecode(path)))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it does nothing while no test records


class _LogEvents(logging.Handler):
    def __init__(self, events: list[tuple[str, str]]) -> None:
        super().__init__(logging.INFO)
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(("log", record.getMessage()))


@pytest.fixture
def events() -> Iterator[list[tuple[str, str]]]:
    """Files opened for writing and log messages of this process, in order, while the test runs."""
    recorded: list[tuple[str, str]] = []
    handler = _LogEvents(recorded)
    logger = logging.getLogger("checkpoints")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    _EVENTS.append(recorded)
    try:
        yield recorded
    finally:
        _EVENTS.remove(recorded)
        logger.removeHandler(handler)
        logger.setLevel(level)


def _unpacked(events: list[tuple[str, str]], cache_dir: Path) -> list[str]:
    """Files written into the cache's staging area (where archives are extracted)."""
    staging = str(cache_dir / cache.STAGING_DIR)
    return [path for kind, path in events if kind == "write" and path.startswith(staging)]


@pytest.fixture
def server() -> Iterator[RangeServer]:
    with RangeServer() as running:
        yield running


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- hash before extract ------------------------------------------------------------------------


def test_a_tampered_download_is_never_extracted_and_is_deleted(tmp_path: Path, server: RangeServer,
                                                               events: list) -> None:  # fmt: skip
    data = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar").read_bytes()
    # every copy served has one byte of model.bin changed: a valid tar whose members would be written
    url = server.add("/m.tar", data, corrupt_at=len(data) // 2, corrupt_times=2)
    cache_dir = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="fetched twice"):
        resolve(url, cache_dir, options=FAST, checksum=f"sha256:{_sha(data)}")
    assert server.served("/m.tar") == 2 * len(data) + 2  # fetched twice, as before
    assert _unpacked(events, cache_dir) == []  # not one member written, either time
    assert not any((cache_dir / space.PARTIAL_DIR).glob("*/download/*"))  # the bad archive is deleted
    assert cache.list_cached(cache_dir) == []


def test_a_tampered_local_archive_is_never_extracted(tmp_path: Path, events: list) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar")
    good = _sha(archive.read_bytes())
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    cache_dir = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="MODEL_CHECKSUM says"):
        resolve(str(archive), cache_dir, options=FAST, checksum=f"sha256:{good}")
    assert _unpacked(events, cache_dir) == []
    assert archive.exists()  # the operator's own file is left alone
    assert cache.list_cached(cache_dir) == []


def test_without_model_checksum_the_hash_is_taken_before_extracting_and_recorded(
    tmp_path: Path, server: RangeServer, events: list
) -> None:
    data = fake_checkpoint(tmp_path / "src", size=MB, output="m.tar.gz").read_bytes()
    url = server.add("/m.tar.gz", data)
    cache_dir = tmp_path / "cache"
    local = resolve(url, cache_dir, options=FAST)
    sha = _sha(data)
    said = [i for i, (kind, text) in enumerate(events) if kind == "log" and f"MODEL_CHECKSUM=sha256:{sha}" in text]
    first_write = min(i for i, (kind, path) in enumerate(events)
                      if kind == "write" and path.startswith(str(cache_dir / cache.STAGING_DIR)))  # fmt: skip
    assert said and said[0] < first_write  # the archive's hash is known (and logged) before it is unpacked
    record = cache.read_source(cache_dir, f"url:{url}")
    assert record is not None and record["sha256"] == sha and record["name"] == local.manifest.name


# --- room for the unpacked size -----------------------------------------------------------------


@pytest.fixture
def bomb(tmp_path: Path) -> bytes:
    """A .tar.gz of a few kB that unpacks to 32 MiB (model.bin is zeros)."""
    data = fake_checkpoint(tmp_path / "src", size=32 * MB, output="z.tar.gz", zeros=True).read_bytes()
    assert len(data) < MB
    return data


def test_an_archive_unpacking_past_model_cache_max_size_is_refused_before_extracting(
    tmp_path: Path, server: RangeServer, bomb: bytes, events: list
) -> None:
    url = server.add("/z.tar.gz", bomb)
    cache_dir = tmp_path / "cache"
    with pytest.raises(StorageError) as caught:
        resolve(url, cache_dir, options=FAST.with_(max_cache_bytes=8 * MB))
    message = str(caught.value)
    assert "unpacked 32.0 MiB" in message and f"archive {human_size(len(bomb))}" in message, message
    assert "MODEL_CACHE_MAX_SIZE is 8.0 MiB" in message, message
    assert _unpacked(events, cache_dir) == []
    assert cache.list_cached(cache_dir) == []


def test_free_space_before_unpacking_counts_the_unpacked_size(tmp_path: Path, server: RangeServer, bomb: bytes,
                                                              events: list,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    url = server.add("/z.tar.gz", bomb)
    cache_dir = tmp_path / "cache"
    real = shutil.disk_usage
    free = space.FREE_MARGIN + 16 * MB  # plenty for the archive, not for what it unpacks to
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=free))
    with pytest.raises(StorageError) as caught:
        resolve(url, cache_dir, options=FAST.with_(eviction="none"))
    message = str(caught.value)
    assert "not enough free space on the cache volume" in message, message
    assert "unpacking 32.0 MiB" in message and f"only {human_size(free)} free" in message, message
    assert server.served("/z.tar.gz") == len(bomb) + 1  # downloaded (its size was unknowable), then refused
    assert _unpacked(events, cache_dir) == []
    assert cache.list_cached(cache_dir) == []


def test_a_local_archive_is_measured_unpacked_before_extracting(tmp_path: Path, bomb: bytes, events: list) -> None:
    archive = tmp_path / "z.tar.gz"
    archive.write_bytes(bomb)
    cache_dir = tmp_path / "cache"
    with pytest.raises(StorageError, match=r"needs 32.0 MiB but MODEL_CACHE_MAX_SIZE is 8.0 MiB"):
        resolve(str(archive), cache_dir, options=FAST.with_(max_cache_bytes=8 * MB))
    assert _unpacked(events, cache_dir) == []
