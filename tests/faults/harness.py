"""Shared machinery of the fault and abuse suites (``tests/faults``, ``tests/abuse``).

- :class:`Scale`: how much of everything to do (``HARK_FAULTS_SCALE=fast|full``).
- :class:`AofRedis`: a private ``redis-server`` on a fixed port with the AOF configuration of the deploy
  files, which can be stopped and restarted in place (same port, same data directory).
- :class:`WebhookReceiver`: a loopback HTTP server that records every webhook delivery per request id
  and verifies its ``X-Hark-Signature`` and ``Idempotency-Key``.
- :class:`Ledger` and :class:`LoadGenerator`: steady load (threads posting short clips, sync and async
  with webhooks) and the accounting of every accepted request until its final outcome.
- :func:`drain` and :func:`audit`: after the load, every accepted request must have ended; duplicates,
  missing webhooks, orphaned staged audio and broker keys outside the deployment's namespace are counted.
- :func:`write_row`: each scenario's measured row (JSON) for ``tests/faults/report.py``.

Everything talks to real processes over loopback; every loop is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
import requests
import yaml

from hark.registry import live_instances
from hark.schemas import InstanceRecord
from tests.processes import HarkProcess, _clean_env, descendants, free_port, pid_alive

STT_PATH = "/waves/v1/stt/"
JOBS_PATH = "/waves/v1/stt/jobs/"
FINAL = ("success", "failed")

# --- scale -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Counts and durations of every scenario, chosen by ``HARK_FAULTS_SCALE``."""

    name: str
    kills: int
    load_threads: int
    redis_restarts: int
    redis_down_seconds: float
    sigterm_jobs: int
    schemathesis_cases: int
    hypothesis_cases: int
    live_query_cases: int
    media_mutations: int
    abuse_clients: int
    abuse_seconds: float
    p95_samples: int

    @property
    def full(self) -> bool:
        return self.name == "full"


SCALES: dict[str, Scale] = {
    "fast": Scale(name="fast", kills=1, load_threads=2, redis_restarts=1, redis_down_seconds=3.0, sigterm_jobs=4,
                  schemathesis_cases=120, hypothesis_cases=150, live_query_cases=30, media_mutations=0,
                  abuse_clients=6, abuse_seconds=5.0, p95_samples=8),
    "full": Scale(name="full", kills=20, load_threads=3, redis_restarts=3, redis_down_seconds=5.0, sigterm_jobs=6,
                  schemathesis_cases=2000, hypothesis_cases=2000, live_query_cases=300, media_mutations=900,
                  abuse_clients=40, abuse_seconds=25.0, p95_samples=40),
}  # fmt: skip


def current_scale() -> Scale:
    """The scale named by ``HARK_FAULTS_SCALE`` (default ``fast``)."""
    name = os.environ.get("HARK_FAULTS_SCALE", "fast").strip().lower() or "fast"
    if name not in SCALES:
        raise ValueError(f"HARK_FAULTS_SCALE must be one of {sorted(SCALES)}, not {name!r}")
    return SCALES[name]


# --- results ---------------------------------------------------------------------------------------


def write_row(out_dir: Path, scenario: str, **row: Any) -> Path:
    """Write one scenario's measured row as ``<out_dir>/<scenario>.json`` (read by ``report.py``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{scenario}.json"
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    data = {"scenario": scenario, "scale": current_scale().name, "written_at": time.time(), "test": test, **row}
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return path


def record_outcome(out_dir: Path, nodeid: str, outcome: str) -> None:
    """Add the pytest outcome of `nodeid` to the rows it wrote (called from the suites' report hook)."""
    for path in out_dir.glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("test") == nodeid:
                data["outcome"] = outcome
                path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str), encoding="utf-8")


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (nearest rank) of `values`; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# --- Redis with the deploy files' persistence ------------------------------------------------------

#: The persistence settings the issue asks the deploy files to use (fix 7). When the compose file
#: carries a redis command, :func:`deploy_redis_args` reads it instead.
AOF_ARGS: tuple[str, ...] = ("--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory", "512mb",
                             "--maxmemory-policy", "noeviction")  # fmt: skip
NO_PERSISTENCE_ARGS: tuple[str, ...] = ("--appendonly", "no", "--save", "")


def deploy_redis_args(compose: Path) -> list[str]:
    """The ``redis-server`` flags of the ``redis`` service in a docker-compose file (empty if none).

    ``${VAR:-default}`` takes its default, and ``--dir`` is dropped (the harness picks the directory).
    """
    services = (yaml.safe_load(compose.read_text(encoding="utf-8")) or {}).get("services") or {}
    command = (services.get("redis") or {}).get("command") or []
    argv = command.split() if isinstance(command, str) else [str(item) for item in command]
    argv = [re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", item) for item in argv[1:]]
    if "--dir" in argv:
        index = argv.index("--dir")
        del argv[index : index + 2]
    return argv


class AofRedis:
    """A private ``redis-server`` that keeps its port and data directory across restarts."""

    def __init__(self, workdir: Path, args: Iterable[str] = AOF_ARGS, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.args = [*args]
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen | None = None
        self.restarts = 0

    def start(self, timeout: float = 15.0) -> None:
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.workdir),
                   "--logfile", str(self.workdir / "redis.log"), "--databases", "4", *self.args]  # fmt: skip
        self.popen = subprocess.Popen(command, env=_clean_env({}), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.popen.poll() is not None:
                    break
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"redis-server on port {self.port} did not start; see {self.workdir / 'redis.log'}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Stop it (SIGTERM: a clean shutdown that flushes the AOF; SIGKILL: a crash)."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def restart(self, down_seconds: float, sig: int = signal.SIGTERM,
                while_down: Callable[[], None] | None = None) -> float:  # fmt: skip
        """Stop, stay down `down_seconds` (running `while_down` meanwhile), start; the monotonic time it was up."""
        self.stop(sig)
        ends = time.monotonic() + down_seconds
        if while_down is not None:
            while_down()
        time.sleep(max(0.0, ends - time.monotonic()))
        self.start()
        self.restarts += 1
        return time.monotonic()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=10)

    def close(self) -> None:
        self.stop()


# --- webhook receiver ------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One webhook call as the receiver saw it."""

    request_id: str
    method: str
    at: float
    status: str
    signature: str | None
    signature_ok: bool
    signature_problem: str
    idempotency_key: str | None


def verify_signature(header: str | None, body: bytes, secret: str, now: float, tolerance: float = 300.0) -> str:
    """Check ``X-Hark-Signature: t=<unix>,v1=<hex>`` over ``"<t>.<body>"``; '' when valid, else the problem."""
    if not header:
        return "no X-Hark-Signature header"
    parts = dict(item.strip().split("=", 1) for item in header.split(",") if "=" in item)
    stamp, digest = parts.get("t"), parts.get("v1")
    if not stamp or not digest:
        return f"malformed X-Hark-Signature {header[:80]!r} (want t=<unix>,v1=<hex>)"
    try:
        when = int(stamp)
    except ValueError:
        return f"t={stamp!r} is not a unix time"
    if abs(now - when) > tolerance:
        return f"t={when} is {now - when:.0f} s away from now"
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.lower()):
        return "v1 is not HMAC-SHA256(HARK_WEBHOOK_SECRET, '<t>.<body>')"
    return ""


class WebhookReceiver:
    """A loopback HTTP server that records every webhook call and answers 200."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        self.port = free_port()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self, body: bytes) -> None:
                query = parse_qs(urlsplit(self.path).query)
                rid, status = "", ""
                if self.command == "POST":
                    with contextlib.suppress(ValueError):
                        data = json.loads(body or b"{}")
                        rid, status = str(data.get("request_id", "")), str(data.get("status", ""))
                else:
                    rid = (query.get("request_id") or [""])[0]
                    status = (query.get("status") or [""])[0]
                header = self.headers.get("X-Hark-Signature")
                problem = verify_signature(header, body, receiver.secret, time.time())
                delivery = Delivery(request_id=rid, method=self.command, at=time.time(), status=status,
                                    signature=header, signature_ok=not problem, signature_problem=problem,
                                    idempotency_key=self.headers.get("Idempotency-Key"))  # fmt: skip
                with receiver.lock:
                    receiver.deliveries.append(delivery)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._record(self.rfile.read(length) if length else b"")

            def do_GET(self) -> None:
                self._record(b"")

            def log_message(self, *_args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def by_request(self) -> dict[str, list[Delivery]]:
        with self.lock:
            grouped: dict[str, list[Delivery]] = {}
            for delivery in self.deliveries:
                grouped.setdefault(delivery.request_id, []).append(delivery)
            return grouped

    def received(self, request_id: str) -> bool:
        with self.lock:
            return any(d.request_id == request_id for d in self.deliveries)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Canary:
    """A loopback TCP listener that counts connections: a refused webhook target must never reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits: list[bytes] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="ssrf-canary", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.5)
                first = b""
                with contextlib.suppress(OSError):
                    first = conn.recv(200)
                self.hits.append(first)
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


# --- accounting ------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One request the service accepted (answered 200/202 with a request id)."""

    request_id: str
    mode: str  # sync | async
    accepted_at: float
    outcome: str | None = None  # success | failed
    via: str | None = None  # sync | poll | webhook
    error_code: str | None = None
    ended_at: float | None = None


@dataclass
class Ledger:
    """Every request the load sent: accepted ones by request id, and what happened to the others."""

    entries: dict[str, Entry] = field(default_factory=dict)
    refused: Counter = field(default_factory=Counter)
    """Answers that did not accept the request, by status (503 while Redis is down is expected)."""
    refused_ids: dict[str, int] = field(default_factory=dict)
    unanswered: list[str] = field(default_factory=list)
    """Submissions that got no HTTP answer at all (connection error, client timeout)."""
    server_errors: list[str] = field(default_factory=list)
    """Answers >= 500 other than 503 (never acceptable)."""
    retry_after_missing: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, request_id: str, mode: str) -> Entry:
        with self.lock:
            entry = self.entries.setdefault(request_id, Entry(request_id, mode, time.time()))
            return entry

    def end(self, request_id: str, outcome: str, via: str, error_code: str | None = None) -> None:
        with self.lock:
            entry = self.entries.get(request_id)
            if entry is not None and entry.outcome is None:
                entry.outcome, entry.via, entry.error_code, entry.ended_at = outcome, via, error_code, time.time()

    def ids(self) -> list[str]:
        with self.lock:
            return list(self.entries)

    def pending(self) -> list[Entry]:
        with self.lock:
            return [e for e in self.entries.values() if e.outcome is None]

    def refuse(self, status: int, request_id: str | None, retry_after: bool) -> None:
        with self.lock:
            self.refused[status] += 1
            if request_id:
                self.refused_ids[request_id] = status
            if status in (429, 503) and not retry_after:
                self.retry_after_missing += 1


def _error_code(body: dict[str, Any]) -> str | None:
    for detail in body.get("details") or []:
        if isinstance(detail, dict) and "code" in detail:
            return str(detail["code"])
    return None


def submit(base_url: str, ledger: Ledger, clip: bytes, *, mode: str, webhook_url: str | None = None,
           timeout: float = 90.0, language: str = "en",
           headers: dict[str, str] | None = None) -> str | None:  # fmt: skip
    """POST one clip and record what the service said; the request id when it was accepted."""
    params = {"model": "pulse", "language": language}
    if mode == "async":
        assert webhook_url, "async submissions need a webhook URL"
        params["webhook_url"] = webhook_url
    try:
        answer = requests.post(f"{base_url}{STT_PATH}", params=params, data=clip, timeout=timeout,
                               headers={"Content-Type": "application/octet-stream", **(headers or {})})  # fmt: skip
    except requests.RequestException as error:
        with ledger.lock:
            ledger.unanswered.append(f"{type(error).__name__}: {str(error)[:200]}")
        return None
    rid = answer.headers.get("X-Request-ID")
    try:
        body = answer.json()
    except ValueError:
        body = {}
    rid = body.get("request_id") or rid
    status = answer.status_code
    if status == 200 and mode == "async" and body.get("status") == "processing" and rid:
        ledger.accept(rid, mode)
        return rid
    if status == 200 and body.get("status") == "success" and rid:
        ledger.accept(rid, mode)
        ledger.end(rid, "success", "sync")
        return rid
    if status == 202 and rid:
        ledger.accept(rid, mode)
        return rid
    if status >= 500 and status != 503:
        # A job that ran and failed answers with its own status (e.g. 500 internal_error, 504): explicit.
        code = _error_code(body)
        with ledger.lock:
            ledger.server_errors.append(f"HTTP {status} {code} {str(body.get('error', answer.text))[:160]}")
    ledger.refuse(status, rid, "Retry-After" in answer.headers)
    return None


class LoadGenerator:
    """Threads posting short clips (alternately sync and async with a webhook) until stopped."""

    def __init__(self, base_url: str, ledger: Ledger, clips: Sequence[bytes], *, threads: int,
                 webhook_url: str | None, pause: float = 0.2, max_outstanding: int = 4,
                 max_requests: int = 5000, max_seconds: float = 1800.0,
                 sync_timeout: float = 90.0) -> None:  # fmt: skip
        self.base_url = base_url
        self.ledger = ledger
        self.clips = list(clips)
        self.webhook_url = webhook_url
        self.pause = pause
        self.max_outstanding = max_outstanding
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.sync_timeout = sync_timeout
        self.stop_event = threading.Event()
        self.sent = 0
        self._count_lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(i,), name=f"load-{i}", daemon=True)
                        for i in range(threads)]  # fmt: skip

    def start(self) -> LoadGenerator:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def _next(self) -> int | None:
        with self._count_lock:
            if self.sent >= self.max_requests:
                return None
            self.sent += 1
            return self.sent

    def _loop(self, index: int) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            number = self._next()
            if number is None:
                return
            mode = "async" if (number + index) % 2 and self.webhook_url else "sync"
            if mode == "async":
                waited = time.monotonic() + 60
                limit = self.max_outstanding * len(self.threads)
                while (sum(1 for e in self.ledger.pending() if e.mode == "async") >= limit
                       and not self.stop_event.is_set() and time.monotonic() < waited):  # fmt: skip
                    time.sleep(0.1)
            clip = self.clips[number % len(self.clips)]
            submit(self.base_url, self.ledger, clip, mode=mode, webhook_url=self.webhook_url, timeout=self.sync_timeout)
            self.stop_event.wait(self.pause)

    def stop(self, timeout: float = 150.0) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=timeout)
        self.elapsed = time.monotonic() - self.started


def drain(base_url: str, ledger: Ledger, receiver: WebhookReceiver | None, *, timeout: float,
          webhook_grace: float = 20.0, headers: dict[str, str] | None = None) -> float:  # fmt: skip
    """Poll every accepted request that has not ended until it ends or `timeout` passes; seconds spent.

    Asynchronous requests end with their webhook (or, failing that, their polled final state); after
    every job has ended, webhooks get `webhook_grace` more seconds to arrive.
    """
    started = time.monotonic()
    deadline = started + timeout
    last_final = started
    while time.monotonic() < deadline:
        pending = ledger.pending()
        if not pending:
            break
        for entry in pending:
            if receiver is not None and entry.mode == "async" and receiver.received(entry.request_id):
                status = next(d.status for d in receiver.by_request()[entry.request_id])
                ledger.end(entry.request_id, "success" if status == "success" else "failed", "webhook")
                continue
            with contextlib.suppress(requests.RequestException, ValueError):
                answer = requests.get(f"{base_url}{JOBS_PATH}{entry.request_id}", timeout=10, headers=headers)
                body = answer.json() if answer.status_code == 200 else {}
                if body.get("status") in FINAL:
                    ledger.end(entry.request_id, str(body["status"]), "poll", _error_code(body))
                    last_final = time.monotonic()
        time.sleep(0.3)
    if receiver is not None:
        wanted = [e.request_id for e in ledger.entries.values() if e.mode == "async"]
        grace_end = min(max(last_final, time.monotonic()) + webhook_grace, time.monotonic() + webhook_grace)
        while time.monotonic() < grace_end and not all(receiver.received(r) for r in wanted):
            time.sleep(0.25)
    return time.monotonic() - started


@dataclass
class Audit:
    """The final accounting of one scenario."""

    accepted: int
    ended: int
    lost: int
    lost_ids: list[str]
    outcomes: dict[str, int]
    error_codes: dict[str, int]
    refused: dict[str, int]
    unanswered: int
    server_errors: list[str]
    webhook_deliveries: int
    duplicate_deliveries: dict[str, int]
    webhooks_missing: list[str]
    unsigned_deliveries: int
    signature_problems: list[str]
    idempotency_problems: list[str]
    orphaned_audio_keys: list[str]
    foreign_keys: list[str]
    retry_after_missing: int

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data["lost_ids"] = data["lost_ids"][:20]
        data["webhooks_missing"] = data["webhooks_missing"][:20]
        data["orphaned_audio_keys"] = data["orphaned_audio_keys"][:20]
        data["server_errors"] = data["server_errors"][:20]
        data["duplicate_deliveries"] = dict(list(data["duplicate_deliveries"].items())[:20])
        return data


def audit(ledger: Ledger, receiver: WebhookReceiver | None, client: redis.Redis, deployment: str,
          *, private_redis: bool = False) -> Audit:  # fmt: skip
    """Count what happened to every accepted request, and what the deployment left behind in Redis.

    Args:
        private_redis: the Redis serves this deployment only, so every key in it must carry the
            deployment's name (per-deployment broker key isolation).
    """
    entries = list(ledger.entries.values())
    lost_ids = [e.request_id for e in entries if e.outcome is None]
    grouped = receiver.by_request() if receiver is not None else {}
    async_ids = {e.request_id for e in entries if e.mode == "async"}
    duplicates = {rid: len(items) for rid, items in grouped.items() if len(items) > 1}
    missing = sorted(rid for rid in async_ids if rid not in grouped)
    deliveries = [d for items in grouped.values() for d in items]
    signature_problems = sorted({d.signature_problem for d in deliveries if not d.signature_ok})
    idempotency = sorted({f"{d.request_id}: Idempotency-Key={d.idempotency_key!r}" for d in deliveries
                          if d.idempotency_key != d.request_id})  # fmt: skip
    orphans = sorted(k.decode() if isinstance(k, bytes) else k
                     for k in client.scan_iter(match=f"hark:{deployment}:audio:*", count=1000))  # fmt: skip
    foreign: list[str] = []
    if private_redis:
        foreign = sorted({(k.decode() if isinstance(k, bytes) else k) for k in client.scan_iter(count=1000)
                          if deployment not in (k.decode() if isinstance(k, bytes) else k)})  # fmt: skip
    return Audit(
        accepted=len(entries), ended=len(entries) - len(lost_ids), lost=len(lost_ids), lost_ids=lost_ids,
        outcomes=dict(Counter(e.outcome or "none" for e in entries)),
        error_codes=dict(Counter(e.error_code for e in entries if e.error_code)),
        refused={str(k): v for k, v in ledger.refused.items()}, unanswered=len(ledger.unanswered),
        server_errors=list(ledger.server_errors), webhook_deliveries=len(deliveries),
        duplicate_deliveries=duplicates, webhooks_missing=missing,
        unsigned_deliveries=sum(1 for d in deliveries if not d.signature), signature_problems=signature_problems[:10],
        idempotency_problems=idempotency[:10], orphaned_audio_keys=orphans, foreign_keys=foreign,
        retry_after_missing=ledger.retry_after_missing,
    )  # fmt: skip


def assert_nothing_lost(result: Audit, scenario: str) -> None:
    """The invariants every load scenario shares, each failure naming the behaviour that is missing."""
    problems = []
    if result.lost:
        problems.append(f"{result.lost} of {result.accepted} accepted request(s) never ended (no result, no explicit "
                        f"error, no webhook) - infra failures must requeue and the reaper must fail jobs past "
                        f"HARK_JOB_DEADLINE_SECONDS with job_lost (fix 5); e.g. {result.lost_ids[:5]}")  # fmt: skip
    if result.unanswered:
        problems.append(f"{result.unanswered} submission(s) got no HTTP answer at all (the API hung or dropped the "
                        "connection instead of answering 503 + Retry-After)")  # fmt: skip
    if result.server_errors:
        problems.append(f"{len(result.server_errors)} answer(s) >= 500 other than 503: {result.server_errors[:5]}")
    if result.duplicate_deliveries:
        some = dict(list(result.duplicate_deliveries.items())[:5])
        problems.append(f"duplicate webhook deliveries per request id: {some}")
    if result.webhooks_missing:
        problems.append(f"{len(result.webhooks_missing)} async request(s) ended without any webhook delivery: "
                        f"{result.webhooks_missing[:5]}")  # fmt: skip
    if result.orphaned_audio_keys:
        problems.append(f"{len(result.orphaned_audio_keys)} orphaned staged-audio key(s) after drain: "
                        f"{result.orphaned_audio_keys[:5]}")  # fmt: skip
    assert not problems, f"[{scenario}] " + "\n".join(problems)


# --- workers ---------------------------------------------------------------------------------------


def instances_of(client: redis.Redis, worker: HarkProcess) -> list[InstanceRecord]:
    """Live registry instances whose pid belongs to `worker`'s process tree."""
    tree = {worker.pid, *descendants(worker.pid)}
    return [i for i in live_instances(client, worker.deployment or "") if i.pid in tree]


def child_deaths(worker: HarkProcess) -> int:
    """How many times the supervisor logged a child's death (restart counter)."""
    return worker.log_text(limit=None).count(" died with status ")


@dataclass
class WorkerSnapshot:
    """Which children a worker runs, to tell later whether any crashed or was restarted."""

    supervisor_alive: bool
    child_pids: dict[str, int]
    deaths: int

    @classmethod
    def take(cls, client: redis.Redis, worker: HarkProcess) -> WorkerSnapshot:
        pids = {i.checkpoint.name: i.pid for i in instances_of(client, worker)}
        return cls(supervisor_alive=worker.alive(), child_pids=pids, deaths=child_deaths(worker))

    def compare(self, later: WorkerSnapshot) -> list[str]:
        """What changed for the worse between this snapshot and `later`."""
        problems = []
        if not later.supervisor_alive:
            problems.append("the worker supervisor exited")
        if later.deaths > self.deaths:
            problems.append(f"{later.deaths - self.deaths} worker child death(s) (supervisor restarts)")
        for name, pid in self.child_pids.items():
            if later.child_pids.get(name) != pid:
                problems.append(f"child {name} pid {pid} -> {later.child_pids.get(name)} (crashed or not live)")
        return problems


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `predicate` until true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval)
    return False


def alive_pids(pids: Iterable[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]
