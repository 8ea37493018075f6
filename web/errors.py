"""The one error shape of the API: ``{"error": "...", "request_id": "...", "details": [...]}``.

Views raise :class:`ApiError`; the handlers registered by :func:`register_error_handlers` turn it,
every Werkzeug HTTP error (404, 405, 413...), routing errors, Redis outages and any unexpected
exception into that JSON body with the right status, an ``X-Request-ID`` and never a stack trace.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import redis
from flask import Flask, Response, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from hark.routing import RoutingError

log = logging.getLogger(__name__)

#: Seconds a client should wait before retrying a 503 (the SDK honours it).
RETRY_AFTER_SECONDS = 5


def new_request_id() -> str:
    """A fresh request id: ``req_`` and 24 hex characters."""
    return "req_" + secrets.token_hex(12)


def current_request_id() -> str:
    """The id of the request being served (created on first use), or a fresh one outside a request."""
    if not has_request_context():
        return new_request_id()
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = new_request_id()
    return rid


class ApiError(Exception):
    """An error answer: HTTP `status`, a human `message`, structured `details` and extra headers."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def error_response(status: int, message: str, details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:  # fmt: skip
    """Build the JSON error response (the request id goes in the body and the header)."""
    rid = current_request_id()
    response = jsonify({"error": message, "request_id": rid, "details": details or []})
    response.status_code = status
    if status in (429, 503) and "Retry-After" not in (headers or {}):
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    response.headers["X-Request-ID"] = rid
    return response


def _http_error_message(error: HTTPException) -> tuple[str, list[dict[str, Any]], dict[str, str]]:
    method = request.method if has_request_context() else "?"
    path = request.path if has_request_context() else "?"
    if isinstance(error, NotFound):
        return f"no such endpoint: {method} {path}", [{"path": path}], {}
    if isinstance(error, MethodNotAllowed):
        allowed = sorted(m for m in (error.valid_methods or []) if m not in ("HEAD", "OPTIONS"))
        message = f"method {method} is not allowed on {path}" + (f"; use {', '.join(allowed)}" if allowed else "")
        return message, [{"method": method, "allowed": allowed}], ({"Allow": ", ".join(allowed)} if allowed else {})
    if isinstance(error, RequestEntityTooLarge):
        limit = None
        if has_request_context():
            limit = request.max_content_length
        text = "request body is larger than the upload limit"
        if limit:
            text += f" of {limit} bytes (HARK_MAX_UPLOAD_BYTES)"
        return text, [{"max_upload_bytes": limit}] if limit else [], {}
    description = (error.description or error.name or "error").strip()
    return description, [], {}


def _handle_api_error(error: ApiError) -> Response:
    return error_response(error.status, error.message, error.details, error.headers)


def _handle_routing_error(error: RoutingError) -> Response:
    return error_response(error.status, error.message, error.details)


def _handle_http_error(error: HTTPException) -> Response:
    status = error.code or 500
    message, details, headers = _http_error_message(error)
    return error_response(status, message, details, headers)


def _handle_redis_error(error: redis.RedisError) -> Response:
    log.error("Redis is unavailable: %s", error, extra={"request_id": current_request_id()})
    return error_response(503, "the job store (Redis) is unavailable; retry shortly",
                          [{"code": "redis_unavailable"}])  # fmt: skip


def _handle_unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return _handle_http_error(error)
    log.exception("unexpected error while serving %s", request.path if has_request_context() else "?",
                  extra={"request_id": current_request_id()})  # fmt: skip
    return error_response(500, "internal error; quote the request_id when reporting it",
                          [{"code": "internal_error"}])  # fmt: skip


def register_error_handlers(app: Flask) -> None:
    """Answer every error of `app` with the JSON error body."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(RoutingError, _handle_routing_error)
    app.register_error_handler(HTTPException, _handle_http_error)
    app.register_error_handler(redis.RedisError, _handle_redis_error)
    app.register_error_handler(Exception, _handle_unexpected)
