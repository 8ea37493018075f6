"""``hark worker``: the supervisor of one worker of a deployment.

1. Reads the settings and ``MODEL_URL`` once (start-up only), resolves and verifies every checkpoint
   through :mod:`checkpoints` and decides device, compute type, lanes and slots, all before starting
   anything: an unusable configuration exits with status 2 and a message saying what to fix.
2. Starts one child per checkpoint (:mod:`workers.child`: a Celery thread-pool worker consuming
   ``hark.<deployment>.<checkpoint>`` with ``-c <slots>``) and one webhook child, and waits until every
   checkpoint is announced in the registry (a child that fails to start: everything stops, status 1).
3. Watches the children: one that dies is restarted with backoff (more than
   :data:`MAX_RESTARTS_PER_MINUTE` deaths of one child in a minute: everything stops, status 1).
4. On SIGTERM/SIGINT forwards SIGTERM: each model child stops consuming, requeues the jobs it has
   not started at once and gives running ones ``HARK_SHUTDOWN_GRACE_SECONDS`` before requeueing them
   too (:mod:`workers.child`). A child still alive :data:`STOP_MARGIN_SECONDS` after the grace is
   killed; its jobs were already requeued. Then exits 0.

All children share the supervisor's worker id (``<hostname>-<pid>``), which groups them in the registry.

Observability: before anything else the supervisor prepares the host's Prometheus multiprocess
directory (the children inherit it) and serves ``/metrics`` and ``/health`` on
``HARK_WORKER_METRICS_PORT`` (:mod:`workers.health_server`; 0 = off, a port in use = exit 2).
``/health`` is :meth:`Supervisor.health`: 200 while the supervisor loop turns and every child is alive
and has announced itself (the webhook child has nothing to announce), else 503 with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import redis

from hark import multiproc_metrics, registry
from hark.logs import start_component
from hark.proc import die_with_parent
from hark.queues import reserved_name_problem
from hark.schemas import InstanceRecord
from hark.settings import ConfigError, Settings
from workers import device as devices

logger = logging.getLogger("workers.supervisor")

START_TIMEOUT_SECONDS = 300.0
#: Time a child gets past HARK_SHUTDOWN_GRACE_SECONDS to requeue, acknowledge and exit before SIGKILL.
STOP_MARGIN_SECONDS = 15.0
MAX_RESTARTS_PER_MINUTE = 5
RESTART_BACKOFF_MAX_SECONDS = 30.0
REDIS_WAIT_SECONDS = 30.0
POLL_SECONDS = 0.25
#: ``/health`` fails when the supervisor loop has not turned for this long (it turns every POLL_SECONDS).
LOOP_STALL_SECONDS = 10.0
#: How often a restarted child is looked up in the registry until it has announced itself.
ANNOUNCE_CHECK_SECONDS = 1.0

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


#: glibc malloc arenas per child unless the operator sets ``MALLOC_ARENA_MAX``. A model child's many
#: threads (Celery's, the lanes', the batch pool's) each grow an arena of their own otherwise: measured
#: with window packing, 8 clients, 200 requests: RSS +21 % (823 -> 998 MB) with glibc's default,
#: +8 % (788 -> 850 MB) with 2, throughput within the run's noise (docs/scheduler.md).
MALLOC_ARENAS = "2"


def child_environment() -> dict[str, str]:
    """The supervisor's environment for a child, with ``MALLOC_ARENA_MAX`` defaulted (read at exec)."""
    environment = dict(os.environ)
    environment.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)
    return environment


@dataclass
class PlannedCheckpoint:
    """One checkpoint as the supervisor will run it."""

    name: str
    label: str
    path: Path
    languages: list[str]
    multilingual: bool
    plan: devices.DevicePlan
    slots: int


@dataclass
class Child:
    """A child process the supervisor keeps alive."""

    name: str
    argv: list[str]
    checkpoint: str | None = None
    process: subprocess.Popen | None = None
    deaths: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    announced: bool = False
    """This process (pid) is in the registry; children without a checkpoint have nothing to announce."""

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class StartupError(Exception):
    """Configuration or checkpoints unusable; the message says what to fix."""


# --- planning ------------------------------------------------------------------------------------


def plan_checkpoints(settings: Settings) -> list[PlannedCheckpoint]:
    """Resolve ``MODEL_URL`` and decide how each checkpoint runs.

    Raises:
        StartupError: ``MODEL_URL`` or a checkpoint is unusable, or the device cannot host them.
    """
    from checkpoints.errors import CheckpointError
    from checkpoints.resolve import resolve_configured

    try:
        # Leases held until the supervisor exits: LRU eviction never removes a checkpoint in use.
        resolved = resolve_configured(settings, hold=True)
    except CheckpointError as error:
        raise StartupError(str(error)) from None
    except OSError as error:
        raise StartupError(f"cannot read the checkpoints in MODEL_URL: {error}") from None
    for checkpoint in resolved:
        problem = reserved_name_problem(checkpoint.manifest.name)
        if problem:
            raise StartupError(f"{problem} (from {checkpoint.path})")
    try:
        slots = settings.slots_per_checkpoint(len(resolved))
    except ConfigError as error:
        raise StartupError(str(error)) from None

    cuda = devices.cuda_device_count() if settings.device != "cpu" else 0
    try:
        device = devices.select_device(settings.device, cuda)
        supported = devices.supported_compute_types(device)
        planned = [
            PlannedCheckpoint(
                name=c.manifest.name, label=c.manifest.label, path=c.path, languages=list(c.manifest.languages),
                multilingual=c.manifest.multilingual, slots=slots,
                plan=devices.plan_device(
                    requested_device=settings.device, requested_compute_type=settings.compute_type,
                    manifest_default=c.manifest.default_compute_type, engine_workers=settings.engine_workers,
                    cpu_threads=settings.cpu_threads, cuda_devices=cuda, cores=devices.cpu_count(),
                    checkpoints=len(resolved), supported=supported,
                ),
            )
            for c in resolved
        ]  # fmt: skip
        if device == "cuda":
            _check_gpu(settings, planned)
    except devices.DeviceError as error:
        raise StartupError(str(error)) from None
    return planned


def _check_gpu(settings: Settings, planned: list[PlannedCheckpoint]) -> None:
    if devices.apply_cuda_alloc_conf("cuda", settings.cuda_alloc_conf):
        logger.info("set %s=%s for the GPU", devices.CUDA_ALLOC_ENV, settings.cuda_alloc_conf)
    memory = devices.gpu_memory_info()
    if memory is None:
        return
    needs = {p.label: devices.estimate_gpu_bytes(devices.model_file_bytes(p.path), p.plan.lanes) for p in planned}
    budget = devices.check_gpu_budget(needs, free=memory[0], total=memory[1], fraction=settings.gpu_memory_fraction)
    logger.info("GPU memory: planned %.2f GiB of a %.2f GiB budget", budget.needed / 1024**3, budget.budget / 1024**3)


def describe(planned: list[PlannedCheckpoint], deployment: str, worker_id: str) -> str:
    """The start-up table: checkpoint, languages, slots, device, compute type, lanes × threads."""
    rows = [("checkpoint", "languages", "slots", "device", "compute", "lanes x threads")]
    for p in planned:
        languages = ("multilingual: " if p.multilingual else "") + _short_languages(p.languages)
        rows.append((p.label, languages, str(p.slots), p.plan.device, p.plan.compute_type,
                     f"{p.plan.lanes} x {p.plan.cpu_threads}"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"worker {worker_id} of deployment {deployment} serves {len(planned)} checkpoint(s):"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _short_languages(languages: list[str], limit: int = 8) -> str:
    shown = ",".join(languages[:limit])
    return shown + (f",... ({len(languages)})" if len(languages) > limit else "")


def child_argv(planned: PlannedCheckpoint, worker_id: str) -> list[str]:
    """Command line of the model child of one checkpoint."""
    return [
        sys.executable, "-m", "workers.child", "model", "--checkpoint", str(planned.path),
        "--slots", str(planned.slots), "--worker-id", worker_id, "--device", planned.plan.device,
        "--compute-type", planned.plan.compute_type, "--lanes", str(planned.plan.lanes),
        "--cpu-threads", str(planned.plan.cpu_threads),
    ]  # fmt: skip


def webhook_argv(worker_id: str) -> list[str]:
    return [sys.executable, "-m", "workers.child", "webhooks", "--worker-id", worker_id]


def restart_delay(recent_deaths: int) -> float:
    """Backoff before restarting a child that died `recent_deaths` times in the last minute."""
    return min(RESTART_BACKOFF_MAX_SECONDS, 2.0 ** max(0, recent_deaths - 1))


# --- running ---------------------------------------------------------------------------------------


class Supervisor:
    """Starts, watches, restarts and stops the children of one worker."""

    def __init__(self, settings: Settings, planned: list[PlannedCheckpoint], worker_id: str) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.stopping = threading.Event()
        self.children = [Child(name=p.label, argv=child_argv(p, worker_id), checkpoint=p.name) for p in planned]
        self.children.append(Child(name="webhooks", argv=webhook_argv(worker_id)))
        self.last_tick: float | None = None
        self._announce_checked = 0.0

    def request_stop(self, signum: int, _frame: object = None) -> None:
        if not self.stopping.is_set():
            logger.info("received %s: stopping the worker (running jobs get %.0f s to finish, the rest are "
                        "requeued)", signal.Signals(signum).name, self.settings.shutdown_grace_seconds)  # fmt: skip
        self.stopping.set()

    def spawn(self, child: Child) -> None:
        # Own process group: a terminal's Ctrl-C reaches only the supervisor, which stops children in order.
        child.process = subprocess.Popen(child.argv, stdin=subprocess.DEVNULL, process_group=0,
                                         preexec_fn=die_with_parent(), env=child_environment())  # fmt: skip
        child.announced = child.checkpoint is None
        logger.info("started %s (pid %d)", child.name, child.process.pid)

    # --- liveness ----------------------------------------------------------------------------------
    def _tick(self) -> None:
        self.last_tick = time.monotonic()

    def _note_announced(self, instances: list[InstanceRecord]) -> None:
        """Mark the children whose current process is in the registry."""
        pids = {i.pid for i in instances if i.worker_id == self.worker_id}
        for child in self.children:
            if child.process is not None and child.process.pid in pids:
                child.announced = True

    def _check_announcements(self) -> None:
        """Look up children that have not announced themselves yet (after a restart), at most once a second."""
        now = time.monotonic()
        if all(c.announced for c in self.children if c.alive) or now - self._announce_checked < ANNOUNCE_CHECK_SECONDS:
            return
        self._announce_checked = now
        try:
            self._note_announced(registry.live_instances(self.redis, self.settings.deployment))
        except redis.RedisError as error:
            logger.debug("registry not readable for the liveness check: %s", error)

    def health(self) -> tuple[bool, dict[str, object]]:
        """Liveness for ``/health``: (healthy, JSON body with the reason when not)."""
        children = [{"name": c.name, "pid": c.process.pid if c.process else None, "alive": c.alive,
                     "announced": c.announced, "deaths_last_minute": len(c.deaths)} for c in self.children]  # fmt: skip
        body: dict[str, object] = {"status": "ok", "deployment": self.settings.deployment,
                                   "worker_id": self.worker_id, "children": children}  # fmt: skip
        reasons = []
        stalled = None if self.last_tick is None else time.monotonic() - self.last_tick
        if self.stopping.is_set():
            reasons.append("the worker is stopping")
        elif stalled is None:
            reasons.append("the supervisor is starting")
        elif stalled > LOOP_STALL_SECONDS:
            reasons.append(f"the supervisor loop has not turned for {stalled:.0f} s")
        for child in self.children:
            if child.process is None:
                reasons.append(f"{child.name} is not started yet")
            elif not child.alive:
                reasons.append(f"{child.name} (pid {child.process.pid}) exited with status "
                               f"{child.process.returncode}; it is being restarted")  # fmt: skip
            elif not child.announced:
                reasons.append(f"{child.name} (pid {child.process.pid}) has not announced itself yet (loading)")
        if reasons:
            body["status"] = "unhealthy"
            body["reason"] = "; ".join(reasons)
        return not reasons, body

    def run(self) -> int:
        if not self._wait_for_redis():
            return EXIT_FAILED
        for child in self.children:
            self.spawn(child)
        code = self._wait_until_announced()
        if code is None:
            code = self._monitor()
        self.stop_children()
        return code

    def _wait_for_redis(self) -> bool:
        deadline = time.monotonic() + REDIS_WAIT_SECONDS
        while True:
            self._tick()
            try:
                self.redis.ping()
                return True
            except redis.RedisError as error:
                if time.monotonic() > deadline or self.stopping.is_set():
                    logger.error("cannot reach Redis at %s: %s; check REDIS_URL and that Redis is running",
                                 _redact(self.settings.redis_url), error)  # fmt: skip
                    return False
            self.stopping.wait(1.0)

    def _wait_until_announced(self) -> int | None:
        """None once every checkpoint is live; else the exit status (start-up failed or stop asked)."""
        wanted = {c.checkpoint for c in self.children if c.checkpoint}
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.stopping.is_set():
            self._tick()
            for child in self.children:
                if not child.alive:
                    code = child.process.returncode if child.process else None
                    logger.error("%s exited with status %s during start-up; stopping the worker", child.name, code)
                    return EXIT_FAILED
            try:
                instances = registry.live_instances(self.redis, self.settings.deployment)
                self._note_announced(instances)
                live = {i.checkpoint.name for i in instances if i.worker_id == self.worker_id}
            except redis.RedisError as error:
                logger.warning("registry not readable yet: %s", error)
                live = set()
            if wanted <= live:
                logger.info("worker %s is ready: %s", self.worker_id, ", ".join(sorted(wanted)))
                return None
            if time.monotonic() > deadline:
                logger.error("checkpoints %s were not ready within %.0f s; stopping the worker",
                             ", ".join(sorted(wanted - live)), START_TIMEOUT_SECONDS)  # fmt: skip
                return EXIT_FAILED
            self.stopping.wait(POLL_SECONDS)
        return EXIT_OK

    def _monitor(self) -> int:
        while not self.stopping.wait(POLL_SECONDS):
            self._tick()
            now = time.monotonic()
            for child in self.children:
                if child.alive:
                    continue
                if child.restart_at is None:
                    if child.process is not None:
                        multiproc_metrics.mark_dead(child.process.pid)  # its live gauges leave /metrics
                    child.deaths.append(now)
                    while child.deaths and now - child.deaths[0] > 60:
                        child.deaths.popleft()
                    code = child.process.returncode if child.process else None
                    if len(child.deaths) > MAX_RESTARTS_PER_MINUTE:
                        logger.error("%s died %d times within a minute (last status %s); stopping the worker",
                                     child.name, len(child.deaths), code)  # fmt: skip
                        return EXIT_FAILED
                    delay = restart_delay(len(child.deaths))
                    child.restart_at = now + delay
                    logger.error("%s (pid %s) died with status %s; restarting it in %.0f s", child.name,
                                 child.process.pid if child.process else "?", code, delay)  # fmt: skip
                elif now >= child.restart_at:
                    child.restart_at = None
                    self.spawn(child)
            self._check_announcements()
        return EXIT_OK

    def stop_children(self, grace: float | None = None) -> None:
        """SIGTERM every child (drain and warm shutdown), SIGKILL those still running after `grace` seconds.

        Args:
            grace: Seconds before SIGKILL; default ``HARK_SHUTDOWN_GRACE_SECONDS`` + :data:`STOP_MARGIN_SECONDS`.
        """
        if grace is None:
            grace = self.settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        running = [c for c in self.children if c.alive]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + grace
        for child in running:
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s; killing it (its jobs will be redelivered)",
                               child.name, grace)  # fmt: skip
                child.process.kill()  # type: ignore[union-attr]
                child.process.wait(timeout=10)  # type: ignore[union-attr]
        if running:
            logger.info("all children stopped")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hark worker``; the exit status."""
    parser = argparse.ArgumentParser(
        prog="hark worker",
        description="Serve the checkpoints in MODEL_URL (1-3, read once at start) for HARK_DEPLOYMENT.",
    )
    parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    settings = start_component("worker")
    if settings is None:
        return EXIT_CONFIG
    metrics_dir = multiproc_metrics.prepare("worker")  # before resolving (cache events) and before any child
    try:
        return _serve(settings)
    finally:
        multiproc_metrics.remove(metrics_dir)


def _serve(settings: Settings) -> int:
    from workers import metrics as worker_metrics
    from workers.health_server import MetricsServer

    worker_metrics.watch_checkpoint_cache()
    try:
        planned = plan_checkpoints(settings)
    except StartupError as error:
        logger.error("cannot start: %s", error)
        return EXIT_CONFIG
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    logger.info(describe(planned, settings.deployment, worker_id))
    supervisor = Supervisor(settings, planned, worker_id)
    server = None
    if settings.worker_metrics_port:
        host, port = settings.worker_metrics_host, settings.worker_metrics_port
        try:
            server = MetricsServer(host, port, supervisor.health)
        except OSError as error:
            logger.error("cannot serve /metrics and /health on %s:%d: %s; set HARK_WORKER_METRICS_PORT to a free "
                         "port (0 switches them off)", host, port, error)  # fmt: skip
            return EXIT_CONFIG
        server.start()
        logger.info("serving /metrics and /health on %s:%d", host, server.port)
    else:
        logger.info("HARK_WORKER_METRICS_PORT=0: no /metrics or /health on this worker host")
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        return supervisor.run()
    finally:
        if server is not None:
            server.stop()
