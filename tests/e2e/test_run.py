"""`hark run` end to end: its banner never prints a key, and SIGKILL of `hark run` takes its API and
worker (and the worker's Celery children) down within seconds, freeing the port for the next run."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import requests

from tests.conftest import Checkpoints
from tests.processes import HarkProcess, Launcher, descendants, free_port, pid_alive

pytestmark = pytest.mark.e2e

SECRET = "run-secret-key-5f2c9a"
#: How long the tree may take to go once `hark run` is killed (the brief says "within seconds").
GONE_WITHIN_SECONDS = 12.0


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


def _wait_banner(process: HarkProcess, timeout: float = 240.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = process.log_text(limit=None)
        if "Press Ctrl-C to stop." in text:
            return text
        assert process.alive(), f"`hark run` exited with {process.popen.returncode}:\n{text[-5000:]}"
        time.sleep(0.5)
    raise AssertionError(f"`hark run` printed no banner within {timeout:.0f} s:\n{process.log_text()}")


@pytest.mark.timeout(420)
def test_sigkilled_run_takes_its_children_down_and_prints_no_key(hark: Launcher, bundled_checkpoints: Checkpoints,
                                                                  ) -> None:  # fmt: skip
    name = hark.new_deployment("run")
    port = free_port()
    env = hark.env_for(name, MODEL_URL=str(bundled_checkpoints.tiny_en), HARK_API_PORT=port, HARK_API_WORKERS=1,
                       HARK_API_THREADS=8, HARK_API_KEYS=SECRET)  # fmt: skip
    env.pop("HARK_API_HOST", None)  # `hark run` must choose loopback itself
    run = hark.spawn("run", ["run"], env, name)
    text = _wait_banner(run)

    assert SECRET not in text, "the banner (or any log line of `hark run`) printed the API key"
    assert "Bearer $HARK_API_KEY" in text
    assert f"http://127.0.0.1:{port}" in text
    ready = requests.get(f"http://127.0.0.1:{port}/ready", timeout=10)
    assert ready.status_code == 200 and set(ready.json()) == {"status", "deployment"}

    tree = descendants(run.pid)
    assert len(tree) >= 3, f"expected an API, a worker and its children under `hark run`, got {tree}"
    run.known_pids.update(tree)  # the fixture still kills leftovers if the assertion below fails
    os.kill(run.pid, signal.SIGKILL)
    run.popen.wait(timeout=10)

    deadline = time.monotonic() + GONE_WITHIN_SECONDS
    while time.monotonic() < deadline and (any(pid_alive(p) for p in tree) or not _port_free(port)):
        time.sleep(0.2)
    survivors = {pid: _cmdline(pid) for pid in tree if pid_alive(pid)}
    assert not survivors, f"still running {GONE_WITHIN_SECONDS:.0f} s after `hark run` was SIGKILLed: {survivors}"
    assert _port_free(port), f"port {port} is still held"


@pytest.mark.timeout(300)
def test_sigkilled_supervisor_takes_its_children_down_during_start_up(hark: Launcher,
                                                                       bundled_checkpoints: Checkpoints,
                                                                       ) -> None:  # fmt: skip
    """The children's own parent watch starts only after the model is loaded; before that, only the
    parent-death signal stops them."""
    name = hark.new_deployment("sup")
    worker = hark.start_worker(name, [bundled_checkpoints.tiny_en], wait=False)
    deadline = time.monotonic() + 60
    children: list[int] = []
    while time.monotonic() < deadline and not any("workers.child model" in _cmdline(p) for p in children):
        children = descendants(worker.pid)
        time.sleep(0.05)
    assert children, f"the supervisor started no child:\n{worker.log_text()}"
    worker.known_pids.update(children)
    os.kill(worker.pid, signal.SIGKILL)
    worker.popen.wait(timeout=10)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline and any(pid_alive(p) for p in children):
        time.sleep(0.1)
    survivors = {pid: _cmdline(pid) for pid in children if pid_alive(pid)}
    assert not survivors, f"children outlived their SIGKILLed supervisor: {survivors}"
