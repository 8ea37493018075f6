"""Bearer-key authentication: ``Authorization: Bearer <key>``, compared in constant time.

Installed once for the whole app (:func:`install_auth`), so a new blueprint cannot forget it: every
endpoint needs a key except those listed in :data:`PUBLIC_ENDPOINTS` (probes, the metrics scrape, the OpenAPI
document and the web console's page and files). Whether keys are required is
:attr:`hark.settings.Settings.auth_required` (HARK_AUTH and HARK_API_KEYS); ``hark api`` refuses to
listen beyond loopback without keys unless HARK_AUTH=off.

The hook also names the client for per-client limits (:data:`flask.g` ``client_id``): a digest of
the key when one was presented and accepted, else the peer address. The raw key is never stored,
logged or used as a Redis key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from flask import Flask, g, request

from web.errors import ApiError
from web.services import services

#: Endpoints answered without a key. ``/ready`` shows only its status without one (see web.health). The
#: web console's page and files hold no data: the key a visitor types is sent with each request it makes.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.ready", "metrics.metrics", "openapi.openapi", "static",
                              "console.page", "console.static"})


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


#: Browsers cannot set headers on a WebSocket: they offer ``["bearer", "<key>"]`` as subprotocols
#: (``new WebSocket(url, ["bearer", key])``) and the server answers with the ``bearer`` subprotocol.
BEARER_SUBPROTOCOL = "bearer"


def subprotocol_token(header: str | None) -> str | None:
    """The key of a ``Sec-WebSocket-Protocol: bearer, <key>`` offer, or None."""
    if not header:
        return None
    offered = [item.strip() for item in header.split(",")]
    if len(offered) >= 2 and offered[0].lower() == BEARER_SUBPROTOCOL and offered[1]:
        return offered[1]
    return None


def presented_token() -> str | None:
    """The key the request carries: the Authorization header, else (WebSocket upgrades) the subprotocol offer."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and request.headers.get("Upgrade", "").lower() == "websocket":
        token = subprotocol_token(request.headers.get("Sec-WebSocket-Protocol"))
    return token


def key_id(key: str) -> str:
    """A stable, non-reversible name for `key` (for limits and logs; never the key itself)."""
    return "key:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def presented_key_is_valid() -> bool:
    """True when the request carries one of the configured keys (False when none is configured)."""
    keys = services().settings.api_key_list
    token = presented_token()
    return bool(keys) and token is not None and key_matches(token, keys)


def authenticate() -> None:
    """App-wide ``before_request`` hook: 401 unless the endpoint is public, auth is off, or the key is valid.

    Unknown paths are not public: without a key they answer 401, not 404, so the API's surface is
    not probed anonymously.
    """
    settings = services().settings
    g.client_id = "addr:" + (request.remote_addr or "unknown")
    if request.endpoint in PUBLIC_ENDPOINTS or not settings.auth_required:
        return
    token = presented_token()
    if token is None:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", [{"code": "unauthorized"}],
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
    if not key_matches(token, settings.api_key_list):
        raise ApiError(401, "invalid API key", [{"code": "unauthorized"}], {"WWW-Authenticate": "Bearer"})
    g.client_id = key_id(token)


def install_auth(app: Flask) -> None:
    """Require a key on every endpoint of `app` but :data:`PUBLIC_ENDPOINTS`."""
    app.before_request(authenticate)
