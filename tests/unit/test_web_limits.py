"""Limits of the API tier through Flask's test client on a real Redis: the staged-audio budget (503)
and the per-client concurrency limit (429). Socket-level limits (upload deadline, client gone) need a
real gunicorn and are in tests/e2e/test_limits.py."""

from __future__ import annotations

import redis
from flask.testing import FlaskClient

from hark.jobs import JobStore
from tests.unit.web_helpers import WAV, AppFactory, assert_error, post

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
