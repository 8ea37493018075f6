"""Shared pieces of the web tests: test audio, an app factory on a real Redis, request helpers, and a
stand-in for the worker (the tests complete or fail jobs themselves with `JobStore`)."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import threading
import time
import wave
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from hark import registry
from hark.broker import queue_key
from hark.queues import transcribe_queue
from hark.schemas import CheckpointInfo, InstanceRecord, Metadata, TranscriptionResponse
from hark.settings import load_settings
from web.app import create_app

STT = "/waves/v1/stt/"
LEGACY = "/waves/v1/pulse/get_text"
JOBS = "/waves/v1/stt/jobs/"
TINY_EN = CheckpointInfo(name="whisper-tiny-en", version="1.0.0", languages=["en"], multilingual=False)
BASE = CheckpointInfo(name="whisper-base", version="1.0.0", languages=["en", "de", "fr", "hi"], multilingual=True)
MAX_UPLOAD = 64 * 1024
MAX_AUDIO_SECONDS = 1.0


def make_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    samples = b"".join(struct.pack("<h", int(4000 * math.sin(i / 8))) for i in range(int(seconds * rate)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples)
    return buffer.getvalue()


WAV = make_wav()


def announce(redis_client: redis.Redis, deployment: str, *checkpoints: CheckpointInfo, worker: str = "w1",
             slots: int = 4, ttl: float = 30.0) -> None:  # fmt: skip
    now = time.time()
    for checkpoint in checkpoints:
        record = InstanceRecord(deployment=deployment, worker_id=worker, host="test-host", pid=4242,
                                queue=transcribe_queue(deployment, checkpoint.name), checkpoint=checkpoint,
                                slots=slots, in_flight=1, started_at=now, heartbeat_at=now)  # fmt: skip
        registry.announce(redis_client, record, ttl)


def post(client: FlaskClient, data: bytes = WAV, path: str = STT, headers: dict[str, str] | None = None,
         **params: str | None) -> TestResponse:  # fmt: skip
    query = {"model": "pulse", "language": "en", **params}
    query = {key: value for key, value in query.items() if value is not None}
    return client.post(path, query_string=query, data=data, headers=headers or {},
                       content_type="application/octet-stream")  # fmt: skip


def assert_error(response: TestResponse, status: int, *mentions: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    body = response.get_json()
    assert set(body) == {"error", "request_id", "details"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert body["request_id"].startswith("req_") and len(body["request_id"]) == 28
    assert isinstance(body["details"], list)
    assert response.headers["X-Request-ID"] == body["request_id"]
    for mention in mentions:
        assert mention.lower() in body["error"].lower(), body["error"]
    return body


def wire_response(request_id: str, deployment: str) -> dict[str, Any]:
    return TranscriptionResponse(
        transcription="hello world", language="en", request_id=request_id,
        metadata=Metadata(duration=0.5, file_size=len(WAV), processing_time_ms=12.0, rtfx=40.0,
                          deployment=deployment, checkpoint=TINY_EN.label),
    ).wire()  # fmt: skip


def wait_for_job(redis_client: redis.Redis, deployment: str, timeout: float = 10.0) -> str:
    """The request id of the first job created in `deployment` (the test plays the worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        keys = list(redis_client.scan_iter(match=f"hark:{deployment}:job:*"))
        if keys:
            return keys[0].decode().rsplit(":", 1)[1]
        time.sleep(0.02)
    raise AssertionError("no job was created")


class Background:
    """Run one request in a thread, so the test can answer for the worker meanwhile."""

    def __init__(self, call: Callable[[], TestResponse]) -> None:
        self.response: TestResponse | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call: Callable[[], TestResponse]) -> None:
        try:
            self.response = call()
        except BaseException as error:
            self.error = error

    def result(self, timeout: float = 15.0) -> TestResponse:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the request did not finish"
        if self.error is not None:
            raise self.error
        assert self.response is not None
        return self.response


def queued_messages(redis_client: redis.Redis, deployment: str, checkpoint: str) -> list[dict[str, Any]]:
    """The Celery messages waiting on a transcribe queue (kombu's Redis list, base64 JSON bodies).

    Waits up to 5 s for the first one: the API creates the job just before it sends the task.
    """
    key = queue_key(deployment, transcribe_queue(deployment, checkpoint))
    deadline = time.monotonic() + 5
    while not redis_client.llen(key) and time.monotonic() < deadline:
        time.sleep(0.02)
    raw = redis_client.lrange(key, 0, -1)
    messages = []
    for item in raw:
        message = json.loads(item)
        body = json.loads(base64.b64decode(message["body"]))
        messages.append({"headers": message["headers"], "args": body[0], "kwargs": body[1]})
    return messages


class AppFactory:
    """Builds apps for one test deployment (small limits, webhooks to 127.0.0.1/localhost) and closes them."""

    def __init__(self, redis_url: str, deployment: str) -> None:
        self.redis_url = redis_url
        self.deployment = deployment
        self.apps: list[Flask] = []

    def __call__(self, **overrides: Any) -> Flask:
        values: dict[str, Any] = {"redis_url": self.redis_url, "deployment": self.deployment, "api_keys": "",
                                  "max_upload_bytes": MAX_UPLOAD, "max_audio_seconds": MAX_AUDIO_SECONDS,
                                  "sync_wait_seconds": 10, "webhook_allowed_hosts": "127.0.0.1,localhost",
                                  "api_threads": 8, **overrides}  # fmt: skip
        app = create_app(load_settings(**values))
        app.testing = True
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            app.extensions["hark"].redis.connection_pool.disconnect()
