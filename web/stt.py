"""``POST /waves/v1/stt/`` and the legacy ``POST /waves/v1/pulse/get_text``: submit audio, wait for the text.

Order of the checks: declared size (413) → query parameters (400) → webhook target (400) → body
read with a hard cap (413, chunked too) and a deadline (408, web.client_socket) → empty body (400)
→ audio probe (400) → routing from the live registry (400 / 503). Bad input is a 400 whatever the
workers' state, so clients do not retry it as they would a 503. Then the audio is staged once in
Redis (503 past the staged-audio budget), the job created, and the task sent by name to
``hark.<deployment>.<checkpoint>``. Synchronous requests wait for the
job's end (200 / the failure's status / 202 past HARK_SYNC_WAIT_SECONDS); asynchronous requests
(``webhook_url``) get ``{"status": "processing"}`` at once. A sync request whose client closed the
connection stops waiting (its job keeps running).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from hark import registry, routing
from hark.queues import TASK_TRANSCRIBE, transcribe_queue
from hark.schemas import JobFailure, TranscribeTask, TranscriptionOptions
from hark.staging import StagingFull
from hark.webhook_policy import check_webhook_url
from web.audio_probe import AudioRejected, probe_audio
from web.client_socket import client_gone, read_body
from web.errors import ApiError, current_request_id, error_response
from web.license_gate import key_name
from web.metrics import note_route
from web.params import ParamError, SttParams, parse_stt_params
from web.services import Services, services

log = logging.getLogger(__name__)

bp = Blueprint("stt", __name__)

STT_PATH = "/waves/v1/stt/"
LEGACY_PATH = "/waves/v1/pulse/get_text"

#: Seconds a client refused for a full staging budget should wait (workers drain it meanwhile).
STAGING_RETRY_AFTER_SECONDS = 10
#: Longest a sync request waits before checking that its client is still connected.
WAIT_SLICE_SECONDS = 1.0


@bp.post(STT_PATH, strict_slashes=False)
def transcribe() -> Response:
    """Transcribe the audio in the body (``model`` and ``language`` required)."""
    return submit(model_required=True)


@bp.post(LEGACY_PATH)
def transcribe_legacy() -> Response:
    """The legacy Pulse path: same semantics, ``model`` optional (defaults to ``pulse``)."""
    return submit(model_required=False)


def _parse(model_required: bool, svc: Services) -> SttParams:
    try:
        params = parse_stt_params(request.args, model_required=model_required)
    except ParamError as error:
        raise ApiError(400, error.message, error.details) from None
    if params.webhook is not None:
        try:
            check_webhook_url(params.webhook.url, svc.settings.webhook_allowed_list)
        except ValueError as error:
            raise ApiError(400, f"webhook_url refused: {error}",
                           [{"field": "webhook_url", "value": params.webhook.url}]) from None  # fmt: skip
    return params


def _route(params: SttParams, svc: Services) -> routing.Route:
    deployment = svc.settings.deployment
    return routing.choose(
        deployment=deployment,
        model=params.model,
        language=params.language,
        catalog=registry.catalog(svc.redis, deployment),
        live=registry.live_instances(svc.redis, deployment),
    )


def _enqueue(rid: str, params: SttParams, route: routing.Route, body: bytes, svc: Services) -> str:
    """Stage the audio, create the job and send the task; returns the queue name."""
    settings = svc.settings
    checkpoint = route.checkpoint
    queue = transcribe_queue(settings.deployment, checkpoint.name)
    try:
        audio_key = svc.jobs.stage_audio(rid, body)
    except StagingFull as full:
        log.warning("staged-audio budget reached (%d of %d bytes in use); refusing %d bytes", full.staged,
                    full.budget, full.size, extra={"request_id": rid})  # fmt: skip
        raise ApiError(503, "too much audio is waiting for workers in this deployment; retry shortly",
                       [{"code": "staging_full"}], {"Retry-After": str(STAGING_RETRY_AFTER_SECONDS)}) from None
    task = TranscribeTask(
        request_id=rid,
        deployment=settings.deployment,
        checkpoint=checkpoint.name,
        audio_key=audio_key,
        file_size=len(body),
        options=TranscriptionOptions(language=route.language, detect_among=route.detect_among,
                                     word_timestamps=params.word_timestamps, keywords=params.keywords),
        webhook=params.webhook,
        submitted_at=time.time(),
    )  # fmt: skip
    fields: dict[str, Any] = {"checkpoint": checkpoint.name, "checkpoint_label": checkpoint.label, "queue": queue,
                              "file_size": len(body), "model": params.model, "language": params.language,
                              "mode": "async" if params.is_async else "sync",
                              "key_name": key_name()}  # fmt: skip  # key_name: usage accounting (hark.usage)
    if params.webhook is not None:
        fields["webhook"] = params.webhook.wire()
    svc.jobs.create(rid, **fields)
    try:
        svc.celery.send_task(TASK_TRANSCRIBE, kwargs={"payload": task.wire()}, queue=queue, task_id=rid,
                             ignore_result=True)  # results travel through the JobStore, not Celery
    except Exception as error:  # broker down or refusing: the job will never run
        log.error("could not queue the job on %s: %s", queue, error,
                  extra={"request_id": rid, "checkpoint": checkpoint.label})  # fmt: skip
        svc.jobs.fail(rid, JobFailure(code="enqueue_failed", message="the job could not be queued", http_status=503))
        svc.jobs.drop_audio(audio_key)
        raise ApiError(503, "the job queue is unavailable; retry shortly", [{"code": "enqueue_failed"}]) from None
    return queue


def job_answer(state: dict[str, Any]) -> Response:
    """The HTTP answer of a finished job for the request that waited on it."""
    if state.get("status") == "success":
        return jsonify(state["result"])
    error = state.get("error") or {}
    status = int(error.get("http_status") or 500)
    details = [{"code": error.get("code", "failed")}, *error.get("details", [])]
    return error_response(status, str(error.get("message") or "transcription failed"), details)


def wait_for_job(svc: Services, rid: str, timeout: float) -> dict[str, Any] | None:
    """The job's final state, or None after `timeout` or as soon as the client has gone.

    Waits in short slices and checks the client's connection between them: a client that gave up
    no longer holds an API thread for the rest of the sync window. Its job still runs and its
    result stays fetchable from the jobs endpoint.
    """
    started = time.monotonic()
    deadline = started + timeout
    while True:
        remaining = deadline - time.monotonic()
        state = svc.jobs.wait(rid, max(0.0, min(remaining, WAIT_SLICE_SECONDS)))
        if state is not None or remaining <= WAIT_SLICE_SECONDS:
            return state
        if client_gone():
            log.info("the client closed the connection after %.1f s; no longer waiting (the job keeps "
                     "running and its result stays fetchable)", time.monotonic() - started,
                     extra={"request_id": rid})  # fmt: skip
            return None


def submit(*, model_required: bool) -> Response:
    """Validate, route, probe and queue one request; wait for it unless it is asynchronous."""
    svc = services()
    settings = svc.settings
    rid = current_request_id()
    if request.content_length is not None and request.content_length > settings.max_upload_bytes:
        raise RequestEntityTooLarge()
    params = _parse(model_required, svc)
    body = read_body(settings.max_upload_bytes, settings.upload_timeout_seconds,
                     settings.upload_min_bytes_per_second)  # fmt: skip
    if not body:
        raise ApiError(400, "request body is empty: send the audio file's bytes as the body",
                       [{"code": "empty_body"}])  # fmt: skip
    try:
        info = probe_audio(body, settings.max_audio_seconds)
    except AudioRejected as error:
        raise ApiError(400, error.message, error.details) from None
    route = _route(params, svc)
    note_route(route.checkpoint.name, params.language)  # validated by routing: a bounded label value

    queue = _enqueue(rid, params, route, body, svc)
    log.info("queued %d bytes of %s audio (%s s) on %s, language=%s%s", len(body), info.container,
             f"{info.duration:.2f}" if info.duration is not None else "?", queue, params.language,
             " (async)" if params.is_async else "",
             extra={"request_id": rid, "checkpoint": route.checkpoint.label,
                    "key_name": g.get("api_key_name")})  # fmt: skip
    if params.is_async:
        return jsonify({"status": "processing", "request_id": rid})

    state = wait_for_job(svc, rid, settings.sync_wait_seconds)
    if state is None:
        log.info("no answer within %.1f s; answering 202", settings.sync_wait_seconds, extra={"request_id": rid})
        response = jsonify({"status": "processing", "request_id": rid})
        response.status_code = 202
        return response
    return job_answer(state)
