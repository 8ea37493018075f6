"""hark.settings: defaults, the slot table, validation messages that name the variable to fix."""

from __future__ import annotations

import os

import pytest

from hark.settings import MAX_CHECKPOINTS_PER_WORKER, ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the process environment: start every test from none of Hark's variables."""
    for name in list(os.environ):
        if name.upper().startswith(("HARK_", "MODEL_URL", "MODEL_CACHE_DIR", "REDIS_URL", "XDG_CACHE_HOME")):
            monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.deployment == "default"
    assert settings.model_urls == []
    assert settings.device == "auto"
    assert settings.api_port == 7100
    assert settings.sync_wait_seconds == 300.0
    assert settings.max_upload_bytes == 250 * 1024 * 1024
    assert settings.concurrency_per_checkpoint is None
    assert settings.api_key_list == []
    assert settings.webhook_allowed_list == []
    assert settings.broker_visibility_timeout > settings.job_timeout_seconds
    assert settings.model_cache_dir.name == "checkpoints"


@pytest.mark.parametrize(("count", "slots"), [(1, 128), (2, 64), (3, 48)])
def test_slot_table(count: int, slots: int) -> None:
    assert load_settings().slots_per_checkpoint(count) == slots


@pytest.mark.parametrize("count", [1, 2, 3])
def test_slot_override(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setenv("HARK_CONCURRENCY_PER_CHECKPOINT", "4")
    assert load_settings().slots_per_checkpoint(count) == 4


@pytest.mark.parametrize("count", [0, MAX_CHECKPOINTS_PER_WORKER + 1])
def test_slot_table_rejects_impossible_counts(count: int) -> None:
    with pytest.raises(ConfigError, match="1 to 3 checkpoints"):
        load_settings().slots_per_checkpoint(count)


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_bad_slot_override_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HARK_CONCURRENCY_PER_CHECKPOINT", value)
    with pytest.raises(ConfigError, match="HARK_CONCURRENCY_PER_CHECKPOINT"):
        load_settings()


@pytest.mark.parametrize("name", ["Indic", "has space", "-leading", "under_score", "x" * 41, ""])
def test_bad_deployment_name_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("HARK_DEPLOYMENT", name)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HARK_DEPLOYMENT" in str(caught.value)
    assert "lowercase" in str(caught.value)


@pytest.mark.parametrize("name", ["indic", "a", "eu-2", "t-1a2b3c4d", "x" * 40])
def test_good_deployment_names(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("HARK_DEPLOYMENT", name)
    assert load_settings().deployment == name


def test_model_url_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_URL", " /a , file:///b,, https://x/c.tar.gz ")
    assert load_settings().model_urls == ["/a", "file:///b", "https://x/c.tar.gz"]


@pytest.mark.parametrize(("job", "visibility"), [(10, 10), (60, 30)])
def test_visibility_timeout_must_exceed_the_job_timeout(monkeypatch: pytest.MonkeyPatch, job: int,
                                                        visibility: int) -> None:  # fmt: skip
    monkeypatch.setenv("HARK_JOB_TIMEOUT_SECONDS", str(job))
    monkeypatch.setenv("HARK_VISIBILITY_TIMEOUT_SECONDS", str(visibility))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "HARK_VISIBILITY_TIMEOUT_SECONDS" in str(caught.value)
    assert "HARK_JOB_TIMEOUT_SECONDS" in str(caught.value)


def test_visibility_timeout_explicit_and_derived(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_JOB_TIMEOUT_SECONDS", "10")
    monkeypatch.setenv("HARK_VISIBILITY_TIMEOUT_SECONDS", "12")
    assert load_settings().broker_visibility_timeout == 12
    monkeypatch.delenv("HARK_VISIBILITY_TIMEOUT_SECONDS")
    assert load_settings().broker_visibility_timeout == int(10 * 1.1) + 60


def test_redis_url_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://localhost:6379")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings()


def test_api_keys_either_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_API_KEY", "one")
    assert load_settings().api_key_list == ["one"]
    monkeypatch.setenv("HARK_API_KEYS", "a, b,")
    assert load_settings().api_key_list == ["a", "b"]


def test_webhook_hosts_are_lowercased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_WEBHOOK_ALLOWED_HOSTS", "Hooks.Example.com, *.corp.net,10.0.0.0/8")
    assert load_settings().webhook_allowed_list == ["hooks.example.com", "*.corp.net", "10.0.0.0/8"]


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_DEPLOYMENT", "from-env")
    assert load_settings(deployment="override").deployment == "override"
    assert isinstance(load_settings(), Settings)


def test_upload_limit_has_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_MAX_UPLOAD_BYTES", "10")
    with pytest.raises(ConfigError, match="HARK_MAX_UPLOAD_BYTES"):
        load_settings()
