"""The shared cache: several processes at once download once; LRU eviction under MODEL_CACHE_MAX_SIZE
never evicts a checkpoint a live process holds; free space is checked before downloading."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from storage_support import REPO, RangeServer, clean_env, fake_checkpoint, start_hark, wait_for

from checkpoints import cache, leases, space
from checkpoints.errors import StorageError
from checkpoints.options import FetchOptions
from checkpoints.resolve import resolve

MB = 1024 * 1024
FAST = FetchOptions(retries=1, backoff_base=0.01, stall_timeout=5.0, min_segment=256 * 1024)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def server() -> RangeServer:
    with RangeServer() as running:
        yield running


@pytest.mark.timeout(120)
def test_processes_started_together_download_once(tmp_path: Path, server: RangeServer) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=2 * MB, output="m.tar")
    url = server.add("/m.tar", archive.read_bytes(), rate=MB)
    cache_dir = tmp_path / "cache"
    pull = ["checkpoints", "pull", url, "--cache-dir", str(cache_dir)]
    env = clean_env(MODEL_DOWNLOAD_WORKERS="2")
    processes = [start_hark(pull, env, tmp_path / f"pull{i}.log") for i in range(4)]
    codes = [p.wait(timeout=90) for p in processes]
    logs = [(tmp_path / f"pull{i}.log").read_text() for i in range(4)]
    assert codes == [0, 0, 0, 0], logs
    assert all(str(cache_dir / "fake-en" / "1.0.0") in log for log in logs)
    assert server.served("/m.tar") == archive.stat().st_size + 1  # one download (+ its one-byte probe)
    assert sum("waiting for another process" in log for log in logs) >= 1


LOADER = textwrap.dedent("""
    import sys
    from faster_whisper import WhisperModel
    from checkpoints.resolve import resolve_configured
    from hark.settings import load_settings

    (checkpoint,) = resolve_configured(load_settings(), hold=True)
    model = WhisperModel(str(checkpoint.path), device="cpu", compute_type="int8", cpu_threads=1)
    print("loaded", checkpoint.label, checkpoint.path, flush=True)
""")


@pytest.mark.timeout(240)
def test_workers_on_one_volume_fetch_a_real_checkpoint_once_and_all_load(
    tmp_path: Path, server: RangeServer, bundled_checkpoints: object
) -> None:
    tiny = bundled_checkpoints.tiny_en  # type: ignore[attr-defined]
    url = server.add_directory("/models/whisper-tiny-en/1.0.0", tiny)
    total = sum(f.stat().st_size for f in tiny.iterdir() if f.name in ("manifest.json",) or not f.name.startswith("."))
    cache_dir = tmp_path / "shared-volume"
    env = clean_env(MODEL_URL=url, MODEL_CACHE_DIR=str(cache_dir), HF_HUB_OFFLINE="1")
    processes = [subprocess.Popen([sys.executable, "-c", LOADER], env=env, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(3)]  # fmt: skip
    outputs = [p.communicate(timeout=200)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert all(f"loaded whisper-tiny-en@1.0.0 {cache_dir}/whisper-tiny-en/1.0.0" in out for out in outputs)
    files = [f for f in tiny.iterdir() if not f.name.startswith(".")]
    assert server.served("/models/") <= total + len(files)  # every file once (+ one-byte probes)


def _cached_checkpoint(tmp_path: Path, cache_dir: Path, name: str, size: int = MB, used: float = 0) -> Path:
    archive = fake_checkpoint(tmp_path / "src", name=name, size=size, output=f"{name}.tar")
    path = resolve(str(archive), cache_dir, options=FAST).path
    os.utime(path / cache.LAST_USED_NAME, (used, used))
    os.utime(path, (used, used))
    return path


def _hold_in_another_process(path: Path, log: Path) -> subprocess.Popen:
    code = ("import sys, time; from checkpoints.cache import hold; lease = hold(sys.argv[1]); "
            "print('held', flush=True); time.sleep(120)")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    return process


def test_lru_eviction_skips_checkpoints_held_by_live_processes(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    now = time.time()
    oldest = _cached_checkpoint(tmp_path, cache_dir, "oldest", used=now - 3000)
    older = _cached_checkpoint(tmp_path, cache_dir, "older", used=now - 2000)
    recent = _cached_checkpoint(tmp_path, cache_dir, "recent", used=now - 1000)
    holder = _hold_in_another_process(oldest, tmp_path / "hold.log")
    try:
        limit = FAST.with_(max_cache_bytes=int(3.5 * MB))
        new = fake_checkpoint(tmp_path / "src", name="new", size=MB, output="new.tar")
        resolve(str(new), cache_dir, options=limit)
        names = sorted(c.name for c in cache.list_cached(cache_dir))
        assert names == ["new", "oldest", "recent"]  # "older" went; "oldest" is in use
        assert oldest.is_dir() and not older.exists() and recent.is_dir()
        assert [lease.pid for lease in leases.leases_of(cache_dir, "oldest", "1.0.0")] == [holder.pid]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder died without releasing: on this host its lease is stale at once, nothing protects it now
    assert leases.leases_of(cache_dir, "oldest", "1.0.0") == []
    assert space.remove_checkpoint(cache_dir, cache.find_cached(cache_dir, "oldest")[0]) == []
    assert not oldest.exists()


def test_leases_of_other_hosts_count_until_their_ttl(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    path = _cached_checkpoint(tmp_path, cache_dir, "shared")
    folder = leases.lease_dir(cache_dir, "shared", "1.0.0")
    folder.mkdir(parents=True, exist_ok=True)
    other = folder / f"worker-7f9c.{os.getpid()}.abcd{leases.LEASE_SUFFIX}"
    other.write_text("{}")
    assert [lease.holder for lease in leases.leases_of(cache_dir, "shared", "1.0.0")] == [f"worker-7f9c:{os.getpid()}"]
    assert space.remove_checkpoint(cache_dir, cache.find_cached(cache_dir, "shared")[0]) != []
    stale = time.time() - leases.TTL_SECONDS - 5
    os.utime(other, (stale, stale))  # that host stopped renewing: crashed or partitioned
    assert leases.leases_of(cache_dir, "shared", "1.0.0") == []
    assert space.remove_checkpoint(cache_dir, cache.find_cached(cache_dir, "shared")[0]) == []
    assert not path.exists()


def test_in_use_checkpoints_make_a_clear_error_when_nothing_else_can_go(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    path = _cached_checkpoint(tmp_path, cache_dir, "busy", size=2 * MB)
    with leases.hold(path):
        new = fake_checkpoint(tmp_path / "src", name="new", size=2 * MB, output="new.tar")
        with pytest.raises(StorageError) as caught:
            resolve(str(new), cache_dir, options=FAST.with_(max_cache_bytes=3 * MB))
    message = str(caught.value)
    assert "MODEL_CACHE_MAX_SIZE=3.0 MiB" in message and "in use by live workers: busy@1.0.0" in message
    assert f":{os.getpid()}" in message
    assert [c.name for c in cache.list_cached(cache_dir)] == ["busy"]


def test_a_checkpoint_larger_than_the_limit_is_refused_before_downloading(tmp_path: Path,
                                                                         server: RangeServer) -> None:  # fmt: skip
    archive = fake_checkpoint(tmp_path / "src", size=2 * MB, output="big.tar")
    url = server.add("/big.tar", archive.read_bytes())
    with pytest.raises(StorageError, match=r"needs at least 4.0 MiB while unpacking \(unpacked at least 2.0 MiB \+ "
                       r"archive 2.0 MiB\) but MODEL_CACHE_MAX_SIZE is 1.0 MiB; raise"):  # fmt: skip
        resolve(url, tmp_path / "cache", options=FAST.with_(max_cache_bytes=MB))
    assert server.served("/big.tar") <= 1  # the probe only


def test_free_space_is_checked_before_downloading(tmp_path: Path, server: RangeServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    archive = fake_checkpoint(tmp_path / "src", size=2 * MB, output="m.tar")
    url = server.add("/m.tar", archive.read_bytes())
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=3 * MB))  # a nearly full volume
    with pytest.raises(StorageError) as caught:
        resolve(url, tmp_path / "cache", options=FAST.with_(eviction="none"))
    message = str(caught.value)
    assert "not enough free space on the cache volume" in message and "only 3.0 MiB free" in message
    assert "download 2.0 MiB + unpacking at least 2.0 MiB + margin" in message, message
    assert "MODEL_CACHE_EVICTION=none" in message
    assert server.served("/m.tar") <= 1  # the probe only


def test_eviction_makes_free_space_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_dir = tmp_path / "cache"
    _cached_checkpoint(tmp_path, cache_dir, "old", size=MB, used=time.time() - 100)
    real = shutil.disk_usage

    def fake(path: object) -> object:  # free space = what the volume would have if "old" were its only tenant
        held = sum(c.size for c in cache.list_cached(cache_dir))
        return real(path)._replace(free=space.FREE_MARGIN + int(1.5 * MB) - held)

    monkeypatch.setattr(shutil, "disk_usage", fake)
    new = fake_checkpoint(tmp_path / "src", name="new", size=MB, output="new.tar")
    resolve(str(new), cache_dir, options=FAST)
    assert [c.name for c in cache.list_cached(cache_dir)] == ["new"]


def test_abandoned_partial_downloads_count_and_can_be_evicted(tmp_path: Path, server: RangeServer) -> None:
    data = fake_checkpoint(tmp_path / "src", size=2 * MB, output="m.tar").read_bytes()
    url = server.add("/m.tar", data, stall_after=MB, stall_seconds=5)
    cache_dir = tmp_path / "cache"
    with pytest.raises(Exception, match="stalled"):
        resolve(url, cache_dir, options=FAST.with_(workers=1, retries=0, stall_timeout=0.5, min_segment=4 * MB))
    (partial,) = space.list_partials(cache_dir)
    assert partial.size == 2 * len(data) and not partial.busy(cache_dir)  # the archive + its unpacking
    assert space.cache_usage(cache_dir) == 2 * len(data)
    other = fake_checkpoint(tmp_path / "src", name="other", size=MB, output="other.tar")
    resolve(str(other), cache_dir, options=FAST.with_(max_cache_bytes=int(2.5 * MB)))
    assert space.list_partials(cache_dir) == []


@pytest.mark.timeout(60)
def test_a_crashed_downloaders_lock_does_not_block(tmp_path: Path, server: RangeServer) -> None:
    archive = fake_checkpoint(tmp_path / "src", size=2 * MB, output="m.tar")
    url = server.add("/m.tar", archive.read_bytes(), rate=256 * 1024)
    cache_dir, log = tmp_path / "cache", tmp_path / "pull.log"
    first = start_hark(["checkpoints", "pull", url, "--cache-dir", str(cache_dir)], clean_env(), log)
    wait_for(lambda: server.served("/m.tar") > 100_000, 30, "the first download to start")
    first.send_signal(signal.SIGKILL)  # dies holding the source lock
    first.wait()
    started = time.monotonic()
    local = resolve(url, cache_dir, options=FAST.with_(workers=4), lock_timeout=10)
    assert local.label == "fake-en@1.0.0" and time.monotonic() - started < 20
