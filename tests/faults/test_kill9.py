"""Kill -9 the model child mid-job, again and again, under steady load.

Every accepted request must end in a result or an explicit error (sync answer, job polling or
webhook), no request id may be delivered to its webhook twice, and no staged audio may be left in
Redis once the load has drained. Kills are spaced so the supervisor's restart limit (5 deaths a
minute) is never reached: this is about jobs surviving crashes, not about the crash-loop guard.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from hark.jobs import JobStore
from tests.faults.conftest import FaultStack
from tests.faults.harness import (
    Ledger,
    LoadGenerator,
    Scale,
    assert_nothing_lost,
    audit,
    drain,
    instances_of,
    pid_alive,
    wait_for,
    write_row,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

#: At most this many kills in any 62 s window (the supervisor gives up past 5 deaths a minute).
KILLS_PER_MINUTE = 4


def _processing_job(store: JobStore, ledger_ids: list[str], since: float) -> str | None:
    """A job the current child marked processing (after `since`, the child's start)."""
    for rid in ledger_ids[-40:]:
        state = store.get(rid) or {}
        if state.get("status") == "processing" and float(state.get("updated_at") or 0) > since:
            return rid
    return None


@pytest.mark.timeout(2400)
def test_kill9_worker_child_under_load(fault_stack: FaultStack, scale: Scale, load_clips: list[bytes],
                                       results_dir) -> None:  # fmt: skip
    stack = fault_stack
    client = stack.redis.client()
    store = JobStore(client, stack.deployment, 3600, 3600)
    ledger = Ledger()
    load = LoadGenerator(stack.url, ledger, load_clips, threads=scale.load_threads, webhook_url=stack.receiver.url,
                         pause=0.3, max_outstanding=3, max_seconds=scale.kills * 60 + 120).start()  # fmt: skip
    kills: list[dict[str, object]] = []
    kill_times: list[float] = []
    skipped = 0
    try:
        scenario_deadline = time.monotonic() + scale.kills * 75 + 60
        while len(kills) < scale.kills and time.monotonic() < scenario_deadline:
            recent = [t for t in kill_times if time.monotonic() - t < 62]
            if len(recent) >= KILLS_PER_MINUTE:
                time.sleep(0.5)
                continue
            assert stack.worker.alive(), "the worker supervisor died during the kill loop:\n" + stack.worker.log_text()
            children = [i for i in instances_of(client, stack.worker) if pid_alive(i.pid)]
            if not children:
                time.sleep(0.25)
                continue
            victim = children[0]
            rid = None
            window = time.monotonic() + 20
            while rid is None and time.monotonic() < window:
                rid = _processing_job(store, ledger.ids(), victim.started_at)
                if rid is None:
                    time.sleep(0.05)
            if rid is None:
                skipped += 1
                continue
            os.kill(victim.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            kill_times.append(killed_at)
            def replaced(old: int = victim.pid) -> bool:
                return any(i.pid != old and pid_alive(i.pid) for i in instances_of(client, stack.worker))

            restarted = wait_for(replaced, timeout=90)
            kills.append({"pid": victim.pid, "job": rid, "restart_seconds": round(time.monotonic() - killed_at, 2),
                          "restarted": restarted})  # fmt: skip
            assert restarted, f"the supervisor did not restart the killed child (pid {victim.pid}) within 90 s"
        time.sleep(3)
    finally:
        load.stop()
    drained = drain(stack.url, ledger, stack.receiver, timeout=150)
    result = audit(ledger, stack.receiver, client, stack.deployment)
    redelivery = [e.ended_at - e.accepted_at for e in ledger.entries.values() if e.ended_at]
    write_row(results_dir, "kill9", title="kill -9 a worker child mid-job under steady load",
              load=f"{scale.load_threads} clients, {load.sent} requests over {load.elapsed:.0f} s "
                   f"(sync + async with webhooks)",
              faults_injected=len(kills), faults_survived=sum(1 for k in kills if k["restarted"]),
              inputs=load.sent, drain_seconds=round(drained, 1), kills=kills,
              slowest_request_seconds=round(max(redelivery, default=0.0), 1), skipped_kill_windows=skipped,
              command="HARK_FAULTS_SCALE=full make faults  # or: pytest tests/faults/test_kill9.py",
              **result.row())  # fmt: skip
    client.close()
    assert len(kills) == scale.kills, f"only {len(kills)} of {scale.kills} kills happened (no job in flight to kill)"
    assert_nothing_lost(result, "kill -9")


#: Keys every deployment shares on purpose (docs/licensing.md): usage counters and the license state.
SHARED_PREFIXES = ("hark:usage:", "hark:license:")


def test_broker_keys_carry_the_deployment_name(fault_stack: FaultStack) -> None:
    """Fix 4: on a Redis used by one deployment only, every key (kombu's included) is in its namespace."""
    client = fault_stack.redis.client()
    try:
        wait_for(lambda: bool(client.dbsize()), timeout=5)
        keys = sorted(k.decode() for k in client.scan_iter(count=1000))
    finally:
        client.close()
    # Shared across deployments by design: usage accounting and the license state the proxy reads.
    foreign = [k for k in keys if fault_stack.deployment not in k and not k.startswith(SHARED_PREFIXES)]
    assert not foreign, (f"broker keys are not isolated per deployment (fix 4): {len(foreign)} key(s) without "
                         f"{fault_stack.deployment!r} in their name, shared by every deployment on this Redis: "
                         f"{foreign[:10]}")  # fmt: skip
