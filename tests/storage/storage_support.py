"""Real local servers for the storage tests (no mocks of our own code).

- :class:`RangeServer`: an HTTP/1.1 server (or HTTPS, with a certificate from :func:`make_tls_cert`)
  with byte ranges, ETags, a per-connection throttle (to stand in for a remote object store), exact
  counts of body bytes served per path, and switchable misbehaviour (no range support, 503s, stalls,
  corrupted bytes, auth, truncated bodies, redirects).
- :func:`make_tls_cert`: a self-signed certificate for 127.0.0.1 (trust it with ``REQUESTS_CA_BUNDLE``).
- :func:`fake_checkpoint`: a packed checkpoint with a few MB of random "weights".
- :func:`run_hark`: start ``hark checkpoints ...`` as a real process with a clean environment.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from checkpoints.pack import pack

REPO = Path(__file__).resolve().parents[2]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Behaviour:
    """How the server treats one path."""

    data: bytes
    rate: float | None = None
    """Bytes per second per connection (None: as fast as possible)."""
    ranges: bool = True
    fail_first: int = 0
    """Answer this many more requests with 503 first."""
    stall_after: int | None = None
    """On the next body longer than this, stop sending after this many bytes (once), keeping the
    connection open."""
    stall_seconds: float = 30.0
    corrupt_at: int = 0
    corrupt_times: int = 0
    """Serve the byte at offset ``corrupt_at`` inverted in this many more bodies (a bad copy in transit)."""
    truncate: bool = False
    """Announce the full length, then close after a tenth of it (every time)."""
    status: int | None = None
    auth: tuple[str, str] | None = None
    location: str | None = None
    """Answer 302 with this ``Location`` (once ``redirect_after`` requests were served normally)."""
    redirect_after: int = 0

    etag: str = ""

    def __post_init__(self) -> None:
        self.etag = '"' + hashlib.sha256(self.data).hexdigest()[:16] + '"'


@dataclass
class Stats:
    served: Counter = field(default_factory=Counter)
    """Body bytes written per path."""
    requests: list = field(default_factory=list)
    """(path, Range header or None, status) per GET."""
    active: int = 0
    max_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        stats, behaviour = self.server.stats, self.server.files.get(path)
        header = self.headers.get("Range")
        if behaviour is None:
            stats.requests.append((path, header, 404))
            return self._reply(404)
        if behaviour.auth is not None:
            expected = "Basic " + base64.b64encode(":".join(behaviour.auth).encode()).decode()
            if self.headers.get("Authorization") != expected:
                stats.requests.append((path, header, 401))
                return self._reply(401)
        if behaviour.status is not None:
            stats.requests.append((path, header, behaviour.status))
            return self._reply(behaviour.status)
        if behaviour.location is not None:
            with stats.lock:
                redirect = behaviour.redirect_after <= 0
                behaviour.redirect_after -= 0 if redirect else 1
            if redirect:
                stats.requests.append((path, header, 302))
                return self._reply(302, {"Location": behaviour.location})
        with stats.lock:
            failing = behaviour.fail_first > 0
            behaviour.fail_first -= 1 if failing else 0
        if failing:
            stats.requests.append((path, header, 503))
            return self._reply(503)
        size = len(behaviour.data)
        start, end, status = 0, size - 1, 200
        match = _RANGE.match(header or "") if behaviour.ranges else None
        if match:
            first, last = match.groups()
            if first:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            else:
                start, end = max(0, size - int(last)), size - 1
            if start >= size:
                stats.requests.append((path, header, 416))
                return self._reply(416, {"Content-Range": f"bytes */{size}"})
            status = 206
        stats.requests.append((path, header, status))
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("ETag", behaviour.etag)
        if behaviour.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self._send_body(path, behaviour, start, end + 1)

    def _send_body(self, path: str, behaviour: Behaviour, start: int, stop: int) -> None:
        stats = self.server.stats
        block = 32 * 1024
        with stats.lock:
            stats.active += 1
            stats.max_active = max(stats.max_active, stats.active)
            stall_at = behaviour.stall_after
            if stall_at is not None and stop - start > stall_at:
                behaviour.stall_after = None  # once, on a body long enough to stall in
            else:
                stall_at = None
        limit = start + (stop - start) // 10 if behaviour.truncate else stop
        sent = 0
        try:
            position = start
            while position < limit:
                if stall_at is not None and sent >= stall_at:
                    time.sleep(behaviour.stall_seconds)
                    return
                piece = behaviour.data[position : min(position + block, limit)]
                offset = behaviour.corrupt_at - position
                with stats.lock:
                    bad = behaviour.corrupt_times > 0 and 0 <= offset < len(piece)
                    behaviour.corrupt_times -= 1 if bad else 0
                if bad:
                    piece = piece[:offset] + bytes([piece[offset] ^ 0xFF]) + piece[offset + 1 :]
                began = time.monotonic()
                self.wfile.write(piece)
                with stats.lock:
                    stats.served[path] += len(piece)
                position += len(piece)
                sent += len(piece)
                if behaviour.rate:
                    time.sleep(max(0.0, len(piece) / behaviour.rate - (time.monotonic() - began)))
            if behaviour.truncate:
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            with stats.lock:
                stats.active -= 1


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    files: dict[str, Behaviour]
    stats: Stats

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients drop connections on purpose (probes, kills, stalls): no tracebacks on stderr."""


class RangeServer:
    """A local HTTP server for checkpoint files; use as a context manager."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        """Listen on a free port of 127.0.0.1 (serving starts on ``__enter__``).

        Args:
            tls: (certificate, key) files to serve HTTPS with (see :func:`make_tls_cert`); None: plain HTTP.
        """
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._server.files = {}
        self._server.stats = Stats()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base(self) -> str:
        return f"{self._scheme}://127.0.0.1:{self._server.server_address[1]}"

    @property
    def stats(self) -> Stats:
        return self._server.stats

    def add(self, path: str, data: bytes, **behaviour: object) -> str:
        """Serve ``data`` at ``path``; returns its URL."""
        self._server.files[path] = Behaviour(data=data, **behaviour)  # type: ignore[arg-type]
        return self.base + path

    def add_directory(self, prefix: str, directory: Path, **behaviour: object) -> str:
        """Serve every file of ``directory`` under ``prefix/`` (an unpacked checkpoint); returns the URL."""
        for file in sorted(directory.rglob("*")):
            if file.is_file():
                self.add(f"{prefix}/{file.relative_to(directory).as_posix()}", file.read_bytes(), **behaviour)
        return f"{self.base}{prefix}/"

    def behaviour(self, path: str) -> Behaviour:
        return self._server.files[path]

    def served(self, prefix: str = "") -> int:
        """Body bytes served so far for paths starting with ``prefix``."""
        with self.stats.lock:
            return sum(count for path, count in self.stats.served.items() if path.startswith(prefix))

    def gets(self, path: str) -> list[tuple[str, str | None, int]]:
        return [r for r in self.stats.requests if r[0] == path]


def make_tls_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1, valid for a day.

    Returns:
        (certificate PEM, private key PEM); the certificate doubles as the CA bundle to trust.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hark test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_file, key_file


ENGINE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def fake_checkpoint(root: Path, name: str = "fake-en", version: str = "1.0.0", size: int = 4 * 1024 * 1024,
                    output: str | None = None, seed: int | None = None, zeros: bool = False) -> Path:  # fmt: skip
    """A packed fake checkpoint with ``size`` bytes of random model.bin (archive by suffix of ``output``);
    ``zeros``: model.bin is all zeros instead (a .tar.gz of it is tiny but unpacks to ``size``)."""
    model = root / f"src-{name}-{version}-{output or 'dir'}"
    model.mkdir(parents=True)
    data = os.urandom(size) if seed is None else hashlib.shake_256(str(seed).encode()).digest(size)
    data = bytes(size) if zeros else data
    (model / "model.bin").write_bytes(data)
    (model / "config.json").write_bytes(b'{"alignment_heads": [], "lang_ids": []}')
    (model / "tokenizer.json").write_bytes(b'{"model": {}}')
    (model / "vocabulary.txt").write_bytes(b"a\nb\n")
    return pack(model, root / (output or f"{name}-{version}"), name=name, version=version, languages="en",
                progress=False)  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``hark`` process: none of the outer MODEL_/HARK_/AWS_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL_", "HARK_", "AWS_"))}
    env.update({"HARK_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def start_hark(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``hark <args>`` (this interpreter), stdout+stderr to ``log``."""
    handle = log.open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "hark.cli", *args], env=env, cwd=REPO, stdout=handle,
                                stderr=subprocess.STDOUT)  # fmt: skip
    finally:
        handle.close()


def wait_for(predicate: object, timeout: float, what: str) -> None:
    """Poll ``predicate()`` every 20 ms until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class ThrottledProxy:
    """A TCP proxy in front of another local server (moto's S3): throttles and counts the bytes each
    connection sends back to the client, so an S3-compatible store behaves like a remote one."""

    def __init__(self, target: tuple[str, int], rate: float | None = None) -> None:
        import socket

        self.target, self.rate = target, rate
        self.downstream = 0
        self.active = self.max_active = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ThrottledProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        import socket

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: object, sink: object, downstream: bool) -> None:
        import socket

        if downstream:
            with self._lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
        try:
            while data := source.recv(32 * 1024):  # type: ignore[attr-defined]
                began = time.monotonic()
                sink.sendall(data)  # type: ignore[attr-defined]
                if downstream:
                    with self._lock:
                        self.downstream += len(data)
                    if self.rate:
                        time.sleep(max(0.0, len(data) / self.rate - (time.monotonic() - began)))
        except OSError:
            pass
        finally:
            if downstream:
                with self._lock:
                    self.active -= 1
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
