"""The ``hark.deliver_webhook`` task: call the client's webhook with the job's final answer.

Runs in the worker's webhook child (queue ``hark.<deployment>.webhooks``, no model). The body is
the full response the job-polling endpoint would give (the transcript, or for a failed job
``{"status": "failed", "error", "request_id", "details"}``) plus ``webhook_extra`` when the request
had one. ``POST`` sends it as JSON; ``GET`` sends ``request_id``, ``status``, ``webhook_extra`` and the
whole answer as compact JSON in ``payload`` as query parameters.

The target is re-checked against ``HARK_WEBHOOK_ALLOWED_HOSTS`` right before delivery (DNS may have
changed since the API accepted it), redirects are not followed, and 5xx/429 answers and network
errors are retried with exponential backoff (``HARK_WEBHOOK_RETRIES``). The outcome is recorded in the
job state: ``webhook_status`` (delivered|failed), ``webhook_attempts``, ``webhook_error``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import requests
from pydantic import ValidationError
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from hark.jobs import JobStore
from hark.queues import TASK_DELIVER_WEBHOOK
from hark.schemas import WebhookTarget
from hark.webhook_policy import check_webhook_url
from workers.celery_app import app
from workers.context import current

logger = logging.getLogger(__name__)

USER_AGENT = "hark-webhook/1"
#: Backoff between attempts: 1 s, 2 s, 4 s... capped.
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


class RetryableDelivery(Exception):
    """The receiver answered 5xx/429 or could not be reached; worth another attempt."""


class FailedDelivery(Exception):
    """The receiver refused the call for good (4xx, a redirect) or the target is not allowed."""


@app.task(name=TASK_DELIVER_WEBHOOK, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: Any, request_id: str, webhook: dict[str, Any] | None = None) -> str:
    """Deliver the final answer of `request_id` to its webhook (target from `webhook` or the job state)."""
    context = current()
    return deliver(context.store, request_id, webhook, allowed=context.settings.webhook_allowed_list,
                   retries=context.settings.webhook_retries,
                   timeout=context.settings.webhook_timeout_seconds)  # fmt: skip


def deliver(store: JobStore, request_id: str, webhook: dict[str, Any] | None, *, allowed: list[str],
            retries: int, timeout: float, backoff_first: float = BACKOFF_FIRST_SECONDS,
            session: requests.Session | None = None) -> str:  # fmt: skip
    """Deliver one job's answer; record and return the outcome (``delivered``, ``failed``, ``skipped``).

    Args:
        store: The deployment's job store.
        request_id: The job.
        webhook: The target (a :class:`WebhookTarget` dict), or None to read it from the job state.
        allowed: ``HARK_WEBHOOK_ALLOWED_HOSTS`` entries.
        retries: Extra attempts after the first (``HARK_WEBHOOK_RETRIES``).
        timeout: Seconds per HTTP attempt.
        backoff_first: Wait before the first retry (doubles each time).
        session: HTTP session (tests).
    """
    extra = {"request_id": request_id}
    state = store.get(request_id)
    if state is None:
        logger.warning("webhook not sent: the job is unknown or expired", extra=extra)
        return "skipped"
    if state.get("status") not in ("success", "failed"):
        logger.warning("webhook not sent: the job has not ended (%s)", state.get("status"), extra=extra)
        return "skipped"
    if state.get("webhook_status") == "delivered":
        logger.info("webhook already delivered; skipping the redelivered message", extra=extra)
        return "skipped"
    try:
        target = WebhookTarget.model_validate(webhook or state.get("webhook") or {})
    except ValidationError:
        logger.warning("webhook not sent: the job has no valid webhook target", extra=extra)
        return "skipped"

    body = webhook_body(state, target.extra)
    attempts = 0

    def attempt() -> None:
        nonlocal attempts
        attempts += 1
        check_webhook_url(target.url, allowed)  # ValueError: not allowed (any more)
        _send(session or requests, target, body, timeout)

    started = time.monotonic()
    try:
        for trial in Retrying(
            retry=retry_if_exception_type(RetryableDelivery),
            stop=stop_after_attempt(retries + 1),
            wait=wait_exponential(multiplier=backoff_first, max=BACKOFF_MAX_SECONDS),
            reraise=True,
        ):
            with trial:
                attempt()
    except (RetryableDelivery, FailedDelivery, ValueError, RetryError) as error:
        _record(store, request_id, "failed", attempts, str(error))
        logger.warning("webhook delivery failed after %d attempt(s): %s", attempts, error, extra=extra)
        return "failed"
    _record(store, request_id, "delivered", attempts, None)
    logger.info("webhook delivered in %d attempt(s), %.0f ms", attempts, (time.monotonic() - started) * 1000,
                extra=extra)  # fmt: skip
    return "delivered"


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


def _send(http: Any, target: WebhookTarget, body: dict[str, Any], timeout: float) -> None:
    headers = {"User-Agent": USER_AGENT, "X-Request-ID": str(body.get("request_id", ""))}
    try:
        if target.method == "GET":
            params = {"request_id": body.get("request_id", ""), "status": body.get("status", ""),
                      "payload": json.dumps(body, separators=(",", ":"), ensure_ascii=False)}  # fmt: skip
            if "webhook_extra" in body:
                params["webhook_extra"] = body["webhook_extra"]
            answer = http.get(target.url, params=params, headers=headers, timeout=timeout, allow_redirects=False)
        else:
            answer = http.post(target.url, json=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as error:
        raise RetryableDelivery(f"cannot reach {target.url}: {type(error).__name__}") from None
    status = answer.status_code
    if 200 <= status < 300:
        return
    if status >= 500 or status in (408, 429):
        raise RetryableDelivery(f"{target.url} answered HTTP {status}")
    raise FailedDelivery(f"{target.url} answered HTTP {status}")


def _record(store: JobStore, request_id: str, status: str, attempts: int, error: str | None) -> None:
    """Add the delivery outcome to the job state (keeping its status and expiry)."""
    state = store.get(request_id)
    if state is None:
        return
    state.update(webhook_status=status, webhook_attempts=attempts, webhook_at=time.time())
    if error:
        state["webhook_error"] = error[:500]
    else:
        state.pop("webhook_error", None)
    store.redis.set(store.job_key(request_id), json.dumps(state), keepttl=True)
