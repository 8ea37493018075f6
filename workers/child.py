"""One worker child process: a Celery worker (thread pool) for one checkpoint, or for webhooks.

Started by :mod:`workers.supervisor`, never by hand::

    python -m workers.child model --checkpoint DIR --slots N --worker-id ID \\
        --device cpu --compute-type int8 --lanes 2 --cpu-threads 1
    python -m workers.child webhooks --worker-id ID

A model child loads its checkpoint (already resolved and verified by the supervisor) and runs one
warm-up inference *before* Celery starts consuming, so no job waits on a cold model; a load failure
exits with status 1 and a clear log line. Once Celery is ready (``worker_ready``), a heartbeat
thread announces the instance in the registry every ``HARK_HEARTBEAT_SECONDS`` (expiry
``HARK_WORKER_TTL_SECONDS``, live ``in_flight``); a clean shutdown withdraws it at once. If the
supervisor disappears, the child shuts itself down.

On SIGTERM a model child stops consuming (Celery's warm shutdown) and drains its executor: jobs not
started yet go back to the queue at once, running ones get ``HARK_SHUTDOWN_GRACE_SECONDS`` to finish
and are handed back after it (:class:`~workers.executor.ExecutorDraining` -> a copy of the message put
back on the queue, see ``workers.tasks._hand_back``), so another worker takes them within seconds instead
of after the visibility timeout.

The webhook child also runs the deployment's reaper (:mod:`workers.reaper`), which answers jobs
still open past their deadline with ``job_lost``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from hark import registry
from hark.logs import start_component
from hark.queues import TASK_DELIVER_WEBHOOK, transcribe_queue, webhook_queue
from hark.schemas import CheckpointInfo, InstanceRecord
from hark.settings import Settings
from workers import context as worker_context
from workers.device import DevicePlan, apply_cuda_alloc_conf
from workers.reaper import Reaper

if TYPE_CHECKING:
    from workers.autoscaler import PackScaler
    from workers.engine import WhisperEngine
    from workers.executor import CheckpointExecutor

logger = logging.getLogger("workers.child")

#: Threads of the webhook child (deliveries waiting on slow receivers).
WEBHOOK_CONCURRENCY = 8

#: Batch size on CPU with ``HARK_PACKING=on`` and ``HARK_MAX_BATCH`` unset: a 29 s window holds several short clips.
PACKING_BATCH = 8

EXIT_LOAD_FAILED = 1
EXIT_CONFIG = 2


class Heartbeat:
    """Announces one instance in the registry until stopped; watches for the supervisor's death."""

    def __init__(self, client: redis.Redis, record: InstanceRecord, settings: Settings,
                 in_flight: Callable[[], int], parent_pid: int | None = None,
                 capacity: Callable[[], int | None] = lambda: None) -> None:  # fmt: skip
        self.client = client
        self.capacity = capacity
        self.record = record
        self.interval = settings.heartbeat_seconds
        self.ttl = settings.worker_ttl_seconds
        self.in_flight = in_flight
        self.parent_pid = parent_pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hark-heartbeat", daemon=True)
        self._failures = 0

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def beat(self) -> None:
        """Announce (or renew) the instance now."""
        self.record = self.record.model_copy(update={"in_flight": self.in_flight(), "capacity": self.capacity(),
                                                     "heartbeat_at": time.time()})  # fmt: skip
        registry.announce(self.client, self.record, self.ttl)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                logger.error("the supervisor (pid %d) is gone; shutting down", self.parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                self.beat()
                if self._failures:
                    logger.info("heartbeat restored after %d failure(s)", self._failures)
                self._failures = 0
            except redis.RedisError as error:
                self._failures += 1
                if self._failures in (1, 10) or self._failures % 100 == 0:
                    logger.warning("heartbeat failed (%d in a row): %s", self._failures, error)

    def stop(self, withdraw: bool = True) -> None:
        """Stop beating and, with `withdraw`, remove the instance from the registry at once."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 1)
        if withdraw:
            try:
                registry.withdraw(self.client, self.record.deployment, self.record.worker_id,
                                  self.record.checkpoint.name)  # fmt: skip
            except redis.RedisError as error:
                logger.warning("could not withdraw from the registry: %s", error)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.child", description="a Hark worker child")
    sub = parser.add_subparsers(dest="kind", required=True)
    model = sub.add_parser("model", help="serve one checkpoint")
    model.add_argument("--checkpoint", required=True, type=Path, help="verified checkpoint directory")
    model.add_argument("--slots", required=True, type=int)
    model.add_argument("--worker-id", required=True)
    model.add_argument("--device", required=True, choices=["cpu", "cuda"])
    model.add_argument("--compute-type", required=True)
    model.add_argument("--lanes", required=True, type=int)
    model.add_argument("--cpu-threads", required=True, type=int)
    hooks = sub.add_parser("webhooks", help="deliver webhooks")
    hooks.add_argument("--worker-id", required=True)
    hooks.add_argument("--concurrency", type=int, default=WEBHOOK_CONCURRENCY)
    return parser.parse_args(argv)


def _celery_argv(settings: Settings, queue: str, concurrency: int, node: str) -> list[str]:
    """Celery's worker command line. Events (task events and worker heartbeats, for Flower) only with
    HARK_WORKER_TASK_EVENTS: every task then publishes a few messages on the broker."""
    events = ["-E"] if settings.worker_task_events else ["--without-heartbeat"]
    return [
        "--quiet", "worker", "--pool", "threads", "-c", str(concurrency), "-Q", queue, "-n", node,
        "--without-gossip", "--without-mingle", *events, "--loglevel", settings.log_level.upper(),
    ]  # fmt: skip


def run_model_child(args: argparse.Namespace, settings: Settings) -> int:
    """Load, warm up, serve until shutdown; the exit status."""
    from checkpoints.manifest import load_manifest

    plan = DevicePlan(device=args.device, compute_type=args.compute_type, lanes=args.lanes,
                      cpu_threads=args.cpu_threads)  # fmt: skip
    apply_cuda_alloc_conf(plan.device, settings.cuda_alloc_conf)  # before anything imports torch
    load_started = time.monotonic()
    try:
        manifest = load_manifest(args.checkpoint)
        from workers.engine import WhisperEngine

        solo = plan.cpu_threads * plan.lanes if settings.solo_replica and plan.device == "cpu" and plan.lanes > 1 else 0
        engine = WhisperEngine(args.checkpoint, plan, languages=manifest.languages,
                               multilingual=manifest.multilingual, beam_size=settings.beam_size,
                               label=manifest.label, solo_threads=solo)  # fmt: skip
        engine.warm_up()
        if settings.packing == "on" and settings.scheduler == "batch":
            from workers.pack_stage import PackStage
            from workers.packing import WindowPacker

            engine.pack_stage = PackStage(WindowPacker(engine, max_seconds=settings.packing_max_seconds))
        from workers.stream_vad import load_vad_model

        load_vad_model()  # live sessions' Silero VAD, loaded once per process before the first session
    except Exception as error:
        logger.error("cannot load the checkpoint at %s: %s: %s", args.checkpoint, type(error).__name__, error,
                     exc_info=logger.isEnabledFor(logging.DEBUG))  # fmt: skip
        return EXIT_LOAD_FAILED

    from workers import metrics as worker_metrics
    from workers.celery_app import app
    from workers.executor import CheckpointExecutor
    from workers.utterance import BatchingDecoder

    worker_metrics.model_loaded(settings.deployment, manifest.name, time.monotonic() - load_started)
    active = worker_metrics.slot_tracker(settings.deployment, manifest.name, args.slots)

    info = CheckpointInfo(name=manifest.name, version=manifest.version, languages=list(manifest.languages),
                          multilingual=manifest.multilingual, engine=manifest.engine,
                          compute_type=plan.compute_type, device=plan.device)  # fmt: skip
    queue = transcribe_queue(settings.deployment, manifest.name)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    executor = CheckpointExecutor(engine, slots=args.slots, lanes=plan.lanes, on_in_flight=active.set,
                                  max_batch=_max_batch(settings, plan, engine),
                                  batch_wait=settings.batch_wait_seconds,
                                  share_batches=engine.pack_stage is not None)  # fmt: skip
    worker_context.install(worker_context.WorkerContext(
        settings=settings, redis=client, store=worker_context.make_store(settings, client),
        worker_id=args.worker_id, checkpoint=info, executor=executor,
        sessions=worker_context.make_session_store(settings, client),
        engine_decoder=BatchingDecoder(executor, engine, max_batch=settings.stream_batch_for(plan.device)),
    ))  # fmt: skip
    now = time.time()
    record = InstanceRecord(deployment=settings.deployment, worker_id=args.worker_id, host=socket.gethostname(),
                            pid=os.getpid(), queue=queue, checkpoint=info, slots=args.slots, in_flight=0,
                            started_at=now, heartbeat_at=now)  # fmt: skip
    scaler = _make_scaler(settings, client, manifest.name, executor)
    heartbeat = Heartbeat(client, record, settings, lambda: executor.in_flight, parent_pid=os.getppid(),
                          capacity=(lambda: scaler.capacity) if scaler else (lambda: None))  # fmt: skip
    _connect_signals(heartbeat, lambda: executor.begin_drain(settings.shutdown_grace_seconds), scaler)
    logger.info("serving %s on queue %s with %d slot(s)", manifest.label, queue, args.slots,
                extra={"checkpoint": manifest.label, "queue": queue, "worker_id": args.worker_id})  # fmt: skip
    try:
        code = app.start(argv=_celery_argv(settings, queue, args.slots, f"{manifest.name}@{args.worker_id}"))
    finally:
        if scaler is not None:
            scaler.stop()
        heartbeat.stop(withdraw=True)
        executor.close(wait=False)
        worker_context.clear()
    if executor.running:
        # Their jobs are back in the queue; waiting for the engine calls would only delay the exit.
        logger.warning("%d engine call(s) still running after the drain; their jobs were requeued, exiting now",
                       executor.running)  # fmt: skip
        _exit_now(int(code or 0))
    return int(code or 0)


def _max_batch(settings: Settings, plan: DevicePlan, engine: WhisperEngine) -> int:
    """Requests per batched engine call (``HARK_MAX_BATCH``; on CUDA sized from free memory and a measured
    per-item cost, see :func:`workers.device.batch_size`); 1 with ``HARK_SCHEDULER=lanes``."""
    if settings.scheduler == "lanes":
        return 1
    from workers.device import batch_size, gpu_memory_info

    if settings.max_batch or plan.device != "cuda":
        if settings.packing == "on" and not settings.max_batch:
            return PACKING_BATCH  # the lanes hand the packer up to this many waiting requests at a time
        return batch_size(plan.device, settings.max_batch)
    item_bytes = engine.measure_item_bytes()
    memory = gpu_memory_info()
    chosen = batch_size(plan.device, 0, free_bytes=memory[0] if memory else None, item_bytes=item_bytes)
    logger.info("batch size %d (free GPU memory %s, %s bytes per item)", chosen, memory and memory[0], item_bytes)
    return chosen


def run_webhook_child(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the deployment's webhook queue until shutdown; the exit status."""
    from workers.celery_app import app

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
    worker_context.install(worker_context.WorkerContext(
        settings=settings, redis=client, store=worker_context.make_store(settings, client), worker_id=args.worker_id,
    ))  # fmt: skip
    queue = webhook_queue(settings.deployment)
    _watch_parent(os.getppid(), settings.heartbeat_seconds)
    logger.info("delivering webhooks from queue %s", queue, extra={"queue": queue, "worker_id": args.worker_id})
    if not settings.webhook_secret:
        logger.warning("HARK_WEBHOOK_SECRET is empty: webhook calls are not signed (no X-Hark-Signature), so "
                       "receivers cannot tell them from forged ones", extra={"worker_id": args.worker_id})  # fmt: skip

    def send_webhook(request_id: str, target: dict[str, Any]) -> None:
        app.send_task(TASK_DELIVER_WEBHOOK, kwargs={"request_id": request_id, "webhook": target}, queue=queue)

    reaper = Reaper(worker_context.make_store(settings, client), send_webhook,
                    interval=settings.reaper_interval_seconds, deadline_seconds=settings.job_deadline)  # fmt: skip
    reaper.start()
    logger.info("delivering webhooks from queue %s; reaping jobs past their deadline (%d s) every %.0f s", queue,
                settings.job_deadline, settings.reaper_interval_seconds,
                extra={"queue": queue, "worker_id": args.worker_id})  # fmt: skip
    try:
        code = app.start(argv=_celery_argv(settings, queue, args.concurrency, f"webhooks@{args.worker_id}"))
    finally:
        reaper.stop()
        worker_context.clear()
    return int(code or 0)


def _make_scaler(settings: Settings, client: redis.Redis, checkpoint: str, executor: CheckpointExecutor,
                 ) -> PackScaler | None:  # fmt: skip
    """The checkpoint's in-host scaler (``HARK_AUTOSCALE=on``), or None for today's fixed capacity."""
    if settings.autoscale != "on":
        return None
    from celery.worker import state as celery_state

    from hark.autoscale import CapacityLimits
    from workers.autoscaler import PackScaler

    limits = CapacityLimits.clamped(settings.autoscale_min, executor.slots, settings.autoscale_idle_seconds)
    # Held = reserved by Celery (delivered, maybe not admitted yet) or admitted: never scale below it.
    return PackScaler(client, settings.deployment, checkpoint, executor, limits,
                      held=lambda: max(executor.in_flight, len(celery_state.reserved_requests)),
                      interval=settings.autoscale_interval_seconds)  # fmt: skip


def _connect_signals(heartbeat: Heartbeat, drain: Callable[[], None], scaler: PackScaler | None = None) -> None:
    """Announce (and start scaling) when Celery consumes; on shutdown drain the executor and withdraw at once."""
    from celery.signals import worker_ready, worker_shutting_down

    def on_ready(sender: Any = None, **_kwargs: object) -> None:
        if scaler is not None and sender is not None:
            scaler.prefetch = lambda: getattr(sender, "qos", None)  # replaced by Celery on each reconnect
            scaler.start()
        heartbeat.start()

    def on_shutting_down(**_kwargs: object) -> None:
        if scaler is not None:
            scaler.stop(wait=False)  # a signal handler: do not block
        # Called from Celery's signal handler: the drain (locks, a timer) runs in a thread of its own.
        threading.Thread(target=drain, name="hark-drain-start", daemon=True).start()
        heartbeat.stop(withdraw=True)

    worker_ready.connect(on_ready, weak=False)
    worker_shutting_down.connect(on_shutting_down, weak=False)


def _watch_parent(parent_pid: int, interval: float) -> None:
    """Shut down (SIGTERM to self) when the supervisor disappears."""

    def loop() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        logger.error("the supervisor (pid %d) is gone; shutting down", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=loop, name="hark-parent-watch", daemon=True).start()


def _exit_now(code: int) -> None:
    """Exit without joining the engine's lane threads (flushing the logs first)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    settings = start_component("worker")
    if settings is None:
        return EXIT_CONFIG
    # Celery warns about root because of pickle; Hark accepts JSON only (celeryconfig), and containers
    # often run as root. The deploy files run as an unprivileged user anyway.
    warnings.filterwarnings("ignore", message=".*superuser privileges.*")
    if args.kind == "model":
        return run_model_child(args, settings)
    return run_webhook_child(args, settings)


if __name__ == "__main__":
    sys.exit(main())
