"""The reaper: jobs still open past their deadline end as an explicit ``job_lost`` failure.

Every job the API accepts is indexed with a deadline (``HARK_JOB_DEADLINE_SECONDS`` after acceptance;
:class:`hark.jobs.JobStore`). Normally a worker answers long before and the entry disappears. When
everything else failed (a worker lost with its message, a broker that lost the message, a bug), the
reaper answers instead: the job fails with ``job_lost`` (HTTP 504: the answer did not come in time, and
sending the request again may succeed), its staged audio is dropped and its webhook is queued. So no
accepted request is left without an answer.

It runs as a thread in every worker's webhook child; a Redis lock per deployment makes one reaper
act at a time. A job a worker finishes at the same moment keeps the worker's answer: a job ends once
(:meth:`JobStore.fail` does nothing to a job that already ended).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from hark.jobs import FINAL_STATUSES, JobStore
from hark.queues import redis_key
from hark.schemas import JobFailure

logger = logging.getLogger(__name__)

#: Jobs handled per pass (the rest wait for the next pass, a few seconds later).
BATCH = 200

SendWebhook = Callable[[str, dict[str, Any]], None]


def lost_failure(deadline_seconds: float) -> JobFailure:
    """The failure a reaped job ends with."""
    return JobFailure(
        code="job_lost", http_status=504,
        message=f"the job did not end within {deadline_seconds:.0f} s of being accepted (HARK_JOB_DEADLINE_SECONDS): "
                "the worker running it was lost and it could not be run again; send the request again",
    )  # fmt: skip


class Reaper:
    """One deployment's reaper: :meth:`run_once` is one pass, :meth:`start` runs passes in a thread."""

    def __init__(self, store: JobStore, send_webhook: SendWebhook, *, interval: float,
                 deadline_seconds: float) -> None:  # fmt: skip
        """Args:
        store: The deployment's job store.
        send_webhook: Queues the delivery task: ``send_webhook(request_id, target)``; raises on failure.
        interval: Seconds between passes (``HARK_REAPER_INTERVAL_SECONDS``).
        deadline_seconds: ``settings.job_deadline``, for the failure message.
        """
        self.store = store
        self.send_webhook = send_webhook
        self.interval = interval
        self.deadline_seconds = deadline_seconds
        self.lock_key = redis_key(store.deployment, "reaper", "lock")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> int:
        """Reap the overdue jobs if no other reaper of the deployment is at it; how many were failed."""
        lock = self.store.redis.lock(self.lock_key, timeout=max(30.0, 4 * self.interval), blocking=False)
        if not lock.acquire(blocking=False):
            return 0
        try:
            reaped = 0
            for request_id in self.store.overdue(now, limit=BATCH):
                reaped += self._reap(request_id)
            return reaped
        finally:
            # A lock that expired during a very slow pass is simply taken again by the next one.
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()

    def _reap(self, request_id: str) -> int:
        extra = {"request_id": request_id}
        state = self.store.get(request_id)
        if state is None:  # its state expired: nobody can ask for it any more
            self.store.forget_deadline(request_id)
            return 0
        reaped = 0
        if state.get("status") not in FINAL_STATUSES:
            if not self.store.fail(request_id, lost_failure(self.deadline_seconds)):
                return 0  # a worker answered meanwhile; its _finish cleared the entry
            self.store.drop_audio(self.store.audio_key(request_id))
            logger.error("job lost: still %s past its deadline; answered job_lost (504)", state.get("status"),
                         extra=extra)  # fmt: skip
            reaped = 1
            state = self.store.get(request_id) or state
        target = state.get("webhook")
        if target and not state.get("webhook_status"):
            try:
                self.send_webhook(request_id, target)
            except Exception as error:
                # Keep the entry (fail() removed it): the next pass queues the webhook again.
                self.store.set_deadline(request_id, time.time() + self.interval)
                logger.warning("could not queue the webhook of a lost job (%s); retrying next pass", error,
                               extra=extra)  # fmt: skip
                return reaped
        self.store.forget_deadline(request_id)
        return reaped

    # --- thread -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Run passes every `interval` seconds in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="hark-reaper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
                failures = 0
            except redis.RedisError as error:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    logger.warning("reaper pass failed (%d in a row): %s", failures, error)
            except Exception:
                logger.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
