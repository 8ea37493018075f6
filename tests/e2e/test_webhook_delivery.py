"""Webhook delivery hardening, end to end: a real webhook child (``python -m workers.child webhooks``)
consuming a real Redis queue, real receivers on 127.0.0.1, and ``hark.deliver_webhook`` messages sent
the way the model children send them. No model is loaded, so these tests are quick.

What they pin down: a smuggled host (backslash, userinfo) is never called, also when such a target is
already stored; a trickling receiver cannot hold a delivery past HARK_WEBHOOK_TIMEOUT_SECONDS; a retry
waits in the broker (Celery countdown), not in a thread; calls are signed and carry an idempotency key;
a redelivered message does not call twice.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from hark.broker import celery_settings
from hark.jobs import JobStore
from hark.queues import TASK_DELIVER_WEBHOOK, webhook_queue
from hark.settings import load_settings
from tests.audio import AudioFactory
from tests.e2e.helpers import assert_error, post_audio
from tests.processes import HarkProcess, Launcher
from tests.receivers import Receiver, TrickleServer

pytestmark = pytest.mark.e2e

SECRET = "test-webhook-secret-0123456789"
DEADLINE_SECONDS = 2.0
CHILD_ENV = {
    "HARK_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1,localhost",
    "HARK_WEBHOOK_RETRIES": "5",
    "HARK_WEBHOOK_TIMEOUT_SECONDS": str(DEADLINE_SECONDS),
    "HARK_WEBHOOK_SECRET": SECRET,
}
RESULT = {"status": "success", "transcription": "hello there", "language": "en",
          "metadata": {"duration": 1.0, "checkpoint": "whisper-tiny-en@1.0.0"}}  # fmt: skip


class Hooks:
    """The deployment of one webhook child: creates finished jobs and sends delivery messages."""

    def __init__(self, launcher: Launcher, redis_url: str, concurrency: int = 1) -> None:
        self.launcher = launcher
        self.deployment = launcher.new_deployment("wh")
        self.child: HarkProcess = launcher.start_webhook_child(self.deployment, concurrency, **CHILD_ENV)
        self.store = JobStore(redis.Redis.from_url(redis_url), self.deployment, result_ttl=600, audio_ttl=60)
        # Sent through the deployment's broker settings (its key prefix), as a model child sends it.
        self.producer = Celery("hark-tests", set_as_current=False)
        self.producer.conf.update(task_serializer="json", accept_content=["json"],
                                  broker_connection_retry_on_startup=True,
                                  **celery_settings(load_settings(redis_url=redis_url, deployment=self.deployment)))

    def finished_job(self, url: str, method: str = "POST", extra: str | None = None) -> str:
        """A job that ended with a transcript and asked for a webhook to `url`; its request id."""
        request_id = f"req_{uuid.uuid4().hex[:24]}"
        self.store.create(request_id, webhook={"url": url, "method": method, "extra": extra})
        self.store.complete(request_id, {**RESULT, "request_id": request_id})
        return request_id

    def send(self, request_id: str) -> None:
        """The message a model child sends when the job ends (target read from the job state)."""
        self.producer.send_task(TASK_DELIVER_WEBHOOK, kwargs={"request_id": request_id},
                                queue=webhook_queue(self.deployment))  # fmt: skip

    def outcome(self, request_id: str, timeout: float = 30.0, final: tuple[str, ...] = ("delivered", "failed")
                ) -> dict[str, Any]:  # fmt: skip
        """The job state once its webhook outcome is one of `final`."""
        deadline = time.monotonic() + timeout
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.store.get(request_id) or {}
            if state.get("webhook_status") in final:
                return state
            time.sleep(0.05)
        raise AssertionError(f"no webhook outcome in {final} within {timeout:.0f} s: {state}\n"
                             + self.child.log_text())  # fmt: skip

    def close(self) -> None:
        self.producer.close()
        self.store.redis.close()


@pytest.fixture(scope="module")
def hooks(module_hark: Launcher, redis_url: str) -> Iterator[Hooks]:
    """One webhook child with one thread: a delivery that sleeps would block every other one."""
    box = Hooks(module_hark, redis_url, concurrency=1)
    yield box
    box.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver().start()
    yield box
    box.close()


# --- (a) smuggled hosts -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_api_refuses_smuggled_hosts(hark: Launcher, audio: AudioFactory, receiver: Receiver) -> None:
    # `localhost` is listed, so the old parser let `...\@localhost` through while the client called 127.0.0.1.
    deployment = hark.new_deployment("wh")
    api = hark.start_api(deployment, HARK_WEBHOOK_ALLOWED_HOSTS="localhost,127.0.0.1")
    assert api.base_url
    port = receiver.port
    for target in (f"http://127.0.0.1:{port}\\@localhost/hook", f"http://user:pw@127.0.0.1:{port}/hook",
                   f"http://127.0.0.1:{port}/hook#@localhost", f"http://127.0.0.1:{port}/h\u00f6ok"):  # fmt: skip
        answer = post_audio(api.base_url, audio.english(1), language="en", webhook_url=target)
        body = assert_error(answer, 400, "webhook_url")
        assert body["details"][0]["field"] == "webhook_url", body
    assert receiver.calls == []


@pytest.mark.timeout(120)
def test_stored_smuggled_target_is_never_called(hooks: Hooks, receiver: Receiver) -> None:
    port = receiver.port
    bad = {
        "backslash": f"http://127.0.0.1:{port}\\@localhost/hook",
        "userinfo": f"http://user:secret-pw@127.0.0.1:{port}/hook",
    }
    for kind, url in bad.items():
        request_id = hooks.finished_job(url)
        hooks.send(request_id)
        state = hooks.outcome(request_id)
        assert state["webhook_status"] == "failed", (kind, state)
        assert kind in state["webhook_error"], (kind, state["webhook_error"])
        assert "secret-pw" not in state["webhook_error"]
    time.sleep(0.5)
    assert receiver.calls == [], "a refused target must never be called"
    assert "secret-pw" not in hooks.child.log_text(limit=None)


# --- (c) a total deadline per attempt ------------------------------------------------------------


@pytest.mark.timeout(120)
def test_trickling_receiver_is_cut_at_the_deadline(hooks: Hooks) -> None:
    trickle = TrickleServer(max_seconds=60)
    try:
        request_id = hooks.finished_job(trickle.url())
        hooks.send(request_id)
        held = trickle.wait_closed(timeout=DEADLINE_SECONDS + 30)
        assert held, "the delivery was still connected to the trickling receiver after 30 s"
        assert held[0] <= DEADLINE_SECONDS + 1.5, f"one attempt held the delivery for {held[0]:.1f} s"
        state = hooks.outcome(request_id, final=("retrying", "failed"))
        assert state["webhook_attempts"] == 1 and "deadline" in state["webhook_error"], state
    finally:
        trickle.close()


# --- (d) retries wait in the broker, not in a thread ----------------------------------------------


@pytest.mark.timeout(120)
def test_a_waiting_retry_does_not_hold_the_only_thread(hooks: Hooks) -> None:
    failing = Receiver(status=lambda _n: 503).start()
    healthy = Receiver().start()
    try:
        slow_job = hooks.finished_job(failing.url())
        hooks.send(slow_job)
        # Attempts 1, 2, 3 come 1 s and 2 s apart; the next one waits 4 s.
        calls = failing.wait_calls(3, timeout=30)
        assert len(calls) == 3, f"{len(calls)} attempt(s) seen"
        assert calls[1].at - calls[0].at >= 0.8 and calls[2].at - calls[1].at >= 1.8, "backoff not honoured"

        started = time.monotonic()
        other_job = hooks.finished_job(healthy.url())
        hooks.send(other_job)
        delivered = healthy.wait_calls(1, timeout=15)
        assert delivered, "the other job's webhook did not arrive within 15 s (a retry sleeping in the thread?)"
        waited = delivered[0].at - started
        assert waited < 2.0, f"the other job's webhook waited {waited:.1f} s behind a sleeping retry"
        assert len(failing.calls) == 3, "the other webhook should arrive while the retry waits its countdown"
        assert hooks.outcome(other_job)["webhook_status"] == "delivered"
        state = hooks.store.get(slow_job) or {}
        assert state["webhook_status"] == "retrying" and state["webhook_attempts"] == 3, state

        assert len(failing.wait_calls(4, timeout=15)) >= 4, "the retry must still come after its countdown"
    finally:
        failing.close()
        healthy.close()


# --- (e) signature and idempotency --------------------------------------------------------------


@pytest.mark.timeout(120)
def test_calls_are_signed_and_carry_an_idempotency_key(hooks: Hooks, receiver: Receiver) -> None:
    from hark.webhook_signature import SIGNATURE_HEADER, verify_signature

    post_job = hooks.finished_job(receiver.url(), extra="order-42")
    get_job = hooks.finished_job(receiver.url("/hook?token=abc"), method="GET")
    hooks.send(post_job)
    hooks.send(get_job)
    assert hooks.outcome(post_job)["webhook_status"] == "delivered"
    assert hooks.outcome(get_job)["webhook_status"] == "delivered"
    post, get = sorted(receiver.calls, key=lambda c: c.method != "POST")

    assert post.method == "POST" and json.loads(post.body)["webhook_extra"] == "order-42"
    assert post.headers["Idempotency-Key"] == post_job and post.headers["X-Request-ID"] == post_job
    assert verify_signature(SECRET, post.headers[SIGNATURE_HEADER], post.body)
    assert not verify_signature(SECRET, post.headers[SIGNATURE_HEADER], post.body + b" ")
    assert not verify_signature("another-secret", post.headers[SIGNATURE_HEADER], post.body)

    assert get.method == "GET" and get.path.startswith("/hook?token=abc&")
    query = get.path.partition("?")[2]
    assert get.headers["Idempotency-Key"] == get_job
    assert verify_signature(SECRET, get.headers[SIGNATURE_HEADER], query.encode())
    log = hooks.child.log_text(limit=None)
    assert SECRET not in log and "HARK_WEBHOOK_SECRET is empty" not in log


# --- (f) at most one delivery per request ---------------------------------------------------------


@pytest.mark.timeout(120)
def test_redelivered_message_calls_once(hooks: Hooks, module_hark: Launcher) -> None:
    # A second webhook child of the same deployment: the two messages are taken by two workers at once.
    second = module_hark.start_webhook_child(hooks.deployment, 1, **CHILD_ENV)
    slow = Receiver(delay=1.5).start()
    try:
        request_id = hooks.finished_job(slow.url())
        # Warm the second child up: its first message is taken only once it consumes.
        hooks.send(hooks.finished_job(slow.url()))
        hooks.send(hooks.finished_job(slow.url()))
        slow.wait_calls(2, timeout=30)
        before = len(slow.calls)
        hooks.send(request_id)
        hooks.send(request_id)  # the broker redelivers the same message to another worker
        assert hooks.outcome(request_id)["webhook_status"] == "delivered"
        time.sleep(3.0)  # long enough for a second, racing call to have arrived
        hooks.send(request_id)  # and once more after the delivery
        time.sleep(1.0)
        mine = [c for c in slow.calls[before:] if c.headers.get("X-Request-ID") == request_id]
        assert len(mine) == 1, f"{len(mine)} calls for one request id"
        assert (hooks.store.get(request_id) or {})["webhook_attempts"] == 1
    finally:
        slow.close()
        second.stop()
