"""web.server / web.gunicorn_conf: gunicorn options from settings, the structured access log, the CLI,
and the promise that the API tier never imports the engine."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from hark.settings import load_settings
from web import server
from web.gunicorn_conf import HarkGunicornLogger, capacity, gunicorn_options


def test_options_follow_the_settings() -> None:
    settings = load_settings(deployment="indic", api_host="127.0.0.1", api_port=7123, api_workers=3,
                             api_threads=50, log_level="WARNING")  # fmt: skip
    options = gunicorn_options(settings)
    assert options["bind"] == "127.0.0.1:7123"
    assert options["worker_class"] == "gthread"
    assert options["workers"] == 3 and options["threads"] == 50
    assert options["graceful_timeout"] == 30 and options["timeout"] >= 60
    assert options["max_requests"] == 0 and options["keepalive"] > 0
    assert options["worker_connections"] > options["threads"]
    assert options["loglevel"] == "warning" and options["proc_name"] == "hark-api-indic"
    assert gunicorn_options(settings, host="0.0.0.0", port=9)["bind"] == "0.0.0.0:9"
    assert capacity(settings) == 150


def test_default_capacity_covers_twice_the_slots_of_two_checkpoints() -> None:
    settings = load_settings(api_workers=2, api_threads=160, concurrency_per_checkpoint=None)
    assert capacity(settings) >= 2 * 2 * settings.slots_per_checkpoint(2)


def test_options_are_loaded_into_gunicorn() -> None:
    settings = load_settings(api_host="127.0.0.1", api_port=7124, api_workers=1, api_threads=7)
    app = server.build_api(settings)
    assert app.cfg.worker_class_str == "gthread"
    assert app.cfg.threads == 7 and app.cfg.workers == 1
    assert app.cfg.bind == ["127.0.0.1:7124"]
    assert app.cfg.logger_class is HarkGunicornLogger


def test_access_lines_carry_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings()
    app = server.build_api(settings)
    logger = HarkGunicornLogger(app.cfg)
    response = SimpleNamespace(
        status="413 REQUEST ENTITY TOO LARGE",
        headers=[("Content-Type", "application/json"), ("X-Request-ID", "req_abc")],
    )
    request = SimpleNamespace(method="POST", path="/waves/v1/stt/")
    with caplog.at_level(logging.DEBUG, logger="gunicorn.access"):
        logger.access(response, request, {"REMOTE_ADDR": "10.0.0.9"}, timedelta(milliseconds=12.5))
    [record] = [r for r in caplog.records if r.name == "gunicorn.access"]
    assert record.getMessage() == "POST /waves/v1/stt/ 413 12.5 ms client=10.0.0.9"
    assert record.request_id == "req_abc" and record.levelno == logging.INFO


def test_bad_configuration_exits_2_with_the_variable_named(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("HARK_DEPLOYMENT", "Not Valid!")
    assert server.main(["--port", "7125"]) == 2
    assert "HARK_DEPLOYMENT" in capsys.readouterr().err


def test_cli_rejects_a_bad_port() -> None:
    with pytest.raises(SystemExit):
        server.main(["--port", "not-a-port"])


def test_the_api_tier_never_imports_the_engine() -> None:
    code = (
        "import sys\n"
        "import web.app, web.server, web.stt, web.jobs, web.health, web.openapi, web.audio_probe\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'faster_whisper', 'ctranslate2', 'workers'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"web/ imported {result.stdout.strip()}"


# --- authentication at start ----------------------------------------------------------------------


@pytest.fixture
def no_auth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HARK_API_KEYS", "HARK_API_KEY", "HARK_AUTH", "HARK_API_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_non_loopback_bind_without_keys_exits_2(no_auth_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.main(["--host", "0.0.0.0", "--port", "7126"]) == 2
    err = capsys.readouterr().err
    assert "HARK_API_KEYS" in err and "HARK_AUTH=off" in err


def test_auth_on_without_keys_exits_2_even_on_loopback(no_auth_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_AUTH", "on")
    assert server.main(["--host", "127.0.0.1", "--port", "7127"]) == 2


def test_auth_mode_is_logged_and_no_key_is(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="web.server"):
        assert server.check_auth(load_settings(api_host="0.0.0.0", api_keys="", auth="off"))
        assert server.check_auth(load_settings(api_host="127.0.0.1", api_keys=""))
        assert server.check_auth(load_settings(api_host="0.0.0.0", api_keys="sekrit-key-1"))
    text = caplog.text
    assert "HARK_AUTH=off" in text and "loopback" in text and "1 key(s)" in text
    assert "sekrit" not in text
    assert [r.levelno for r in caplog.records][:2] == [logging.WARNING, logging.WARNING]
