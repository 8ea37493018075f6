"""The API's license gate: new transcriptions and live sessions are served only under a valid license.

With ``API_BASE_URL`` set (the license proxy, e.g. ``http://license-proxy:6699``), :func:`install_license_gate`
asks the proxy once at start and then every ``HARK_LICENSE_CHECK_SECONDS`` in a background thread. The
last answer is kept in memory and in Redis (hash ``hark:license:last``, field = deployment), so a
restarted API whose proxy is down still knows it was valid and when that was last confirmed. Requests
read only that cached state: the proxy is never on the request path.

Serving rules (only the endpoints that start work — :data:`GATED_ENDPOINTS`; probes, metrics, the
console, the OpenAPI document and the jobs endpoint are never blocked, and work already accepted
finishes):

- valid → served;
- the proxy unreachable → served on the last confirmed answer until ``HARK_LICENSE_GRACE_SECONDS`` after
  it was confirmed, then 503 ``license_unverifiable`` naming the proxy URL and for how long;
- expired / invalid (tampered, unknown key, missing) → 402 ``license_expired`` / ``license_invalid`` at once;
- this deployment or the requested language not licensed → 402 ``license_deployment`` / ``license_language``;
- this month's licensed audio hours used up → 402 ``license_over_limit``;
- ``max_concurrent_streams`` reached across all deployments → 429 ``license_streams`` (live sessions).

Without ``API_BASE_URL`` licensing is off (logged once at start) and nothing here runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
import requests
from flask import Flask, current_app, g, request

from hark.license import ANY, iso
from hark.license_streams import StreamQuota
from hark.usage import DEFAULT_KEY_NAME
from web.errors import ApiError

log = logging.getLogger(__name__)

#: Redis hash of the last confirmed answer per deployment.
LAST_KEY = "hark:license:last"
#: Endpoints that start new work; everything else passes the gate.
STREAM_ENDPOINTS = frozenset({"stream.live", "stream.live_legacy", "stream.live_livekit"})
GATED_ENDPOINTS = frozenset({"stt.transcribe", "stt.transcribe_legacy"}) | STREAM_ENDPOINTS
#: Seconds one check may take (connect + answer).
CHECK_TIMEOUT_SECONDS = 5.0
#: Lease of a live session's place in ``max_concurrent_streams``; renewed every third of it.
STREAM_LEASE_SECONDS = 30.0
#: Seconds a client refused for the streams limit should wait.
STREAMS_RETRY_AFTER_SECONDS = 5


def key_name() -> str:
    """The name of the request's API key for usage accounting (``default`` when keys have no names)."""
    return str(g.get("api_key_name") or DEFAULT_KEY_NAME)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class Confirmed:
    """The proxy's last answer and when it was received (Unix time)."""

    answer: dict[str, Any]
    at: float


class LicenseGate:
    """Cached license state of one API process, refreshed in the background.

    Args:
        proxy_url: ``API_BASE_URL``.
        deployment: This deployment (checked against the license).
        client: Redis (the cached answer, the streams quota).
        check_seconds: ``HARK_LICENSE_CHECK_SECONDS``.
        grace_seconds: ``HARK_LICENSE_GRACE_SECONDS``.
        clock: Unix time source (tests move it).
        fetch: ``(url, timeout) -> requests.Response`` (tests may replace the transport).
    """

    def __init__(self, proxy_url: str, deployment: str, client: redis.Redis, check_seconds: float,
                 grace_seconds: float, clock: Callable[[], float] = time.time,
                 fetch: Callable[[str, float], requests.Response] | None = None) -> None:  # fmt: skip
        self.proxy_url = proxy_url.rstrip("/")
        self.deployment = deployment
        self.redis = client
        self.check_seconds = check_seconds
        self.grace_seconds = grace_seconds
        self.clock = clock
        self._session = requests.Session()
        self._fetch = fetch or (lambda url, timeout: self._session.get(url, timeout=timeout))
        self.confirmed: Confirmed | None = None
        self.down_since: float | None = None
        self.last_error = ""
        self.quota = StreamQuota(client, STREAM_LEASE_SECONDS)
        self._streams: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the background side ------------------------------------------------------------------------
    def load_cached(self) -> None:
        """Take the last confirmed answer from Redis (a restarted API, the proxy maybe down)."""
        try:
            raw = self.redis.hget(LAST_KEY, self.deployment)
        except redis.RedisError as error:
            log.warning("license: could not read the last confirmed answer from Redis (%s)", type(error).__name__)
            return
        if raw is None:
            return
        try:
            cached = json.loads(raw)
            self.confirmed = Confirmed(dict(cached["answer"]), float(cached["confirmed_at"]))
        except (ValueError, KeyError, TypeError):
            log.warning("license: ignoring an unreadable cached answer in Redis")

    def check_now(self) -> bool:
        """Ask the proxy once; True when it answered (whatever the license's status)."""
        url = f"{self.proxy_url}/v1/license?deployment={self.deployment}"
        try:
            response = self._fetch(url, CHECK_TIMEOUT_SECONDS)
            answer = response.json() if response.status_code == 200 else None
            if not isinstance(answer, dict) or "status" not in answer:
                raise ValueError(f"HTTP {response.status_code} without a license answer")
        except (requests.RequestException, ValueError) as error:
            now = self.clock()
            if self.down_since is None:
                self.down_since = now
                log.warning("license: the license proxy at %s does not answer (%s); serving on the last confirmed "
                            "answer for up to %s", self.proxy_url, error, _duration(self.grace_seconds))  # fmt: skip
            self.last_error = str(error)[:200]
            return False
        now = self.clock()
        previous = self.confirmed.answer.get("status") if self.confirmed else None
        self.confirmed = Confirmed(answer, now)
        if self.down_since is not None:
            log.info("license: the license proxy at %s answers again", self.proxy_url)
        self.down_since, self.last_error = None, ""
        if answer["status"] != previous:
            level = logging.INFO if answer["status"] == "valid" else logging.ERROR
            log.log(level, "license: %s %s", answer["status"], answer.get("reason") or "")
        try:
            self.redis.hset(LAST_KEY, self.deployment, json.dumps({"answer": answer, "confirmed_at": now}))
        except redis.RedisError as error:
            log.warning("license: could not cache the answer in Redis (%s)", type(error).__name__)
        return True

    def start(self) -> None:
        """Load the cached answer, check once now, then keep checking (and renewing stream leases)."""
        self.load_cached()
        self.check_now()
        self._thread = threading.Thread(target=self._run, name="hark-license", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        next_check = time.monotonic() + self.check_seconds
        while not self._stop.wait(min(STREAM_LEASE_SECONDS / 3, max(0.0, next_check - time.monotonic()))):
            self._renew_streams()
            if time.monotonic() >= next_check:
                self.check_now()
                next_check = time.monotonic() + self.check_seconds

    # --- the request side: cached state only ---------------------------------------------------------
    def refusal(self, language: str | None) -> ApiError | None:
        """Why a new request must be refused now, or None to serve it."""
        now = self.clock()
        confirmed = self.confirmed
        if confirmed is None or now - confirmed.at > self.grace_seconds:
            return self._unverifiable(now, confirmed)
        answer = confirmed.answer
        status, reason = answer.get("status"), str(answer.get("reason") or "")
        expires = answer.get("expires_at_unix")
        if status == "expired" or (status == "valid" and isinstance(expires, int | float) and now > expires):
            return ApiError(402, f"the license has expired: {reason or 'it expired on ' + iso(float(expires or 0))}; "
                                 "install a renewed LICENSE_KEY on the license proxy", [{"code": "license_expired"}])
        if status == "over_limit":
            return ApiError(402, f"the license's limit is reached: {reason}", [{"code": "license_over_limit"}])
        deployments = list(answer.get("deployments") or [])
        if answer.get("code") == "deployment_not_licensed" or (status == "valid" and ANY not in deployments
                                                                and self.deployment not in deployments):
            return ApiError(402, f"deployment {self.deployment!r} is not licensed (licensed: "
                                 f"{', '.join(deployments) or 'none'})", [{"code": "license_deployment"}])  # fmt: skip
        if status != "valid":
            return ApiError(402, f"the license is not valid: {reason or status}", [{"code": "license_invalid"}])
        languages = list(answer.get("languages") or [])
        if language and ANY not in languages and (language.startswith("multi") or language not in languages):
            hint = ("language detection needs a license for every language; name the language" if
                    language.startswith("multi") else "send one of the licensed languages")  # fmt: skip
            return ApiError(402, f"language {language!r} is not licensed (licensed: {', '.join(languages)}); {hint}",
                            [{"code": "license_language", "language": language, "licensed": languages}])
        return None

    def _unverifiable(self, now: float, confirmed: Confirmed | None) -> ApiError:
        since = confirmed.at if confirmed else self.down_since
        how_long = f"for {_duration(now - since)}" if since is not None else "since this API started"
        last = f"last confirmed {iso(confirmed.at)}" if confirmed else "never confirmed"
        cause = f" ({self.last_error})" if self.last_error else ""
        return ApiError(503, f"the license cannot be verified: the license proxy at {self.proxy_url} has not answered "
                             f"{how_long}{cause}; {last}, past the grace period of {_duration(self.grace_seconds)} "
                             "(HARK_LICENSE_GRACE_SECONDS)",
                        [{"code": "license_unverifiable", "proxy_url": self.proxy_url,
                          "unconfirmed_seconds": round(now - since, 1) if since is not None else None,
                          "last_confirmed_at": iso(confirmed.at) if confirmed else None}])  # fmt: skip

    # --- max_concurrent_streams ---------------------------------------------------------------------
    def max_streams(self) -> int | None:
        limits = (self.confirmed.answer.get("limits") or {}) if self.confirmed else {}
        value = limits.get("max_concurrent_streams")
        return int(value) if isinstance(value, int) else None

    @contextlib.contextmanager
    def stream_place(self, session_id: str) -> Iterator[None]:
        """Hold one of the license's concurrent streams for the block; 429 ``license_streams`` when none is free."""
        limit = self.max_streams()
        if limit is None:
            yield
            return
        member = f"{self.deployment}:{session_id}"
        if not self.quota.acquire(member, limit):
            raise ApiError(429, f"the license allows {limit} concurrent live session(s) across all deployments and "
                                "all are open; retry when one ends", [{"code": "license_streams",
                                                                      "max_concurrent_streams": limit}],
                           {"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)})  # fmt: skip
        with self._lock:
            self._streams.add(member)
        try:
            yield
        finally:
            with self._lock:
                self._streams.discard(member)
            with contextlib.suppress(redis.RedisError):
                self.quota.release(member)

    def _renew_streams(self) -> None:
        with self._lock:
            members = list(self._streams)
        for member in members:
            try:
                self.quota.renew(member)
            except redis.RedisError as error:
                log.warning("license: could not renew a live session's lease (%s)", type(error).__name__)
                return


def license_gate() -> LicenseGate | None:
    """The gate of the current app, or None when licensing is off."""
    return current_app.extensions.get("hark_license")


def check_license() -> None:
    """App-wide ``before_request`` hook (after authentication): refuse new work the license does not cover."""
    gate = license_gate()
    if gate is None or request.endpoint not in GATED_ENDPOINTS:
        return
    language = request.args.get("language")
    if not language and request.endpoint in STREAM_ENDPOINTS:
        language = "en"  # a live session's default language
    refusal = gate.refusal(language.strip().lower() if language else None)
    if refusal is not None:
        log.warning("refused by the license gate: %s", refusal.message, extra={"request_id": g.get("request_id")})
        raise refusal


@contextlib.contextmanager
def stream_place(session_id: str) -> Iterator[None]:
    """Hold a place in the license's ``max_concurrent_streams`` while a live session is open (no-op when off)."""
    gate = license_gate()
    if gate is None:
        yield
        return
    with gate.stream_place(session_id):
        yield


def install_license_gate(app: Flask, gate: LicenseGate | None = None) -> LicenseGate | None:
    """Gate `app`'s work-starting endpoints on the license when ``API_BASE_URL`` is set.

    Args:
        app: The API app (its services must be made).
        gate: A ready gate (tests pass one with their clock); default: built from the settings and started.

    Returns:
        The gate, or None when licensing is off.
    """
    settings = app.extensions["hark"].settings
    if gate is None:
        if not settings.api_base_url:
            log.info("licensing is off: API_BASE_URL is not set (no license proxy is asked)")
            return None
        gate = LicenseGate(settings.api_base_url, settings.deployment, app.extensions["hark"].redis,
                           settings.license_check_seconds, settings.license_grace_seconds)  # fmt: skip
        gate.start()
        log.info("licensing is on: license proxy %s, checked every %s, grace %s", gate.proxy_url,
                 _duration(gate.check_seconds), _duration(gate.grace_seconds))  # fmt: skip
    app.extensions["hark_license"] = gate
    app.before_request(check_license)
    return gate
