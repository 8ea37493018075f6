"""In-host autoscaling of one checkpoint's capacity, driven by its own pack's queue (``HARK_AUTOSCALE=on``).

Celery's ``--autoscale`` does not work with the thread pool, so this does what its ``Autoscaler`` does,
with the knob a thread pool has: the number of messages the consumer may hold. The pool keeps
``-c <slots>`` threads (they are created lazily); a :class:`PackScaler` thread in the model child

1. reads the pack's queue depth (``LLEN`` of every priority list of ``hark.<deployment>.<checkpoint>``)
   and how many messages the child holds,
2. asks :func:`hark.autoscale.next_capacity` for the new capacity (up fast, down slowly after
   ``HARK_AUTOSCALE_IDLE_SECONDS``),
3. applies it to the consumer's QoS (``increment_eventually`` / ``decrement_eventually``; Celery's event
   loop sends the new prefetch count before it next polls) and to the executor's admission limit.

The QoS is reconciled on every tick rather than adjusted once, because Celery builds a new QoS object with
its own prefetch count when it reconnects to the broker. Only this pack's queue is read, so another pack's
backlog never changes this pack's capacity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from hark.autoscale import CapacityLimits, next_capacity
from hark.queue_depth import queue_depth
from hark.queues import transcribe_queue

logger = logging.getLogger(__name__)


class Prefetch(Protocol):
    """What the scaler needs of Celery's consumer QoS (:class:`kombu.common.QoS`)."""

    value: int

    def increment_eventually(self, n: int = 1) -> int: ...

    def decrement_eventually(self, n: int = 1) -> int: ...


class Admission(Protocol):
    """What the scaler needs of the executor (:class:`workers.executor.CheckpointExecutor`)."""

    def set_capacity(self, capacity: int) -> None: ...


class PackScaler:
    """Keeps one checkpoint's capacity in step with its pack's queue.

    Args:
        client: Redis (the broker of the pack).
        deployment: The pack.
        checkpoint: The checkpoint name (its queue is ``hark.<deployment>.<checkpoint>``).
        admission: The executor whose admission limit follows the capacity.
        limits: Floor, budget and quiet period.
        held: Messages the child holds now (reserved by Celery or admitted).
        prefetch: The consumer's QoS now, or None before Celery consumes (looked up on every tick).
        interval: Seconds between ticks.
        clock: Monotonic seconds (tests pass their own).
    """

    def __init__(self, client: redis.Redis, deployment: str, checkpoint: str, admission: Admission,
                 limits: CapacityLimits, held: Callable[[], int],
                 prefetch: Callable[[], Prefetch | None] = lambda: None, interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.client = client
        self.deployment = deployment
        self.checkpoint = checkpoint
        self.queue = transcribe_queue(deployment, checkpoint)
        self.admission = admission
        self.limits = limits
        self.held = held
        self.prefetch = prefetch
        self.interval = interval
        self.clock = clock
        self._capacity = limits.floor
        self._quiet_since = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._log_extra = {"deployment": deployment, "checkpoint": checkpoint}
        admission.set_capacity(self._capacity)

    @property
    def capacity(self) -> int:
        """The capacity now (what the registry heartbeat announces)."""
        return self._capacity

    def tick(self) -> int:
        """Read the queue, decide, apply; the capacity after it.

        Raises:
            redis.RedisError: The queue depth could not be read (the capacity is left as it is).
        """
        depth = queue_depth(self.client, self.deployment, self.queue)
        held = self.held()
        now = self.clock()
        current = self._capacity
        if depth > 0 or held >= current:
            self._quiet_since = now
        new = next_capacity(queue_depth=depth, in_flight=held, current=current, limits=self.limits,
                            quiet_seconds=now - self._quiet_since)  # fmt: skip
        if new != current:
            self._capacity = new
            self._quiet_since = now
            self.admission.set_capacity(new)
            logger.info("capacity %d -> %d (queue %d, held %d, budget %d)", current, new, depth, held,
                        self.limits.budget, extra=self._log_extra)  # fmt: skip
        self._sync_prefetch()
        return new

    def _sync_prefetch(self) -> None:
        qos = self.prefetch()
        if qos is None or not qos.value:  # 0 = unlimited: nothing to steer (prefetch disabled)
            return
        difference = self._capacity - qos.value
        if difference > 0:
            qos.increment_eventually(difference)
        elif difference < 0:
            qos.decrement_eventually(-difference)

    def start(self) -> None:
        """Tick every ``interval`` seconds in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        self._sync_prefetch()  # before Celery's loop first polls: hold `floor` messages, not `slots`
        self._thread = threading.Thread(target=self._loop, name="hark-autoscaler", daemon=True)
        self._thread.start()
        logger.info("autoscaling between %d and %d (idle %.0f s)", self.limits.floor, self.limits.budget,
                    self.limits.idle_seconds, extra=self._log_extra)  # fmt: skip

    def stop(self, wait: bool = True) -> None:
        """Stop ticking (the capacity stays where it is); with `wait`, join the thread."""
        self._stop.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
                if self._failures:
                    logger.info("queue depth readable again after %d failure(s)", self._failures,
                                extra=self._log_extra)  # fmt: skip
                self._failures = 0
            except redis.RedisError as error:
                self._failures += 1
                if self._failures in (1, 10) or self._failures % 100 == 0:
                    logger.warning("cannot read the queue depth (%d in a row): %s; capacity stays %d",
                                   self._failures, error, self._capacity, extra=self._log_extra)  # fmt: skip
