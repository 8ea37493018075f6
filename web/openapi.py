"""``GET /openapi.json``: an OpenAPI 3.1 description of the REST endpoints.

Built, not written by hand: response schemas come from the pydantic wire models
(:class:`~hark.schemas.TranscriptionResponse`, :class:`~hark.schemas.ErrorBody`) and the query
parameters from :data:`web.params.STT_PARAMS`, the same table the validation uses.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic.json_schema import models_json_schema

from hark import __version__
from hark.audio_formats import ALLOWED_DESCRIPTION
from hark.schemas import ErrorBody, TranscriptionResponse
from web.params import STT_PARAMS, ParamSpec

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


def param_schema(spec: ParamSpec) -> dict[str, Any]:
    """The JSON schema of one query parameter."""
    if spec.kind == "boolean":
        return {"type": "boolean", "default": bool(spec.default)}
    if spec.kind == "enum":
        return {"type": "string", "enum": list(spec.enum), **({"default": spec.default} if spec.default else {})}
    if spec.kind == "keywords":
        return {"type": "string", "pattern": r"^[^,]+(:[0-9.]+)?(,[^,]+(:[0-9.]+)?)*$"}
    return {"type": "string"}


def query_parameters(*, model_required: bool) -> list[dict[str, Any]]:
    """OpenAPI parameter objects for the transcription query."""
    parameters = []
    for spec in STT_PARAMS:
        required = spec.required and (model_required or spec.name != "model")
        item: dict[str, Any] = {"name": spec.name, "in": "query", "required": required,
                                "description": spec.description, "schema": param_schema(spec)}  # fmt: skip
        if spec.example is not None:
            item["example"] = spec.example
        parameters.append(item)
    return parameters


def _errors(*codes: int) -> dict[str, Any]:
    texts = {400: "Invalid request (parameter, language, audio)", 401: "Missing or invalid API key",
             404: "Unknown job or path", 413: "Body over HARK_MAX_UPLOAD_BYTES",
             408: "The body stalled or arrived below HARK_UPLOAD_MIN_BYTES_PER_SECOND (upload_timeout)",
             429: "Too many concurrent requests for this key or address (see Retry-After)",
             503: "No live worker for the checkpoint, staged-audio budget full (staging_full), or Redis "
                  "unavailable (see Retry-After)"}  # fmt: skip
    return {str(code): _json("ErrorBody", texts[code]) for code in codes}


def _transcribe_operation(summary: str, operation_id: str, *, model_required: bool) -> dict[str, Any]:
    transcript_or_processing = {"oneOf": [_ref("TranscriptionResponse"), _ref("Processing")]}
    return {
        "summary": summary,
        "operationId": operation_id,
        "tags": ["speech-to-text"],
        "parameters": query_parameters(model_required=model_required),
        "requestBody": {
            "required": True,
            "description": f"The raw audio file ({ALLOWED_DESCRIPTION}; any other container is a 400 "
                           "unsupported_container); chunked uploads work.",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        },
        "responses": {
            "200": {
                "description": "The transcript, or `{status: processing}` in webhook mode",
                "content": {"application/json": {"schema": transcript_or_processing}},
            },
            "202": _json("Processing", "Still running after HARK_SYNC_WAIT_SECONDS; poll the job"),
            **_errors(400, 401, 408, 413, 429, 503),
        },
    }


def _job_operation() -> dict[str, Any]:
    any_state = {"oneOf": [_ref("TranscriptionResponse"), _ref("Processing"), _ref("JobFailed")]}
    return {
        "summary": "State or result of a job",
        "operationId": "getJob",
        "tags": ["speech-to-text"],
        "parameters": [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The result, `processing`, or `failed`",
                    "content": {"application/json": {"schema": any_state}}},
            **_errors(401, 404, 429),
        },
    }  # fmt: skip


def _open_operation(summary: str, operation_id: str, ok: str, *error_codes: int) -> dict[str, Any]:
    """An operation that needs no API key."""
    return {"summary": summary, "operationId": operation_id, "security": [],
            "responses": {"200": {"description": ok}, **_errors(*error_codes)}}  # fmt: skip


def _extra_schemas() -> dict[str, Any]:
    return {
        "Processing": {
            "type": "object",
            "properties": {"status": {"const": "processing"}, "request_id": {"type": "string"},
                           "state": {"type": "string", "enum": ["queued", "processing"]}},
            "required": ["status", "request_id"],
        },
        "JobFailed": {
            "type": "object",
            "properties": {"status": {"const": "failed"}, "request_id": {"type": "string"},
                           "error": {"type": "string"}, "details": {"type": "array", "items": {"type": "object"}}},
            "required": ["status", "request_id", "error"],
        },
    }  # fmt: skip


@lru_cache(maxsize=1)
def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once per process)."""
    _, top = models_json_schema([(TranscriptionResponse, "serialization"), (ErrorBody, "serialization")],
                                ref_template=_REF)  # fmt: skip
    paths = {
        "/waves/v1/stt/": {"post": _transcribe_operation("Transcribe an audio file", "transcribe",
                                                          model_required=True)},
        "/waves/v1/pulse/get_text": {"post": _transcribe_operation("Transcribe an audio file (legacy path)",
                                                                   "transcribeLegacy", model_required=False)},
        "/waves/v1/stt/jobs/{request_id}": {"get": _job_operation()},
        "/health": {"get": _open_operation("Liveness", "health", "The API process is alive")},
        "/ready": {"get": _open_operation("Readiness: a live worker of this deployment exists", "ready",
                                          "Status; with a valid key also workers, checkpoints, languages "
                                          "and slots", 503)},
        "/openapi.json": {"get": _open_operation("This document", "openapi", "OpenAPI 3.1 document")},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hark speech-to-text API (Pulse-compatible)", "version": __version__},
        "components": {
            "schemas": {**top["$defs"], **_extra_schemas()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """Serve the OpenAPI document."""
    return jsonify(build_document())
