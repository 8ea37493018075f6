"""workers.autoscaler: two packs on one real Redis; only the pack whose queue grows scales, then falls back.

Each pack's queue is consumed the way a Celery child consumes it: a kombu consumer on the pack's real
broker keys (``hark:<dep>:broker:hark.<dep>.<checkpoint>`` and its priority lists), whose prefetch follows a
real :class:`kombu.common.QoS` updated from the consumer's own loop (as Celery's event loop does), each
message admitted by a real :class:`CheckpointExecutor` and acknowledged after a short "service time".
"""

from __future__ import annotations

import queue as queue_module
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, suppress

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.common import QoS

from hark.autoscale import CapacityLimits
from hark.broker import broker_key_prefix
from hark.queue_depth import queue_depth
from hark.queues import transcribe_queue
from tests.processes import flush_deployment, new_deployment_name
from tests.unit.test_workers_executor import FakeEngine
from workers.autoscaler import PackScaler
from workers.executor import CheckpointExecutor

CHECKPOINT = "whisper-tiny-en"
LIMITS = CapacityLimits(floor=2, budget=12, idle_seconds=0.3)


class Pack:
    """One pack: its queue, a kombu consumer with Celery's prefetch mechanics, an executor and a scaler."""

    def __init__(self, redis_url: str, client: redis.Redis, deployment: str, service_seconds: float) -> None:
        self.deployment = deployment
        self.service_seconds = service_seconds
        self.name = transcribe_queue(deployment, CHECKPOINT)
        # A short BRPOP so closing the connection at the end does not wait out kombu's 1 s poll.
        options = {"global_keyprefix": broker_key_prefix(deployment), "polling_interval": 0.1}
        self.queue = Queue(self.name, Exchange(self.name, type="direct"), routing_key=self.name,
                           max_priority=9)  # fmt: skip
        self.publisher = Connection(redis_url, transport_options=options)
        self.connection = Connection(redis_url, transport_options=options)
        self.executor = CheckpointExecutor(FakeEngine(), slots=LIMITS.budget, lanes=1)
        self.done: queue_module.SimpleQueue[tuple[object, AbstractContextManager[None]]] = queue_module.SimpleQueue()
        self.held = 0
        self.max_held = 0
        self.processed = 0
        self.refused = 0
        self.capacities: list[int] = []
        self._stop = threading.Event()
        channel = self.connection.channel()
        channel.basic_qos(0, LIMITS.budget, False)  # Celery starts at -c <slots>; the scaler brings it down
        self.qos = QoS(lambda prefetch_count: channel.basic_qos(0, prefetch_count, False), LIMITS.budget)
        self.consumer = Consumer(channel, [self.queue], callbacks=[self._on_message], accept=["json"])
        self.scaler = PackScaler(client, deployment, CHECKPOINT, self.executor, LIMITS, held=lambda: self.held,
                                 prefetch=lambda: self.qos, interval=0.05)  # fmt: skip
        self._loop = threading.Thread(target=self._consume, daemon=True)

    def start(self) -> None:
        self.scaler.start()
        self.consumer.consume()
        self._loop.start()

    def publish(self, count: int, priority: int = 0) -> None:
        with Producer(self.publisher) as producer:
            for i in range(count):
                producer.publish({"job": i}, exchange=self.queue.exchange, routing_key=self.name,
                                 declare=[self.queue], serializer="json", priority=priority)  # fmt: skip

    def _on_message(self, _body: object, message: object) -> None:
        admission = self.executor.admit()
        try:
            admission.__enter__()
        except Exception:
            self.refused += 1
            message.requeue()  # type: ignore[attr-defined]
            return
        self.held += 1
        self.max_held = max(self.max_held, self.held)
        timer = threading.Timer(self.service_seconds, self.done.put, args=((message, admission),))
        timer.daemon = True
        timer.start()

    def _consume(self) -> None:
        """Celery's loop in small: apply a changed prefetch, acknowledge finished jobs, poll the broker."""
        while not self._stop.is_set():
            if self.qos.prev != self.qos.value:
                self.qos.update()
            while not self.done.empty():
                message, admission = self.done.get()
                message.ack()  # type: ignore[attr-defined]
                admission.__exit__(None, None, None)
                self.held -= 1
                self.processed += 1
            with suppress(TimeoutError):
                self.connection.drain_events(timeout=0.02)
            self.capacities.append(self.scaler.capacity)

    def stop(self) -> None:
        self.scaler.stop()
        self._stop.set()
        self._loop.join(timeout=5)
        self.connection.release()
        self.publisher.release()
        self.executor.close(wait=False)


@pytest.fixture
def packs(redis_url: str, redis_client: redis.Redis) -> Iterator[tuple[Pack, Pack]]:
    names = new_deployment_name("scale1"), new_deployment_name("scale2")
    # Pack 1 serves quick jobs; pack 2 long ones, so it can keep its floor fully used for the whole test.
    made = [Pack(redis_url, redis_client, name, seconds) for name, seconds in zip(names, (0.15, 3.0), strict=True)]
    for pack in made:
        pack.start()
    try:
        yield made[0], made[1]
    finally:
        for pack, name in zip(made, names, strict=True):
            pack.stop()
            flush_deployment(redis_client, name)


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_only_the_pack_whose_queue_grows_scales_and_it_falls_back_when_quiet(
    packs: tuple[Pack, Pack], redis_client: redis.Redis
) -> None:
    busy, calm = packs
    assert _wait(lambda: busy.qos.prev == LIMITS.floor and calm.qos.prev == LIMITS.floor, 2), "starts at the floor"

    # Pack 2: every unit of its floor busy and nothing waiting, the state in which a scaler that saw any
    # queue but its own would grow it. Then pack 1 gets a backlog (half of it on a priority list).
    calm.publish(LIMITS.floor)
    assert _wait(lambda: calm.held == LIMITS.floor, 2), calm.held
    busy.publish(40)
    busy.publish(40, priority=6)
    assert queue_depth(redis_client, busy.deployment, busy.name) > 40, "priority lists count towards the depth"
    assert _wait(lambda: busy.scaler.capacity == LIMITS.budget, 5), busy.capacities[-20:]
    assert _wait(lambda: busy.max_held > 2 * LIMITS.floor, 3), busy.max_held
    assert calm.held == LIMITS.floor, "pack 2 must still be busy while pack 1 scales (else this proves nothing)"
    assert _wait(lambda: busy.processed == 80, 15), (busy.processed, busy.held)
    peak = max(busy.capacities)

    # Drained: after the quiet periods pack 1 is back at its floor, prefetch and admissions included.
    assert _wait(lambda: busy.scaler.capacity == LIMITS.floor, 5), busy.capacities[-20:]
    assert _wait(lambda: busy.qos.prev == LIMITS.floor, 1) and busy.executor.capacity == LIMITS.floor
    assert _wait(lambda: calm.processed == LIMITS.floor and calm.held == 0, 5), calm.processed

    print(f"pack 1: peak capacity {peak}, held at most {busy.max_held}, refused {busy.refused}; "
          f"pack 2: capacities {sorted(set(calm.capacities))}, held at most {calm.max_held}")  # fmt: skip
    assert peak == LIMITS.budget and busy.max_held <= LIMITS.budget
    assert set(calm.capacities) == {LIMITS.floor}, "pack 1's backlog must not move pack 2"
    assert calm.max_held <= LIMITS.floor and calm.executor.capacity == LIMITS.floor
