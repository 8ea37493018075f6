"""Bearer-key authentication: ``Authorization: Bearer <key>``, compared in constant time.

Keys come from HARK_API_KEYS (comma-separated). With no key configured, authentication is off and
the API says so loudly at start (see ``web.app``). ``/health``, ``/ready`` and ``/openapi.json``
never need a key; the transcription blueprints install :func:`require_api_key` as a
``before_request`` hook.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from flask import current_app, request

from web.errors import ApiError


def key_matches(candidate: str, keys: Sequence[str]) -> bool:
    """True when `candidate` equals one of `keys`.

    Every key is compared (no early exit on a match) with :func:`hmac.compare_digest`, so the time
    taken does not tell an attacker which key, or how much of one, matched.
    """
    given = candidate.encode("utf-8")
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.encode("utf-8"))
    return matched


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_api_key() -> None:
    """``before_request`` hook: 401 unless auth is off or the request carries a configured key."""
    keys: list[str] = current_app.config["HARK_API_KEYS"]
    if not keys:
        return
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", [{"code": "unauthorized"}],
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
    if not key_matches(token, keys):
        raise ApiError(401, "invalid API key", [{"code": "unauthorized"}], {"WWW-Authenticate": "Bearer"})
