"""``GET /console``: a one-page web console for people (upload a file, stream the microphone).

Plain HTML, CSS and JavaScript under ``web/static/console/``, served by the API itself (no build step,
no framework, no CDN). The page and its files are public (:data:`web.auth.PUBLIC_ENDPOINTS`): they hold
no data, and the API key a visitor types is kept in the tab's ``sessionStorage`` and sent with each
request (``Authorization: Bearer``; the WebSocket offers ``["bearer", key]`` as subprotocols).

Every response of the blueprint carries a strict Content-Security-Policy: scripts, styles and
connections from this origin only (plus ``ws:``/``wss:`` to this host), no inline script, no framing.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, request

bp = Blueprint("console", __name__, static_folder="static/console", static_url_path="/console/static")

#: A Host header safe to echo into the CSP (name or IP literal, optional port); anything else gets 'self' only.
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")


def content_security_policy(host: str | None) -> str:
    """The page's CSP; `host` (the request's Host) adds ``ws://host wss://host`` to ``connect-src``."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join((
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
        f"connect-src {connect}", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    ))  # fmt: skip


def security_headers(host: str | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(host),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
        "Cross-Origin-Opener-Policy": "same-origin",
    }


@bp.after_request
def _secure(response: Response) -> Response:
    response.headers.update(security_headers(request.host))
    return response


@bp.get("/console")
@bp.get("/console/")
def page() -> Response:
    """The console page (public)."""
    response = bp.send_static_file("index.html")
    response.headers.pop("Content-Disposition", None)
    response.headers["Cache-Control"] = "no-cache"
    return response
