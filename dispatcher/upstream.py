"""Connections to the deployments: one pooled keep-alive urllib3 pool per replica URL.

urllib3 directly rather than requests: the dispatcher's hot path is one pool lookup and one
``urlopen`` per request, with no session merging, cookie jar or hooks in between (measured in
``bench/dispatcher.py``). Bodies are passed as file objects or generators and sent as they are read;
answers are streamed back unless they are small.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import IO, Any
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError

log = logging.getLogger(__name__)

#: Seconds to open a connection to a replica before the next one is tried.
CONNECT_TIMEOUT_SECONDS = 3.0
#: Answers up to this size (by Content-Length) are read whole and sent in one write.
SMALL_ANSWER_BYTES = 256 * 1024
STREAM_CHUNK_BYTES = 64 * 1024


class ConnectFailed(Exception):
    """The replica could not be reached; nothing was sent, so another replica may take the request."""


class UpstreamBroken(Exception):
    """The replica failed after the request was (maybe) sent: no failover. `status` is 502 or 504."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CountingReader:
    """A request body that remembers whether anything was read from it (then it cannot be resent)."""

    def __init__(self, stream: IO[bytes], length: int) -> None:
        self.stream = stream
        self.remaining = length
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        size = self.remaining if size < 0 else min(size, self.remaining)
        data = self.stream.read(size)
        self.remaining -= len(data)
        self.consumed += len(data)
        return data


def chunks(stream: IO[bytes], counter: list[int]) -> Iterator[bytes]:
    """A chunked request body (no Content-Length) as it arrives; `counter[0]` counts bytes read."""
    while True:
        data = stream.read(STREAM_CHUNK_BYTES)
        if not data:
            return
        counter[0] += len(data)
        yield data


class Upstreams:
    """A keep-alive connection pool per replica URL.

    Args:
        urls: every replica base URL of the route map.
        pool_size: connections kept per replica (the dispatcher's threads, so none waits for one).
        read_timeout: seconds to wait for a replica's answer.
    """

    def __init__(self, urls: Iterable[str], pool_size: int, read_timeout: float) -> None:
        self.timeout = urllib3.Timeout(connect=CONNECT_TIMEOUT_SECONDS, read=read_timeout)
        self.pools: dict[str, urllib3.HTTPConnectionPool] = {}
        for url in urls:
            parts = urlsplit(url)
            cls = urllib3.HTTPSConnectionPool if parts.scheme == "https" else urllib3.HTTPConnectionPool
            self.pools[url] = cls(parts.hostname, parts.port, maxsize=pool_size, block=False, timeout=self.timeout,
                                  retries=False)  # fmt: skip
        self.prefixes = {url: urlsplit(url).path.rstrip("/") for url in self.pools}

    def send(self, url: str, method: str, target: str, headers: dict[str, str], body: Any = None,
             chunked: bool = False, timeout: urllib3.Timeout | None = None) -> urllib3.BaseHTTPResponse:  # fmt: skip
        """Send one request to `url` (``target`` is path + query); the answer's body is not read yet.

        Raises:
            ConnectFailed: The connection could not be opened (safe to try another replica).
            UpstreamBroken: It failed later (502), or no answer within the read timeout (504).
        """
        try:
            return self.pools[url].urlopen(method, self.prefixes[url] + target, body=body, headers=headers,
                                           chunked=chunked, redirect=False, preload_content=False,
                                           decode_content=False, timeout=timeout or self.timeout)  # fmt: skip
        except (NewConnectionError, ConnectTimeoutError) as error:
            raise ConnectFailed(f"{url} is unreachable: {error}") from None
        except ReadTimeoutError:
            raise UpstreamBroken(504, f"{url} did not answer within {self.timeout.read_timeout:.0f} s") from None
        except (HTTPError, OSError) as error:
            raise UpstreamBroken(502, f"{url} failed: {type(error).__name__}: {error}") from None

    def close(self) -> None:
        for pool in self.pools.values():
            pool.close()


def answer_body(response: urllib3.BaseHTTPResponse) -> Iterable[bytes]:
    """The answer's body for WSGI: read whole when small (one write), else streamed and released at the end."""
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) <= SMALL_ANSWER_BYTES:
        try:
            data = response.read()
        finally:
            response.release_conn()
        return [data]
    return _streamed(response)


def _streamed(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    complete = False
    try:
        yield from response.stream(STREAM_CHUNK_BYTES, decode_content=False)
        complete = True
    finally:
        if complete:
            response.release_conn()  # back to the pool for the next request
        else:
            response.close()  # the client left mid-answer: the connection holds unread bytes, drop it
