"""hark.proc: a child started with ``die_with_parent()`` is signalled when its parent is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: A parent that starts `sleep 60` (with or without the parent-death signal), prints its pid and waits.
PARENT = """
import subprocess, sys, time
from hark.proc import die_with_parent
kwargs = {"preexec_fn": die_with_parent()} if sys.argv[1] == "yes" else {}
child = subprocess.Popen(["sleep", "60"], **kwargs)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _orphan_after_parent_kill(with_signal: bool) -> tuple[int, bool]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "yes" if with_signal else "no"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    return child, _alive(child)


@pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux-only")
def test_child_dies_when_its_parent_is_sigkilled() -> None:
    _, alive = _orphan_after_parent_kill(with_signal=True)
    assert not alive


@pytest.mark.skipif(sys.platform != "linux", reason="prctl is Linux-only")
def test_without_it_the_child_outlives_its_parent() -> None:
    """The control: an ordinary child is re-parented and keeps running."""
    child, alive = _orphan_after_parent_kill(with_signal=False)
    try:
        assert alive
    finally:
        os.kill(child, signal.SIGKILL)

