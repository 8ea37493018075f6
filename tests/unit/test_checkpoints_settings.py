"""The model-storage settings: defaults, sizes like 50GB, the MODEL_CHECKSUM syntax, MODEL_VALIDATE."""

from __future__ import annotations

import os

import pytest

from checkpoints.options import FetchOptions
from hark.settings import ConfigError, load_settings, parse_size


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("HARK_", "MODEL_")):
            monkeypatch.delenv(name, raising=False)


def test_defaults_match_the_documentation() -> None:
    settings = load_settings()
    options = FetchOptions.from_settings(settings)
    assert (settings.model_download_workers, settings.model_download_resume, settings.model_download_retries,
            settings.model_download_timeout) == (4, True, 3, 3600.0)  # fmt: skip
    assert settings.model_cache_max_size is None and settings.model_cache_eviction == "lru"
    assert settings.model_validation == "true" and settings.model_checksums == [] and settings.model_paths == []
    assert options == FetchOptions()


@pytest.mark.parametrize(("text", "size"), [
    ("50GB", 50 * 10**9), ("500MB", 500 * 10**6), ("500 mb", 500 * 10**6), ("1.5TiB", int(1.5 * 2**40)),
    ("64Gi", 64 * 2**30), ("1024", 1024), ("2G", 2 * 10**9), ("10KiB", 10240),
])  # fmt: skip
def test_sizes(text: str, size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_size(text) == size
    monkeypatch.setenv("MODEL_CACHE_MAX_SIZE", text)
    assert load_settings().model_cache_max_size == size


@pytest.mark.parametrize("text", ["50 zettabytes", "GB", "-5GB", "1,5GB", "0"])
def test_bad_sizes_name_the_variable(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_CACHE_MAX_SIZE", text)
    with pytest.raises(ConfigError, match="MODEL_CACHE_MAX_SIZE"):
        load_settings()


def test_checksum_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    good = "sha256:" + "ab" * 32
    monkeypatch.setenv("MODEL_CHECKSUM", f"{good.upper().replace('SHA256', 'sha256')}, ,{good}")
    assert load_settings().model_checksums == [good, "", good]
    for bad in ("md5:abc", "sha256:xyz", good + "00", f"{good},{good},{good},{good}"):
        monkeypatch.setenv("MODEL_CHECKSUM", bad)
        with pytest.raises(ConfigError, match="MODEL_CHECKSUM"):
            load_settings()


@pytest.mark.parametrize(("text", "value"), [("true", "true"), ("1", "true"), ("no", "false"), ("FULL", "full")])
def test_validate_modes(text: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_VALIDATE", text)
    assert load_settings().model_validation == value


@pytest.mark.parametrize(("name", "value"), [("MODEL_VALIDATE", "sometimes"), ("MODEL_DOWNLOAD_WORKERS", "0"),
                                             ("MODEL_CACHE_EVICTION", "fifo"), ("MODEL_VERSION", "a b"),
                                             ("MODEL_DOWNLOAD_TIMEOUT", "-1")])  # fmt: skip
def test_bad_values_name_the_variable(name: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_lists_and_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", "/opt/a, /opt/b")
    monkeypatch.setenv("MODEL_VERSION", "1.0.0,")
    monkeypatch.setenv("MODEL_DOWNLOAD_WORKERS", "8")
    monkeypatch.setenv("MODEL_DOWNLOAD_RESUME", "false")
    monkeypatch.setenv("MODEL_CACHE_MAX_SIZE", "500MB")
    monkeypatch.setenv("MODEL_CACHE_EVICTION", "none")
    settings = load_settings()
    assert settings.model_paths == ["/opt/a", "/opt/b"] and settings.model_versions == ["1.0.0", ""]
    options = FetchOptions.from_settings(settings)
    assert (options.workers, options.resume, options.max_cache_bytes, options.eviction) == (8, False, 500 * 10**6,
                                                                                           "none")  # fmt: skip
