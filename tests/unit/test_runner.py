"""hark.runner (`hark run`): loopback by default, refuses an exposed API without keys, never prints a key."""

from __future__ import annotations

import pytest

from hark import runner
from hark.settings import load_settings

SECRET = "sekrit-key-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HARK_API_KEYS", "HARK_API_KEY", "HARK_AUTH", "HARK_API_HOST", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def test_banner_shows_a_placeholder_never_the_key() -> None:
    text = runner.banner(load_settings(api_keys=f"{SECRET},other-key-42"), "http://127.0.0.1:7100", "x")
    assert SECRET not in text and "other-key-42" not in text
    assert 'Authorization: Bearer $HARK_API_KEY' in text


def test_banner_without_auth_has_no_header() -> None:
    text = runner.banner(load_settings(api_keys="", api_host="127.0.0.1"), "http://127.0.0.1:7100", "x")
    assert "Authorization" not in text


def test_run_binds_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = runner.run_settings()
    assert settings is not None and settings.api_host == "127.0.0.1"
    monkeypatch.setenv("HARK_API_HOST", "127.0.0.2")
    settings = runner.run_settings()
    assert settings is not None and settings.api_host == "127.0.0.2"


def test_run_refuses_an_exposed_api_without_keys(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.setenv("HARK_API_HOST", "0.0.0.0")
    assert runner.main([]) == 2
    assert "HARK_AUTH=off" in capsys.readouterr().err
    monkeypatch.setenv("HARK_AUTH", "off")
    assert runner.run_settings() is not None
