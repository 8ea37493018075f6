"""The API's license gate: a real license proxy over HTTP, the API app on real Redis, a controllable clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from hark.license import issue, new_private_key, public_key_text
from hark.license_streams import StreamQuota
from hark.settings import load_settings
from license_proxy.app import create_app as create_proxy
from tests.processes import free_port
from tests.unit.web_helpers import AppFactory, assert_error, post
from web.errors import ApiError
from web.license_gate import LAST_KEY, LicenseGate

NOW = 1_800_000_000.0  # 2027-01-15
DAY = 86400
GRACE = 3600.0
SIGNER = new_private_key()
PUBLIC = public_key_text(SIGNER.public_key())
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Proxy:
    """`license_proxy` served over real HTTP from a thread; stop() and start() again on the same port."""

    def __init__(self, redis_url: str, key: str, clock: Clock) -> None:
        settings = load_settings(redis_url=redis_url, license_key=key, license_public_keys=PUBLIC)
        self.app = create_proxy(settings, redis.Redis.from_url(redis_url), clock)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: BaseWSGIServer | None = None
        self.start()

    def start(self) -> None:
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def proxy_for(redis_url: str, clock: Clock) -> Iterator:
    started: list[Proxy] = []

    def start(**fields: object) -> Proxy:
        values: dict[str, object] = {"customer": "Acme", "expires_at": int(NOW) + 30 * DAY, **fields}
        started.append(Proxy(redis_url, issue(SIGNER, **values), clock))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()


def gated(make_app: AppFactory, url: str, clock: Clock, **overrides: object) -> tuple[Flask, LicenseGate]:
    """The API app as `hark api` builds it with API_BASE_URL set, then driven by the test's clock."""
    app = make_app(api_base_url=url, license_grace_seconds=GRACE, license_check_seconds=300, sync_wait_seconds=0.05,
                   **overrides)  # fmt: skip
    gate: LicenseGate = app.extensions["hark_license"]
    gate.stop()  # the test drives the checks
    gate.clock, gate.confirmed, gate.down_since = clock, None, None
    gate.check_now()
    return app, gate


def served(app: Flask, language: str = "en") -> None:
    answer = post(app.test_client(), language=language)
    assert answer.status_code == 202, answer.get_data(as_text=True)  # accepted and queued (no worker answers)


def refused(app: Flask, status: int, code: str, *mentions: str, language: str = "en") -> dict:
    body = assert_error(post(app.test_client(), language=language), status, *mentions)
    assert body["details"][0]["code"] == code
    return body


def test_grace_while_the_proxy_is_down_then_503_then_serving_again(
    make_app: AppFactory, live: None, proxy_for, clock: Clock, redis_client: redis.Redis, deployment: str
) -> None:
    proxy = proxy_for()
    app, gate = gated(make_app, proxy.url, clock)
    served(app)

    proxy.stop()
    clock.now += 1
    assert not gate.check_now()
    served(app)  # 1 s after the last confirmation: within the grace period
    clock.now += GRACE - 10
    gate.check_now()
    served(app)

    clock.now += 20  # the grace period has run out
    gate.check_now()
    body = refused(app, 503, "license_unverifiable", proxy.url, "HARK_LICENSE_GRACE_SECONDS")
    assert body["details"][0]["proxy_url"] == proxy.url and body["details"][0]["unconfirmed_seconds"] == GRACE + 11
    client = app.test_client()
    assert client.get("/health").status_code == 200  # probes are never blocked
    assert client.get("/ready").status_code == 200
    assert client.get("/console").status_code == 200
    assert client.get("/openapi.json").status_code == 200

    proxy.start()
    assert gate.check_now()
    served(app)


def test_a_restarted_api_with_the_proxy_down_serves_on_the_answer_cached_in_redis(
    make_app: AppFactory, live: None, proxy_for, clock: Clock, redis_client: redis.Redis, deployment: str
) -> None:
    proxy = proxy_for()
    gated(make_app, proxy.url, clock)
    assert redis_client.hget(LAST_KEY, deployment) is not None
    proxy.stop()
    clock.now += 600
    restarted, gate = gated(make_app, proxy.url, clock)  # the check at start fails
    assert gate.down_since is not None
    gate.load_cached()
    served(restarted)
    clock.now += GRACE
    refused(restarted, 503, "license_unverifiable", "last confirmed")
    fresh, _ = gated(make_app, "http://127.0.0.1:9", clock)  # never confirmed by any proxy: no grace
    redis_client.hdel(LAST_KEY, deployment)
    fresh.extensions["hark_license"].confirmed = None
    refused(fresh, 503, "license_unverifiable", "never confirmed")
    redis_client.hdel(LAST_KEY, deployment)


def test_expired_tampered_and_unlicensed_answers_402_at_once(
    make_app: AppFactory, live: None, proxy_for, clock: Clock, redis_client: redis.Redis, deployment: str
) -> None:
    proxy = proxy_for(expires_at=int(NOW) + 600, languages=["en", "hi"], deployments=[deployment])
    app, gate = gated(make_app, proxy.url, clock)
    served(app)
    refused(app, 402, "license_language", "'de'", language="de")
    refused(app, 402, "license_language", "detection", language="multi")

    proxy.stop()  # a cached valid answer whose date passes is refused, proxy or not
    clock.now += 601
    assert not gate.check_now()
    refused(app, 402, "license_expired", "expired on 2027-01-15T08:10:00Z")
    proxy.start()  # and the proxy says so too
    assert gate.check_now() and gate.confirmed is not None and gate.confirmed.answer["status"] == "expired"
    refused(app, 402, "license_expired", "expired on 2027-01-15T08:10:00Z")

    other = proxy_for(deployments=["someone-else"])
    refused(gated(make_app, other.url, clock)[0], 402, "license_deployment", deployment)
    key = issue(SIGNER, customer="Acme", expires_at=int(NOW) + DAY)
    bad = Proxy(make_app.redis_url, key[:-4] + ("AAAA" if key[-4:] != "AAAA" else "BBBB"), clock)
    try:
        refused(gated(make_app, bad.url, clock)[0], 402, "license_invalid", "signature")
    finally:
        bad.stop()


def test_websocket_upgrades_are_refused_before_the_upgrade_with_json(
    make_app: AppFactory, live: None, proxy_for, clock: Clock, deployment: str
) -> None:
    proxy = proxy_for(languages=["en"])
    app, _ = gated(make_app, proxy.url, clock)
    answer = app.test_client().get("/waves/v1/stt/live?language=hi", headers=UPGRADE)
    body = assert_error(answer, 402, "'hi'")
    assert body["details"][0]["code"] == "license_language"


def test_max_concurrent_streams_across_deployments(
    make_app: AppFactory, proxy_for, clock: Clock, redis_client: redis.Redis, deployment: str
) -> None:
    proxy = proxy_for(max_concurrent_streams=2)
    _, gate = gated(make_app, proxy.url, clock)
    redis_client.delete("hark:license:streams")
    other = StreamQuota(redis_client, lease_seconds=30)
    assert other.acquire("other-pack:s_1", 2) == 1  # a session of another deployment
    with gate.stream_place("s_a"):
        with pytest.raises(ApiError) as refusal, gate.stream_place("s_b"):
            pass
        assert refusal.value.status == 429 and refusal.value.details[0]["code"] == "license_streams"
        gate._renew_streams()
    other.release("other-pack:s_1")
    with gate.stream_place("s_b"), gate.stream_place("s_c"):
        assert other.open_count() == 2
    assert other.open_count() == 0
    short = StreamQuota(redis_client, lease_seconds=0.05)  # a crashed API's session frees its place
    assert short.acquire("x:s_dead", 1) == 1
    threading.Event().wait(0.1)
    assert short.acquire("x:s_new", 1) == 1
    redis_client.delete("hark:license:streams")


def test_licensing_is_off_without_api_base_url(make_app: AppFactory, live: None) -> None:
    app = make_app(sync_wait_seconds=0.05)
    assert "hark_license" not in app.extensions
    served(app)
