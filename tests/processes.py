"""Start, watch and stop real Hark processes (`hark worker`, `hark api`) and a private redis-server.

Every process is started in its own session with its output in a log file, and carries the
environment variable ``HARK_TEST_SESSION`` so that a last sweep at the end of the test session can
find and kill anything (grandchildren included) that an interrupted teardown left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests

from hark.registry import live_instances
from hark.schemas import InstanceRecord

#: Marks every process this test session starts (see :func:`reap_session_processes`).
SESSION_TAG = uuid.uuid4().hex
SESSION_ENV = "HARK_TEST_SESSION"

WORKER_START_TIMEOUT = 180.0
API_START_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 20.0

#: Environment every Hark process of the tests gets (a test may override any of it).
BASE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "SMALLESTAI_TELEMETRY": "0",
    "HARK_CPU_THREADS": "1",
    "HARK_ENGINE_WORKERS": "1",
    "HARK_CONCURRENCY_PER_CHECKPOINT": "4",
    "HARK_LOG_LEVEL": "INFO",
    "HARK_API_WORKERS": "1",
    "HARK_API_THREADS": "64",
    "PYTHONUNBUFFERED": "1",
}

#: Outer-environment variables that must not leak into the processes under test.
_SCRUBBED_PREFIXES = ("HARK_", "MODEL_", "REDIS_URL", "CELERY_", "PYTORCH_CUDA_ALLOC_CONF")
#: ...except the checkpoint cache, which the tests share with `make checkpoints`.
_KEPT = ("MODEL_CACHE_DIR",)


def free_port() -> int:
    """A TCP port nobody listens on right now (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def nginx_command(conf: Path, prefix: Path, *extra: str) -> list[str]:
    """nginx on `conf` with every runtime file (pid, logs) under `prefix`; `extra` global directives."""
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    return ["nginx", "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "logs" / "error.log"),
            "-g", f"pid {prefix / 'nginx.pid'};{' '.join(extra)}"]  # fmt: skip


def wait_until_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 15.0,
                       interval: float = 0.1) -> None:
    """Poll ``<url>/health`` until it answers 200; fail with `log`'s text if `process` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(interval)


def new_deployment_name(prefix: str = "t") -> str:
    """A unique deployment name such as ``t-1a2b3c4d`` (valid for HARK_DEPLOYMENT)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def flush_deployment(client: redis.Redis, deployment: str) -> int:
    """Delete every key of `deployment` (registry, jobs, audio, queues, kombu bindings)."""
    deleted = 0
    for key in list(client.scan_iter(match=f"*{deployment}*", count=1000)):
        deleted += client.delete(key)
    return deleted


# --- process tree helpers ------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # "pid (comm) state ppid ..." - comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Every living descendant of `pid` (children, grandchildren...)."""
    tree = _children_map()
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _kill(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def session_processes() -> list[int]:
    """Pids of living processes started by this test session (tagged through their environment)."""
    needle = f"{SESSION_ENV}={SESSION_TAG}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ.split(b"\0") and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def reap_session_processes() -> list[int]:
    """Kill whatever this session started and is still alive; return those pids."""
    leftovers = session_processes()
    _kill(leftovers, signal.SIGKILL)
    return leftovers


# --- one process ---------------------------------------------------------------------------------


@dataclass
class HarkProcess:
    """A running `hark <command>` (or redis-server) with its log file."""

    name: str
    command: list[str]
    popen: subprocess.Popen
    log_path: Path
    env: dict[str, str]
    deployment: str | None = None
    base_url: str | None = None
    checkpoints: list[str] = field(default_factory=list)
    known_pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def metrics_url(self) -> str:
        """Base URL of a worker's ``/metrics`` and ``/health`` (the port :meth:`Launcher.env_for` chose)."""
        return f"http://127.0.0.1:{self.env['HARK_WORKER_METRICS_PORT']}"

    def log_text(self, start: int = 0, limit: int | None = 20000) -> str:
        """The log from byte `start` (at most the last `limit` characters)."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(start)
                text = handle.read().decode("utf-8", errors="replace")
        except OSError as error:
            return f"<cannot read {self.log_path}: {error}>"
        if limit is not None and len(text) > limit:
            text = f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]
        return text

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def remember_tree(self) -> None:
        """Note the current descendants, so they are killed even if re-parented later."""
        if self.alive():
            self.known_pids.update(descendants(self.pid))

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> int | None:
        """SIGTERM, then SIGKILL (to the whole tree) after `grace` seconds; the exit code."""
        self.remember_tree()
        if self.alive():
            _kill([self.pid], signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.remember_tree()
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
                _kill([self.pid], signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=10)
        # Children must not outlive their supervisor: give them a moment, then kill the rest.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(pid_alive(p) for p in self.known_pids):
            time.sleep(0.1)
        _kill([p for p in self.known_pids if pid_alive(p)], signal.SIGKILL)
        return self.popen.returncode


class ProcessStartError(AssertionError):
    """A process did not come up; the message holds its log."""


def _clean_env(extra: Mapping[str, object]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEPT or not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(BASE_ENV)
    env[SESSION_ENV] = SESSION_TAG
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    for key in [k for k, v in extra.items() if v is None]:
        env.pop(key, None)
    return env


def expected_checkpoint_names(model_urls: Iterable[str]) -> list[str]:
    """Manifest names of local checkpoint directories (what the registry will announce)."""
    names = []
    for url in model_urls:
        path = Path(url.removeprefix("file://"))
        manifest = path / "manifest.json"
        if manifest.is_file():
            names.append(json.loads(manifest.read_text(encoding="utf-8"))["name"])
    return names


class Launcher:
    """Starts Hark processes for tests and stops every one of them in :meth:`stop_all`."""

    def __init__(self, redis_url: str, log_dir: Path, label: str = "") -> None:
        self.redis_url = redis_url
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.label = label
        self.processes: list[HarkProcess] = []
        self.deployments: list[str] = []
        self.redis = redis.Redis.from_url(redis_url)

    def new_deployment(self, prefix: str = "t") -> str:
        """A fresh deployment name whose keys are flushed by :meth:`stop_all`."""
        name = new_deployment_name(prefix)
        self.deployments.append(name)
        return name

    def env_for(self, deployment: str, **env: object) -> dict[str, str]:
        """The environment of a process of `deployment`; a worker gets a free port of its own for its
        ``/metrics`` and ``/health`` (parallel workers would collide on the default 9101)."""
        return _clean_env({"REDIS_URL": self.redis_url, "HARK_DEPLOYMENT": deployment,
                           "HARK_WORKER_METRICS_HOST": "127.0.0.1", "HARK_WORKER_METRICS_PORT": free_port(),
                           **env})  # fmt: skip

    def spawn(self, name: str, args: list[str], env: dict[str, str], deployment: str | None = None,
              module: str = "hark.cli") -> HarkProcess:  # fmt: skip
        """Start ``python -m <module> <args>`` (default: the `hark` CLI) in a new session, output to a log file."""
        log_path = self.log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        command = [sys.executable, "-m", module, *args]
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=Path(__file__).resolve().parents[1],
            )  # fmt: skip
        process = HarkProcess(name=name, command=command, popen=popen, log_path=log_path, env=env,
                              deployment=deployment)  # fmt: skip
        self.processes.append(process)
        ALL_PROCESSES.append(process)
        return process

    def start_worker(self, deployment: str, model_urls: Iterable[str | Path], *, wait: bool = True,
                     timeout: float = WORKER_START_TIMEOUT, **env: object) -> HarkProcess:  # fmt: skip
        """`hark worker` serving `model_urls`; waits until each checkpoint is live in the registry.

        Args:
            deployment: HARK_DEPLOYMENT.
            model_urls: checkpoint locations, joined into MODEL_URL.
            wait: wait for the registry (False for start-up failure tests).
            timeout: seconds to wait for every checkpoint to be announced.
            **env: extra or overriding environment variables (None removes one).
        """
        urls = [str(u) for u in model_urls]
        worker_env = self.env_for(deployment, MODEL_URL=",".join(urls), **env)
        process = self.spawn(f"worker-{deployment}", ["worker"], worker_env, deployment)
        process.checkpoints = expected_checkpoint_names(urls)
        if wait:
            self.wait_worker(process, timeout)
        return process

    def wait_worker(self, process: HarkProcess, timeout: float = WORKER_START_TIMEOUT) -> list[InstanceRecord]:
        """Block until every expected checkpoint of `process` has a live instance of its pid tree."""
        deadline = time.monotonic() + timeout
        wanted = set(process.checkpoints)
        seen: set[str] = set()
        while time.monotonic() < deadline:
            if not process.alive():
                raise ProcessStartError(
                    f"{process.name} exited with code {process.popen.returncode} during start-up; log:\n"
                    + process.log_text()
                )
            tree = {process.pid, *descendants(process.pid)}
            instances = [i for i in live_instances(self.redis, process.deployment or "") if i.pid in tree]
            seen = {i.checkpoint.name for i in instances}
            if wanted and wanted <= seen:
                process.remember_tree()
                return instances
            time.sleep(0.25)
        raise ProcessStartError(
            f"{process.name} did not announce {sorted(wanted - seen)} within {timeout:.0f} s; log:\n"
            + process.log_text()
        )

    def start_webhook_child(self, deployment: str, concurrency: int = 1, **env: object) -> HarkProcess:
        """A worker's webhook child alone (no model, no supervisor): consumes ``hark.<deployment>.webhooks``.

        Tests send it ``hark.deliver_webhook`` messages directly; it needs no readiness wait (messages
        wait in the queue until it consumes).
        """
        child_env = self.env_for(deployment, **env)
        args = ["webhooks", "--worker-id", f"test-{uuid.uuid4().hex[:6]}", "--concurrency", str(concurrency)]
        return self.spawn(f"webhooks-{deployment}", args, child_env, deployment, module="workers.child")

    def start_api(self, deployment: str, *, timeout: float = API_START_TIMEOUT, **env: object) -> HarkProcess:
        """`hark api --port N` on a free port; waits for ``GET /health`` and returns the process."""
        port = free_port()
        api_env = self.env_for(deployment, HARK_API_PORT=port, HARK_API_HOST="127.0.0.1", **env)
        process = self.spawn(f"api-{deployment}", ["api", "--port", str(port)], api_env, deployment)
        process.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not process.alive():
                raise ProcessStartError(
                    f"{process.name} exited with code {process.popen.returncode}; log:\n" + process.log_text()
                )
            try:
                answer = requests.get(f"{process.base_url}/health", timeout=2)
                if answer.status_code == 200:
                    process.remember_tree()
                    return process
                last = f"HTTP {answer.status_code}: {answer.text[:200]}"
            except requests.RequestException as error:
                last = str(error)
            time.sleep(0.2)
        raise ProcessStartError(f"{process.name} gave no healthy /health in {timeout:.0f} s ({last}); log:\n"
                                + process.log_text())  # fmt: skip

    def run_to_exit(self, args: list[str], env: dict[str, str], timeout: float = 120.0) -> tuple[int, str]:
        """Run `hark <args>` until it exits; return (exit code, output). Killed after `timeout`."""
        process = self.spawn(args[0], args, env)
        try:
            code = process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.stop(grace=2)
            raise AssertionError(f"`hark {' '.join(args)}` still ran after {timeout:.0f} s; log:\n"
                                 + process.log_text()) from None  # fmt: skip
        process.stop(grace=2)
        return code, process.log_text(limit=None)

    def stop(self, process: HarkProcess, grace: float = STOP_GRACE_SECONDS) -> int | None:
        return process.stop(grace)

    def stop_all(self) -> None:
        """Stop APIs first (no new work), then workers; flush the deployments' keys."""
        ordered = sorted(self.processes, key=lambda p: 0 if p.name.startswith("api") else 1)
        for process in ordered:
            process.stop()
        for deployment in self.deployments:
            with contextlib.suppress(redis.RedisError):
                flush_deployment(self.redis, deployment)
        self.redis.close()


#: Every process started in this test session, for log sections of failed tests.
ALL_PROCESSES: list[HarkProcess] = []


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A private redis-server (no persistence) on a free port; returns (process, url)."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    env = _clean_env({})
    popen = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log"), "--databases", "4"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if client.ping():
                client.close()
                return popen, url
        except redis.RedisError:
            pass
        if popen.poll() is not None:
            break
        time.sleep(0.1)
    popen.kill()
    raise RuntimeError(f"redis-server on port {port} did not start; see {workdir / 'redis.log'}")
