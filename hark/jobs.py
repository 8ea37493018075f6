"""Job state in Redis: staged audio, job status and results, and the reply list a waiting request blocks on.

Keys (all per deployment, all with a TTL):

- ``hark:<dep>:audio:<rid>``  the uploaded bytes, stored once, deleted after use
- ``hark:<dep>:job:<rid>``    JSON job state (status, checkpoint, result or failure)
- ``hark:<dep>:reply:<rid>``  a list the worker pushes to when the job ends; the API BLPOPs it
- ``hark:<dep>:deadlines``    sorted set of open jobs, scored by the time past which the reaper
  (:mod:`workers.reaper`) declares them lost; an entry leaves the set when its job ends

A list rather than pub/sub: a reply pushed before the API starts waiting is not lost.
Staged audio is accounted against the deployment's byte budget (:mod:`hark.staging`). A job ends
once: the first final state (a worker's answer or the reaper's ``job_lost``) wins, and nothing
overwrites it afterwards, so a client never sees a failure turn into a success or back.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from hark import staging, usage
from hark.queues import redis_key
from hark.schemas import JobFailure, JobStatus

#: Statuses after which a job never changes again.
FINAL_STATUSES = ("success", "failed")
#: WATCH/MULTI attempts of one state change before giving up (only concurrent writers make it retry).
_TRANSITION_ATTEMPTS = 20


class JobStore:
    """Reads and writes the Redis state of one deployment's jobs."""

    def __init__(self, client: redis.Redis, deployment: str, result_ttl: int, audio_ttl: int,
                 audio_budget: int | None = None, deadline: float | None = None) -> None:  # fmt: skip
        """Args:
        client: Redis.
        deployment: The deployment whose keys this store reads and writes.
        result_ttl: Seconds a job's state and result are kept.
        audio_ttl: Seconds staged audio waits for a worker.
        deadline: Seconds after :meth:`create` past which the reaper fails an open job
            (``settings.job_deadline``); None indexes no deadline (tests, tools).
        audio_budget: Bytes of staged audio the deployment may hold (``HARK_STAGED_AUDIO_BUDGET_BYTES``);
            only the API stages audio, so only it passes one; workers just release what they drop.
        """
        self.redis = client
        self.deployment = deployment
        self.result_ttl = result_ttl
        self.audio_ttl = audio_ttl
        self.staging = staging.StagingBudget(client, deployment, audio_budget) if audio_budget else None
        self.deadline = deadline

    # --- keys ---------------------------------------------------------------------------
    def audio_key(self, request_id: str) -> str:
        return redis_key(self.deployment, "audio", request_id)

    def job_key(self, request_id: str) -> str:
        return redis_key(self.deployment, "job", request_id)

    def reply_key(self, request_id: str) -> str:
        return redis_key(self.deployment, "reply", request_id)

    @property
    def deadlines_key(self) -> str:
        return redis_key(self.deployment, "deadlines")

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
        """Record a new queued job and, with a deadline, index it for the reaper."""
        now = time.time()
        state = {"status": "queued", "request_id": request_id, "created_at": now, **fields}
        pipe = self.redis.pipeline()
        pipe.set(self.job_key(request_id), json.dumps(state), ex=self.result_ttl)
        if self.deadline is not None:
            pipe.zadd(self.deadlines_key, {request_id: now + self.deadline})
        pipe.execute()

    def get(self, request_id: str) -> dict[str, Any] | None:
        raw = self.redis.get(self.job_key(request_id))
        return json.loads(raw) if raw is not None else None

    def _transition(self, request_id: str, status: JobStatus, **fields: Any) -> dict[str, Any] | None:
        """Move an open job to `status` atomically (WATCH/MULTI); None if it had already ended.

        A final `status` also wakes the waiting request and takes the job out of the deadline index.

        Raises:
            redis.RedisError: Redis is unreachable or too slow (a lost connection is raised, not
                retried as a concurrent change the way ``Redis.transaction`` would, forever).
        """
        key, final = self.job_key(request_id), status in FINAL_STATUSES
        for _ in range(_TRANSITION_ATTEMPTS):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    state = json.loads(raw) if raw is not None else {"request_id": request_id,
                                                                     "created_at": time.time()}  # fmt: skip
                    if state.get("status") in FINAL_STATUSES:
                        return None
                    state.update(fields, status=status, updated_at=time.time())
                    if status == "processing":
                        state["attempts"] = int(state.get("attempts", 0)) + 1
                    pipe.multi()
                    pipe.set(key, json.dumps(state), ex=self.result_ttl)
                    if final:
                        reply = self.reply_key(request_id)
                        pipe.delete(reply)
                        pipe.rpush(reply, json.dumps({"status": status}))
                        pipe.expire(reply, self.result_ttl)
                        pipe.zrem(self.deadlines_key, request_id)
                    if status == "success":  # in this EXEC: a job's audio is counted exactly once
                        self._count_usage(pipe, state)
                    pipe.execute()
                    return state
                except redis.WatchError as error:
                    cause = error.__context__
                    if isinstance(cause, redis.ConnectionError | redis.TimeoutError):
                        raise cause from None
                    if "occurred while watching" in str(error):
                        raise redis.ConnectionError(str(error)) from None
                    continue  # the job changed between WATCH and EXEC: read it again
        raise redis.WatchError(f"job {request_id} kept changing during {_TRANSITION_ATTEMPTS} attempts")

    def _count_usage(self, pipe: redis.client.Pipeline, state: dict[str, Any]) -> None:
        """Queue the answered job's audio seconds into the usage counters (:mod:`hark.usage`)."""
        result = state.get("result") or {}
        duration = (result.get("metadata") or {}).get("duration")
        if isinstance(duration, int | float) and duration > 0:
            usage.add(pipe, self.deployment, str(result.get("language") or state.get("language") or "unknown"),
                      str(state.get("key_name") or usage.DEFAULT_KEY_NAME), round(duration * 1000))

    def mark_processing(self, request_id: str, worker_id: str) -> bool:
        """Record that `worker_id` took the job (and count the attempt); False if it had already ended."""
        return self._transition(request_id, "processing", worker_id=worker_id) is not None

    def mark_queued(self, request_id: str) -> bool:
        """The job went back to the queue (a worker shutting down); False if it had already ended."""
        return self._transition(request_id, "queued") is not None

    def is_finished(self, request_id: str) -> bool:
        state = self.get(request_id)
        return state is not None and state.get("status") in FINAL_STATUSES

    def complete(self, request_id: str, result: dict[str, Any]) -> bool:
        """Store the transcript and wake the waiting request; False if the job had already ended."""
        return self._transition(request_id, "success", result=result) is not None

    def fail(self, request_id: str, failure: JobFailure) -> bool:
        """Store an explicit failure and wake the waiting request; False if the job had already ended."""
        return self._transition(request_id, "failed", error=failure.wire()) is not None

    # --- deadlines (the reaper) ---------------------------------------------------------
    def overdue(self, now: float | None = None, limit: int = 100) -> list[str]:
        """Request ids whose deadline has passed, oldest first (at most `limit`)."""
        ids = self.redis.zrangebyscore(self.deadlines_key, "-inf", time.time() if now is None else now,
                                       start=0, num=limit)  # fmt: skip
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def set_deadline(self, request_id: str, at: float) -> None:
        """(Re)index a job for the reaper at time `at` (e.g. to retry queueing its webhook)."""
        self.redis.zadd(self.deadlines_key, {request_id: at})

    def forget_deadline(self, request_id: str) -> None:
        self.redis.zrem(self.deadlines_key, request_id)

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
