"""One HTTP exchange with a webhook receiver: to the checked address only, within a total deadline.

The connection goes to an address of :class:`~hark.webhook_policy.CheckedTarget` (never a second DNS
lookup, no proxy from the environment), with ``Host:`` and, for https, SNI and certificate
verification against the name. Socket timeouts bound each read, not the exchange: a receiver that
sends one header byte per second would keep a thread for minutes. So a timer shuts the socket down
at the deadline, which wakes any blocked read or write at once.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError
from urllib3.util.ssl_match_hostname import CertificateError

from hark.webhook_policy import CheckedTarget


class ExchangeError(Exception):
    """The exchange did not produce an HTTP status; `retryable` says whether another attempt may help."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class TLSOptions:
    """Certificate authorities for https receivers (default: the system's)."""

    ca_certs: str | None = None


class _Deadline:
    """Shuts down every watched socket when the time is up (blocked reads/writes return at once)."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, sock: socket.socket) -> None:
        """Shut `sock` down at the deadline (it is a dup, closed by :meth:`close`)."""
        with self._lock:
            self._watched.append(sock)
            if self.expired:
                self._shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                with contextlib.suppress(OSError):
                    sock.close()
            self._watched.clear()


class _Watched:
    """Mixin: hand a duplicate of the raw TCP socket to the deadline as soon as it is connected.

    A duplicate because TLS wrapping detaches the original object, and shutting down any descriptor of
    the socket ends it for all of them (the TLS handshake included).
    """

    deadline: _Deadline

    def _new_conn(self) -> socket.socket:
        sock: socket.socket = super()._new_conn()  # type: ignore[misc]
        self.deadline.watch(sock.dup())
        return sock


class _HTTP(_Watched, HTTPConnection):
    pass


class _HTTPS(_Watched, HTTPSConnection):
    pass


def exchange(target: CheckedTarget, method: str, request_target: str, body: bytes | None,
             headers: Mapping[str, str], deadline_seconds: float, tls: TLSOptions | None = None) -> int:  # fmt: skip
    """Send one request to the target's checked addresses and return the answer's HTTP status.

    The next address is tried only when connecting fails (nothing was sent); the answer's body is
    not read. Redirects are not followed (the status is returned).

    Args:
        target: The checked target (addresses, Host, SNI name).
        method: ``POST`` or ``GET``.
        request_target: Path and query to put on the request line.
        body: Request body (POST) or None.
        headers: Request headers (``Host`` is added).
        deadline_seconds: Total time allowed for connecting, sending and receiving the status line and
            headers, however slowly the receiver answers.
        tls: Certificate authorities for https (tests); default: the system's.

    Returns:
        The HTTP status code.

    Raises:
        ExchangeError: No status within the deadline, connection failure, or TLS failure (a
            certificate that does not verify is not retryable).
    """
    started = time.monotonic()
    deadline = _Deadline(deadline_seconds)
    errors: list[str] = []
    try:
        for address in target.addresses:
            remaining = deadline_seconds - (time.monotonic() - started)
            if remaining <= 0 or deadline.expired:
                break
            connection = _connection(target, address, remaining, tls or TLSOptions())
            connection.deadline = deadline
            try:
                try:
                    connection.connect()
                except (ssl.SSLCertVerificationError, CertificateError) as error:
                    raise ExchangeError(f"the certificate of {target.host} does not verify: {error}"[:300],
                                        retryable=False) from None  # fmt: skip
                except (OSError, HTTPError) as error:
                    errors.append(f"{address}: {_describe(error, deadline, deadline_seconds)}")
                    continue
                try:
                    connection.request(method, request_target, body=body,
                                       headers={**headers, "Host": target.host_header})  # fmt: skip
                    response = connection.getresponse()
                    return int(response.status)
                except (OSError, HTTPError, HTTPException) as error:
                    raise ExchangeError(_describe(error, deadline, deadline_seconds)) from None
            finally:
                connection.close()
        if deadline.expired or not errors:
            raise ExchangeError(f"no answer within the deadline of {deadline_seconds:g} s")
        raise ExchangeError("cannot connect: " + "; ".join(errors))
    finally:
        deadline.close()


def _connection(target: CheckedTarget, address: str, timeout: float, tls: TLSOptions) -> _HTTP | _HTTPS:
    # Proxies are never used: a proxy would resolve the name again.
    if target.scheme == "http":
        return _HTTP(address, target.port, timeout=timeout)
    name = None if target.is_ip_literal else target.host
    return _HTTPS(address, target.port, timeout=timeout, server_hostname=name, assert_hostname=target.host,
                  cert_reqs="CERT_REQUIRED", ca_certs=tls.ca_certs)  # fmt: skip


def _describe(error: BaseException, deadline: _Deadline, seconds: float) -> str:
    if deadline.expired:
        return f"no answer within the deadline of {seconds:g} s (connection closed)"
    if isinstance(error, TimeoutError | socket.timeout | ConnectTimeoutError):
        return "timed out"
    if isinstance(error, NewConnectionError) and error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"[:300]
