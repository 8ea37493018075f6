"""Limits of the API tier through Flask's test client on a real Redis: the staged-audio budget (503)
and the per-client concurrency limit (429). Socket-level limits (upload deadline, client gone) need a
real gunicorn and are in tests/e2e/test_limits.py."""

from __future__ import annotations

import time

import redis
from flask.testing import FlaskClient

from hark.jobs import JobStore
from tests.unit.web_helpers import STT, WAV, AppFactory, Background, assert_error, post, wire_response
from web.limits import ClientLimiter

HOOK = "http://127.0.0.1:9/hook"


def test_staging_past_the_budget_is_503_with_retry_after(make_app: AppFactory, live: None, redis_client: redis.Redis,
                                                         deployment: str) -> None:  # fmt: skip
    client: FlaskClient = make_app(staged_audio_budget_bytes=len(WAV) + 1024).test_client()
    first = post(client, webhook_url=HOOK)  # async: its audio stays staged until a worker takes it
    assert first.status_code == 200, first.get_data(as_text=True)

    refused = post(client, webhook_url=HOOK)
    body = assert_error(refused, 503, "retry")
    assert body["details"] == [{"code": "staging_full"}]
    assert refused.headers["Retry-After"].isdigit()
    assert len(list(redis_client.scan_iter(match=f"hark:{deployment}:audio:*"))) == 1

    # The worker takes the first job's audio: its bytes come back and the next upload is accepted.
    worker = JobStore(redis_client, deployment, 600, 600)
    worker.drop_audio(worker.audio_key(first.get_json()["request_id"]))
    assert post(client, webhook_url=HOOK).status_code == 200


# --- concurrent requests per client --------------------------------------------------------------


def _jobs(redis_client: redis.Redis, deployment: str, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = [k.decode().rsplit(":", 1)[1] for k in redis_client.scan_iter(match=f"hark:{deployment}:job:*")]
        if len(keys) >= count:
            return keys
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} jobs were created")


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_one_key_past_its_limit_is_429_others_are_not(make_app: AppFactory, live: None, redis_client: redis.Redis,
                                                      deployment: str) -> None:  # fmt: skip
    app = make_app(api_keys="k-one,k-two", max_concurrent_per_client=2)
    waiting = [Background(lambda: post(app.test_client(), headers=_bearer("k-one"))) for _ in range(2)]
    rids = _jobs(redis_client, deployment, 2)

    client = app.test_client()
    refused = post(client, headers=_bearer("k-one"), webhook_url=HOOK)
    body = assert_error(refused, 429, "concurrent")
    assert body["details"][0]["code"] == "too_many_concurrent_requests"
    assert refused.headers["Retry-After"].isdigit()
    assert "k-one" not in refused.get_data(as_text=True)
    assert post(client, headers=_bearer("k-two"), webhook_url=HOOK).status_code == 200
    assert client.get("/ready").status_code == 200 and client.get("/health").status_code == 200  # exempt
    assert not any(b"k-one" in key for key in redis_client.scan_iter(match=f"hark:{deployment}:inflight:*"))

    store = JobStore(redis_client, deployment, 600, 600)
    for rid in rids:
        store.complete(rid, wire_response(rid, deployment))
    assert all(w.result().status_code == 200 for w in waiting)
    assert post(client, headers=_bearer("k-one"), webhook_url=HOOK).status_code == 200, "slots are given back"


def test_without_auth_the_limit_is_per_client_address(make_app: AppFactory, live: None, redis_client: redis.Redis,
                                                      deployment: str) -> None:  # fmt: skip
    app = make_app(max_concurrent_per_client=1)
    one = {"REMOTE_ADDR": "10.0.0.1"}
    waiting = Background(lambda: app.test_client().post(
        STT, query_string={"model": "pulse", "language": "en"}, data=WAV, environ_base=one,
        content_type="application/octet-stream"))  # fmt: skip
    [rid] = _jobs(redis_client, deployment, 1)
    client = app.test_client()
    query = {"model": "pulse", "language": "en", "webhook_url": HOOK}
    same = client.post(STT, query_string=query, data=WAV, environ_base=one, content_type="application/octet-stream")
    assert_error(same, 429)
    other = client.post(STT, query_string=query, data=WAV, environ_base={"REMOTE_ADDR": "10.0.0.2"},
                        content_type="application/octet-stream")  # fmt: skip
    assert other.status_code == 200
    JobStore(redis_client, deployment, 600, 600).complete(rid, wire_response(rid, deployment))
    assert waiting.result().status_code == 200


def test_a_dead_process_leases_expire(redis_client: redis.Redis, deployment: str) -> None:
    """Tokens of a process that died without releasing free their slots once the lease ends."""
    dead = ClientLimiter(redis_client, deployment, limit=1, lease=1.0)
    assert dead.acquire("key:abc") is not None
    alive = ClientLimiter(redis_client, deployment, limit=1, lease=1.0)
    assert alive.acquire("key:abc") is None
    dead._held.clear()  # the process is gone: nobody renews its lease
    time.sleep(1.2)
    token = alive.acquire("key:abc")
    assert token is not None
    alive.release(token)


def test_leases_of_running_requests_are_renewed(redis_client: redis.Redis, deployment: str) -> None:
    limiter = ClientLimiter(redis_client, deployment, limit=1, lease=1.0)
    token = limiter.acquire("key:abc")
    assert token is not None
    time.sleep(1.5)  # the renewer extends the lease every third of it
    assert ClientLimiter(redis_client, deployment, limit=1, lease=1.0).acquire("key:abc") is None
    limiter.release(token)
    time.sleep(0.5)
    assert limiter._renewer is None, "the renewer stops when no lease is held"
