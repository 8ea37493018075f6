"""WebSocket upgrades through the dispatcher: a byte tunnel between the client and the deployment.

The dispatcher does not speak WebSocket itself. It opens a TCP connection to the routed replica,
replays the client's upgrade request (every header, so ``Authorization`` and the ``bearer``
subprotocol offer pass unchanged), and from then on copies bytes both ways until either side closes:
the deployment's 101 (or its JSON refusal), frames, pings and the close handshake all pass through as
sent. It needs the client's raw socket, which gunicorn exposes as ``environ["gunicorn.socket"]``.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
from urllib.parse import urlsplit

from dispatcher.upstream import CONNECT_TIMEOUT_SECONDS, ConnectFailed

#: A tunnel with no byte in either direction for this long is closed (the SDK pings every 20 s).
IDLE_TIMEOUT_SECONDS = 300.0
RELAY_CHUNK_BYTES = 64 * 1024


def open_upstream(url: str) -> socket.socket:
    """A connected socket to the replica at `url` (TLS for https).

    Raises:
        ConnectFailed: Unreachable within the connect timeout.
    """
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        sock = socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT_SECONDS)
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    except OSError as error:
        raise ConnectFailed(f"{url} is unreachable: {error}") from None
    sock.settimeout(None)
    return sock


def upgrade_request(target: str, host: str, headers: dict[str, str]) -> bytes:
    """The client's upgrade request, addressed to the replica (`target` is path + query)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def relay(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until both directions ended, one side failed, or nothing moved for a while."""
    selector = selectors.DefaultSelector()
    peers = {client: upstream, upstream: client}
    open_reads = {client, upstream}
    for sock in peers:
        selector.register(sock, selectors.EVENT_READ)
    try:
        while open_reads:
            ready = selector.select(IDLE_TIMEOUT_SECONDS)
            if not ready:
                return
            for key, _ in ready:
                source: socket.socket = key.fileobj  # type: ignore[assignment]
                data = source.recv(RELAY_CHUNK_BYTES)
                if data:
                    peers[source].sendall(data)
                    continue
                open_reads.discard(source)  # that side is done sending: pass the half-close on
                selector.unregister(source)
                with contextlib.suppress(OSError):
                    peers[source].shutdown(socket.SHUT_WR)
    except OSError:
        return
    finally:
        selector.close()


def tunnel(client: socket.socket, upstream: socket.socket, request: bytes) -> None:
    """Send the upgrade `request` upstream and relay until the session ends; closes the upstream socket."""
    try:
        upstream.sendall(request)
        client.setblocking(True)
        relay(client, upstream)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            upstream.close()
