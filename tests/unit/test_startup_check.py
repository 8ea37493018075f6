"""The API's start-up check (web.startup_check) on the real test Redis with announced registry records,
and the real `hark api` entry refusing a wrong HARK_DEPLOYMENT with exit status 2."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pytest import LogCaptureFixture

from hark.schemas import CheckpointInfo
from hark.settings import load_settings
from tests.processes import flush_deployment, free_port, new_deployment_name
from tests.unit.web_helpers import BASE, TINY_EN, announce
from web.startup_check import check_workers

HINDI = CheckpointInfo(name="whisper-hi", version="1.0.0", languages=["hi"], multilingual=False)
ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Time that moves only when the check sleeps, so a 60 s wait takes no real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0
        self.on_sleep: list = []

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
        for action in self.on_sleep:
            action(self.sleeps)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def other(redis_client: redis.Redis) -> Iterator[str]:
    """A second deployment on the same Redis; its keys are deleted afterwards."""
    name = new_deployment_name("o")
    yield name
    flush_deployment(redis_client, name)


def _check(redis_url: str, redis_client: redis.Redis, deployment: str, clock: FakeClock | None = None,
           **env: object) -> bool:  # fmt: skip
    settings = load_settings(redis_url=redis_url, deployment=deployment, **env)
    clock = clock or FakeClock()
    return check_workers(settings, redis_client, sleep=clock.sleep, clock=clock)


def test_own_workers_serving_the_expected_languages_start(
    redis_url: str, redis_client: redis.Redis, deployment: str, caplog: LogCaptureFixture
) -> None:
    announce(redis_client, deployment, TINY_EN, BASE)
    with caplog.at_level(logging.INFO):
        assert _check(redis_url, redis_client, deployment, expect_languages="en,de")
    assert "serve de, en, fr, hi" in caplog.text


def test_missing_languages_exit_naming_them_and_what_is_served(
    redis_url: str, redis_client: redis.Redis, deployment: str, caplog: LogCaptureFixture
) -> None:
    announce(redis_client, deployment, TINY_EN)
    clock = FakeClock()
    assert not _check(redis_url, redis_client, deployment, clock, expect_languages="en,hi,ta",
                      expect_workers_seconds=5)  # fmt: skip
    assert clock.now >= 5  # it waited for more workers before deciding
    assert "do not serve hi, ta" in caplog.text and "they serve: en" in caplog.text


def test_a_worker_arriving_during_the_wait_is_enough(redis_url: str, redis_client: redis.Redis,
                                                     deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN)
    clock = FakeClock()
    clock.on_sleep.append(lambda n: n == 4 and announce(redis_client, deployment, HINDI, worker="w2"))
    assert _check(redis_url, redis_client, deployment, clock, expect_languages="en,hi")
    assert clock.sleeps == 4


def test_wrong_deployment_names_the_ones_with_workers(
    redis_url: str, redis_client: redis.Redis, deployment: str, other: str, caplog: LogCaptureFixture
) -> None:
    announce(redis_client, other, TINY_EN, BASE)
    # Strict (the operator asked for the check): exit after the wait, naming HARK_DEPLOYMENT and `other`.
    assert not _check(redis_url, redis_client, deployment, expect_workers_seconds=3)
    message = caplog.text
    assert f"HARK_DEPLOYMENT={deployment!r}" in message and other in message and "Is HARK_DEPLOYMENT right?" in message
    assert "de, en, fr, hi" in message
    # Not asked for (hark run, tests): one look and a warning, the API starts.
    caplog.clear()
    clock = FakeClock()
    assert _check(redis_url, redis_client, deployment, clock)
    assert clock.sleeps == 0 and "Is HARK_DEPLOYMENT right?" in caplog.text


def test_nothing_at_all_warns_unless_languages_are_expected(redis_url: str, deployment: str,
                                                            caplog: LogCaptureFixture) -> None:  # fmt: skip
    empty = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")  # a database of the test Redis no test uses
    empty.flushdb()
    try:
        assert _check(redis_url, empty, deployment)
        assert "no worker of deployment" in caplog.text
        clock = FakeClock()
        assert not _check(redis_url, empty, deployment, clock, expect_languages="en")
        assert clock.now >= 60  # the default wait when languages are expected
        assert "no worker of any deployment" in caplog.text and "HARK_EXPECT_LANGUAGES" in caplog.text
    finally:
        empty.close()


def test_bad_expected_languages_are_a_configuration_error() -> None:
    from hark.settings import ConfigError

    with pytest.raises(ConfigError, match="HARK_EXPECT_LANGUAGES"):
        load_settings(expect_languages="en,english")


def test_the_real_api_entry_exits_2_for_a_wrong_deployment(redis_url: str, redis_client: redis.Redis,
                                                            deployment: str, other: str) -> None:  # fmt: skip
    announce(redis_client, other, TINY_EN)
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": redis_url, "HARK_DEPLOYMENT": deployment,
           "HARK_API_HOST": "127.0.0.1", "HARK_EXPECT_LANGUAGES": "en", "HARK_EXPECT_WORKERS_SECONDS": "1"}  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "hark.cli", "api", "--port", str(free_port())], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"HARK_DEPLOYMENT={deployment!r}" in result.stderr and other in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_known_deployment_with_workers_down_starts_with_a_warning(
    redis_url: str, redis_client: redis.Redis, deployment: str, other: str, caplog: LogCaptureFixture
) -> None:
    from hark import registry

    announce(redis_client, other, TINY_EN)
    announce(redis_client, deployment, TINY_EN, BASE)
    for checkpoint in (TINY_EN, BASE):  # its workers stopped: live no more, still in the day's catalog
        registry.withdraw(redis_client, deployment, "w1", checkpoint.name)
    clock = FakeClock()
    assert _check(redis_url, redis_client, deployment, clock, expect_languages="en,de", expect_workers_seconds=2)
    assert clock.now >= 2 and "no live worker of deployment" in caplog.text and "whisper-base@1.0.0" in caplog.text
    assert not _check(redis_url, redis_client, deployment, expect_languages="en,ta", expect_workers_seconds=1)
    assert "do not cover ta" in caplog.text
