"""Per-client concurrency: at most HARK_MAX_CONCURRENT_PER_CLIENT requests in flight per client,
counted across every API process of the deployment (429 + Retry-After past it).

One client (an API key, or a peer address when authentication is off) must not be able to hold all
the API's threads: waiting sync requests and slow uploads each hold one. The count lives in Redis,
so it covers every gunicorn process and host of the deployment: a sorted set per client
(``hark:<dep>:inflight:<client>``) of request tokens scored by when their lease ends. Acquiring is
one Lua script (purge expired leases, count, add), so concurrent requests never over-admit. Leases
are short and renewed by one thread per process while requests run, so the tokens of a process
that died (SIGKILL, OOM) free their slots within a lease instead of blocking the client for hours.

Behind a reverse proxy with authentication off, every request comes from the proxy's address and
shares one limit: use keys there (the proxy's own ``limit_conn`` then bounds addresses).
"""

from __future__ import annotations

import logging
import secrets
import threading

import redis
from flask import Flask, current_app, g, request

from hark.lease_set import LeaseSet
from hark.queues import redis_key
from web.auth import PUBLIC_ENDPOINTS
from web.errors import ApiError

log = logging.getLogger(__name__)

#: Seconds a token stays valid without renewal; renewed every third of it while the request runs.
LEASE_SECONDS = 30.0
#: Seconds a refused client should wait before retrying (one of its own requests must end first).
RETRY_AFTER_SECONDS = 2

class ClientLimiter:
    """Leases of in-flight requests per client, shared by every API process through Redis."""

    def __init__(self, client: redis.Redis, deployment: str, limit: int, lease: float = LEASE_SECONDS) -> None:
        self.client = client
        self.deployment = deployment
        self.limit = limit
        self.lease = lease
        self.leases = LeaseSet(client)
        self._held: dict[str, str] = {}  # token -> Redis key
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()

    def key(self, client_id: str) -> str:
        return redis_key(self.deployment, "inflight", client_id)

    def acquire(self, client_id: str) -> str | None:
        """A token for one more request of `client_id`, or None when it is at its limit."""
        token = secrets.token_hex(8)
        key = self.key(client_id)
        if not self.leases.acquire(key, token, self.limit, self.lease):
            return None
        with self._lock:
            self._held[token] = key
            self._start_renewer()
        return token

    def release(self, token: str) -> None:
        """End the lease of `token` (the request finished)."""
        with self._lock:
            key = self._held.pop(token, None)
        if key is not None:
            self.leases.release(key, token)

    def renew(self) -> None:
        """Extend the leases of the requests this process still serves."""
        with self._lock:
            by_key: dict[str, list[str]] = {}
            for token, key in self._held.items():
                by_key.setdefault(key, []).append(token)
        for key, tokens in by_key.items():
            self.leases.renew(key, self.lease, *tokens)

    def _start_renewer(self) -> None:
        # Called with the lock held. Started on first use, i.e. inside the gunicorn worker process
        # (threads do not survive fork); it stops when the process holds no lease any more.
        if self._renewer is None:
            self._renewer = threading.Thread(target=self._renew_loop, name="hark-lease-renewer", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            with self._lock:
                if not self._held:
                    self._renewer = None
                    return
            try:
                self.renew()
            except redis.RedisError as error:
                log.warning("could not renew in-flight request leases: %s", error)

    def close(self) -> None:
        self._stop.set()


def limit_client() -> None:
    """``before_request`` hook (after authentication): 429 when the client is at its limit."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    limiter = current_limiter()
    token = limiter.acquire(g.client_id)
    if token is None:
        log.info("client %s is at its limit of %d concurrent requests; answering 429", g.client_id, limiter.limit)
        raise ApiError(429, f"too many concurrent requests: at most {limiter.limit} per client "
                            "(HARK_MAX_CONCURRENT_PER_CLIENT); retry when one of yours has finished",
                       [{"code": "too_many_concurrent_requests", "limit": limiter.limit}],
                       {"Retry-After": str(RETRY_AFTER_SECONDS)})  # fmt: skip
    g.inflight_token = token


def release_client(_error: BaseException | None = None) -> None:
    """``teardown_request`` hook: give the request's slot back, whatever happened."""
    token = g.pop("inflight_token", None)
    if token is not None:
        try:
            current_limiter().release(token)
        except redis.RedisError as error:  # the lease expires on its own
            log.warning("could not release an in-flight request lease: %s", error)


def current_limiter() -> ClientLimiter:
    """The limiter of the current app."""
    return current_app.extensions["hark_limiter"]


def install_client_limits(app: Flask) -> None:
    """Limit concurrent requests per client on every non-public endpoint of `app` (after auth)."""
    settings = app.extensions["hark"].settings
    app.extensions["hark_limiter"] = ClientLimiter(app.extensions["hark"].redis, settings.deployment,
                                                   settings.max_concurrent_per_client)  # fmt: skip
    app.before_request(limit_client)
    app.teardown_request(release_client)

