"""Bearer-key authentication, installed once for the whole app (:func:`install_auth`).

A request presents its key as ``Authorization: Bearer <key>``; a WebSocket upgrade may instead offer it as
the subprotocols ``["bearer", "<key>"]`` (browsers cannot set headers) or as the ``api_key`` query
parameter (the form the ``smallestai`` SDK documents for raw WebSocket clients: ``...?api_key=<key>``).
REST requests never take a key from the query: URLs end up in logs, histories and proxies. Keys come from
``HARK_API_KEYS`` and ``HARK_API_KEYS_FILE`` (:mod:`web.keyring`, re-read when the file changes) and are
named; the name of the key that authenticated the request is :data:`flask.g` ``api_key_name`` (None when
authentication is not required), also written on the gunicorn access log line and on the job record.

Every endpoint needs a key except :data:`PUBLIC_ENDPOINTS` (probes, the OpenAPI document, the web
console's page and files) and, with ``HARK_METRICS_AUTH=open``, :data:`METRICS_ENDPOINT`. Whether keys are
required is :attr:`hark.settings.Settings.auth_required`; ``hark api`` refuses to listen beyond loopback
without keys unless HARK_AUTH=off.

The hook also names the client for per-client limits (:data:`flask.g` ``client_id``): a digest of
the key when one was presented and accepted, else the peer address. The raw key is never stored,
logged or used as a Redis key.
"""

from __future__ import annotations

import hashlib

from flask import Flask, current_app, g, request

from hark.settings import Settings
from web.errors import ApiError
from web.keyring import ENVIRON_KEY_NAME, LiveKeyRing
from web.services import services

#: Endpoints answered without a key. ``/ready`` shows only its status without one (see web.health). The
#: web console's page and files hold no data: the key a visitor types is sent with each request it makes.
PUBLIC_ENDPOINTS = frozenset({"health.health", "health.ready", "openapi.openapi", "static", "console.page",
                              "console.static"})
#: The API's Prometheus endpoint: public only with HARK_METRICS_AUTH=open.
METRICS_ENDPOINT = "metrics.metrics"
#: The query parameter a WebSocket upgrade may carry its key in (never accepted on REST requests).
QUERY_KEY_PARAMETER = "api_key"


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
    """The key the request carries: the Authorization header, else (WebSocket upgrades only) the subprotocol
    offer, else the ``api_key`` query parameter."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None and request.headers.get("Upgrade", "").lower() == "websocket":
        token = subprotocol_token(request.headers.get("Sec-WebSocket-Protocol"))
        if token is None:
            token = request.args.get(QUERY_KEY_PARAMETER, "").strip() or None
    return token


def key_id(key: str) -> str:
    """A stable, non-reversible name for `key` (for limits and logs; never the key itself)."""
    return "key:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def key_ring(app: Flask | None = None) -> LiveKeyRing:
    """The app's keys (built by :func:`install_auth`)."""
    return (app or current_app).extensions["hark.api_keys"]


def presented_key_name() -> str | None:
    """The name of the configured key the request carries, or None."""
    token = presented_token()
    return key_ring().lookup(token) if token is not None else None


def presented_key_is_valid() -> bool:
    """True when the request carries one of the configured keys (False when none is configured)."""
    return presented_key_name() is not None


def is_public(endpoint: str | None, settings: Settings) -> bool:
    """Whether `endpoint` answers without a key (see the module docstring)."""
    if endpoint == METRICS_ENDPOINT:  # decided here whatever PUBLIC_ENDPOINTS says
        return settings.metrics_auth == "open"
    return endpoint in PUBLIC_ENDPOINTS


def authenticate() -> None:
    """App-wide ``before_request`` hook: 401 unless the endpoint is public, auth is off, or the key is valid.

    Unknown paths are not public: without a key they answer 401, not 404, so the API's surface is
    not probed anonymously.
    """
    settings = services().settings
    g.client_id = "addr:" + (request.remote_addr or "unknown")
    g.api_key_name = None
    if is_public(request.endpoint, settings) or not settings.auth_required:
        return
    token = presented_token()
    if token is None:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", [{"code": "unauthorized"}],
                       {"WWW-Authenticate": "Bearer"})  # fmt: skip
    name = key_ring().lookup(token)
    if name is None:
        raise ApiError(401, "invalid API key", [{"code": "unauthorized"}], {"WWW-Authenticate": "Bearer"})
    g.client_id = key_id(token)
    g.api_key_name = name
    request.environ[ENVIRON_KEY_NAME] = name


def install_auth(app: Flask) -> None:
    """Load the keys and require one on every endpoint of `app` but the public ones.

    Raises:
        KeysFileError: HARK_API_KEYS_FILE is unreadable or malformed.
        ValueError: A name or a key is in both HARK_API_KEYS and the file.
    """
    app.extensions["hark.api_keys"] = LiveKeyRing.from_settings(app.extensions["hark"].settings)
    app.before_request(authenticate)
