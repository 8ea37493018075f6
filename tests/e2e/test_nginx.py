"""deploy/nginx/hark.conf: valid for `nginx -t`, and in front of a real API (one thread) it keeps slow
uploads away from the API: stalled clients wait at nginx while other requests are served."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.processes import HarkProcess, Launcher, free_port, nginx_command, wait_until_healthy
from tests.unit.web_helpers import TINY_EN, WAV, announce

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")]

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "hark.conf"


def test_the_shipped_config_is_valid(tmp_path: Path) -> None:
    result = subprocess.run([*nginx_command(CONF, tmp_path, ""), "-t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def proxied(hark: Launcher, tmp_path: Path) -> Iterator[tuple[str, HarkProcess]]:
    """An API with ONE thread behind the shipped nginx config (ports rewritten); returns nginx's URL."""
    name = hark.new_deployment("nginx")
    announce(hark.redis, name, TINY_EN, ttl=600)
    api = hark.start_api(name, HARK_API_WORKERS=1, HARK_API_THREADS=1, HARK_SYNC_WAIT_SECONDS=5)
    assert api.base_url
    port = free_port()
    text = CONF.read_text(encoding="utf-8")
    for old, new in (("server 127.0.0.1:7100;", f"server {api.base_url.removeprefix('http://')};"),
                     ("listen 8080;", f"listen 127.0.0.1:{port};"),
                     ("access_log /var/log/nginx/access.log", f"access_log {tmp_path / 'access.log'}"),
                     ("http {", f"http {{\n    access_log off;\n    client_body_temp_path {tmp_path / 'body'};")):
        assert old in text, old
        text = text.replace(old, new, 1)
    conf = tmp_path / "nginx.conf"
    conf.write_text(text, encoding="utf-8")
    nginx = subprocess.Popen(nginx_command(conf, tmp_path, "daemon off;"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, nginx, tmp_path / "logs" / "error.log", interval=0.2)
        yield url, api
    finally:
        nginx.terminate()
        try:
            nginx.wait(timeout=10)
        except subprocess.TimeoutExpired:
            nginx.kill()


def test_stalled_uploads_wait_at_nginx_not_in_api_threads(proxied: tuple[str, HarkProcess]) -> None:
    url, _api = proxied
    port = int(url.rsplit(":", 1)[1])
    stalled = []
    for _ in range(3):  # three times the API's threads
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /waves/v1/stt/?model=pulse&language=en HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\nRIFF")  # fmt: skip
        stalled.append(sock)
    try:
        time.sleep(0.5)
        started = time.monotonic()
        answer = requests.post(f"{url}/waves/v1/stt/", params={"model": "pulse", "language": "xx"}, data=WAV,
                               headers={"Content-Type": "application/octet-stream"}, timeout=10)  # fmt: skip
        assert answer.status_code == 400 and "xx" in answer.json()["error"], answer.text
        assert requests.get(f"{url}/ready", timeout=5).status_code == 200
        assert time.monotonic() - started < 5
    finally:
        for sock in stalled:
            sock.close()


def test_a_sync_request_is_proxied_with_its_202(proxied: tuple[str, HarkProcess]) -> None:
    """The body reaches the API whole; the sync wait (5 s here) ends in 202 well within proxy_read_timeout."""
    url, _api = proxied
    answer = requests.post(f"{url}/waves/v1/stt/", params={"model": "pulse", "language": "en"}, data=WAV,
                           headers={"Content-Type": "application/octet-stream"}, timeout=30)  # fmt: skip
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "processing"
