"""A private Hark deployment for benchmarks: a redis-server, one ``hark worker`` and its API on loopback.

Benchmarks are programs, not tests, so they do not use the test fixtures; this is their one launcher.
The API binds 127.0.0.1 (no key needed there, see ``HARK_AUTH``) on a free port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_SECONDS = 300


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            log = (workdir / f"{role}.log").open("w")
            self.processes.append(subprocess.Popen([sys.executable, "-m", "hark.cli", role], env=self.env, cwd=ROOT,
                                                   stdout=log, stderr=subprocess.STDOUT, preexec_fn=pin))  # fmt: skip
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the platform was not ready; see the logs in {self.logs}")

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
