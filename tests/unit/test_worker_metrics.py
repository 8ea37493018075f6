"""The worker host's observability without a model: multiprocess aggregation across real processes, the
``/metrics`` + ``/health`` server, the supervisor's liveness with real child processes and a real Redis,
and the checkpoint cache counters on a real HTTP download."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families
from test_checkpoints_support import file_server, make_checkpoint

from checkpoints import events
from checkpoints.resolve import resolve
from checkpoints.space import evict
from hark import multiproc_metrics, registry
from hark.schemas import CheckpointInfo, InstanceRecord
from hark.settings import load_settings
from workers import metrics as worker_metrics
from workers.health_server import MetricsServer
from workers.supervisor import Child, Supervisor

ROOT = Path(__file__).resolve().parents[2]

#: A child process that records one batch job and holds `argv[1]` slots busy until its stdin closes.
CHILD = """
import sys
from workers import metrics as m
m.task_done("d1", "ck", "batch", "success")
m.audio_done("d1", "ck", "en", 2.0, processing_seconds=0.5)
m.slot_tracker("d1", "ck", 4).set(int(sys.argv[1]))
print("ready", flush=True)
sys.stdin.read()
"""
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def sample(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh multiprocess directory made by `prepare` (as `hark api` / the supervisor do), undone afterwards."""
    monkeypatch.setattr(multiproc_metrics, "SHM_DIR", tmp_path)
    stale = tmp_path / "hark-metrics-worker-999999999-old"  # a group whose parent is gone
    stale.mkdir()
    path = multiproc_metrics.prepare("worker")
    assert not stale.exists(), "directories of dead groups are removed"
    assert path.parent == tmp_path and not any(path.iterdir()) and (path.stat().st_mode & 0o777) == 0o700
    try:
        yield path
    finally:
        multiproc_metrics.remove(path)
        values.ValueClass = values.get_value_class()  # back to single-process values for the other tests
        assert multiproc_metrics.directory() is None


def _start_child(busy: int) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", CHILD, str(busy)], cwd=ROOT, text=True, env=dict(os.environ),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_metrics_from_several_processes_are_merged_and_dead_ones_leave_the_live_gauges(metrics_dir: Path) -> None:
    first, second = _start_child(busy=2), _start_child(busy=3)
    server = MetricsServer("127.0.0.1", 0, lambda: (True, {"status": "ok"}))
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        live = parse(requests.get(f"{url}/metrics", timeout=5).text)
        assert sample(live, "hark_worker_active_requests", deployment="d1", checkpoint="ck") == 5.0
        first.communicate("", timeout=10)  # exits
        multiproc_metrics.mark_dead(first.pid)  # what the supervisor does when a child exits
        merged = parse(requests.get(f"{url}/metrics", timeout=5).text)
    finally:
        second.communicate("", timeout=10)
        server.stop()
    assert sample(merged, "hark_worker_active_requests", deployment="d1", checkpoint="ck") == 3.0, "livesum"
    assert sample(merged, "hark_worker_slots", deployment="d1", checkpoint="ck") == 4.0
    batch = {"deployment": "d1", "checkpoint": "ck", "kind": "batch", "outcome": "success"}
    assert sample(merged, "hark_worker_tasks_total", **batch) == 2.0, "a dead process's counts stay in the total"
    assert sample(merged, "hark_audio_seconds_total", deployment="d1", checkpoint="ck", language="en") == 4.0
    assert sample(merged, "hark_realtime_factor_count", deployment="d1", checkpoint="ck") == 2.0
    assert sample(merged, "hark_realtime_factor_bucket", deployment="d1", checkpoint="ck", le="0.2") == 0.0
    assert sample(merged, "hark_realtime_factor_bucket", deployment="d1", checkpoint="ck", le="0.3") == 2.0


def test_server_answers_only_metrics_and_health() -> None:
    server = MetricsServer("127.0.0.1", 0, lambda: (False, {"status": "unhealthy", "reason": "x"}))
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert requests.get(f"{url}/health", timeout=5).status_code == 503
        missing = requests.get(f"{url}/debug", timeout=5)
        assert missing.status_code == 404 and "error" in missing.json()
        assert requests.post(f"{url}/metrics", timeout=5).status_code == 405
        with pytest.raises(OSError):
            MetricsServer("127.0.0.1", server.port, lambda: (True, {}))  # the port is taken
    finally:
        server.stop()


def _wait_health(url: str, status: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{url}/health", timeout=5)
        if answer.status_code == status or time.monotonic() > deadline:
            assert answer.status_code == status, answer.text
            return answer.json()
        time.sleep(0.05)


def test_health_follows_the_supervisor_loop_and_its_children(redis_url: str, redis_client: redis.Redis,
                                                            deployment: str) -> None:  # fmt: skip
    supervisor = Supervisor(load_settings(redis_url=redis_url, deployment=deployment), [], "w-health")
    supervisor.children = [Child(name="webhooks", argv=SLEEPER), Child(name="ck@1", argv=SLEEPER, checkpoint="ck")]
    server = MetricsServer("127.0.0.1", 0, supervisor.health)
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    loop = threading.Thread(target=supervisor._monitor, daemon=True)
    try:
        assert "starting" in _wait_health(url, 503)["reason"]
        for child in supervisor.children:
            supervisor.spawn(child)
        loop.start()
        body = _wait_health(url, 503)
        assert "ck@1" in body["reason"] and "has not announced itself" in body["reason"]
        model = supervisor.children[1].process
        now = time.time()
        registry.announce(redis_client, InstanceRecord(
            deployment=deployment, worker_id="w-health", host="h", pid=model.pid, queue="q", slots=1, in_flight=0,
            checkpoint=CheckpointInfo(name="ck", version="1", languages=["en"], multilingual=False),
            started_at=now, heartbeat_at=now,
        ), 30)  # fmt: skip
        assert _wait_health(url, 200)["status"] == "ok"

        victim = supervisor.children[0].process
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=5)
        assert "webhooks" in _wait_health(url, 503)["reason"]
        assert _wait_health(url, 200)["children"][0]["pid"] != victim.pid, "restarted (after a 1 s backoff)"

        supervisor.request_stop(signal.SIGTERM)
        assert "stopping" in _wait_health(url, 503)["reason"]
    finally:
        supervisor.stopping.set()
        if loop.is_alive():
            loop.join(timeout=5)
        supervisor.stop_children(grace=2)
        server.stop()


def test_checkpoint_cache_hits_misses_evictions_and_downloaded_bytes(tmp_path: Path) -> None:
    archive = make_checkpoint(tmp_path / "www", output="fake.tar.gz")
    before = {event: worker_metrics.CACHE_EVENTS.labels(event)._value.get() for event in ("hit", "miss", "eviction")}
    downloaded = worker_metrics.DOWNLOAD_BYTES._value.get()
    worker_metrics.watch_checkpoint_cache()
    try:
        with file_server(tmp_path / "www") as (base, _):
            first = resolve(f"{base}/fake.tar.gz", tmp_path / "cache")
            second = resolve(f"{base}/fake.tar.gz", tmp_path / "cache")
        for local in (first, second):
            assert local.lease is not None
            local.lease.release()
        assert evict(tmp_path / "cache", "fake-en")[0] == ["fake-en@1.0.0"]
    finally:
        events.clear()
    after = {event: worker_metrics.CACHE_EVENTS.labels(event)._value.get() for event in ("hit", "miss", "eviction")}
    assert {event: after[event] - before[event] for event in after} == {"hit": 1, "miss": 1, "eviction": 1}
    assert worker_metrics.DOWNLOAD_BYTES._value.get() - downloaded >= archive.stat().st_size
