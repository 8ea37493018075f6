"""Kill -9 ``hark run``: its worker, the worker's children and the API must not outlive it (fix 9)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import Checkpoints
from tests.faults.harness import alive_pids, write_row
from tests.processes import Launcher, descendants, free_port

pytestmark = [pytest.mark.faults, pytest.mark.e2e, pytest.mark.slow]

ORPHAN_LIMIT_SECONDS = 15.0


@pytest.mark.timeout(400)
def test_children_die_with_hark_run(hark: Launcher, bundled_checkpoints: Checkpoints, results_dir: Path) -> None:
    name = hark.new_deployment("run")
    port = free_port()
    env = hark.env_for(name, MODEL_URL=str(bundled_checkpoints.tiny_en), HARK_API_PORT=port,
                       HARK_API_HOST="127.0.0.1", HARK_AUTH="off")  # fmt: skip
    run = hark.spawn("run", ["run"], env, name)
    deadline = time.monotonic() + 240
    ready = False
    while time.monotonic() < deadline and run.alive() and not ready:
        with contextlib.suppress(requests.RequestException):
            ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200
        time.sleep(0.5)
    assert ready, "hark run never became ready:\n" + run.log_text()
    tree = descendants(run.pid)
    run.remember_tree()
    os.kill(run.pid, signal.SIGKILL)
    started = time.monotonic()
    while time.monotonic() - started < ORPHAN_LIMIT_SECONDS and alive_pids(tree):
        time.sleep(0.2)
    left = alive_pids(tree)
    write_row(results_dir, "run_killed", title="kill -9 `hark run`", load="idle deployment", faults_injected=1,
              faults_survived=int(not left), inputs=1, lost=0, processes=len(tree), orphans=len(left),
              command="HARK_FAULTS_SCALE=full pytest tests/faults/test_run_killed.py")  # fmt: skip
    assert not left, (f"{len(left)} of {len(tree)} process(es) of `hark run` still alive {ORPHAN_LIMIT_SECONDS:g} s "
                      f"after it was killed with SIGKILL: children must die with hark run (fix 9): {left}")  # fmt: skip
