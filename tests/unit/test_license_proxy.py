"""Usage accounting on real Redis (exact under concurrency) and the license proxy's endpoints."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable

import pytest
import redis
from flask.testing import FlaskClient

from hark import usage
from hark.jobs import JobStore
from hark.license import issue, new_private_key, public_key_text
from hark.settings import load_settings
from license_proxy.app import create_app

NOW = 1_800_000_000.0  # 2027-01-15
SIGNER = new_private_key()
PUBLIC = public_key_text(SIGNER.public_key())


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def proxy(redis_url: str, key: str, clock: Callable[[], float], token: str = "") -> FlaskClient:
    settings = load_settings(redis_url=redis_url, license_key=key, license_public_keys=PUBLIC,
                             license_proxy_token=token)  # fmt: skip
    return create_app(settings, redis.Redis.from_url(redis_url), clock).test_client()


def _mine(rows: list[dict], deployment: str) -> list[dict]:
    return [r for r in rows if r["deployment"] == deployment]


def _add_in_process(redis_url: str, deployment: str, times: int) -> None:
    client = redis.Redis.from_url(redis_url)
    for _ in range(times):
        usage.record(client, deployment, "en", "proc", 0.001, timestamp=NOW)


def test_usage_is_exact_under_concurrent_threads_and_processes(redis_url: str, redis_client: redis.Redis,
                                                               deployment: str) -> None:  # fmt: skip
    def add_in_thread() -> None:
        client = redis.Redis.from_url(redis_url)
        for _ in range(150):
            usage.record(client, deployment, "en", "thread", 0.123, timestamp=NOW)

    threads = [threading.Thread(target=add_in_thread) for _ in range(8)]
    processes = [multiprocessing.get_context("fork").Process(target=_add_in_process, args=(redis_url, deployment, 200))
                 for _ in range(3)]  # fmt: skip
    for worker in [*threads, *processes]:
        worker.start()
    for worker in [*threads, *processes]:
        worker.join(30)
    assert all(p.exitcode == 0 for p in processes)
    month = {r.key_name: r.milliseconds for r in usage.month_rows(redis_client, "2027-01")
             if r.deployment == deployment}  # fmt: skip
    assert month == {"thread": 8 * 150 * 123, "proc": 3 * 200 * 1}
    total = {r.key_name: r.milliseconds for r in usage.total_rows(redis_client) if r.deployment == deployment}
    assert total == month


def test_a_job_is_counted_once_when_it_is_answered(redis_client: redis.Redis, deployment: str) -> None:
    store = JobStore(redis_client, deployment, result_ttl=60, audio_ttl=60)
    store.create("req_" + "a" * 24, language="multi", key_name="team-a")
    result = {"language": "de", "metadata": {"duration": 12.3456}}
    assert store.complete("req_" + "a" * 24, result)
    assert not store.complete("req_" + "a" * 24, result)  # a redelivered copy: not counted again
    store.create("req_" + "b" * 24, language="en")  # no key name: "default"; a failure counts nothing
    store.complete("req_" + "b" * 24, {"language": "en", "metadata": {"duration": 1.0}})
    rows = {(r.language, r.key_name): r.milliseconds for r in usage.total_rows(redis_client)
            if r.deployment == deployment}  # fmt: skip
    assert rows == {("de", "team-a"): 12346, ("en", "default"): 1000}


def test_usage_endpoint_reports_month_and_total_and_needs_the_token(redis_url: str, redis_client: redis.Redis,
                                                                    deployment: str) -> None:  # fmt: skip
    usage.record(redis_client, deployment, "hi", "k1", 90.5, timestamp=NOW)
    usage.record(redis_client, deployment, "en", "k1", 10, timestamp=NOW - 40 * 86400)  # the month before
    client = proxy(redis_url, issue(SIGNER, customer="Acme", expires_at=int(NOW) + 86400), Clock(), token="s3cret")
    assert client.get("/usage").status_code == 401
    assert client.get("/usage", headers={"Authorization": "Bearer wrong"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    body = client.get("/usage", headers=auth).get_json()
    assert body["month"] == "2027-01"
    assert _mine(body["month_usage"], deployment) == [
        {"deployment": deployment, "language": "hi", "key_name": "k1", "audio_seconds": 90.5}]
    assert {(r["language"], r["audio_seconds"]) for r in _mine(body["total_usage"], deployment)} == {("hi", 90.5),
                                                                                                  ("en", 10.0)}
    december = client.get("/usage?month=2026-12", headers=auth).get_json()
    assert _mine(december["month_usage"], deployment)[0]["audio_seconds"] == 10.0
    bad = client.get("/usage?month=12-2026", headers=auth)
    assert bad.status_code == 400 and bad.get_json()["details"][0]["code"] == "invalid_month"

    metrics = client.get("/metrics").get_data(as_text=True)
    assert (f'hark_usage_audio_seconds_total{{deployment="{deployment}",key_name="k1",language="hi"}} 90.5'
            in metrics)  # fmt: skip


def test_license_endpoint_statuses(redis_url: str, redis_client: redis.Redis, deployment: str) -> None:
    clock = Clock()
    key = issue(SIGNER, customer="Acme", expires_at=int(NOW) + 86400, deployments=[deployment], languages=["en"],
                audio_hours_per_month=1000.0, max_concurrent_streams=2)  # fmt: skip
    client = proxy(redis_url, key, clock)
    body = client.get(f"/v1/license?deployment={deployment}").get_json()
    assert body["status"] == "valid" and body["customer"] == "Acme" and body["languages"] == ["en"]
    assert body["deployments"] == [deployment] and body["limits"]["max_concurrent_streams"] == 2
    assert body["expires_at"] == "2027-01-16T08:00:00Z"
    other = client.get("/v1/license?deployment=other-pack").get_json()
    assert other["status"] == "invalid" and other["code"] == "deployment_not_licensed"
    assert "other-pack" in other["reason"]

    clock.now = NOW + 86401  # expires while the proxy runs
    expired = client.get(f"/v1/license?deployment={deployment}").get_json()
    assert expired["status"] == "expired" and "2027-01-16T08:00:00Z" in expired["reason"]

    tampered = proxy(redis_url, key[:-2] + ("AA" if key[-2:] != "AA" else "BA"), Clock()).get("/v1/license").get_json()
    assert tampered["status"] == "invalid" and tampered["code"] == "bad_signature"
    missing = proxy(redis_url, "", Clock()).get("/v1/license").get_json()
    assert missing["status"] == "invalid" and "LICENSE_KEY" in missing["reason"]
    assert proxy(redis_url, "", Clock()).get("/health").get_json() == {"status": "ok"}


def test_audio_hours_limit_counts_every_deployment_this_month(redis_url: str, redis_client: redis.Redis,
                                                              deployment: str) -> None:  # fmt: skip
    month_key = usage.month_key("2031-05")
    redis_client.delete(month_key)
    clock = Clock(1_936_000_000.0)  # 2031-05-08
    assert usage.month_of(clock.now) == "2031-05"
    client = proxy(redis_url, issue(SIGNER, customer="Acme", expires_at=int(clock.now) + 86400,
                                    audio_hours_per_month=1.0), clock)  # fmt: skip
    usage.record(redis_client, deployment, "en", "a", 1800, timestamp=clock.now)
    assert client.get("/v1/license").get_json()["status"] == "valid"
    usage.record(redis_client, deployment + "-2", "hi", "b", 1800, timestamp=clock.now)
    over = client.get("/v1/license").get_json()
    assert over["status"] == "over_limit" and over["code"] == "audio_hours" and over["month_audio_seconds"] == 3600
    redis_client.delete(month_key)


@pytest.mark.parametrize("path", ["/nope", "/v1/license?deployment=" + "x" * 80])
def test_proxy_errors_are_json(redis_url: str, path: str) -> None:
    answer = proxy(redis_url, "", Clock()).get(path)
    assert answer.status_code in (400, 404)
    assert set(answer.get_json()) == {"error", "request_id", "details"}
