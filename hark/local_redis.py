"""Make sure a Redis is reachable for local runs: use the configured one, or start a private one.

The private one lives in a fresh temporary directory for one `hark run` and dies with it, so it
keeps nothing on disk (no RDB, no AOF): jobs of a previous run are gone by design. Deployments use
the persistent Redis of ``deploy/`` instead (AOF, maxmemory, noeviction; see the README).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import redis

from hark.proc import die_with_parent


class RedisUnavailable(RuntimeError):
    """No Redis could be reached or started; the message says what to do."""


@dataclass
class LocalRedis:
    url: str
    process: subprocess.Popen | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def ping(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def ensure_redis(url: str, *, may_start: bool) -> LocalRedis:
    """Return a reachable Redis at `url`, starting ``redis-server`` for a local URL when allowed.

    Args:
        url: the configured REDIS_URL.
        may_start: False when the operator set REDIS_URL explicitly (never start a shadow Redis then).
    """
    if ping(url):
        return LocalRedis(url)
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    if not may_start or host not in ("127.0.0.1", "localhost", "::1"):
        raise RedisUnavailable(f"Redis at {url} does not answer: start it, or fix REDIS_URL")
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            "no Redis answers on 127.0.0.1 and redis-server is not installed: "
            "install it (apt-get install redis-server) or set REDIS_URL to a running Redis"
        )
    workdir = tempfile.mkdtemp(prefix="hark-redis-")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", workdir, "--loglevel", "warning", "--maxmemory-policy", "noeviction",
         "--client-output-buffer-limit", "pubsub 256mb 128mb 300"],
        stdout=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),  # a SIGKILLed `hark run` must not leave it holding the port
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if ping(url):
            return LocalRedis(url, process)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RedisUnavailable(f"started redis-server on port {port} but it did not answer; is the port taken?")
