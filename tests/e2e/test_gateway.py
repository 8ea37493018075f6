"""deploy/gateway/nginx-language-routing.conf: valid for `nginx -t`, and a real nginx routes by ?language= to
tiny upstreams that report which one was hit (skipping a refused replica), answers JSON 400 for an unrouted
language, passes Authorization through and tunnels a WebSocket upgrade. No models needed."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

from tests.processes import free_port, nginx_command, wait_until_healthy
from tests.upstreams import Upstream, refused_url, upstreams

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")]

CONF = Path(__file__).resolve().parents[2] / "deploy" / "gateway" / "nginx-language-routing.conf"
STT = "/waves/v1/stt/"


def test_the_shipped_gateway_config_is_valid(tmp_path: Path) -> None:
    result = subprocess.run([*nginx_command(CONF, tmp_path, ""), "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Upstream, Upstream]]:
    """The shipped config with its upstreams pointed at two tiny HTTP servers (one `eu` replica refused)
    and `multi` at a WebSocket echo server."""

    def echo(connection: ServerConnection) -> None:
        for message in connection:
            connection.send(f"multi:{message!s}")

    with upstreams(Upstream("en-pack"), Upstream("eu-pack", ["de", "fr"])) as (en, eu), \
            serve(echo, "127.0.0.1", 0) as ws_server:  # fmt: skip
        threading.Thread(target=ws_server.serve_forever, daemon=True).start()
        port = free_port()
        text = CONF.read_text(encoding="utf-8")
        host = lambda url: url.removeprefix("http://")  # noqa: E731
        for old, new in (("server 127.0.0.1:7101;", f"server {host(en.url)};"),
                         ("server 127.0.0.1:7102;", f"server {host(refused_url())};"),
                         ("server 127.0.0.1:7103;", f"server {host(eu.url)};"),
                         ("server 127.0.0.1:7104;", f"server 127.0.0.1:{ws_server.socket.getsockname()[1]};"),
                         ("listen 8090;", f"listen 127.0.0.1:{port};"),
                         ("worker_processes auto;", "worker_processes 1;"),
                         ("http {", f"http {{\n    access_log off;\n    client_body_temp_path {tmp_path / 'body'};")):
            assert old in text, old
            text = text.replace(old, new, 1)
        conf = tmp_path / "nginx.conf"
        conf.write_text(text, encoding="utf-8")
        nginx = subprocess.Popen(nginx_command(conf, tmp_path, "daemon off;"), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, nginx, tmp_path / "logs/error.log")
            yield url, en, eu
        finally:
            nginx.terminate()
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()


def test_requests_reach_the_deployment_of_their_language(gateway: tuple[str, Upstream, Upstream]) -> None:
    url, en, eu = gateway
    key = {"Authorization": "Bearer k-gw"}
    for language, expected in (("en", "en-pack"), ("de", "eu-pack"), ("fr", "eu-pack"), ("de", "eu-pack")):
        answer = requests.post(f"{url}{STT}", params={"model": "pulse", "language": language}, data=b"RIFF" + b"x" * 9,
                               headers=key, timeout=10)  # fmt: skip
        assert answer.status_code == 200 and answer.headers["X-Upstream"] == expected, answer.text
    assert [s.query["language"] for s in eu.seen] == ["de", "fr", "de"]  # the refused replica was skipped
    assert en.seen[0].headers["Authorization"] == "Bearer k-gw" and en.seen[0].body == b"RIFF" + b"x" * 9
    eu.jobs.add("req_" + "a" * 24)
    poll = requests.get(f"{url}/waves/v1/stt/jobs/req_{'a' * 24}?language=de", timeout=10)
    assert poll.status_code == 200 and poll.headers["X-Upstream"] == "eu-pack"
    for query in ("?model=pulse&language=xx", "?model=pulse"):
        refused = requests.post(f"{url}{STT}{query}", data=b"x", timeout=10)
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["details"][0]["code"] == "unrouted_language" and "de, en" in body["error"]


def test_websocket_upgrades_pass_through(gateway: tuple[str, Upstream, Upstream]) -> None:
    url, _, _ = gateway
    with connect(url.replace("http://", "ws://") + "/waves/v1/stt/live?language=hi", open_timeout=10) as session:
        session.send("ping")
        assert session.recv(timeout=10) == "multi:ping"
