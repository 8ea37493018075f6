"""The ``hark.deliver_webhook`` task: call the client's webhook with the job's final answer.

Runs in the worker's webhook child (queue ``hark.<deployment>.webhooks``, no model). The body is
the full response the job-polling endpoint would give (the transcript, or for a failed job
``{"status": "failed", "error", "request_id", "details"}``) plus ``webhook_extra`` when the request
had one. ``POST`` sends it as JSON; ``GET`` sends ``request_id``, ``status``, ``webhook_extra`` and the
whole answer as compact JSON in ``payload`` as query parameters (after the URL's own query).

One message = one attempt. Each attempt re-checks the target (:mod:`hark.webhook_policy`) and
connects only to the addresses it checked, within a total deadline (``HARK_WEBHOOK_TIMEOUT_SECONDS``,
:mod:`workers.webhook_http`). A 5xx/408/429 answer or a network failure schedules the next attempt
as a new message with a Celery countdown (exponential backoff), so a waiting retry holds no thread;
``HARK_WEBHOOK_RETRIES`` bounds them. Redirects are not followed.

At most one call per request id: an attempt runs under a Redis claim (``SET NX`` with expiry), and a
message for an attempt already made, or for a delivered webhook, is skipped, so a redelivered message
or two racing workers do not call twice. Calls carry ``Idempotency-Key`` and ``X-Request-ID`` (the
request id) and, with ``HARK_WEBHOOK_SECRET``, ``X-Hark-Signature`` (:mod:`hark.webhook_signature`).
The outcome is recorded in the job state: ``webhook_status`` (retrying|delivered|failed),
``webhook_attempts``, ``webhook_error``, ``webhook_next_attempt_at``.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import redis
from celery.utils.time import get_exponential_backoff_interval
from pydantic import ValidationError

from hark.jobs import JobStore
from hark.queues import TASK_DELIVER_WEBHOOK, redis_key, webhook_queue
from hark.schemas import WebhookTarget
from hark.settings import Settings
from hark.webhook_policy import CheckedTarget, Resolver, UnresolvableHost, WebhookRefused, check_webhook_url
from hark.webhook_signature import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from workers import metrics as worker_metrics
from workers.celery_app import app
from workers.context import current
from workers.webhook_http import ExchangeError, TLSOptions, exchange

logger = logging.getLogger(__name__)

USER_AGENT = "hark-webhook/1"
#: Countdown before attempt n+1: 1 s, 2 s, 4 s... capped.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 300.0
#: A claim outlives the attempt it guards by this much (the attempt itself is bounded by the deadline).
CLAIM_SLACK_SECONDS = 30
RETRYABLE_STATUSES = frozenset({408, 429})

#: schedule(next attempt number, countdown seconds): queue that attempt as a new message.
Scheduler = Callable[[int, float], None]


@dataclass(frozen=True)
class DeliveryConfig:
    """What one delivery attempt needs from the settings (and test seams)."""

    allowed: list[str]
    retries: int
    timeout: float
    secret: str = ""
    backoff_first: float = BACKOFF_FIRST_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS
    resolver: Resolver | None = None
    tls: TLSOptions = field(default_factory=TLSOptions)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(allowed=settings.webhook_allowed_list, retries=settings.webhook_retries,
                   timeout=settings.webhook_timeout_seconds, secret=settings.webhook_secret)  # fmt: skip

    def backoff(self, attempt: int) -> float:
        """Countdown after failed attempt number `attempt` (1-based)."""
        return float(get_exponential_backoff_interval(self.backoff_first, attempt - 1, self.backoff_max))


@app.task(name=TASK_DELIVER_WEBHOOK, acks_late=True, ignore_result=True)
def deliver_webhook(request_id: str, webhook: dict[str, Any] | None = None, attempt: int = 1) -> str:
    """Make attempt number `attempt` to deliver `request_id`'s answer (target from `webhook` or the job state)."""
    context = current()

    def schedule(next_attempt: int, countdown: float) -> None:
        deliver_webhook.apply_async(kwargs={"request_id": request_id, "webhook": webhook, "attempt": next_attempt},
                                    countdown=countdown, queue=webhook_queue(context.deployment))  # fmt: skip

    outcome = "error"
    try:
        outcome = deliver(context.store, request_id, webhook, config=DeliveryConfig.from_settings(context.settings),
                          schedule=schedule, attempt=attempt)  # fmt: skip
        return outcome
    finally:
        worker_metrics.task_done(context.deployment, None, "webhook", outcome)


def deliver(store: JobStore, request_id: str, webhook: dict[str, Any] | None, *, config: DeliveryConfig,
            schedule: Scheduler, attempt: int = 1) -> str:  # fmt: skip
    """Make one delivery attempt; record it; schedule the next one when worth it.

    Args:
        store: The deployment's job store.
        request_id: The job.
        webhook: The target (a :class:`WebhookTarget` dict), or None to read it from the job state.
        config: Allow-list, retries, deadline, secret.
        schedule: Queues attempt n+1 with a countdown (the Celery task passes ``apply_async``).
        attempt: This attempt's number (1 for the message sent when the job ended).

    Returns:
        ``delivered``, ``retrying`` (next attempt scheduled), ``failed`` (given up) or ``skipped``
        (nothing to do: unknown or unfinished job, already delivered, attempt already made, or another
        worker is making it).
    """
    extra = {"request_id": request_id}
    if _skip_reason(store.get(request_id), attempt, extra):
        return "skipped"
    claim = _Claim(store.redis, redis_key(store.deployment, "webhook-claim", request_id),
                   int(config.timeout) + CLAIM_SLACK_SECONDS)  # fmt: skip
    if not claim.acquire():
        logger.info("webhook attempt %d skipped: another worker is delivering this request", attempt, extra=extra)
        return "skipped"
    try:
        state = store.get(request_id)
        if _skip_reason(state, attempt, extra) or state is None:
            return "skipped"
        return _attempt(store, request_id, state, webhook, config, schedule, attempt)
    finally:
        claim.release()


def _skip_reason(state: dict[str, Any] | None, attempt: int, extra: dict[str, str]) -> str | None:
    if state is None:
        reason = "the job is unknown or expired"
    elif state.get("status") not in ("success", "failed"):
        reason = f"the job has not ended ({state.get('status')})"
    elif state.get("webhook_status") in ("delivered", "failed"):
        reason = f"the webhook is already {state['webhook_status']} (a redelivered message)"
    elif attempt <= int(state.get("webhook_attempts") or 0):
        reason = f"attempt {attempt} was already made (a redelivered message)"
    else:
        return None
    logger.info("webhook not sent: %s", reason, extra=extra)
    return reason


def _attempt(store: JobStore, request_id: str, state: dict[str, Any], webhook: dict[str, Any] | None,
             config: DeliveryConfig, schedule: Scheduler, attempt: int) -> str:  # fmt: skip
    extra = {"request_id": request_id}
    try:
        target = WebhookTarget.model_validate(webhook or state.get("webhook") or {})
    except ValidationError:
        return _give_up(store, request_id, attempt, "the job has no valid webhook target", extra)
    started = time.monotonic()
    try:
        checked = check_webhook_url(target.url, config.allowed, resolver=config.resolver)
        status = _send(checked, target, webhook_body(state, target.extra), request_id, config)
    except UnresolvableHost as error:
        return _retry_or_give_up(store, request_id, attempt, str(error), config, schedule, extra)
    except WebhookRefused as error:
        return _give_up(store, request_id, attempt, f"target refused: {error}", extra)
    except ExchangeError as error:
        reason = f"{checked.origin}: {error}"
        if not error.retryable:
            return _give_up(store, request_id, attempt, reason, extra)
        return _retry_or_give_up(store, request_id, attempt, reason, config, schedule, extra)
    elapsed_ms = (time.monotonic() - started) * 1000
    if 200 <= status < 300:
        _record(store, request_id, "delivered", attempt, None)
        logger.info("webhook delivered to %s (attempt %d, HTTP %d, %.0f ms)", checked.origin, attempt, status,
                    elapsed_ms, extra=extra)  # fmt: skip
        return "delivered"
    reason = f"{checked.origin} answered HTTP {status}"
    if status >= 500 or status in RETRYABLE_STATUSES:
        return _retry_or_give_up(store, request_id, attempt, reason, config, schedule, extra)
    return _give_up(store, request_id, attempt, reason, extra)


def _retry_or_give_up(store: JobStore, request_id: str, attempt: int, reason: str, config: DeliveryConfig,
                      schedule: Scheduler, extra: dict[str, str]) -> str:  # fmt: skip
    if attempt > config.retries:
        return _give_up(store, request_id, attempt, reason, extra)
    countdown = config.backoff(attempt)
    try:
        # Scheduled before the attempt is recorded: a crash in between re-runs this attempt, not none.
        schedule(attempt + 1, countdown)
    except Exception as error:  # the broker is unreachable: nothing will retry
        return _give_up(store, request_id, attempt, f"{reason}; the retry could not be queued ({error})", extra)
    _record(store, request_id, "retrying", attempt, reason, next_attempt_at=time.time() + countdown)
    logger.warning("webhook attempt %d failed (%s); attempt %d in %.0f s", attempt, reason, attempt + 1, countdown,
                   extra=extra)  # fmt: skip
    return "retrying"


def _give_up(store: JobStore, request_id: str, attempt: int, reason: str, extra: dict[str, str]) -> str:
    _record(store, request_id, "failed", attempt, reason)
    logger.warning("webhook delivery failed after %d attempt(s): %s", attempt, reason, extra=extra)
    return "failed"


def webhook_body(state: dict[str, Any], extra: str | None) -> dict[str, Any]:
    """What the webhook receives: the final answer plus ``webhook_extra``."""
    if state.get("status") == "success":
        body = dict(state.get("result") or {})
    else:
        error = state.get("error") or {}
        body = {
            "status": "failed",
            "request_id": state.get("request_id", ""),
            "error": str(error.get("message") or "transcription failed"),
            "details": [{"code": error.get("code", "failed"), "http_status": error.get("http_status", 500)},
                        *error.get("details", [])],
        }  # fmt: skip
    if extra is not None:
        body["webhook_extra"] = extra
    return body


def _send(checked: CheckedTarget, target: WebhookTarget, body: dict[str, Any], request_id: str,
          config: DeliveryConfig) -> int:  # fmt: skip
    """One signed call; the HTTP status."""
    headers = {"User-Agent": USER_AGENT, "X-Request-ID": request_id, IDEMPOTENCY_HEADER: request_id}
    if target.method == "GET":
        params = {"request_id": body.get("request_id", request_id), "status": body.get("status", ""),
                  "payload": json.dumps(body, separators=(",", ":"), ensure_ascii=False)}  # fmt: skip
        if "webhook_extra" in body:
            params["webhook_extra"] = body["webhook_extra"]
        path, _, own_query = checked.request_target.partition("?")
        query = f"{own_query}&{urlencode(params)}" if own_query else urlencode(params)
        signed, request_target, raw = query.encode("ascii"), f"{path}?{query}", None
    else:
        raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        signed, request_target = raw, checked.request_target
        headers["Content-Type"] = "application/json"
    if config.secret:
        headers[SIGNATURE_HEADER] = sign(config.secret, signed)
    return exchange(checked, target.method, request_target, raw, headers, config.timeout, config.tls)


def _record(store: JobStore, request_id: str, status: str, attempts: int, error: str | None,
            next_attempt_at: float | None = None) -> None:  # fmt: skip
    """Add the delivery outcome to the job state (keeping its status and expiry)."""
    state = store.get(request_id)
    if state is None:
        return
    state.update(webhook_status=status, webhook_attempts=attempts, webhook_at=time.time())
    for key, value in (("webhook_error", error[:500] if error else None), ("webhook_next_attempt_at", next_attempt_at)):
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    store.redis.set(store.job_key(request_id), json.dumps(state), keepttl=True)


class _Claim:
    """A Redis claim on one request's delivery (``SET NX`` with expiry, released only by its holder)."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: int) -> None:
        self.client = client
        self.key = key
        self.ttl = ttl_seconds
        self.token = uuid.uuid4().hex.encode()

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.token, nx=True, ex=self.ttl))

    def release(self) -> None:
        """Delete the key if this claim still holds it (compare-and-delete in a transaction)."""
        with self.client.pipeline() as pipe:
            try:
                pipe.watch(self.key)
                if pipe.get(self.key) == self.token:
                    pipe.multi()
                    pipe.delete(self.key)
                    pipe.execute()
                else:
                    pipe.unwatch()
            except redis.WatchError:
                pass
