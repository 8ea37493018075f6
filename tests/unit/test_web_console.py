"""The web console's page and files: public, served by the API itself, under a strict CSP, with no inline
script, no third-party URL and no way for server text to become HTML."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.web_helpers import AppFactory
from web.console import content_security_policy

STATIC = Path(__file__).resolve().parents[2] / "web" / "static" / "console"
FILES = ("index.html", "console.js", "pcm.js", "capture-worklet.js", "console.css")


@pytest.mark.parametrize("path", ["/console", "/console/"])
def test_the_page_needs_no_key_and_carries_the_security_headers(make_app: AppFactory, path: str) -> None:
    client = make_app(api_keys="k-one").test_client()
    response = client.get(path, headers={"Host": "hark.example:7100"})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert b'id="mic-start"' in response.data
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self' ws://hark.example:7100 wss://hark.example:7100;" in csp
    assert "unsafe" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "microphone=(self)" in response.headers["Permissions-Policy"]


@pytest.mark.parametrize("name, mimetype", [("console.js", "text/javascript"), ("pcm.js", "text/javascript"),
                                            ("capture-worklet.js", "text/javascript"), ("console.css", "text/css")])
def test_static_files_are_public(make_app: AppFactory, name: str, mimetype: str) -> None:
    client = make_app(api_keys="k-one").test_client()
    response = client.get(f"/console/static/{name}")
    assert response.status_code == 200, response.data[:200]
    assert response.mimetype == mimetype
    assert response.data == (STATIC / name).read_bytes()
    assert "Content-Security-Policy" in response.headers
    assert client.get("/console/static/../auth.py").status_code == 404


def test_api_endpoints_still_need_the_key(make_app: AppFactory) -> None:
    client = make_app(api_keys="k-one").test_client()
    assert client.post("/waves/v1/stt/?model=pulse&language=en", data=b"x").status_code == 401
    assert client.get("/console/anything-else").status_code == 401


def test_a_hostile_host_header_is_not_echoed_into_the_policy() -> None:
    assert "connect-src 'self';" in content_security_policy("evil.example; script-src *")
    assert "connect-src 'self';" in content_security_policy(None)
    assert "ws://[::1]:7100" in content_security_policy("[::1]:7100")


def test_no_inline_script_no_handlers_no_third_party_urls() -> None:
    html = (STATIC / "index.html").read_text()
    for script in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S):
        assert script.strip() == "", "inline script: the CSP forbids it"
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler attribute"
    assert "style=" not in html, "inline style: the CSP forbids it"
    for name in FILES:
        text = (STATIC / name).read_text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{name} names another host"
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, name
