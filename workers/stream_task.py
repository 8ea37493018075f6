"""The ``hark.stream_session`` task: one live session, run where its checkpoint is loaded.

The task arrives on the checkpoint's queue like a batch job and holds one of the checkpoint's slots
(``executor.admit()``, i.e. one of the child's Celery threads) for the whole session, so live sessions
and batch requests share the same capacity. It claims the session in Redis (exactly one owner; a
session the API already gave up on is dropped), says ``ready`` on the session's channel, then loops:

- read the session's Redis Stream (audio frames and the client's ``finalize`` / ``close_stream``, in
  order), decode the frames (:mod:`workers.stream_audio`), feed the speech logic
  (:class:`~workers.stream_transcriber.StreamTranscriber`: VAD, partials, finals), trim what was read;
- publish what the transcriber produced on the session's pub/sub channel;
- renew the owner lease, watch the API's lease (a client or API server that vanished ends the session
  within ``HARK_STREAM_LEASE_SECONDS``), the idle timeout and the session's length.

Decodes run on the checkpoint's inference lanes (shared with batch jobs), never on this thread, so
reading and VAD keep pace with the audio while a decode runs. The session ends with one ``end``
envelope carrying the close code; the Redis keys are dropped whatever happened.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import redis
from celery.exceptions import Reject
from pydantic import BaseModel, ValidationError

from hark import usage
from hark.sessions import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL,
    CLOSE_INVALID_PAYLOAD,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_RESTART,
    ENTRY_ABORT,
    ENTRY_AUDIO,
    ENTRY_CLOSE,
    ENTRY_FINALIZE,
    TASK_STREAM,
    Envelope,
    ErrorMessage,
    SessionStore,
    StreamTask,
    message_envelope,
)
from hark.settings import Settings
from workers import metrics as worker_metrics
from workers.celery_app import app
from workers.context import WorkerContext, current
from workers.executor import SlotsExhausted
from workers.stream_audio import StreamAudioError, make_stream_decoder
from workers.stream_transcriber import StreamTranscriber
from workers.stream_vad import load_vad_model

logger = logging.getLogger(__name__)

#: Longest one read of the session's stream blocks (also the cadence of polling finished decodes).
READ_BLOCK_MS = 40
#: After close_stream: longest wait for the last final before the session is ended anyway.
CLOSE_GRACE_SECONDS = 30.0


class SessionEnded(Exception):
    """The session must stop: `status`/`message` go to the client (when set), then a close with `code`."""

    def __init__(self, code: int, status: str | None = None, message: str | None = None) -> None:
        super().__init__(message or status or str(code))
        self.code = code
        self.status = status
        self.message = message


@app.task(name=TASK_STREAM, bind=True, acks_late=False, ignore_result=True)
def stream_session(self: Any, payload: dict[str, Any]) -> None:
    """Serve one live session (payload: :class:`hark.sessions.StreamTask` as JSON)."""
    context = current()
    outcome = "rejected"  # anything escaping below puts the message back on the queue
    try:
        try:
            task = StreamTask.model_validate(payload)
        except ValidationError as error:
            outcome = "invalid"
            logger.error("invalid live-session payload: %s", error.errors()[:3])
            return
        outcome = run_session(context, task)
    finally:
        checkpoint = context.checkpoint.name if context.checkpoint else None
        worker_metrics.task_done(context.deployment, checkpoint, "stream", outcome)


def run_session(context: WorkerContext, task: StreamTask) -> str:
    """Claim and serve one session; how it ended (``served``, ``dropped``, ``requeued``)."""
    store, executor, checkpoint = context.sessions, context.executor, context.checkpoint
    if store is None or executor is None or checkpoint is None:
        raise RuntimeError("this process serves no checkpoint (is it the webhook child?)")
    sid = task.session_id
    log_extra = {"session_id": sid, "checkpoint": checkpoint.label}
    if time.time() > task.created_at + task.start_timeout + 60:
        logger.info("live session task arrived after its client gave up; dropping it", extra=log_extra)
        return "dropped"
    try:
        with executor.admit():
            if not store.claim(sid, context.worker_id):
                logger.info("live session was abandoned or taken before this worker got it", extra=log_extra)
                return "dropped"
            store.publish(sid, Envelope(kind="ready"))
            logger.info("live session started (%s, %d Hz)", task.params.encoding, task.params.sample_rate,
                        extra=log_extra)  # fmt: skip
            SessionRunner(context, task, store, log_extra).run()
            return "served"
    except SlotsExhausted:
        logger.warning("all slots busy; returning the live session to the queue", extra=log_extra)
        raise Reject("slots exhausted", requeue=True) from None


class SessionRunner:
    """The loop of one claimed session (see the module docstring)."""

    def __init__(self, context: WorkerContext, task: StreamTask, store: SessionStore,
                 log_extra: dict[str, str]) -> None:  # fmt: skip
        assert context.executor is not None and context.engine_decoder is not None
        self.context = context
        self.settings: Settings = context.settings
        self.task = task
        self.sid = task.session_id
        self.store = store
        self.log_extra = log_extra
        self.executor = context.executor
        params = task.params
        self.decoder = make_stream_decoder(params.encoding, params.sample_rate)
        self.transcriber = StreamTranscriber(
            self.sid, params, task.options, context.engine_decoder,
            partial_interval_s=self.settings.stream_partial_interval_ms / 1000,
            max_utterance_s=self.settings.stream_max_utterance_seconds,
            vad_model=load_vad_model() if params.vad else None,
        )  # fmt: skip
        self.last_id = "0"
        self.read_bytes = 0
        self.last_audio = time.monotonic()
        self.last_lease = time.monotonic()
        self.closing_since: float | None = None
        self.messages_sent = 0

    def run(self) -> None:
        code, reason = CLOSE_NORMAL, "done"
        try:
            self._loop()
        except SessionEnded as ended:
            code, reason = ended.code, ended.status or "ended"
            if ended.status and ended.message:
                self._send(ErrorMessage(session_id=self.sid, status=ended.status, message=ended.message))
                logger.warning("live session ended: %s (%s)", ended.message, ended.status, extra=self.log_extra)
        except redis.RedisError as error:
            code, reason = CLOSE_INTERNAL, "unavailable"
            logger.error("live session lost Redis (%s); ending it", error, extra=self.log_extra)
        except Exception as error:
            code, reason = CLOSE_INTERNAL, "internal_error"
            logger.exception("live session failed", extra=self.log_extra)
            self._try_send(ErrorMessage(session_id=self.sid, status="internal_error",
                                        message=f"the worker failed ({type(error).__name__}); open a new session"))
        finally:
            self.decoder.close()
            self.transcriber.cancel()
            self._finish(code, reason)

    def _loop(self) -> None:
        while True:
            entries = self.store.read(self.sid, self.last_id, READ_BLOCK_MS)
            for entry_id, fields in entries:
                self.last_id = entry_id
                self._on_entry(fields)
            if entries:
                self.store.mark_read(self.sid, self.last_id, self.read_bytes)
            self._publish(self.transcriber.poll())
            if self.closing_since is not None and self.transcriber.done:
                return
            self._watch()

    def _on_entry(self, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"k", b"").decode()
        if kind == ENTRY_AUDIO:
            data = fields.get(b"d", b"")
            self.read_bytes += len(data)
            if self.closing_since is not None:
                return  # audio after close_stream is ignored
            self.last_audio = time.monotonic()
            try:
                samples = self.decoder.feed(data)
            except StreamAudioError as error:
                raise SessionEnded(CLOSE_INVALID_PAYLOAD, error.code,
                                   f"{error.message} (declared encoding {self.task.params.encoding} at "
                                   f"{self.task.params.sample_rate} Hz)") from None  # fmt: skip
            self._publish(self.transcriber.feed(samples))
            if self.decoder.input_seconds > self.settings.stream_max_seconds:
                raise SessionEnded(CLOSE_POLICY, "session_too_long",
                                   f"the session passed {self.settings.stream_max_seconds:g} s of audio "
                                   "(HARK_STREAM_MAX_SECONDS); open a new one")  # fmt: skip
        elif kind == ENTRY_FINALIZE and self.closing_since is None:
            self.transcriber.finalize()
        elif kind == ENTRY_CLOSE and self.closing_since is None:
            self._publish(self.transcriber.feed(self.decoder.flush()))
            self.transcriber.close()
            self.closing_since = time.monotonic()
        elif kind == ENTRY_ABORT:
            raise SessionEnded(CLOSE_GOING_AWAY)

    def _watch(self) -> None:
        """Leases, the idle timeout, the close grace and the worker's drain."""
        now = time.monotonic()
        if self.closing_since is not None and now - self.closing_since > CLOSE_GRACE_SECONDS:
            raise SessionEnded(CLOSE_INTERNAL, "internal_error", "the last transcript did not come in time")
        if self.executor.draining:  # sessions do not move between workers: the client reconnects elsewhere
            raise SessionEnded(CLOSE_RESTART, "worker_shutdown",
                               "the worker is shutting down; open a new session to go on")  # fmt: skip
        if self.closing_since is None and now - self.last_audio > self.settings.stream_idle_timeout_seconds:
            raise SessionEnded(CLOSE_GOING_AWAY, "idle_timeout",
                               f"no audio for {self.settings.stream_idle_timeout_seconds:g} s "
                               "(HARK_STREAM_IDLE_TIMEOUT_SECONDS); the session is closed")  # fmt: skip
        if now - self.last_lease < self.settings.stream_lease_seconds / 3:
            return
        self.last_lease = now
        if not self.store.renew_owner(self.sid, self.context.worker_id):
            raise SessionEnded(CLOSE_INTERNAL, "session_lost", "this worker lost its hold on the session")
        if not self.store.client_alive(self.sid):
            logger.info("the client's API server stopped renewing the session; ending it", extra=self.log_extra)
            raise SessionEnded(CLOSE_GOING_AWAY)

    # --- output ---------------------------------------------------------------------------------------
    def _publish(self, messages: list[BaseModel]) -> None:
        for message in messages:
            self._send(message)

    def _send(self, message: BaseModel) -> None:
        self.store.publish(self.sid, message_envelope(message))
        self.messages_sent += 1

    def _try_send(self, message: BaseModel) -> None:
        with contextlib.suppress(redis.RedisError):
            self._send(message)

    def _finish(self, code: int, reason: str) -> None:
        try:
            self.store.publish(self.sid, Envelope(kind="end", code=code, reason=reason))
            self.store.end(self.sid)
            language = self.task.options.language or self.task.params.language  # usage: audio actually decoded
            usage.record(self.store.redis, self.task.deployment, language,
                         self.task.key_name or usage.DEFAULT_KEY_NAME, self.decoder.input_seconds)
        except redis.RedisError as error:
            logger.warning("could not end the session cleanly in Redis: %s", error, extra=self.log_extra)
        logger.info("live session ended (close %d, %.1f s of audio, %d message(s))", code,
                    self.decoder.input_seconds, self.messages_sent, extra=self.log_extra)  # fmt: skip
        if self.context.checkpoint is not None:
            worker_metrics.audio_done(self.context.deployment, self.context.checkpoint.name,
                                      self.task.options.language, self.decoder.input_seconds)  # fmt: skip

