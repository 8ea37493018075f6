"""A private Hark deployment for benchmarks: a redis-server, one ``hark worker`` and its API on loopback.

Benchmarks are programs, not tests, so they do not use the test fixtures; this is their one launcher.
The API binds 127.0.0.1 (no key needed there, see ``HARK_AUTH``) on a free port. :func:`start_logged` and
:func:`wait_until_ready` also start and wait for the other servers the benchmarks compare against.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_SECONDS = 300


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_logged(argv: list[str], log: Path, **popen: Any) -> subprocess.Popen:
    """Start `argv` with its stdout and stderr written to `log` (emptied first); `popen` goes to ``Popen``."""
    with log.open("w") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **popen)


def wait_until_ready(url: str, what: str, logs: str, processes: Sequence[subprocess.Popen] = (),
                     timeout: float = READY_TIMEOUT_SECONDS) -> None:  # fmt: skip
    """Poll `url` every 0.5 s until it answers 200.

    Raises RuntimeError, naming `what` and pointing at `logs`, when `timeout` passes or one of
    `processes` exits first. Stopping what was started is left to the caller.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited ({process.returncode}); see {logs}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} was not ready; see {logs}")


class LocalPlatform:
    """Start Redis, a worker serving `model_dir` and the API; :meth:`stop` ends them all.

    Args:
        model_dir: The checkpoint the worker serves (``MODEL_URL``).
        workdir: Where Redis keeps its files and the worker and API write their logs.
        deployment: ``HARK_DEPLOYMENT``.
        redis_url: A Redis to share with other deployments; None starts a private one.
        cpus: Pin the worker and the API (and their children) to these CPU cores; None leaves them free.
        **env: Further settings (``HARK_*`` threads, lanes, slots, ``HARK_LOG_LEVEL``...).
    """

    def __init__(self, model_dir: Path, workdir: Path, deployment: str, redis_url: str | None = None,
                 cpus: set[int] | None = None, **env: str) -> None:  # fmt: skip
        self.port = free_port()
        self.processes: list[subprocess.Popen] = []
        if redis_url is None:
            redis_port = free_port()
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            self.processes.append(subprocess.Popen(
                [shutil.which("redis-server") or "redis-server", "--port", str(redis_port), "--save", "",
                 "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL))  # fmt: skip
            time.sleep(0.5)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "REDIS_URL": redis_url, "HARK_DEPLOYMENT": deployment,
                    "MODEL_URL": str(model_dir), "HARK_API_HOST": "127.0.0.1", "HARK_API_PORT": str(self.port),
                    "HARK_LOG_LEVEL": "WARNING", "HARK_WORKER_METRICS_HOST": "127.0.0.1",
                    "HARK_WORKER_METRICS_PORT": str(free_port()), **env}  # fmt: skip
        self.env.pop("HARK_API_KEYS", None)
        self.logs = workdir
        self.url = f"http://127.0.0.1:{self.port}"
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None  # inherited by every child process
        for role in ("worker", "api"):
            self.processes.append(start_logged([sys.executable, "-m", "hark.cli", role], workdir / f"{role}.log",
                                               env=self.env, cwd=ROOT, preexec_fn=pin))  # fmt: skip
        try:
            wait_until_ready(f"{self.url}/ready", "the platform", f"the logs in {self.logs}")
        except RuntimeError:
            self.stop()
            raise

    @property
    def worker_pid(self) -> int:
        """The pid of the ``hark worker`` supervisor."""
        return self.processes[-2].pid

    def post(self, audio: bytes, timeout: float) -> requests.Response:
        """``POST /waves/v1/stt/?model=pulse&language=en`` with `audio`; raises on an error status."""
        answer = requests.post(f"{self.url}/waves/v1/stt/", params={"model": "pulse", "language": "en"}, data=audio,
                               headers={"Content-Type": "application/octet-stream"}, timeout=timeout)  # fmt: skip
        answer.raise_for_status()
        return answer

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
