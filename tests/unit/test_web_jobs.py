"""Submit-and-wait, async (webhook) mode and job polling through Flask's test client and a real Redis.

The test plays the worker: it finds the job the request created, checks the Celery message on the
checkpoint's queue, then completes or fails the job with `JobStore` and checks the HTTP answer.
"""

from __future__ import annotations

import time

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from hark.jobs import JobStore
from hark.queues import TASK_TRANSCRIBE
from hark.schemas import JobFailure
from tests.unit.web_helpers import (
    JOBS,
    WAV,
    AppFactory,
    Background,
    assert_error,
    post,
    queued_messages,
    wait_for_job,
    wire_response,
)

# --- submit-and-wait, async and job polling ------------------------------------------------------


def test_sync_success(app: Flask, live: None, redis_client: redis.Redis, deployment: str) -> None:
    request = Background(lambda: post(app.test_client(), word_timestamps="true", keywords="Hark:2"))
    rid = wait_for_job(redis_client, deployment)
    assert rid.startswith("req_") and len(rid) == 28

    jobs = JobStore(redis_client, deployment, result_ttl=600, audio_ttl=600)
    state = jobs.get(rid)
    assert state["status"] == "queued" and state["checkpoint"] == "whisper-tiny-en"
    assert state["queue"] == f"hark.{deployment}.whisper-tiny-en" and state["file_size"] == len(WAV)
    assert "webhook" not in state

    [message] = queued_messages(redis_client, deployment, "whisper-tiny-en")
    assert message["headers"]["task"] == TASK_TRANSCRIBE and message["headers"]["id"] == rid
    payload = message["kwargs"]["payload"]
    assert payload["request_id"] == rid and payload["deployment"] == deployment
    assert payload["checkpoint"] == "whisper-tiny-en" and payload["file_size"] == len(WAV)
    assert payload["options"] == {"language": "en", "word_timestamps": True, "keywords": [{"word": "Hark",
                                                                                         "boost": 2.0}]}  # fmt: skip
    assert jobs.fetch_audio(payload["audio_key"]) == WAV, "the audio is staged once, by reference"

    response = wire_response(rid, deployment)
    jobs.complete(rid, response)
    answer = request.result()
    assert answer.status_code == 200
    assert answer.get_json() == response
    assert answer.headers["X-Request-ID"] == rid


def test_multi_language_routes_to_the_multilingual_checkpoint(app: Flask, live: None, redis_client: redis.Redis,
                                                              deployment: str) -> None:  # fmt: skip
    request = Background(lambda: post(app.test_client(), language="multi"))
    rid = wait_for_job(redis_client, deployment)
    [message] = queued_messages(redis_client, deployment, "whisper-base")
    assert message["kwargs"]["payload"]["options"] == {"word_timestamps": False, "keywords": []}
    JobStore(redis_client, deployment, 600, 600).complete(rid, wire_response(rid, deployment))
    assert request.result().status_code == 200


def test_sync_failure_carries_the_workers_status(app: Flask, live: None, redis_client: redis.Redis,
                                                 deployment: str) -> None:  # fmt: skip
    request = Background(lambda: post(app.test_client()))
    rid = wait_for_job(redis_client, deployment)
    failure = JobFailure(code="undecodable_audio", message="audio could not be decoded", http_status=400,
                         details=[{"at_seconds": 1.5}])  # fmt: skip
    JobStore(redis_client, deployment, 600, 600).fail(rid, failure)
    body = assert_error(request.result(), 400, "could not be decoded")
    assert body["request_id"] == rid
    assert body["details"] == [{"code": "undecodable_audio"}, {"at_seconds": 1.5}]


def test_sync_wait_timeout_is_202_then_the_job_can_be_polled(
    make_app: AppFactory, live: None, redis_client: redis.Redis, deployment: str
) -> None:
    client = make_app(sync_wait_seconds=0.3).test_client()
    answer = post(client)
    assert answer.status_code == 202
    body = answer.get_json()
    rid = body["request_id"]
    assert body == {"status": "processing", "request_id": rid}
    assert answer.headers["X-Request-ID"] == rid

    polled = client.get(JOBS + rid)
    assert polled.status_code == 200
    assert polled.get_json() == {"status": "processing", "request_id": rid, "state": "queued"}
    assert polled.headers["X-Request-ID"] == rid

    jobs = JobStore(redis_client, deployment, 600, 600)
    jobs.mark_processing(rid, "w1")
    assert client.get(JOBS + rid).get_json()["state"] == "processing"

    response = wire_response(rid, deployment)
    jobs.complete(rid, response)
    done = client.get(JOBS + rid)
    assert done.status_code == 200 and done.get_json() == response


def test_polling_a_failed_job(make_app: AppFactory, live: None, redis_client: redis.Redis,
                              deployment: str) -> None:  # fmt: skip
    client = make_app(sync_wait_seconds=0.2).test_client()
    rid = post(client).get_json()["request_id"]
    JobStore(redis_client, deployment, 600, 600).fail(rid, JobFailure(code="timeout", message="job timed out",
                                                                     http_status=504))  # fmt: skip
    answer = client.get(JOBS + rid)
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "failed", "request_id": rid, "error": "job timed out",
                                 "details": [{"code": "timeout", "http_status": 504}]}  # fmt: skip


@pytest.mark.parametrize("rid", ["req_" + "0" * 24, "req_doesnotexist0000", "x" * 300])
def test_unknown_job_is_404(client: FlaskClient, rid: str) -> None:
    assert_error(client.get(JOBS + rid), 404, "no job")


def test_async_answers_at_once_and_stores_the_webhook(client: FlaskClient, live: None, redis_client: redis.Redis,
                                                      deployment: str) -> None:  # fmt: skip
    started = time.monotonic()
    answer = post(client, webhook_url="http://localhost:9/cb", webhook_method="GET", webhook_extra="order-42")
    assert time.monotonic() - started < 5
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    rid = body["request_id"]
    assert body == {"status": "processing", "request_id": rid}
    assert answer.headers["X-Request-ID"] == rid
    webhook = {"url": "http://localhost:9/cb", "method": "GET", "extra": "order-42"}
    assert JobStore(redis_client, deployment, 600, 600).get(rid)["webhook"] == webhook
    [message] = queued_messages(redis_client, deployment, "whisper-tiny-en")
    assert message["kwargs"]["payload"]["webhook"] == webhook


def test_pinned_checkpoint(client: FlaskClient, live: None, redis_client: redis.Redis, deployment: str) -> None:
    answer = post(client, model="whisper-base", webhook_url="http://127.0.0.1/h")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert len(queued_messages(redis_client, deployment, "whisper-base")) == 1


def test_broker_unavailable_fails_the_job_with_503(app: Flask, client: FlaskClient, live: None,
                                                   monkeypatch: pytest.MonkeyPatch, redis_client: redis.Redis,
                                                   deployment: str) -> None:  # fmt: skip
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("broker down")

    monkeypatch.setattr(app.extensions["hark"].celery, "send_task", refuse)
    body = assert_error(post(client), 503, "queue")
    state = JobStore(redis_client, deployment, 600, 600).get(body["request_id"])
    assert state["status"] == "failed"
    assert not list(redis_client.scan_iter(match=f"hark:{deployment}:audio:*")), "staged audio must be dropped"
