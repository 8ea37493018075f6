"""MODEL_URL parsing and resolving paths, file:// and http:// sources into the cache."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from test_checkpoints_support import file_server, make_checkpoint

from checkpoints import fetch as fetch_module
from checkpoints.cache import LAST_USED_NAME, STAGING_DIR, list_cached
from checkpoints.errors import CheckpointError, ChecksumError, FetchError, ModelUrlError
from checkpoints.options import FetchOptions
from checkpoints.resolve import parse_model_urls, resolve, resolve_all

FAST = FetchOptions(retries=1, backoff_base=0.01, stall_timeout=5)

# --- MODEL_URL parsing -----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", " , ,", []])
def test_empty_model_url(value: str | list) -> None:
    with pytest.raises(ModelUrlError, match=r"MODEL_URL is empty: set it to 1-3 comma-separated .* e\.g\."):
        parse_model_urls(value)


def test_more_than_three_entries() -> None:
    with pytest.raises(ModelUrlError, match=r"lists 4 checkpoints but a worker serves at most 3"):
        parse_model_urls("a,b,c,d")


def test_duplicates_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelUrlError, match=r"lists https://h/a.tar twice \(entries 1 and 3\)"):
        parse_model_urls("https://h/a.tar, https://h/b.tar, https://h/a.tar")
    with pytest.raises(ModelUrlError, match=r"twice"):
        parse_model_urls([str(tmp_path / "x"), f"file://{tmp_path}/x/"])
    with pytest.raises(ModelUrlError) as caught:
        parse_model_urls("https://u:secret@h/a.tar?sig=S,https://u:secret@h/a.tar?sig=S")
    assert "secret" not in str(caught.value) and "sig=S" not in str(caught.value)


def test_parse_keeps_order_and_strips() -> None:
    assert parse_model_urls(" /a , https://h/b.tar.gz ,") == ["/a", "https://h/b.tar.gz"]
    assert parse_model_urls(["/a", " /b "]) == ["/a", "/b"]


# --- local sources ---------------------------------------------------------------------------


def test_local_directory_is_used_in_place(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path)
    cache = tmp_path / "cache"
    for url in (str(ckpt), f"file://{ckpt}"):
        local = resolve(url, cache)
        assert local.path == ckpt and local.manifest.label == "fake-en@1.0.0" and local.source == url
    assert not (ckpt / LAST_USED_NAME).exists()  # not in the cache: no LRU bookkeeping
    assert not list_cached(cache)


def test_file_archive_is_extracted_into_the_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_checkpoint(tmp_path, output="fake.tar.gz")
    cache = tmp_path / "cache"
    calls = []
    real = fetch_module.safe_extract
    monkeypatch.setattr(fetch_module, "safe_extract", lambda *a, **k: calls.append(1) or real(*a, **k))
    local = resolve(f"file://{archive}", cache)
    assert local.path == cache / "fake-en" / "1.0.0"
    assert (local.path / LAST_USED_NAME).exists()
    assert resolve(str(archive), cache).path == local.path
    assert len(calls) == 1
    assert not list((cache / STAGING_DIR).iterdir())
    assert [c.label for c in list_cached(cache)] == ["fake-en@1.0.0"]


def test_cached_copy_that_was_corrupted_is_fetched_again(tmp_path: Path) -> None:
    archive = make_checkpoint(tmp_path, output="fake.tar")
    cache = tmp_path / "cache"
    local = resolve(str(archive), cache)
    (local.path / "config.json").write_bytes(b"corrupt")
    again = resolve(str(archive), cache)
    assert again.path == local.path and (again.path / "config.json").read_bytes() != b"corrupt"


def test_missing_path_and_wrong_file_type(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"/nope does not exist; check the path"):
        resolve(str(tmp_path / "nope"), tmp_path / "cache")
    (tmp_path / "model.zip").write_bytes(b"x")
    with pytest.raises(FetchError, match=r"neither a checkpoint directory nor a .tar"):
        resolve(f"file://{tmp_path}/model.zip", tmp_path / "cache")
    with pytest.raises(FetchError, match=r"must name a local path"):
        resolve("file://otherhost/x", tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"manifest.json does not exist"):
        resolve(str(tmp_path / "empty"), tmp_path / "cache")


def test_unknown_scheme_is_named_and_redacted(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        resolve("ftp://user:hunter2@host/m.tar?token=abc", tmp_path / "cache")
    message = str(caught.value)
    assert "ftp://***@host/m.tar?***" in message and "unsupported location scheme ftp://" in message
    assert "hunter2" not in message and "abc" not in message


def test_checksum_failure_installs_nothing(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path)
    (ckpt / "model.bin").write_bytes(b"\0" * (ckpt / "model.bin").stat().st_size)
    (ckpt / ".hark-verified.json").unlink()
    archive = shutil.make_archive(str(tmp_path / "bad"), "gztar", ckpt)
    with pytest.raises(ChecksumError, match=r"bad.tar.gz: checkpoint fake-en@1.0.0: sha256 of model.bin"):
        resolve(archive, tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake-en").exists()
    with pytest.raises(ChecksumError):
        resolve(str(ckpt), tmp_path / "cache")


def test_same_name_and_version_with_other_files_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    resolve(str(make_checkpoint(tmp_path, output="one.tar")), cache)
    other = make_checkpoint(tmp_path, output="two.tar", model_files={
        "model.bin": b"other", "config.json": b"{}", "tokenizer.json": b"{}", "vocabulary.txt": b"a"})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"already holds fake-en@1.0.0 .* with different files"):
        resolve(str(other), cache)


def test_resolve_all_rejects_one_name_twice_and_prefixes_entries(tmp_path: Path) -> None:
    one = make_checkpoint(tmp_path, version="1.0.0")
    two = make_checkpoint(tmp_path, version="2.0.0")
    with pytest.raises(ModelUrlError, match=r"entries 1 .* and 2 .* are both checkpoint 'fake-en'"):
        resolve_all(f"{one},{two}", tmp_path / "cache")
    with pytest.raises(FetchError, match=r"^MODEL_URL entry 2 of 2: .*missing does not exist"):
        resolve_all([str(one), str(tmp_path / "missing")], tmp_path / "cache")
    hi = make_checkpoint(tmp_path, name="fake-hi", languages="hi")
    assert [c.label for c in resolve_all(f"{one},{hi}", tmp_path / "cache")] == ["fake-en@1.0.0", "fake-hi@1.0.0"]


# --- http(s) ---------------------------------------------------------------------------------


def test_http_download_is_cached(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "www", output="fake.tar.gz")
    cache = tmp_path / "cache"
    with file_server(tmp_path / "www") as (base, counts):
        local = resolve(f"{base}/fake.tar.gz?X-Signature=secret", cache)
        assert local.path == cache / "fake-en" / "1.0.0"
        assert local.source == f"{base}/fake.tar.gz?***"
        again = resolve(f"{base}/fake.tar.gz?X-Signature=secret", cache)
        assert again.path == local.path
    assert counts["/fake.tar.gz"] == 2  # the range probe (answered in full and dropped) + the download; then none


def test_http_errors_name_the_redacted_url(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    cache = tmp_path / "cache"
    with file_server(tmp_path / "www", truncate=("/cut.tar",)) as (base, _):
        port = base.rsplit(":", 1)[1]
        with pytest.raises(FetchError) as caught:
            resolve(f"http://me:pw@127.0.0.1:{port}/missing.tar?sig=1", cache, options=FAST)
        message = str(caught.value)
        assert f"http://***@127.0.0.1:{port}/missing.tar?***" in message and "HTTP 404" in message
        assert "pw" not in message.replace("***", "") and "sig" not in message
        with pytest.raises(FetchError, match=r"truncated|after \d+ bytes"):
            resolve(f"{base}/cut.tar", cache, options=FAST)
    with pytest.raises(FetchError, match=r"127.0.0.1:1/x.tar: connection failed"):
        resolve("http://127.0.0.1:1/x.tar", cache, options=FAST)
    assert not (cache / STAGING_DIR).exists() or not list((cache / STAGING_DIR).iterdir())


# --- concurrency -----------------------------------------------------------------------------


def _resolve_counting(url: str, cache: str, log: str, queue: multiprocessing.Queue) -> None:
    real = fetch_module.safe_extract

    def counting(*args: object, **kwargs: object) -> Path:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        return real(*args, **kwargs)

    fetch_module.safe_extract = counting
    try:
        queue.put(str(resolve(url, cache, lock_timeout=60).path))
    except Exception as error:
        queue.put(f"error: {error}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("source", ["file", "http"])
def test_concurrent_processes_fetch_and_extract_once(tmp_path: Path, source: str) -> None:
    archive = make_checkpoint(tmp_path / "www", output="fake.tar.gz")
    cache, log = tmp_path / "cache", tmp_path / "extractions.log"
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    with file_server(tmp_path / "www") as (base, counts):
        url = f"{base}/fake.tar.gz" if source == "http" else f"file://{archive}"
        processes = [context.Process(target=_resolve_counting, args=(url, str(cache), str(log), queue))
                     for _ in range(4)]  # fmt: skip
        for process in processes:
            process.start()
        results = [queue.get(timeout=90) for _ in processes]
        for process in processes:
            process.join(timeout=30)
    assert results == [str(cache / "fake-en" / "1.0.0")] * 4
    assert len(log.read_text().splitlines()) == 1
    if source == "http":
        assert counts["/fake.tar.gz"] == 2  # one probe + one download, by one process
