"""Restart Redis under steady load, with the AOF configuration of the deploy files.

While Redis is down the API must answer ``503`` with ``Retry-After`` (quickly, never 500, never a
hang); once it is back, a well-formed request must succeed again within 5 s; the worker's children
must reconnect by themselves (same pids, no supervisor restart, heartbeats back); and no accepted
request may be lost. A full-scale-only variant runs the same restart without persistence and
records what is lost then (it is not asserted: it is the reason for the AOF configuration).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import Checkpoints
from tests.faults.conftest import FaultStack, build_stack, close_stack, redis_persistence_args
from tests.faults.harness import (
    NO_PERSISTENCE_ARGS,
    STT_PATH,
    Audit,
    Ledger,
    LoadGenerator,
    Scale,
    WorkerSnapshot,
    assert_nothing_lost,
    audit,
    drain,
    instances_of,
    wait_for,
    write_row,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

#: The API must be serving again this long after Redis is back.
RECOVERY_LIMIT_SECONDS = 5.0
#: An answer while Redis is down must come at least this fast (no hanging on a dead connection).
DOWN_ANSWER_LIMIT_SECONDS = 6.0


@dataclass
class RestartReport:
    """What one run of the restart scenario measured."""

    down_answers: list[dict[str, Any]] = field(default_factory=list)
    recovery_seconds: list[float] = field(default_factory=list)
    reconnect_seconds: list[float] = field(default_factory=list)
    sent: int = 0
    elapsed: float = 0.0
    worker_problems: list[str] = field(default_factory=list)


def _probe(url: str, clip: bytes, timeout: float = 15.0) -> dict[str, Any]:
    started = time.monotonic()
    try:
        answer = requests.post(f"{url}{STT_PATH}", params={"model": "pulse", "language": "en"}, data=clip,
                               headers={"Content-Type": "application/octet-stream"}, timeout=timeout)  # fmt: skip
        status, retry_after = answer.status_code, answer.headers.get("Retry-After")
    except requests.RequestException as error:
        status, retry_after = 0, None
        return {"status": status, "error": type(error).__name__, "seconds": round(time.monotonic() - started, 2)}
    return {"status": status, "retry_after": retry_after, "seconds": round(time.monotonic() - started, 2)}


def run_restarts(stack: FaultStack, scale: Scale, clips: list[bytes], restarts: int) -> tuple[Audit, RestartReport]:
    """Steady load, `restarts` Redis restarts (SIGTERM, down for the scale's duration), drain, audit."""
    client = stack.redis.client()
    report = RestartReport()
    before = WorkerSnapshot.take(client, stack.worker)
    ledger = Ledger()
    load = LoadGenerator(stack.url, ledger, clips, threads=scale.load_threads, webhook_url=stack.receiver.url,
                         pause=0.3, max_outstanding=3, max_seconds=restarts * 90 + 120).start()  # fmt: skip
    probe_clip = clips[1]
    try:
        for _ in range(restarts):
            time.sleep(4)

            def while_down() -> None:
                ends = time.monotonic() + scale.redis_down_seconds - 0.3
                while time.monotonic() < ends:
                    report.down_answers.append(_probe(stack.url, probe_clip, timeout=DOWN_ANSWER_LIMIT_SECONDS + 4))
                    time.sleep(0.2)

            stack.redis.restart(scale.redis_down_seconds, while_down=while_down)
            up_wall, up = time.time(), time.monotonic()
            recovered = None
            while time.monotonic() - up < 60:
                if _probe(stack.url, probe_clip, timeout=30)["status"] == 200:
                    recovered = time.monotonic() - up
                    break
                time.sleep(0.1)
            report.recovery_seconds.append(round(recovered, 2) if recovered is not None else float("inf"))
            def beating(since: float = up_wall) -> bool:
                found = instances_of(client, stack.worker)
                return bool(found) and all(i.heartbeat_at > since for i in found)

            fresh = wait_for(beating, timeout=30)
            report.reconnect_seconds.append(round(time.monotonic() - up, 2) if fresh else float("inf"))
        time.sleep(4)
    finally:
        load.stop()
    report.sent, report.elapsed = load.sent, load.elapsed
    drain(stack.url, ledger, stack.receiver, timeout=150)
    result = audit(ledger, stack.receiver, client, stack.deployment)
    report.worker_problems = before.compare(WorkerSnapshot.take(client, stack.worker))
    client.close()
    return result, report


def _down_problems(report: RestartReport) -> list[str]:
    problems = []
    bad = [a for a in report.down_answers if a["status"] != 503]
    if bad:
        problems.append(f"{len(bad)} of {len(report.down_answers)} answer(s) while Redis was down were not 503: "
                        f"{bad[:5]}")  # fmt: skip
    no_retry = [a for a in report.down_answers if a["status"] == 503 and not a.get("retry_after")]
    if no_retry:
        problems.append(f"{len(no_retry)} 503 answer(s) while Redis was down carried no Retry-After header")
    slow = [a for a in report.down_answers if a["seconds"] > DOWN_ANSWER_LIMIT_SECONDS]
    if slow:
        problems.append(f"{len(slow)} answer(s) while Redis was down took more than {DOWN_ANSWER_LIMIT_SECONDS} s: "
                        f"{slow[:3]}")  # fmt: skip
    return problems


@pytest.mark.timeout(1500)
def test_redis_restart_under_load(fault_stack: FaultStack, scale: Scale, load_clips: list[bytes],
                                  results_dir: Path) -> None:  # fmt: skip
    result, report = run_restarts(fault_stack, scale, load_clips, scale.redis_restarts)
    write_row(results_dir, "redis_restart", title="restart Redis (AOF everysec, noeviction) under steady load",
              load=f"{scale.load_threads} clients, {report.sent} requests over {report.elapsed:.0f} s",
              faults_injected=scale.redis_restarts,
              faults_survived=sum(1 for s in report.recovery_seconds if s <= RECOVERY_LIMIT_SECONDS),
              inputs=report.sent + len(report.down_answers), down_answers=report.down_answers[:30],
              down_statuses=sorted({a["status"] for a in report.down_answers}),
              recovery_seconds=report.recovery_seconds, worker_reconnect_seconds=report.reconnect_seconds,
              worker_problems=report.worker_problems, redis_args=redis_persistence_args(),
              command="pytest tests/faults/test_redis_restart.py", **result.row())  # fmt: skip
    problems = _down_problems(report)
    if any(s > RECOVERY_LIMIT_SECONDS for s in report.recovery_seconds):
        problems.append(f"the API did not serve again within {RECOVERY_LIMIT_SECONDS} s of Redis coming back: "
                        f"recovery {report.recovery_seconds} s")  # fmt: skip
    if any(s == float("inf") for s in report.reconnect_seconds):
        problems.append("the worker's heartbeats did not come back within 30 s of Redis restarting")
    if report.worker_problems:
        problems.append(f"workers did not reconnect without a restart: {report.worker_problems}")
    assert not problems, ("Redis restart (fixes 5 and 7: 503 + Retry-After while Redis is down, quick recovery, "
                          "workers reconnect):\n" + "\n".join(problems))  # fmt: skip
    assert_nothing_lost(result, "Redis restart with AOF")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_redis_restart_without_persistence_loses_jobs(tmp_path: Path, bundled_checkpoints: Checkpoints,
                                                      scale: Scale, load_clips: list[bytes],
                                                      results_dir: Path) -> None:  # fmt: skip
    """Informational: the same restart with ``--appendonly no``; the row records what is lost."""
    stack = build_stack(tmp_path, bundled_checkpoints, list(NO_PERSISTENCE_ARGS), "np")
    try:
        result, report = run_restarts(stack, scale, load_clips, 1)
    finally:
        close_stack(stack)
    write_row(results_dir, "redis_restart_no_persistence",
              title="restart Redis WITHOUT persistence (informational: what AOF prevents)",
              load=f"{scale.load_threads} clients, {report.sent} requests over {report.elapsed:.0f} s",
              faults_injected=1, faults_survived=int(result.lost == 0), inputs=report.sent,
              recovery_seconds=report.recovery_seconds, worker_problems=report.worker_problems,
              informational=True, command="HARK_FAULTS_SCALE=full pytest tests/faults/test_redis_restart.py -m slow",
              **result.row())  # fmt: skip
    assert result.accepted > 0, "the load generator had no request accepted"
