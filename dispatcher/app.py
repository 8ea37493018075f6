"""The dispatcher's WSGI application: route by ``language``, forward, stream the answer back.

A plain WSGI callable (no framework) because it is on every request's path and must add at most a
couple of milliseconds: read ``language`` from the query, pick the replica (round-robin), send the
request on a pooled keep-alive connection with the body streamed from the client, and hand the
answer back (small ones in one write, large ones streamed).

- ``POST /waves/v1/stt/`` (also without the slash) and ``POST /waves/v1/pulse/get_text``: forwarded to the
  deployment of ``language`` (none given: to the fallback, whose API answers 400);
- ``GET /waves/v1/stt/jobs/<id>``: forwarded to the deployment that holds the job (:mod:`dispatcher.jobs`);
- a WebSocket upgrade on ``/waves/v1/stt/live``, ``/waves/v1/pulse/get_text`` or ``/transcribe``: tunnelled to
  the deployment of ``language`` (default ``en``, as the API's) (:mod:`dispatcher.tunnel`);
- ``GET /health``: the dispatcher is alive (it does not probe the deployments; ``hark route`` does).

Headers pass through (``Authorization`` included; the deployments authenticate), minus hop-by-hop
ones; ``X-Forwarded-For`` gets the client's address. A replica that cannot be reached is skipped for
the next one of its deployment (nothing was sent); a 503 from a replica is passed on with its
``Retry-After`` (the body was sent and is not kept for a resend). Errors of the dispatcher itself are
the API's JSON shape: 400 ``unrouted_language`` (naming what is routed), 404, 502 ``upstream_error``,
503 ``upstream_unavailable``, 504 ``upstream_timeout``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, quote

from dispatcher.jobs import JobLocator
from dispatcher.tunnel import open_upstream, tunnel, upgrade_request
from dispatcher.upstream import ConnectFailed, CountingReader, UpstreamBroken, Upstreams, answer_body, chunks
from hark.route_map import Deployment, RouteMap, UnroutedLanguage

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

STT_PATHS = frozenset({"/waves/v1/stt/", "/waves/v1/stt", "/waves/v1/pulse/get_text"})
LIVE_PATHS = frozenset({"/waves/v1/stt/live", "/waves/v1/pulse/get_text", "/transcribe"})
JOBS_PREFIX = "/waves/v1/stt/jobs/"
REQUEST_ID_RE = re.compile(r"^req_[0-9a-f]{24}$")
#: The API's default language of a live session that names none.
LIVE_DEFAULT_LANGUAGE = "en"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "host"})  # fmt: skip
RETRY_AFTER_SECONDS = "5"


def _status_line(status: int, reason: str | None = None) -> str:
    if not reason:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    return f"{status} {reason}"


def error(start_response: StartResponse, status: int, message: str, details: list[dict[str, Any]],
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:  # fmt: skip
    """The API's JSON error shape, from the dispatcher itself."""
    request_id = "req_" + secrets.token_hex(12)
    body = json.dumps({"error": message, "request_id": request_id, "details": details}).encode()
    start_response(_status_line(status), [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                          ("X-Request-ID", request_id), *(headers or [])])  # fmt: skip
    return [body]


def forward_headers(environ: dict[str, Any], keep_upgrade: bool = False) -> dict[str, str]:
    """The client's headers for the replica: hop-by-hop ones dropped (kept for an upgrade), XFF added."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:].replace("_", "-").title()
            lower = name.lower()
            if lower in HOP_BY_HOP and not (keep_upgrade and lower in ("connection", "upgrade")):
                continue
            headers[name] = value
    if environ.get("CONTENT_TYPE"):
        headers["Content-Type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["Content-Length"] = environ["CONTENT_LENGTH"]
    client = environ.get("REMOTE_ADDR")
    if client:
        prior = headers.get("X-Forwarded-For")
        headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    return headers


def request_target(environ: dict[str, Any]) -> str:
    """Path and query as the client sent them."""
    raw = environ.get("RAW_URI")
    if isinstance(raw, str) and raw.startswith("/"):
        return raw
    query = environ.get("QUERY_STRING")
    return quote(environ.get("PATH_INFO", "/")) + (f"?{query}" if query else "")


def query_language(environ: dict[str, Any]) -> str:
    query = environ.get("QUERY_STRING", "")
    if "language=" not in query:
        return ""
    return parse_qs(query).get("language", [""])[0].strip().lower()


class Dispatcher:
    """The WSGI app. One per dispatcher process.

    Args:
        routes: the validated route map.
        upstreams: pooled connections to every replica of `routes`.
    """

    def __init__(self, routes: RouteMap, upstreams: Upstreams) -> None:
        self.routes = routes
        self.upstreams = upstreams
        self.jobs = JobLocator()
        self.fanout = ThreadPoolExecutor(max_workers=max(2, 2 * len(routes.deployments)),
                                         thread_name_prefix="dispatcher-jobs")  # fmt: skip

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        client = environ.get("gunicorn.socket")
        if client is not None:
            # gunicorn writes the status line and headers, then the body, in two sends: without
            # TCP_NODELAY the body waits for the client's delayed ACK of the headers (up to 40 ms).
            with contextlib.suppress(OSError):  # not TCP (a Unix socket)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            return self.websocket(environ, start_response, path)
        if method == "POST" and path in STT_PATHS:
            return self.transcribe(environ, start_response)
        if method == "GET" and path.startswith(JOBS_PREFIX):
            return self.job(environ, start_response, path[len(JOBS_PREFIX):])
        if method == "GET" and path == "/health":
            body = json.dumps({"status": "ok", "languages": self.routes.routed_languages}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return error(start_response, 404, f"the dispatcher does not serve {method} {path[:200]}; it forwards POST "
                     "/waves/v1/stt/, POST /waves/v1/pulse/get_text, GET /waves/v1/stt/jobs/<id> and live "
                     "WebSocket upgrades", [{"code": "not_found", "path": path[:200]}])  # fmt: skip

    # --- routing -----------------------------------------------------------------------------

    def _deployment(self, language: str, start_response: StartResponse) -> Deployment | list[bytes]:
        """The routed deployment, or the 400 answer to return."""
        try:
            if not language:
                if self.routes.fallback is not None:
                    return self.routes.fallback
                raise UnroutedLanguage("", self.routes.routed_languages)
            return self.routes.deployment_for(language)
        except UnroutedLanguage as unrouted:
            message = (str(unrouted) if language else "the language query parameter is required to route the "
                       f"request; routed languages: {', '.join(unrouted.routed) or 'none'}")  # fmt: skip
            return error(start_response, 400, message, [{"code": "unrouted_language", "field": "language",
                                                         "value": language, "routed": unrouted.routed}])  # fmt: skip

    def _relay(self, deployment: Deployment, response: Any, start_response: StartResponse) -> Iterable[bytes]:
        request_id = response.headers.get("X-Request-ID")
        if request_id:
            self.jobs.remember(request_id, deployment)
        headers = [(name, value) for name, value in response.headers.items() if name.lower() not in HOP_BY_HOP]
        start_response(_status_line(response.status, response.reason), headers)
        return answer_body(response)

    def _unavailable(self, start_response: StartResponse, deployment: Deployment, reason: str) -> list[bytes]:
        log.warning("dispatcher: no replica of %s could be reached: %s", deployment.name, reason)
        return error(start_response, 503, f"the deployment serving this language is unavailable ({reason}); retry "
                     "shortly", [{"code": "upstream_unavailable"}], [("Retry-After", RETRY_AFTER_SECONDS)])  # fmt: skip

    # --- REST --------------------------------------------------------------------------------

    def transcribe(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        deployment = self._deployment(query_language(environ), start_response)
        if not isinstance(deployment, Deployment):
            return deployment
        headers = forward_headers(environ)
        target = request_target(environ)
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        reader: CountingReader | None = None
        counter = [0]
        if length and length.isdigit():
            reader = CountingReader(stream, int(length))
        chunked = reader is None and environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
        reason = "no replica"
        for url in deployment.rotation():
            if (reader is not None and reader.consumed) or counter[0]:
                break  # part of the body went to a replica that failed: it cannot be sent again
            body: Any = reader if reader is not None else (chunks(stream, counter) if chunked else None)
            try:
                response = self.upstreams.send(url, "POST", target, headers, body, chunked=chunked)
            except ConnectFailed as failed:
                reason = str(failed)
                continue
            except UpstreamBroken as broken:
                return self._broken(start_response, broken)
            return self._relay(deployment, response, start_response)
        return self._unavailable(start_response, deployment, reason)

    def _broken(self, start_response: StartResponse, broken: UpstreamBroken) -> list[bytes]:
        log.warning("dispatcher: %s", broken)
        code = "upstream_timeout" if broken.status == 504 else "upstream_error"
        return error(start_response, broken.status, f"the deployment failed to answer: {broken}", [{"code": code}])

    def job(self, environ: dict[str, Any], start_response: StartResponse, request_id: str) -> Iterable[bytes]:
        if not REQUEST_ID_RE.match(request_id):
            return error(start_response, 404, f"no job {request_id[:64]!r}: request ids look like req_ and 24 hex "
                         "characters", [{"field": "request_id"}])  # fmt: skip
        headers = forward_headers(environ)
        target = request_target(environ)
        language = query_language(environ)
        if language:
            deployment = self._deployment(language, start_response)
            if not isinstance(deployment, Deployment):
                return deployment
        else:
            deployment = self.jobs.lookup(request_id)  # type: ignore[assignment]
        if deployment is not None:
            try:
                response = self._get(deployment, target, headers)
            except UpstreamBroken as broken:
                return self._broken(start_response, broken)
            if response is None:
                return self._unavailable(start_response, deployment, "unreachable")
            return self._relay(deployment, response, start_response)
        return self._ask_every_deployment(start_response, request_id, target, headers)

    def _get(self, deployment: Deployment, target: str, headers: dict[str, str]) -> Any:
        """GET on the first reachable replica of `deployment` (None when none is)."""
        for url in deployment.rotation():
            try:
                return self.upstreams.send(url, "GET", target, headers)
            except ConnectFailed:
                continue
        return None

    def _ask_every_deployment(self, start_response: StartResponse, request_id: str, target: str,
                              headers: dict[str, str]) -> Iterable[bytes]:  # fmt: skip
        def ask(deployment: Deployment) -> tuple[Deployment, int | None, Any]:
            try:
                response = self._get(deployment, target, headers)
            except UpstreamBroken:
                return deployment, None, None
            if response is None:
                return deployment, None, None
            if response.status < 300 or response.status in (401, 403):
                return deployment, response.status, response
            response.drain_conn()  # 404: not there (any other status: not a usable answer either)
            response.release_conn()
            return deployment, response.status, None

        answers = list(self.fanout.map(ask, self.routes.deployments))
        # The holder's answer first; else an authentication refusal (the client must fix its key).
        found = sorted(((status, dep, resp) for dep, status, resp in answers if resp is not None),
                       key=lambda item: item[0] >= 300)  # fmt: skip
        for _, extra_dep, extra in found[1:]:
            log.warning("dispatcher: job %s: %s also answered", request_id, extra_dep.name)
            extra.drain_conn()
            extra.release_conn()
        if found:
            _, deployment, response = found[0]
            return self._relay(deployment, response, start_response)
        down = [dep.name for dep, status, _ in answers if status is None]
        if down:
            return error(start_response, 503, f"job {request_id!r} is unknown to the deployments that answered, and "
                         f"{len(down)} could not be asked; retry shortly", [{"code": "upstream_unavailable"}],
                         [("Retry-After", RETRY_AFTER_SECONDS)])  # fmt: skip
        return error(start_response, 404, f"no deployment knows job {request_id!r} (unknown, or its result expired)",
                     [{"field": "request_id", "value": request_id}])  # fmt: skip

    # --- WebSocket ---------------------------------------------------------------------------

    def websocket(self, environ: dict[str, Any], start_response: StartResponse, path: str) -> Iterable[bytes]:
        if path not in LIVE_PATHS:
            return error(start_response, 404, f"no WebSocket endpoint at {path[:200]}; live sessions are at "
                         "/waves/v1/stt/live", [{"code": "not_found", "path": path[:200]}])  # fmt: skip
        client = environ.get("gunicorn.socket")
        if client is None:
            return error(start_response, 501, "WebSocket tunnelling needs the dispatcher served by `hark dispatcher`",
                         [{"code": "websocket_unsupported"}])  # fmt: skip
        deployment = self._deployment(query_language(environ) or LIVE_DEFAULT_LANGUAGE, start_response)
        if not isinstance(deployment, Deployment):
            return deployment
        reason = "no replica"
        for url in deployment.rotation():
            try:
                upstream = open_upstream(url)
            except ConnectFailed as failed:
                reason = str(failed)
                continue
            host = url.split("://", 1)[1].split("/", 1)[0]
            prefix = self.upstreams.prefixes.get(url, "")
            tunnel(client, upstream, upgrade_request(prefix + request_target(environ), host,
                                                     forward_headers(environ, keep_upgrade=True)))  # fmt: skip
            # The connection was the tunnel's: gunicorn must neither answer on it nor keep it alive.
            raise StopIteration
        return self._unavailable(start_response, deployment, reason)
