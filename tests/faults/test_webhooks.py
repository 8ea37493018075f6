"""Webhook deliveries under faults: signed, idempotent, and bounded in time however the receiver trickles.

- every delivery carries ``X-Hark-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` and
  ``Idempotency-Key: <request_id>`` (fix 1);
- a receiver that answers one byte a second holds a delivery attempt no longer than
  ``HARK_WEBHOOK_TIMEOUT_SECONDS`` in total (fix 1: a total deadline, not a per-read timeout).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.faults.conftest import FAULT_ENV, FaultStack
from tests.faults.harness import Ledger, drain, submit, wait_for, write_row

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def test_webhooks_are_signed_with_an_idempotency_key(fault_stack: FaultStack, load_clips: list[bytes]) -> None:
    stack = fault_stack
    ledger = Ledger()
    ids = [submit(stack.url, ledger, clip, mode="async", webhook_url=stack.receiver.url) for clip in load_clips[:3]]
    assert all(ids), f"async submissions refused: {ledger.refused} {ledger.server_errors}"
    drain(stack.url, ledger, stack.receiver, timeout=90)
    grouped = stack.receiver.by_request()
    deliveries = [d for rid in ids for d in grouped.get(rid or "", [])]
    assert len(deliveries) == len(ids), f"expected one delivery per request, got {len(deliveries)} for {ids}"
    problems = [f"{d.request_id}: {d.signature_problem}" for d in deliveries if not d.signature_ok]
    problems += [f"{d.request_id}: Idempotency-Key={d.idempotency_key!r}" for d in deliveries
                 if d.idempotency_key != d.request_id]  # fmt: skip
    assert not problems, ("webhook deliveries must be signed (X-Hark-Signature: t=<unix>,v1=<hmac-sha256>) and carry "
                          "Idempotency-Key: <request_id> (fix 1):\n" + "\n".join(problems))  # fmt: skip


class TrickleReceiver:
    """Accepts webhook calls and answers one byte per second, recording how long each connection lasted."""

    def __init__(self, seconds: int = 120) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.seconds = seconds
        self.connections: list[float] = []
        self.opened: list[float] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        started = time.monotonic()
        self.opened.append(started)
        try:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(self.seconds):
                if self.stop.wait(1.0):
                    break
                conn.sendall(b"x")
        except OSError:
            pass
        finally:
            self.connections.append(time.monotonic() - started)
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.timeout(300)
def test_trickling_webhook_receiver_is_cut_at_the_total_deadline(fault_stack: FaultStack, load_clips: list[bytes],
                                                                 results_dir: Path) -> None:  # fmt: skip
    stack = fault_stack
    limit = float(FAULT_ENV["HARK_WEBHOOK_TIMEOUT_SECONDS"])
    trickle = TrickleReceiver()
    try:
        ledger = Ledger()
        rid = submit(stack.url, ledger, load_clips[0], mode="async", webhook_url=f"http://127.0.0.1:{trickle.port}/h")
        assert rid, f"async submission refused: {ledger.refused} {ledger.server_errors}"
        wait_for(lambda: bool(trickle.opened), timeout=60, interval=0.2)  # the job runs, the delivery starts
        first = trickle.opened[0] if trickle.opened else time.monotonic()
        wait_for(lambda: bool(trickle.connections), timeout=max(0.0, first + limit + 10 - time.monotonic()),
                 interval=0.2)  # fmt: skip
        ages = [time.monotonic() - t for t in trickle.opened]
    finally:
        trickle.close()
    durations = [round(d, 1) for d in (trickle.connections or ages)]
    survived = int(bool(durations) and max(durations) <= limit + 2)
    write_row(results_dir, "webhook_trickle", title="webhook receiver trickling 1 byte/s",
              load="1 async job", faults_injected=1, faults_survived=survived,
              inputs=1, lost=0, attempt_seconds=durations, deadline_seconds=limit,
              command="pytest tests/faults/test_webhooks.py")  # fmt: skip
    assert durations, "no delivery attempt reached the trickling receiver within 60 s"
    assert max(durations) <= limit + 2, (
        f"a webhook attempt to a receiver trickling 1 byte/s lasted {max(durations)} s; HARK_WEBHOOK_TIMEOUT_SECONDS="
        f"{limit:g} must be the total deadline of one attempt (fix 1)")  # fmt: skip
