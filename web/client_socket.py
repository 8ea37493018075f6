"""What the API does with the client's socket: a deadline on the request body, and noticing a client
that left while its sync request waits.

Both use the socket gunicorn exposes as ``environ["gunicorn.socket"]``; without one (Flask's test
client, another WSGI server) they do nothing and reading works as before.

- **Body deadline.** A stalled upload must not hold an API thread forever. Each read from the socket
  may wait at most HARK_UPLOAD_TIMEOUT_SECONDS (a socket timeout), and the whole body must arrive
  within HARK_UPLOAD_TIMEOUT_SECONDS + size / HARK_UPLOAD_MIN_BYTES_PER_SECOND. gunicorn loops over
  ``recv`` inside one ``read``, so a trickling client would reset the socket timeout forever: the
  whole-body deadline is enforced by a watchdog thread that shuts the socket's read side down, which
  ends the blocked read at once. Either way the request answers 408 and the connection is closed.
- **Client gone.** A sync request waits up to HARK_SYNC_WAIT_SECONDS; if its client closed the
  connection meanwhile, the wait is pointless. Between wait slices, :func:`client_gone` peeks at the
  socket without blocking: end-of-file means the client left (a client that only half-closes its
  sending side after the body looks the same; HTTP clients do not do that).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import request
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge

from web.errors import ApiError

log = logging.getLogger(__name__)

#: Bytes asked of the request stream per read.
READ_CHUNK = 64 * 1024


class Watchdog:
    """Runs callbacks at deadlines from one thread per process (not one timer thread per upload)."""

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, callback: Callable[[], None]) -> list[Any]:
        """Run `callback` at monotonic time `when` unless cancelled; returns a handle for :meth:`cancel`."""
        entry = [when, next(self._seq), callback]
        with self._cv:
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="hark-upload-watchdog", daemon=True)
                self._thread.start()
            self._cv.notify()
        return entry

    def cancel(self, entry: list[Any]) -> None:
        """Forget `entry` (it holds the socket; pending entries are at most the threads in use)."""
        with self._cv, contextlib.suppress(ValueError):
            self._heap.remove(entry)
            heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # a watchdog that dies would leave every later upload unbounded
                log.exception("upload deadline callback failed")


WATCHDOG = Watchdog()


def _socket() -> socket.socket | None:
    sock = request.environ.get("gunicorn.socket")
    return sock if isinstance(sock, socket.socket) else None


def _close_read_side(sock: socket.socket) -> None:
    # The client will not finish this body: nothing more is read from the connection, gunicorn sees
    # end-of-file instead of parsing the rest of the body as a next request, and closes it.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


def upload_timeout(timeout: float, min_rate: int) -> ApiError:
    return ApiError(408, f"the request body did not arrive in time: allow at most {timeout:g} s without data "
                         f"and send at least {min_rate} bytes/s (HARK_UPLOAD_TIMEOUT_SECONDS, "
                         "HARK_UPLOAD_MIN_BYTES_PER_SECOND)", [{"code": "upload_timeout"}])  # fmt: skip


def _read_all(stream: Any, declared: int | None, limit: int, too_slow: Callable[[int], bool]) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while declared is None or total < declared:
        want = READ_CHUNK if declared is None else min(READ_CHUNK, declared - total)
        chunk = stream.read(want)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise RequestEntityTooLarge()
        chunks.append(chunk)
        if too_slow(total):
            raise TimeoutError("upload below the minimum rate")
    body = b"".join(chunks)
    chunks.clear()
    return body


def read_body(limit: int, timeout: float, min_rate: int) -> bytes:
    """The raw request body, never more than `limit` bytes, within the upload deadline.

    Args:
        limit: HARK_MAX_UPLOAD_BYTES.
        timeout: HARK_UPLOAD_TIMEOUT_SECONDS, the longest pause between two reads and the base
            time of the whole-body deadline.
        min_rate: HARK_UPLOAD_MIN_BYTES_PER_SECOND; the body gets its size at this rate on top.

    Raises:
        RequestEntityTooLarge: the declared length or the bytes actually sent exceed `limit` (413).
        ApiError: 408 ``upload_timeout`` when the body stalls or arrives too slowly.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise RequestEntityTooLarge()
    sock = _socket()
    if sock is None:
        return _read_all(request.stream, declared, limit, lambda _total: False)

    started = time.monotonic()
    cut = threading.Event()

    def _deadline_passed() -> None:
        cut.set()
        _close_read_side(sock)

    # Chunked bodies have no size yet: bound them by the largest allowed, and check the rate as they come.
    whole = timeout + (declared if declared is not None else limit) / min_rate
    handle = WATCHDOG.call_at(started + whole, _deadline_passed)
    too_slow = (lambda _total: False) if declared is not None else (
        lambda total: time.monotonic() - started > timeout + total / min_rate)  # fmt: skip
    sock.settimeout(timeout)
    try:
        body = _read_all(request.stream, declared, limit, too_slow)
    except (TimeoutError, ClientDisconnected) as error:
        if cut.is_set() or isinstance(error, TimeoutError) or isinstance(error.__context__, TimeoutError):
            _close_read_side(sock)
            log.warning("upload timed out after %.1f s (%s bytes declared)", time.monotonic() - started,
                        declared if declared is not None else "?")  # fmt: skip
            raise upload_timeout(timeout, min_rate) from None
        raise
    finally:
        WATCHDOG.cancel(handle)
        with contextlib.suppress(OSError):
            sock.settimeout(None)  # back to blocking, as gunicorn left it
    if cut.is_set():  # the watchdog ended a chunked body early: what we have is not the whole body
        log.warning("upload missed its %.1f s deadline", whole)
        raise upload_timeout(timeout, min_rate)
    return body


def client_gone() -> bool:
    """True when the client of the current request has closed its connection (never blocks)."""
    sock = _socket()
    if sock is None:
        return False
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError, ValueError):
        return False  # connected and nothing sent (the normal case), or a TLS socket we cannot peek
    except (ConnectionError, OSError):
        return True  # reset by the peer
    return data == b""
