"""The ``hark.transcribe`` task: staged audio in, transcript (or an explicit failure) out.

A job that runs longer than ``HARK_JOB_TIMEOUT_SECONDS`` is answered with a ``job_timeout`` failure
(504, and acknowledged) before the broker's visibility timeout could hand it to a second worker.

The task is thin: validate the payload, run :func:`handle_transcription` with the process's
:class:`~workers.context.WorkerContext`, and let it publish the final state in the job store, where
the waiting API request, the job-polling endpoint and the webhook delivery find it. Every accepted
job ends in ``JobStore.complete`` or ``JobStore.fail``; a redelivered job that already ended is skipped.

Failures of the job and failures of the platform are kept apart. A job that cannot be transcribed
(bad audio, too long, engine error) is answered with an explicit failure and acknowledged. A worker
that cannot record the outcome (Redis unreachable after the retries) or is shutting down
(:class:`~workers.executor.ExecutorDraining`) never acknowledges a job it did not answer: it
rejects the message with ``requeue=True`` (a draining worker puts a copy back on the queue instead,
see :func:`_hand_back`), so the broker hands the job out again at once. When Redis itself is down the
reject cannot reach the broker either; the message then stays in kombu's unacknowledged set (in
Redis, which survives a restart or failover with persistence) and comes back after the visibility
timeout. If even that fails, the reaper (:mod:`workers.reaper`) answers ``job_lost`` at the job's
deadline.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from celery.exceptions import Reject
from pydantic import ValidationError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from hark.jobs import FINAL_STATUSES
from hark.queues import TASK_DELIVER_WEBHOOK, TASK_TRANSCRIBE, transcribe_queue, webhook_queue
from hark.schemas import JobFailure, Metadata, TranscribeTask, TranscriptionResponse, Utterance, Word
from hark.settings import Settings
from workers import metrics as worker_metrics
from workers.audio import AudioError, EncodedAudio
from workers.celery_app import app
from workers.context import WorkerContext, current
from workers.executor import ExecutorDraining, SlotsExhausted, SubmissionTimeout
from workers.transcript import Transcript

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _store_retry(settings: Settings) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Retry a job-state write through Redis hiccups for ``HARK_STORE_RETRY_SECONDS``, then give up
    (the task then hands the job back to the queue rather than acknowledging it)."""
    return retry(
        retry=retry_if_exception_type(redis.RedisError),
        stop=stop_after_attempt(8) | stop_after_delay(settings.store_retry_seconds),
        wait=wait_exponential(multiplier=0.2, max=5.0),
        reraise=True,
    )


@app.task(name=TASK_TRANSCRIBE, bind=True, acks_late=True, ignore_result=True)
def transcribe(self: Any, payload: dict[str, Any]) -> None:
    """Transcribe one staged upload (payload: :class:`hark.schemas.TranscribeTask` as JSON)."""
    context = current()
    redelivered = bool((getattr(self.request, "delivery_info", None) or {}).get("redelivered"))
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    outcome = "rejected"  # anything escaping below puts the message back on the queue
    try:
        try:
            task = TranscribeTask.model_validate(payload)
        except ValidationError as error:
            outcome = "invalid"
            _refuse_payload(context, payload, error)
            return
        outcome = handle_transcription(context, task, redelivered=redelivered)
    except (redis.RedisError, WebhookNotQueued) as error:
        # Never acknowledge a job whose outcome is not recorded (or announced): back to the queue.
        logger.error("cannot record the job's outcome (%s: %s); returning it to the queue", type(error).__name__,
                     error, extra={"request_id": str(request_id or "")})  # fmt: skip
        raise Reject(f"infrastructure failure: {type(error).__name__}", requeue=True) from None
    finally:
        checkpoint = context.checkpoint.name if context.checkpoint else None
        worker_metrics.task_done(context.deployment, checkpoint, "batch", outcome)


class WebhookNotQueued(Exception):
    """The job ended but its webhook delivery could not be queued (broker unreachable)."""


def handle_transcription(context: WorkerContext, task: TranscribeTask, *, redelivered: bool = False) -> str:
    """Run one job to its final state.

    Args:
        context: This process's worker state (store, executor, checkpoint).
        task: The validated payload.
        redelivered: The broker says the message was delivered before (for the logs).

    Returns:
        How it ended: ``success``, ``failed``, ``skipped`` (already finished) or ``requeued`` (the
        worker is shutting down; the job is back on its queue).

    Raises:
        Reject: Every slot is taken (the message goes back to the queue).
        redis.RedisError: Redis failed past the retries (the task requeues the message).
        WebhookNotQueued: The job ended but its webhook could not be queued (the task requeues the
            message; the redelivered copy only queues the webhook).
    """
    store, rid = context.store, task.request_id
    log_extra = {"request_id": rid, "checkpoint": context.checkpoint.label if context.checkpoint else task.checkpoint}
    state = store.get(rid)
    if state is not None and state.get("status") in FINAL_STATUSES:
        logger.info("job already answered; skipping the redelivered message", extra=log_extra)
        store.drop_audio(task.audio_key)
        if state.get("webhook") and not state.get("webhook_status"):
            _maybe_send_webhook(context, task, log_extra)  # the first copy may have failed to queue it
        return "skipped"
    executor = context.executor
    if executor is None or context.checkpoint is None:
        raise RuntimeError("this process serves no checkpoint (is it the webhook child?)")
    if task.deployment != context.deployment or task.checkpoint != context.checkpoint.name:
        return _finish_failed(context, task, JobFailure(
            code="misrouted", http_status=500,
            message=f"the job for {task.deployment}/{task.checkpoint} reached a worker of "
                    f"{context.deployment}/{context.checkpoint.name}",
        ), log_extra)  # fmt: skip
    try:
        with executor.admit():
            if not _store_retry(context.settings)(store.mark_processing)(rid, context.worker_id):
                logger.info("job already answered; skipping the redelivered message", extra=log_extra)
                return "skipped"
            logger.info("transcribing%s", " (redelivered)" if redelivered else "", extra=log_extra)
            started = time.perf_counter()
            audio = store.fetch_audio(task.audio_key)
            if audio is None:
                return _finish_failed(context, task, JobFailure(
                    code="audio_expired", http_status=410,
                    message="the uploaded audio is no longer stored (it expired after HARK_AUDIO_TTL_SECONDS "
                            "before a worker could take the job); send the request again",
                ), log_extra)  # fmt: skip
            # The lane decodes the bytes window by window: a request waiting for a lane holds only them.
            submission = executor.submit(EncodedAudio(audio, context.settings.max_audio_seconds), task.options,
                                         timeout=context.settings.job_timeout_seconds)  # fmt: skip
            del audio
            try:
                transcript = submission.result()  # the time budget runs from the lane's start, not the wait
            except AudioError as error:
                return _finish_failed(context, task, JobFailure(code=error.code, message=error.message,
                                                                http_status=400), log_extra)  # fmt: skip
            except SubmissionTimeout:  # the token is cancelled: the engine stops and frees its lane
                return _finish_failed(context, task, JobFailure(
                    code="job_timeout", http_status=504,
                    message=f"the transcription took longer than {context.settings.job_timeout_seconds} s "
                            "(HARK_JOB_TIMEOUT_SECONDS); split the audio or ask the operator to raise the limit",
                ), log_extra)  # fmt: skip
            elapsed = time.perf_counter() - started
    except SlotsExhausted:
        logger.warning("all slots busy; returning the job to the queue", extra=log_extra)
        raise Reject("slots exhausted", requeue=True) from None
    except ExecutorDraining as error:
        logger.warning("worker shutting down (%s); handing the job back to the queue", error, extra=log_extra)
        return _hand_back(context, task, log_extra)
    except (redis.RedisError, Reject, WebhookNotQueued):
        raise  # infrastructure, not the job: the task requeues it
    except Exception as error:
        logger.exception("transcription failed unexpectedly", extra=log_extra)
        return _finish_failed(context, task, JobFailure(
            code="internal_error", http_status=500,
            message=f"the worker failed while transcribing ({type(error).__name__}); the operator can find "
                    f"request {rid} in the worker logs",
        ), log_extra)  # fmt: skip

    response = build_response(task, transcript, elapsed, context.deployment, context.checkpoint.label)
    if not _store_retry(context.settings)(store.complete)(rid, response.wire()):
        logger.warning("the job had already ended (another worker, or the reaper); dropping this transcript",
                       extra=log_extra)  # fmt: skip
        return "skipped"
    store.drop_audio(task.audio_key)
    logger.info("transcribed %.2f s of audio in %.0f ms (%.1fx real time, %d character(s))",
                transcript.duration, elapsed * 1000, response.metadata.rtfx, len(transcript.text),
                extra=log_extra)  # fmt: skip
    worker_metrics.audio_done(context.deployment, context.checkpoint.name, transcript.language, transcript.duration,
                              processing_seconds=elapsed)  # fmt: skip
    _maybe_send_webhook(context, task, log_extra)
    return "success"


def build_response(task: TranscribeTask, transcript: Transcript, elapsed: float, deployment: str,
                   checkpoint_label: str) -> TranscriptionResponse:  # fmt: skip
    """The Pulse answer for a transcript.

    Args:
        task: The job (request id, options, file size).
        transcript: What the engine produced.
        elapsed: Seconds from fetching the audio to the transcript (decode + inference).
        deployment: This deployment's name.
        checkpoint_label: ``name@version`` of the checkpoint that answered.
    """
    words = None
    if task.options.word_timestamps:
        words = [Word(word=w.word, start=w.start, end=w.end, confidence=w.probability) for w in transcript.words]
    utterances = [Utterance(text=s.text, start=round(s.start, 3), end=round(s.end, 3)) for s in transcript.segments]
    seconds = max(elapsed, 1e-6)
    return TranscriptionResponse(
        transcription=transcript.text,
        language=transcript.language,
        request_id=task.request_id,
        words=words,
        utterances=utterances,
        metadata=Metadata(
            duration=round(transcript.duration, 3),
            fileSize=task.file_size,
            processing_time_ms=round(elapsed * 1000, 1),
            rtfx=round(transcript.duration / seconds, 2),
            deployment=deployment,
            checkpoint=checkpoint_label,
        ),
    )


def _hand_back(context: WorkerContext, task: TranscribeTask, log_extra: dict[str, str]) -> str:
    """Put a job this draining worker will not finish back on its queue now; ``requeued``.

    Not ``Reject(requeue=True)``: Celery performs acks and rejects in the consumer's event loop, which
    a warm shutdown has already left, so a reject would reach the broker only once every task of the
    process has ended, i.e. after the grace period. A fresh copy of the message (same task id) is in
    the queue at once; the original is acknowledged as the process exits (if it is killed first, the
    original comes back after the visibility timeout and finds the job answered).

    Raises:
        Reject: The copy could not be sent; the message is rejected with requeue instead.
    """
    with contextlib.suppress(redis.RedisError):
        context.store.mark_queued(task.request_id)  # before the copy: the next worker's mark_processing wins
    try:
        app.send_task(TASK_TRANSCRIBE, kwargs={"payload": task.wire()}, task_id=task.request_id,
                      queue=transcribe_queue(task.deployment, task.checkpoint), ignore_result=True)  # fmt: skip
    except Exception as error:
        logger.error("could not hand the job back (%s); rejecting it with requeue", error, extra=log_extra)
        raise Reject("worker draining", requeue=True) from None
    return "requeued"


def _finish_failed(context: WorkerContext, task: TranscribeTask, failure: JobFailure,
                   log_extra: dict[str, str]) -> str:  # fmt: skip
    level = logging.WARNING if failure.http_status < 500 else logging.ERROR
    logger.log(level, "job failed: %s (%s, HTTP %d)", failure.message, failure.code, failure.http_status,
               extra=log_extra)  # fmt: skip
    if not _store_retry(context.settings)(context.store.fail)(task.request_id, failure):
        logger.warning("the job had already ended; this failure is not recorded", extra=log_extra)
        return "skipped"
    context.store.drop_audio(task.audio_key)
    _maybe_send_webhook(context, task, log_extra)
    return "failed"


def _maybe_send_webhook(context: WorkerContext, task: TranscribeTask, log_extra: dict[str, str]) -> None:
    """Queue the webhook delivery when the request asked for one.

    Raises:
        WebhookNotQueued: The broker refused it (the task requeues the job to try again).
    """
    target = task.webhook.wire() if task.webhook is not None else None
    if target is None:
        state = context.store.get(task.request_id) or {}
        target = state.get("webhook")
    if not target:
        return
    try:
        app.send_task(TASK_DELIVER_WEBHOOK, kwargs={"request_id": task.request_id, "webhook": target},
                      queue=webhook_queue(context.deployment))  # fmt: skip
    except Exception as error:
        logger.exception("could not queue the webhook delivery", extra=log_extra)
        raise WebhookNotQueued(str(error)) from None


def _refuse_payload(context: WorkerContext, payload: Any, error: ValidationError) -> None:
    """A payload that is not a TranscribeTask: fail the job if it names one, else just log."""
    request_id = payload.get("request_id") if isinstance(payload, dict) else None
    logger.error("invalid task payload: %s", error.errors()[:3],
                 extra={"request_id": request_id if isinstance(request_id, str) else ""})  # fmt: skip
    if isinstance(request_id, str) and request_id and not context.store.is_finished(request_id):
        _store_retry(context.settings)(context.store.fail)(request_id, JobFailure(
            code="invalid_task", http_status=500,
            message="the job reached the worker in a form it does not understand (API and worker versions differ?)",
        ))  # fmt: skip
