"""API thread exhaustion (hardening item 6) against a real gunicorn API on loopback: stalled and
trickling uploads answer 408 within their deadline and free their thread, a sync request whose client
left stops waiting, and one key past HARK_MAX_CONCURRENT_PER_CLIENT gets 429 across API processes.

No worker runs: a worker is announced in the registry by hand, so jobs are routed and queued but never
answered, which is what a request waiting on a busy deployment looks like.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from tests.e2e.helpers import JOBS_PATH
from tests.processes import HarkProcess, Launcher
from tests.unit.web_helpers import TINY_EN, WAV, announce

pytestmark = pytest.mark.e2e

UPLOAD_TIMEOUT = 2.0
MIN_RATE = 1024
THREADS = 3
STT = "/waves/v1/stt/?model=pulse&language=en"


@pytest.fixture(scope="module")
def small_api(module_hark: Launcher) -> Iterator[HarkProcess]:
    """One API process with 3 threads, a 2 s upload timeout and a long sync wait; a fake live worker."""
    name = module_hark.new_deployment("limits")
    announce(module_hark.redis, name, TINY_EN, ttl=600)
    api = module_hark.start_api(name, HARK_API_WORKERS=1, HARK_API_THREADS=THREADS,
                                HARK_UPLOAD_TIMEOUT_SECONDS=UPLOAD_TIMEOUT, HARK_UPLOAD_MIN_BYTES_PER_SECOND=MIN_RATE,
                                HARK_SYNC_WAIT_SECONDS=60)  # fmt: skip
    yield api


def _port(api: HarkProcess) -> int:
    assert api.base_url
    return int(api.base_url.rsplit(":", 1)[1])


def _open(api: HarkProcess, headers: str, body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", _port(api)), timeout=10)
    sock.sendall(f"POST {STT} HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n{headers}\r\n"
                 .encode() + body)  # fmt: skip
    return sock


def _response(sock: socket.socket, timeout: float) -> tuple[int, dict, float]:
    """(status, JSON body, seconds waited) of the response on `sock`."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = lengths[0] if lengths else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, json.loads(body) if body else {}, time.monotonic() - started


def _assert_408(sock: socket.socket, within: float) -> float:
    status, body, waited = _response(sock, timeout=within + 10)
    assert status == 408, (status, body)
    assert body["details"] == [{"code": "upload_timeout"}] and body["request_id"].startswith("req_")
    sock.settimeout(5)
    assert sock.recv(1) == b"", "the connection is closed after a 408"
    return waited


def test_stalled_uploads_answer_408_and_free_their_threads(small_api: HarkProcess) -> None:
    stalled = [_open(small_api, "Content-Length: 100000\r\n", b"RIFF") for _ in range(THREADS - 1)]
    started = time.monotonic()
    # A well-behaved request is served meanwhile (one thread is left).
    assert requests.get(f"{small_api.base_url}/health", timeout=5).status_code == 200
    for sock in stalled:
        _assert_408(sock, within=UPLOAD_TIMEOUT + 3)
        sock.close()
    assert time.monotonic() - started < UPLOAD_TIMEOUT + 4
    # Every thread is free again: as many stalled uploads as threads all get their 408 in time.
    again = [_open(small_api, "Content-Length: 100000\r\n", b"RIFF") for _ in range(THREADS)]
    for sock in again:
        _assert_408(sock, within=UPLOAD_TIMEOUT + 3)
        sock.close()


def test_stalled_chunked_upload_answers_408(small_api: HarkProcess) -> None:
    sock = _open(small_api, "Transfer-Encoding: chunked\r\n", b"4\r\nRIFF\r\n")
    _assert_408(sock, within=UPLOAD_TIMEOUT + 3)
    sock.close()


def test_trickling_upload_misses_the_whole_body_deadline(small_api: HarkProcess) -> None:
    """One byte every 0.5 s never pauses 2 s, but 4096 bytes at that pace miss 2 s + 4096 / 1024 B/s."""
    size = 4096
    deadline = UPLOAD_TIMEOUT + size / MIN_RATE
    sock = _open(small_api, f"Content-Length: {size}\r\n")
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.5):
            try:
                sock.send(b"x")
            except OSError:
                return

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        waited = _assert_408(sock, within=deadline + 3)
    finally:
        stop.set()
        feeder.join(timeout=5)
        sock.close()
    assert deadline - 1 <= waited <= deadline + 3, waited


def _jobs(client: redis.Redis, deployment: str, count: int, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [k.decode().rsplit(":", 1)[1] for k in client.scan_iter(match=f"hark:{deployment}:job:*")]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} jobs were created in {deployment}")


def test_abandoned_sync_requests_stop_waiting(small_api: HarkProcess, module_hark: Launcher) -> None:
    """Clients that hang up stop holding threads: with every thread abandoned, the API still answers."""
    assert small_api.deployment
    log_start = small_api.log_size()
    existing = len(list(module_hark.redis.scan_iter(match=f"hark:{small_api.deployment}:job:*")))
    clients = [_open(small_api, f"Content-Length: {len(WAV)}\r\n", WAV) for _ in range(THREADS)]
    rids = _jobs(module_hark.redis, small_api.deployment, existing + THREADS)
    time.sleep(0.5)
    for sock in clients:
        sock.close()
    # Before: every thread waited HARK_SYNC_WAIT_SECONDS (60 s) for nobody; now they notice within ~1 s.
    assert requests.get(f"{small_api.base_url}/health", timeout=8).status_code == 200
    deadline = time.monotonic() + 5
    gone = "client closed the connection"
    while time.monotonic() < deadline and small_api.log_text(log_start).count(gone) < THREADS:
        time.sleep(0.2)
    assert small_api.log_text(log_start).count(gone) == THREADS, small_api.log_text(log_start)
    # The jobs were not cancelled: they are still queued and can be polled.
    polled = requests.get(f"{small_api.base_url}{JOBS_PATH}{rids[-1]}", timeout=10)
    assert polled.status_code == 200 and polled.json()["status"] == "processing"


@pytest.fixture(scope="module")
def keyed_api(module_hark: Launcher) -> HarkProcess:
    """Two API processes (gunicorn workers) sharing a limit of 2 concurrent requests per key."""
    name = module_hark.new_deployment("perkey")
    announce(module_hark.redis, name, TINY_EN, ttl=600)
    return module_hark.start_api(name, HARK_API_WORKERS=2, HARK_API_THREADS=4, HARK_API_KEYS="key-a,key-b",
                                 HARK_MAX_CONCURRENT_PER_CLIENT=2, HARK_SYNC_WAIT_SECONDS=8)  # fmt: skip


def test_one_key_past_its_concurrency_limit_gets_429(keyed_api: HarkProcess, module_hark: Launcher) -> None:
    url = f"{keyed_api.base_url}/waves/v1/stt/"
    query = {"model": "pulse", "language": "en"}
    key_a, key_b = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
    answers: list[int] = []

    def wait_one() -> None:
        answers.append(requests.post(url, params=query, data=WAV, headers=key_a, timeout=30).status_code)

    holders = [threading.Thread(target=wait_one) for _ in range(2)]
    for holder in holders:
        holder.start()
    assert keyed_api.deployment
    rids = _jobs(module_hark.redis, keyed_api.deployment, 2)

    # Whichever gunicorn process takes them, key-a's third, fourth... requests are refused.
    for _ in range(4):
        refused = requests.post(url, params=query, data=WAV, headers=key_a, timeout=10)
        assert refused.status_code == 429, refused.text
        assert refused.headers["Retry-After"].isdigit()
        assert refused.json()["details"][0]["code"] == "too_many_concurrent_requests"
    # Another key is not affected, nor are the probes.
    assert requests.get(f"{keyed_api.base_url}{JOBS_PATH}{rids[0]}", headers=key_b, timeout=10).status_code == 200
    assert requests.get(f"{keyed_api.base_url}/ready", timeout=10).status_code == 200

    for holder in holders:
        holder.join(timeout=30)
    assert answers == [202, 202]
    # Their slots were given back.
    assert requests.get(f"{keyed_api.base_url}{JOBS_PATH}{rids[0]}", headers=key_a, timeout=10).status_code == 200
