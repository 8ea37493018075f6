"""SIGTERM a worker with jobs in flight (a rollout): each job finishes within the grace period or is
requeued at once, and another worker of the deployment takes it; no job waits for the broker's
visibility timeout, and none is lost.

The fault stack's worker (W1) stays up; a second worker (W2) of the same deployment is started,
given long jobs, and stopped with SIGTERM (``HARK_SHUTDOWN_GRACE_SECONDS=1``). For every job W2 was
running, the time from the signal to its end on W2, or to W1 starting it (redelivery), is measured.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from hark.jobs import JobStore
from tests.audio import AudioFactory
from tests.faults.conftest import FAULT_ENV, FaultStack
from tests.faults.harness import (
    Ledger,
    Scale,
    assert_nothing_lost,
    audit,
    drain,
    instances_of,
    submit,
    write_row,
)

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

GRACE = float(FAULT_ENV["HARK_SHUTDOWN_GRACE_SECONDS"])
#: "At once": a requeued job must be running on the other worker this soon after the grace period.
REQUEUE_SLACK_SECONDS = 4.0
#: Timing tolerance for "finished within the grace period" (polling, clocks).
FINISH_SLACK_SECONDS = 0.75
#: The stopped worker must have exited this soon after the grace period.
EXIT_SLACK_SECONDS = 10.0


@pytest.mark.timeout(900)
def test_sigterm_with_jobs_in_flight(fault_stack: FaultStack, scale: Scale, audio: AudioFactory,
                                     results_dir: Path) -> None:  # fmt: skip
    stack = fault_stack
    client = stack.redis.client()
    store = JobStore(client, stack.deployment, 3600, 3600)
    visibility = float(FAULT_ENV["HARK_VISIBILITY_TIMEOUT_SECONDS"])
    (w1,) = {i.worker_id for i in instances_of(client, stack.worker)}
    victim = stack.launcher.start_worker(stack.deployment, [stack.checkpoints.tiny_en], **FAULT_ENV)
    (w2,) = {i.worker_id for i in instances_of(client, victim)}
    clip = audio.long_english(20).read_bytes()  # a few seconds of work: longer than the grace period

    rounds: list[dict[str, object]] = []
    ledger = Ledger()
    for _ in range(scale.sigterm_jobs):
        rid = submit(stack.url, ledger, clip, mode="async", webhook_url=stack.receiver.url)
        assert rid, f"submission refused: {ledger.refused} {ledger.server_errors} {ledger.unanswered}"

    def on_w2() -> list[str]:
        found = []
        for rid in ledger.ids():
            state = store.get(rid) or {}
            if state.get("status") == "processing" and state.get("worker_id") == w2:
                found.append(rid)
        return found

    deadline = time.monotonic() + 90
    running = on_w2()
    while not running and time.monotonic() < deadline:
        time.sleep(0.05)
        running = on_w2()
    assert running, f"worker W2 never took a job: {[store.get(r) for r in ledger.ids()]}"

    victim.popen.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    outcome: dict[str, tuple[str, float]] = {}
    exited_after: float | None = None
    while time.monotonic() - signalled < visibility + 60 and (len(outcome) < len(running) or exited_after is None):
        if exited_after is None and not victim.alive():
            exited_after = time.monotonic() - signalled
        for rid in running:
            if rid in outcome:
                continue
            state = store.get(rid) or {}
            if state.get("worker_id") == w1:
                outcome[rid] = ("requeued", time.monotonic() - signalled)
            elif state.get("status") in ("success", "failed"):
                outcome[rid] = (f"finished-on-W2:{state.get('status')}", time.monotonic() - signalled)
            elif state.get("status") == "queued":
                pass  # back in the queue: the redelivery time is when W1 starts it
        time.sleep(0.05)
    victim.stop(grace=5)

    drain(stack.url, ledger, stack.receiver, timeout=180)
    result = audit(ledger, stack.receiver, client, stack.deployment)
    client.close()
    for rid in running:
        kind, seconds = outcome.get(rid, ("never", float("inf")))
        rounds.append({"job": rid, "outcome": kind, "seconds_after_sigterm": round(seconds, 2)})
    redelivery = [r["seconds_after_sigterm"] for r in rounds if r["outcome"] == "requeued"]
    write_row(results_dir, "sigterm", title="SIGTERM a worker with jobs in flight (grace 1 s)",
              load=f"{scale.sigterm_jobs} long jobs (20 s audio) over 2 workers",
              faults_injected=1, faults_survived=int(result.lost == 0), inputs=scale.sigterm_jobs,
              in_flight_at_sigterm=len(running), jobs=rounds, worker_exit_seconds=exited_after,
              redelivery_seconds=redelivery, grace_seconds=GRACE, visibility_timeout_seconds=visibility,
              command="pytest tests/faults/test_sigterm.py", **result.row())  # fmt: skip

    problems = []
    if exited_after is None or exited_after > GRACE + EXIT_SLACK_SECONDS:
        problems.append(f"the worker took {exited_after if exited_after is not None else '>' + str(visibility + 60)} s "
                        f"to exit after SIGTERM (HARK_SHUTDOWN_GRACE_SECONDS={GRACE:g})")  # fmt: skip
    for row in rounds:
        kind, seconds = str(row["outcome"]), float(row["seconds_after_sigterm"])  # type: ignore[arg-type]
        if kind.startswith("finished-on-W2") and seconds > GRACE + FINISH_SLACK_SECONDS:
            problems.append(f"job {row['job']} ran on for {seconds:.1f} s after SIGTERM instead of being requeued "
                            f"when the {GRACE:g} s grace period ended")  # fmt: skip
        elif kind == "requeued" and seconds > GRACE + REQUEUE_SLACK_SECONDS:
            problems.append(f"job {row['job']} was redelivered {seconds:.1f} s after SIGTERM: it waited for the "
                            f"visibility timeout ({visibility:g} s) instead of being requeued at once")  # fmt: skip
        elif kind == "never":
            problems.append(f"job {row['job']} neither finished nor was redelivered")
    assert not problems, ("SIGTERM with jobs in flight (fix 10: finish within HARK_SHUTDOWN_GRACE_SECONDS, requeue "
                          "the rest at once):\n" + "\n".join(problems))  # fmt: skip
    assert_nothing_lost(result, "SIGTERM")
