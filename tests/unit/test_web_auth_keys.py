"""Named keys through the Flask app on the real test Redis: the keys file and HARK_API_KEYS together,
the key's name on the request and the job record, rotation, WebSocket upgrades with ``?api_key=``,
HARK_METRICS_AUTH, and the access log line that never shows a query key."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Blueprint, Flask, g, jsonify
from gunicorn.config import Config

from hark.api_keys import KeyEntry, hash_key, write_atomically
from tests.unit.web_helpers import AppFactory, assert_error, post
from web.auth import key_ring
from web.gunicorn_conf import HarkGunicornLogger

FILE_KEY = "hark_file-key-for-alice-0123456789abcdefghijklmno"
ENV_KEY = "env-key-for-ci-0123456789"
LIVE = "/waves/v1/stt/live"
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
           "Sec-WebSocket-Version": "13"}  # fmt: skip


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def add_whoami(app: Flask) -> None:
    extra = Blueprint("whoami", __name__)

    @extra.get("/whoami")
    def whoami():  # type: ignore[no-untyped-def]
        return jsonify({"name": g.api_key_name})

    app.register_blueprint(extra)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    write_atomically(path, "# test keys\n" + KeyEntry(name="alice", digest=hash_key(FILE_KEY)).line() + "\n")
    return path


@pytest.fixture
def app(make_app: AppFactory, keys_file: Path) -> Flask:
    app = make_app(api_keys=f"ci={ENV_KEY}", api_keys_file=str(keys_file), sync_wait_seconds=0.2)
    add_whoami(app)
    return app


def test_both_sources_authenticate_and_name_the_request(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/whoami", headers=bearer(FILE_KEY)).get_json() == {"name": "alice"}
    assert client.get("/whoami", headers=bearer(ENV_KEY)).get_json() == {"name": "ci"}
    assert_error(client.get("/whoami", headers=bearer(FILE_KEY + "x")), 401, "invalid API key")
    assert_error(client.get("/whoami", query_string={"api_key": FILE_KEY}), 401, "missing")  # REST: no query keys


def test_the_job_record_names_the_key(app: Flask, live: None) -> None:
    response = post(app.test_client(), headers=bearer(FILE_KEY))
    assert response.status_code == 202, response.get_data(as_text=True)  # no worker answers in 0.2 s
    state = app.extensions["hark"].jobs.get(response.get_json()["request_id"])
    assert state["key_name"] == "alice"  # usage accounting (hark.usage) reads it


def test_a_rotated_file_applies_without_a_restart(app: Flask, keys_file: Path) -> None:
    key_ring(app).interval = 0  # look at the file on every request (the default is once a second)
    client = app.test_client()
    write_atomically(keys_file, KeyEntry(name="bob", digest=hash_key("hark_new-key-for-bob")).line() + "\n")
    assert_error(client.get("/whoami", headers=bearer(FILE_KEY)), 401)
    assert client.get("/whoami", headers=bearer("hark_new-key-for-bob")).get_json() == {"name": "bob"}
    assert client.get("/whoami", headers=bearer(ENV_KEY)).get_json() == {"name": "ci"}


def test_websocket_upgrade_takes_the_key_from_the_query(app: Flask) -> None:
    client = app.test_client()
    wrong = client.get(LIVE, headers=UPGRADE, query_string={"model": "pulse", "language": "en", "api_key": "nope"})
    assert_error(wrong, 401, "invalid API key")
    assert_error(client.get(LIVE, headers=UPGRADE, query_string={"model": "pulse", "language": "en"}), 401)
    # The right key passes authentication: what answers is the next check (no worker is live in this test).
    right = client.get(LIVE, headers=UPGRADE, query_string={"model": "pulse", "language": "en", "api_key": FILE_KEY})
    assert_error(right, 503, "no worker")
    offered = client.get(LIVE, headers={**UPGRADE, "Sec-WebSocket-Protocol": f"bearer, {ENV_KEY}"},
                         query_string={"model": "pulse", "language": "en"})  # fmt: skip
    assert_error(offered, 503, "no worker")


@pytest.mark.parametrize(("overrides", "anonymous"), [
    ({"api_keys": "k-one"}, 401),                                   # the default: a key when keys are required
    ({"api_keys": "k-one", "metrics_auth": "key"}, 401),
    ({"api_keys": "k-one", "metrics_auth": "open"}, 200),
    ({"api_keys": "", "api_host": "127.0.0.1"}, 200),               # no keys on loopback: nothing needs one
])  # fmt: skip
def test_metrics_auth(make_app: AppFactory, overrides: dict[str, str], anonymous: int) -> None:
    app = make_app(**overrides)
    client = app.test_client()
    assert "metrics.metrics" in {rule.endpoint for rule in app.url_map.iter_rules()}
    answer = client.get("/metrics")
    assert answer.status_code == anonymous, answer.get_data(as_text=True)
    if anonymous == 401:
        assert_error(answer, 401)
        assert client.get("/metrics", headers=bearer("k-one")).status_code == 200


def test_the_access_log_names_the_key_and_never_shows_a_query_key(caplog: pytest.LogCaptureFixture) -> None:
    logger = HarkGunicornLogger(Config())
    request = SimpleNamespace(method="GET", path=LIVE, query=f"language=en&api_key={FILE_KEY}",
                              uri=f"{LIVE}?language=en&api_key={FILE_KEY}")  # fmt: skip
    response = SimpleNamespace(status="101 Switching Protocols", headers=[("X-Request-ID", "req_1")])
    environ = {"REMOTE_ADDR": "10.0.0.7", "QUERY_STRING": request.query, "hark.api_key_name": "alice"}
    with caplog.at_level(logging.INFO):
        logger.access(response, request, environ, timedelta(milliseconds=12))
    (record,) = [r for r in caplog.records if r.name == "gunicorn.access"]
    assert record.getMessage() == f"GET {LIVE} 101 12.0 ms client=10.0.0.7 key=alice"
    assert record.key_name == "alice" and FILE_KEY not in caplog.text


def test_the_nginx_access_log_leaves_query_strings_out() -> None:
    """deploy/nginx/hark.conf logs `$uri`, never the URL with its query (a live session's ?api_key=)."""
    text = (Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "hark.conf").read_text(encoding="utf-8")
    directives = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    logs = [d for d in directives if d.startswith("access_log ") and d != "access_log off;"]
    assert logs and all(d.endswith(" hark_no_query;") for d in logs), logs
    start = text.index("log_format hark_no_query")
    fmt = text[start:text.index(";", start)]
    assert "$uri" in fmt and not any(v in fmt for v in ("$request ", '$request"', "$request_uri", "$args", "$query"))
