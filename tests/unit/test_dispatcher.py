"""The real `hark dispatcher` process (gunicorn) in front of tiny real upstreams that say which one was hit:
routing by language, bodies (plain, chunked, large) and headers passed through, failover to a live replica,
JSON errors for unrouted languages and dead deployments, job polling, and a WebSocket tunnel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from tests.processes import free_port, wait_until_healthy
from tests.upstreams import Upstream, refused_url, upstreams

ROOT = Path(__file__).resolve().parents[2]
STT = "/waves/v1/stt/"


def _assert_error(answer: requests.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "request_id", "details"} and body["details"][0]["code"] == code, body
    assert answer.headers["X-Request-ID"] == body["request_id"]
    return body


class Setup:
    def __init__(self, url: str, en: Upstream, eu: Upstream, busy: Upstream, ws_seen: list) -> None:
        self.url, self.en, self.eu, self.busy, self.ws_seen = url, en, eu, busy, ws_seen


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    ws_seen: list = []

    def echo(connection: ServerConnection) -> None:
        headers = {name.lower(): value for name, value in connection.request.headers.raw_items()}
        ws_seen.append((connection.request.path, headers, connection.subprotocol))
        for message in connection:
            connection.send(f"echo:{message!s}")

    workdir = tmp_path_factory.mktemp("dispatcher")
    with upstreams(Upstream("en-pack"), Upstream("eu-pack", ["de"]), Upstream("busy", status=503)) as (en, eu, busy), \
            serve(echo, "127.0.0.1", 0, subprotocols=["bearer"]) as ws_server:  # fmt: skip
        threading.Thread(target=ws_server.serve_forever, daemon=True).start()
        ws_url = f"http://127.0.0.1:{ws_server.socket.getsockname()[1]}"
        routes = workdir / "routes.yaml"
        routes.write_text(f"en: [{refused_url()}, {en.url}]\nde: {eu.url}\nfr: {ws_url}\nit: {refused_url()}\n"
                          f"es: {busy.url}\n")  # fmt: skip
        port = free_port()
        env = {**os.environ, "HARK_ROUTES": str(routes), "HARK_DISPATCHER_HOST": "127.0.0.1",
               "HARK_DISPATCHER_PORT": str(port), "HARK_DISPATCHER_THREADS": "8",
               "HARK_LOG_LEVEL": "WARNING"}  # fmt: skip
        log = (workdir / "dispatcher.log").open("wb")
        process = subprocess.Popen([sys.executable, "-m", "hark.cli", "dispatcher"], env=env, cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, process, workdir / "dispatcher.log", timeout=30)
            yield Setup(url, en, eu, busy, ws_seen)
        finally:
            process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown (SIGTERM waits up to a second)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()


def test_requests_go_to_the_language_s_deployment_whole(setup: Setup) -> None:
    headers = {"Authorization": "Bearer k-1", "Content-Type": "application/octet-stream"}
    answer = requests.post(f"{setup.url}{STT}", params={"model": "pulse", "language": "de", "word_timestamps": "true"},
                           data=b"RIFF-de", headers=headers, timeout=10)  # fmt: skip
    assert answer.status_code == 200 and answer.json()["metadata"]["deployment"] == "eu-pack", answer.text
    seen = setup.eu.seen[-1]
    assert (seen.path, seen.body, seen.query["word_timestamps"]) == (STT, b"RIFF-de", "true")
    assert seen.headers["Authorization"] == "Bearer k-1" and seen.headers["X-Forwarded-For"] == "127.0.0.1"
    # The legacy path, a chunked upload and a 3 MB body, to the live replica of `en` (the other is refused).
    legacy = requests.post(f"{setup.url}/waves/v1/pulse/get_text?language=en", data=iter([b"ab", b"cd"]), timeout=10)
    assert legacy.json()["metadata"]["deployment"] == "en-pack", legacy.text
    assert setup.en.seen[-1].body == b"abcd" and setup.en.seen[-1].path == "/waves/v1/pulse/get_text"
    big = os.urandom(3 * 1024 * 1024)
    for _ in range(2):  # both replicas in turn: the refused one is skipped each time
        assert requests.post(f"{setup.url}{STT}?model=pulse&language=en", data=big, timeout=30).status_code == 200
        assert setup.en.seen[-1].body == big


def test_errors_are_json_naming_what_is_routed(setup: Setup) -> None:
    body = _assert_error(requests.post(f"{setup.url}{STT}?model=pulse&language=hi", data=b"x", timeout=10), 400,
                         "unrouted_language")  # fmt: skip
    assert "'hi'" in body["error"] and "de, en, es, fr, it" in body["error"]
    _assert_error(requests.post(f"{setup.url}{STT}?model=pulse", data=b"x", timeout=10), 400, "unrouted_language")
    down = requests.post(f"{setup.url}{STT}?model=pulse&language=it", data=b"x", timeout=10)
    _assert_error(down, 503, "upstream_unavailable")
    assert down.headers["Retry-After"]
    busy = requests.post(f"{setup.url}{STT}?model=pulse&language=es", data=b"x", timeout=10)
    assert busy.status_code == 503 and busy.json()["error"] == "busy says 503" and busy.headers["Retry-After"] == "1"
    _assert_error(requests.get(f"{setup.url}/nope", timeout=10), 404, "not_found")


def test_job_status_finds_the_deployment(setup: Setup) -> None:
    queued = requests.post(f"{setup.url}{STT}?model=pulse&language=de&webhook_url=https://h.example/x", data=b"x",
                           timeout=10).json()  # fmt: skip
    rid = queued["request_id"]
    setup.eu.jobs.add(rid)
    before = len(setup.en.seen)
    answer = requests.get(f"{setup.url}/waves/v1/stt/jobs/{rid}", timeout=10)
    assert answer.json()["deployment"] == "eu-pack" and len(setup.en.seen) == before  # remembered: no fan-out
    # An id this dispatcher never saw: every deployment is asked, the one that knows it answers.
    setup.en.jobs.add("req_" + "e" * 24)
    found = requests.get(f"{setup.url}/waves/v1/stt/jobs/req_{'e' * 24}", timeout=10)
    assert found.status_code == 200 and found.json()["deployment"] == "en-pack", found.text
    unknown = requests.get(f"{setup.url}/waves/v1/stt/jobs/req_{'f' * 24}", timeout=10)
    _assert_error(unknown, 503, "upstream_unavailable")  # `it` is down: it might hold the job
    bogus = requests.get(f"{setup.url}/waves/v1/stt/jobs/bogus", timeout=10)
    assert bogus.status_code == 404 and bogus.json()["details"] == [{"field": "request_id"}]


def test_websocket_upgrades_are_tunnelled(setup: Setup) -> None:
    ws = setup.url.replace("http://", "ws://")
    with connect(f"{ws}/waves/v1/stt/live?language=fr&sample_rate=16000", subprotocols=["bearer", "k-ws"],
                 open_timeout=10) as session:  # fmt: skip
        session.send("hello")
        assert session.recv(timeout=10) == "echo:hello"
        session.send(b"\x00\x01")
        assert session.recv(timeout=10).startswith("echo:")
    path, headers, subprotocol = setup.ws_seen[-1]
    assert path == "/waves/v1/stt/live?language=fr&sample_rate=16000" and subprotocol == "bearer"
    assert headers["sec-websocket-protocol"] == "bearer, k-ws"
    refused = requests.get(f"{setup.url}/waves/v1/stt/live?language=hi", timeout=10,
                           headers={"Upgrade": "websocket", "Connection": "Upgrade"})  # fmt: skip
    _assert_error(refused, 400, "unrouted_language")


def test_an_invalid_map_stops_the_dispatcher_with_exit_2(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("en: http://127.0.0.1:1\nde: []\n")
    env = {**os.environ, "HARK_ROUTES": str(routes), "HARK_DISPATCHER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", "hark.cli", "dispatcher"], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "'de'" in result.stderr and "non-empty list" in result.stderr, result.stderr
