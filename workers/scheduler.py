"""The executor's run queue: one FIFO from admission to execution, and batch formation (pure logic).

Batch submissions and live sessions' calls wait in one first-come-first-served queue; each of the
executor's lanes takes the oldest entry. An entry with a batch key (a submission whose engine can run
batches) takes along the next entries with the *same* key, up to ``max_batch``, and when fewer are
waiting it collects for at most ``wait`` seconds before running what it has. Entries without a key
(calls, or any entry when ``max_batch`` is 1) always run alone and never wait.

With ``share`` set to the number of lanes (window packing), batches are balanced instead: a lane aims
for its share of the work outstanding for the key (the entries waiting plus the members the other
lanes are running, divided by ``share``, rounded up, at most ``max_batch``) and collects only up to
that, for at most ``wait`` seconds. Two idle lanes split what waits; a lane finishing next to a busy one
takes as many as that one runs; a lone request never waits. Without it one lane takes every waiting
request while the others idle, and the lanes settle into uneven batches (3 and 5 requests at 8
clients), whose members see uneven latencies.

Nothing here knows about engines, futures or threads beyond its own condition variable, so the
ordering is tested with plain objects.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from hark.schemas import TranscriptionOptions

T = TypeVar("T")


def options_key(options: TranscriptionOptions) -> Hashable:
    """What requests must share to run in one batched engine call (language, detection set, word
    timestamps, keywords; the beam size and task are per checkpoint)."""
    keywords = tuple((keyword.word, keyword.boost) for keyword in options.keywords)
    among = tuple(options.detect_among) if options.detect_among else None
    return (options.language, among, options.word_timestamps, keywords)


@dataclass
class Entry(Generic[T]):
    """One queued unit of work; `key` None means it runs alone."""

    item: T
    key: Hashable | None = None
    queued_at: float = field(default_factory=time.monotonic)


class RunQueue(Generic[T]):
    """FIFO of entries; :meth:`take` hands a lane the oldest entry and its batch companions."""

    def __init__(self, max_batch: int = 1, wait_seconds: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, *, share: int = 0) -> None:  # fmt: skip
        if max_batch < 1 or wait_seconds < 0:
            raise ValueError(f"max_batch must be at least 1 and wait_seconds at least 0 "
                             f"(got {max_batch}, {wait_seconds})")  # fmt: skip
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds
        self.share = share
        self._clock = clock
        self._loads: dict[int, int] = {}
        """Lane (thread id) → batch members it took last and is running (cleared when it takes again)."""
        self._entries: deque[Entry[T]] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._entries)

    def put(self, item: T, key: Hashable | None = None, *, arrived: float | None = None) -> None:
        """Queue `item` at the back (`key`: its batch group, None to run alone), or with `arrived` (a
        time of the queue's clock) back in its place by arrival: ahead of every entry that came later.

        Raises:
            RuntimeError: The queue is closed.
        """
        with self._cond:
            if self._closed:
                raise RuntimeError("the run queue is closed")
            entry = Entry(item, key if self.max_batch > 1 else None, self._clock() if arrived is None else arrived)
            if arrived is None:
                self._entries.append(entry)
            else:
                place = next((n for n, other in enumerate(self._entries) if other.queued_at > arrived),
                             len(self._entries))  # fmt: skip
                self._entries.insert(place, entry)
            self._cond.notify_all()  # an idle lane, and a lane collecting a batch this entry may join

    def take(self) -> list[T] | None:
        """Block for the oldest entry; return it with up to ``max_batch - 1`` later entries of its key.

        Returns:
            The items, oldest first; None once the queue is closed and empty (the lane should exit).
        """
        lane = threading.get_ident()
        with self._cond:
            self._loads.pop(lane, None)
            batch = self._take()
            if batch and self.share:
                self._loads[lane] = len(batch)
            return batch

    def _take(self) -> list[T] | None:
        while not self._entries and not self._closed:
            self._cond.wait()
        if not self._entries:
            return None
        head = self._entries.popleft()
        batch = [head.item]
        if head.key is None:
            return batch
        deadline = self._clock() + self.wait_seconds
        while True:
            target = self._target(head.key, len(batch))
            self._collect(head.key, batch, target)
            remaining = deadline - self._clock()
            if len(batch) >= target or remaining <= 0 or self._closed:
                return batch
            self._cond.wait(remaining)

    def _target(self, key: Hashable, taken: int) -> int:
        """The batch size a lane aims for: ``max_batch``, or with ``share`` its share of the outstanding work."""
        if not self.share:
            return self.max_batch
        waiting = taken + sum(1 for entry in self._entries if entry.key == key)
        outstanding = waiting + sum(self._loads.values())
        return max(1, min(self.max_batch, -(-outstanding // self.share)))

    def _collect(self, key: Hashable, batch: list[T], limit: int) -> None:
        """Move the waiting entries with `key` into `batch` (in queue order) until it holds `limit`."""
        kept: deque[Entry[T]] = deque()
        while self._entries:
            entry = self._entries.popleft()
            if entry.key == key and len(batch) < limit:
                batch.append(entry.item)
            else:
                kept.append(entry)
        self._entries = kept

    def remove(self, predicate: Callable[[T], bool]) -> list[T]:
        """Take out (and return) every waiting item for which `predicate` is true."""
        with self._cond:
            removed = [entry.item for entry in self._entries if predicate(entry.item)]
            if removed:
                self._entries = deque(entry for entry in self._entries if not predicate(entry.item))
            return removed

    def close(self) -> None:
        """Refuse new entries; lanes finish what is queued, then :meth:`take` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
