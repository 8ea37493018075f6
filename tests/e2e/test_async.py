"""Asynchronous paths: webhooks (with retries and an SSRF allow-list), job polling, and the 202
answer when a submit-and-wait request outlives HARK_SYNC_WAIT_SECONDS."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import SHARED_ENV, Deployment
from tests.e2e.helpers import JOBS_PATH, TINY_EN, assert_error, assert_success, poll_job, post_audio, wer
from tests.processes import Launcher

pytestmark = pytest.mark.e2e


@dataclass
class WebhookReceiver:
    """A tiny real HTTP server on 127.0.0.1 that records what it receives."""

    url: str
    received: queue.Queue = field(default_factory=queue.Queue)
    fail_first: int = 0
    """Answer this many requests with 503 before accepting (exercises retries)."""
    attempts: int = 0

    def next(self, timeout: float = 90.0) -> dict[str, Any]:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no webhook call within {timeout:.0f} s ({self.attempts} attempts)") from None


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            receiver.attempts += 1
            if receiver.attempts <= receiver.fail_first:
                self.send_response(503)
                self.end_headers()
                return
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = {"_unparsed": raw.decode("utf-8", "replace")}
            receiver.received.put({"method": self.command, "path": self.path, "body": body,
                                   "headers": dict(self.headers)})  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = do_GET = _handle

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def assert_success_dict(body: dict[str, Any]) -> None:
    assert body["status"] == "success" and isinstance(body["transcription"], str) and body["transcription"]
    assert body["metadata"]["checkpoint"] == TINY_EN


def _accepted(answer: requests.Response) -> str:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "processing", body
    assert isinstance(body["request_id"], str) and body["request_id"]
    assert answer.headers.get("X-Request-ID") == body["request_id"]
    return body["request_id"]


@pytest.mark.timeout(300)
def test_webhook_receives_the_full_result(shared_deployment: Deployment, audio: AudioFactory,
                                          webhook: WebhookReceiver) -> None:  # fmt: skip
    started = time.monotonic()
    answer = post_audio(shared_deployment.url, audio.english(1), language="en", word_timestamps=True,
                        webhook_url=webhook.url, webhook_extra="order-42")  # fmt: skip
    request_id = _accepted(answer)
    assert time.monotonic() - started < 10, "async mode must answer at once"

    call = webhook.next()
    assert call["method"] == "POST" and call["path"] == "/hook"
    payload = call["body"]
    assert isinstance(payload, dict), call
    assert payload["request_id"] == request_id
    assert payload["status"] == "success"
    assert payload["metadata"]["checkpoint"] == TINY_EN
    assert payload["words"], payload
    assert wer(ENGLISH_SENTENCES[1], payload["transcription"]) <= 0.5, payload["transcription"]
    assert payload.get("webhook_extra") == "order-42", f"webhook_extra missing from {sorted(payload)}"
    headers = {key.lower(): value for key, value in call["headers"].items()}
    assert headers["idempotency-key"] == request_id and headers["x-request-id"] == request_id
    assert "x-hark-signature" not in headers, "the shared deployment has no HARK_WEBHOOK_SECRET"
    assert shared_deployment.worker.log_text(limit=None).count("HARK_WEBHOOK_SECRET is empty") == 1

    # The same result stays available to clients that cannot receive webhooks.
    body, _ = poll_job(shared_deployment.url, request_id, timeout=30)
    assert body["status"] == "success" and body["transcription"] == payload["transcription"]


@pytest.mark.timeout(300)
def test_webhook_delivery_is_retried(shared_deployment: Deployment, audio: AudioFactory,
                                     webhook: WebhookReceiver) -> None:  # fmt: skip
    webhook.fail_first = 1
    request_id = _accepted(post_audio(shared_deployment.url, audio.english(1), language="en",
                                      webhook_url=webhook.url))  # fmt: skip
    call = webhook.next(timeout=120)
    assert call["body"]["request_id"] == request_id
    assert webhook.attempts >= 2


@pytest.mark.timeout(300)
def test_webhook_with_get(shared_deployment: Deployment, audio: AudioFactory, webhook: WebhookReceiver) -> None:
    answer = post_audio(shared_deployment.url, audio.english(1), language="en", webhook_url=webhook.url,
                        webhook_method="GET", webhook_extra="x y&z")
    request_id = _accepted(answer)
    call = webhook.next()
    assert call["method"] == "GET"
    path, _, query = call["path"].partition("?")
    params = {key: values[0] for key, values in parse_qs(query).items()}
    assert path == "/hook"
    assert params["request_id"] == request_id and params["status"] == "success"
    assert params["webhook_extra"] == "x y&z"
    payload = json.loads(params["payload"])
    assert payload["request_id"] == request_id and payload["transcription"]


@pytest.mark.parametrize(
    "target",
    ["http://10.1.2.3/hook", "http://example.com/hook", "http://169.254.169.254/latest/meta-data",
     "ftp://127.0.0.1/hook", "not a url", "http://100.64.1.1/hook",
     # 127.0.0.1 is allowed on the shared deployment, but not smuggled past the parser:
     "http://user:pw@127.0.0.1:9/hook", "http://127.0.0.1:9\\@localhost/hook", "http://127.0.0.1:9/hook#x",
     "http://2130706433:9/hook"],
)  # fmt: skip
def test_webhook_to_a_host_not_allowed_is_refused(shared_deployment: Deployment, audio: AudioFactory,
                                                  target: str) -> None:  # fmt: skip
    assert_error(post_audio(shared_deployment.url, audio.english(1), language="en", webhook_url=target), 400,
                 "webhook")  # fmt: skip


@pytest.mark.timeout(300)
def test_job_polling_shows_processing_then_success(shared_deployment: Deployment, audio: AudioFactory,
                                                   webhook: WebhookReceiver) -> None:  # fmt: skip
    request_id = _accepted(post_audio(shared_deployment.url, audio.long_english(20), language="en",
                                      webhook_url=webhook.url))  # fmt: skip
    body, seen = poll_job(shared_deployment.url, request_id, timeout=150, interval=0.05)
    # The wire status stays "processing" until the end; `state` tells queued from running.
    assert seen[0] in ("processing/queued", "processing/processing"), seen
    assert "processing/processing" in seen, f"the job should be seen running before it ends: {seen}"
    assert seen[-1] == "success", seen
    assert body["request_id"] == request_id
    assert_success_dict(body)
    webhook.next()


@pytest.mark.parametrize("request_id", ["req_" + "0" * 24, "req_doesnotexist", "../../etc/passwd"])
def test_unknown_job_is_404(shared_deployment: Deployment, request_id: str) -> None:
    answer = requests.get(f"{shared_deployment.url}{JOBS_PATH}{request_id}", timeout=10)
    assert_error(answer, 404)


@pytest.mark.timeout(300)
def test_sync_wait_shorter_than_the_job_gives_202(shared_deployment: Deployment, hark: Launcher,
                                                  audio: AudioFactory) -> None:  # fmt: skip
    # A second API of the shared deployment (stopped after the test; the shared keys are kept).
    env = {**SHARED_ENV, "HARK_SYNC_WAIT_SECONDS": "0.2", "HARK_API_WORKERS": "1"}
    api = hark.start_api(shared_deployment.name, **env)
    assert api.base_url
    answer = post_audio(api.base_url, audio.long_english(20), language="en")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "processing" and body["request_id"], body
    assert answer.headers.get("X-Request-ID") == body["request_id"]
    final, _ = poll_job(api.base_url, body["request_id"], timeout=150)
    assert final["status"] == "success", final
    assert_success_dict(final)
    # Any API of the deployment can answer for the job.
    again, _ = poll_job(shared_deployment.url, body["request_id"], timeout=10)
    assert again["transcription"] == final["transcription"]


def test_polled_result_has_the_wire_types(shared_deployment: Deployment, audio: AudioFactory,
                                          webhook: WebhookReceiver) -> None:  # fmt: skip
    request_id = _accepted(post_audio(shared_deployment.url, audio.english(1), language="en",
                                      webhook_url=webhook.url))  # fmt: skip
    poll_job(shared_deployment.url, request_id, timeout=120)
    answer = requests.get(f"{shared_deployment.url}{JOBS_PATH}{request_id}", timeout=10)
    assert_success(answer, deployment=shared_deployment.name, checkpoint=TINY_EN, check_header=False)
    webhook.next()
