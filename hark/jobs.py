"""Job state in Redis: staged audio, job status and results, and the reply list a waiting request blocks on.

Keys (all per deployment, all with a TTL):

- ``hark:<dep>:audio:<rid>``  the uploaded bytes, stored once, deleted after use
- ``hark:<dep>:job:<rid>``    JSON job state (status, checkpoint, result or failure)
- ``hark:<dep>:reply:<rid>``  a list the worker pushes to when the job ends; the API BLPOPs it

A list rather than pub/sub: a reply pushed before the API starts waiting is not lost.
Staged audio is accounted against the deployment's byte budget (:mod:`hark.staging`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from hark import staging
from hark.queues import redis_key
from hark.schemas import JobFailure, JobStatus


class JobStore:
    """Reads and writes the Redis state of one deployment's jobs."""

    def __init__(self, client: redis.Redis, deployment: str, result_ttl: int, audio_ttl: int,
                 audio_budget: int | None = None) -> None:  # fmt: skip
        self.redis = client
        self.deployment = deployment
        self.result_ttl = result_ttl
        self.audio_ttl = audio_ttl
        # Only the API stages audio, with HARK_STAGED_AUDIO_BUDGET_BYTES; workers just release it.
        self.staging = staging.StagingBudget(client, deployment, audio_budget) if audio_budget else None

    # --- keys ---------------------------------------------------------------------------
    def audio_key(self, request_id: str) -> str:
        return redis_key(self.deployment, "audio", request_id)

    def job_key(self, request_id: str) -> str:
        return redis_key(self.deployment, "job", request_id)

    def reply_key(self, request_id: str) -> str:
        return redis_key(self.deployment, "reply", request_id)

    # --- audio --------------------------------------------------------------------------
    def stage_audio(self, request_id: str, audio: bytes) -> str:
        """Store the upload once; raises :class:`hark.staging.StagingFull` past the budget."""
        key = self.audio_key(request_id)
        if self.staging is None:
            self.redis.set(key, audio, ex=self.audio_ttl)
            return key
        self.staging.reserve(key, len(audio), self.audio_ttl)
        try:
            self.redis.set(key, audio, ex=self.audio_ttl)
        except BaseException:
            self.staging.release(key)
            raise
        return key

    def fetch_audio(self, audio_key: str) -> bytes | None:
        data = self.redis.get(audio_key)
        return bytes(data) if data is not None else None

    def drop_audio(self, audio_key: str) -> None:
        self.redis.delete(audio_key)
        staging.release(self.redis, self.deployment, audio_key)

    # --- job state ----------------------------------------------------------------------
    def create(self, request_id: str, **fields: Any) -> None:
        state = {"status": "queued", "request_id": request_id, "created_at": time.time(), **fields}
        self.redis.set(self.job_key(request_id), json.dumps(state), ex=self.result_ttl)

    def get(self, request_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.job_key(request_id))
        return json.loads(raw) if raw is not None else None

    def _update(self, request_id: str, status: JobStatus, **fields: Any) -> dict[str, Any]:
        state = self.get(request_id) or {"request_id": request_id, "created_at": time.time()}
        state.update(fields, status=status, updated_at=time.time())
        self.redis.set(self.job_key(request_id), json.dumps(state), ex=self.result_ttl)
        return state

    def mark_processing(self, request_id: str, worker_id: str) -> None:
        self._update(request_id, "processing", worker_id=worker_id)

    def is_finished(self, request_id: str) -> bool:
        state = self.get(request_id)
        return state is not None and state.get("status") in ("success", "failed")

    def complete(self, request_id: str, result: dict[str, Any]) -> None:
        """Store the transcript and wake the waiting request."""
        self._finish(request_id, "success", result=result)

    def fail(self, request_id: str, failure: JobFailure) -> None:
        """Store an explicit failure and wake the waiting request."""
        self._finish(request_id, "failed", error=failure.wire())

    def _finish(self, request_id: str, status: JobStatus, **fields: Any) -> None:
        state = self._update(request_id, status, **fields)
        reply = self.reply_key(request_id)
        pipe = self.redis.pipeline()
        pipe.delete(reply)
        pipe.rpush(reply, json.dumps({"status": state["status"]}))
        pipe.expire(reply, self.result_ttl)
        pipe.execute()

    def wait(self, request_id: str, timeout: float) -> dict[str, Any] | None:
        """Block until the job ends or `timeout` passes; the final state, or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.get(request_id)
            if state is not None and state.get("status") in ("success", "failed"):
                return state
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            # Short slices keep the deadline honest and stay below any client socket timeout.
            popped = self.redis.blpop([self.reply_key(request_id)], timeout=min(remaining, 2.0))
            if popped is not None:
                # Put the marker back so another waiter (e.g. a retried request) also wakes.
                self.redis.rpush(self.reply_key(request_id), popped[1])
                self.redis.expire(self.reply_key(request_id), self.result_ttl)
