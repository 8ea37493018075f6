"""The per-checkpoint executor: admission slots in front of the engine's inference lanes.

Two limits, two mechanisms:

- **Slots** (128/64/48, or ``HARK_CONCURRENCY_PER_CHECKPOINT``): requests a worker child holds for
  the checkpoint at once. Celery already enforces them (``-c <slots>``, prefetch 1), so extra jobs
  wait in the queue; :meth:`CheckpointExecutor.admit` counts them (``in_flight``, announced in the
  registry) and refuses an admission beyond the limit as a safety net.
- **Lanes** (``HARK_ENGINE_WORKERS``): engine calls that run at once. Admitted requests
  :meth:`~CheckpointExecutor.submit` their audio and get a :class:`~concurrent.futures.Future`;
  a dispatcher with ``lanes`` threads runs them.

Callers only see ``admit()`` / ``submit() -> Future`` / ``run()``. Cross-request batching can later
replace the dispatcher (collect the queued submissions for a few milliseconds, run them as one
batch, resolve each future) without changing tasks or the API.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Protocol

import numpy as np

from hark.schemas import TranscriptionOptions
from workers.transcript import Transcript

logger = logging.getLogger(__name__)


class Engine(Protocol):
    """What the executor needs from an engine (see :class:`workers.engine.WhisperEngine`)."""

    def transcribe(self, samples: np.ndarray, options: TranscriptionOptions) -> Transcript: ...


class SlotsExhausted(RuntimeError):
    """More requests were admitted than the checkpoint has slots (Celery's concurrency should prevent it)."""


class ExecutorClosed(RuntimeError):
    """The executor is shutting down and takes no new work."""


class ExecutorDraining(RuntimeError):
    """The worker is draining (shutdown): the submission was refused, not started, or cut after the grace."""


class CheckpointExecutor:
    """Admission slots and inference lanes of one loaded checkpoint.

    Use as a context manager (closes the lanes on exit)::

        with CheckpointExecutor(engine, slots=64, lanes=2) as executor:
            with executor.admit():
                transcript = executor.submit(samples, options).result()
    """

    def __init__(self, engine: Engine, slots: int, lanes: int) -> None:
        if slots < 1 or lanes < 1:
            raise ValueError(f"slots and lanes must be at least 1 (got slots={slots}, lanes={lanes})")
        self.engine = engine
        self.slots = slots
        self.lanes = lanes
        self._lock = threading.Lock()
        self._in_flight = 0
        self._running = 0
        self._peak_in_flight = 0
        self._peak_running = 0
        self._closed = False
        self._draining = False
        self._pending: set[Future[Transcript]] = set()
        self._lane_gate = threading.BoundedSemaphore(lanes)
        self._dispatcher = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="hark-lane")

    # --- counters ---------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (what the registry announces)."""
        with self._lock:
            return self._in_flight

    @property
    def running(self) -> int:
        """Engine calls running right now (at most ``lanes``)."""
        with self._lock:
            return self._running

    @property
    def peak_in_flight(self) -> int:
        with self._lock:
            return self._peak_in_flight

    @property
    def peak_running(self) -> int:
        with self._lock:
            return self._peak_running

    # --- admission --------------------------------------------------------------------------------
    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one slot for the duration of a request (fetching, decoding and transcribing).

        Raises:
            SlotsExhausted: Every slot is taken.
            ExecutorClosed: The executor is closed.
        """
        with self._lock:
            if self._closed:
                raise ExecutorClosed("the executor is closed")
            if self._in_flight >= self.slots:
                raise SlotsExhausted(f"all {self.slots} slots are in use")
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    # --- inference --------------------------------------------------------------------------------
    def submit(self, samples: np.ndarray, options: TranscriptionOptions) -> Future[Transcript]:
        """Queue one transcription on the lanes; the future resolves to its transcript.

        The caller should hold a slot (:meth:`admit`); :meth:`run` does both.
        """
        with self._lock:
            if self._closed:
                raise ExecutorClosed("the executor is closed")
            if self._draining:
                raise ExecutorDraining("the worker is shutting down and takes no new work")
            future: Future[Transcript] = Future()
            self._pending.add(future)
        self._dispatcher.submit(self._resolve, future, samples, options)
        return future

    def run(self, samples: np.ndarray, options: TranscriptionOptions) -> Transcript:
        """Admit, transcribe and wait: the one-call form of :meth:`admit` + :meth:`submit`."""
        with self.admit():
            return self.submit(samples, options).result()

    def _resolve(self, future: Future[Transcript], samples: np.ndarray, options: TranscriptionOptions) -> None:
        """Run one submission on a lane unless it was cancelled or drained meanwhile."""
        with self._lock:
            if future.done() or not future.set_running_or_notify_cancel():
                self._pending.discard(future)
                return
        try:
            transcript = self._execute(samples, options)
        except BaseException as error:
            self._settle(future, error=error)
        else:
            self._settle(future, result=transcript)

    def _settle(self, future: Future[Transcript], result: Transcript | None = None,
                error: BaseException | None = None) -> None:  # fmt: skip
        with self._lock:
            self._pending.discard(future)
            if future.done():  # drained while it ran: the transcript is dropped
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

    def _execute(self, samples: np.ndarray, options: TranscriptionOptions) -> Transcript:
        with self._lane_gate:
            with self._lock:
                self._running += 1
                self._peak_running = max(self._peak_running, self._running)
            try:
                return self.engine.transcribe(samples, options)
            finally:
                with self._lock:
                    self._running -= 1

    # --- lifecycle --------------------------------------------------------------------------------
    def begin_drain(self, grace_seconds: float) -> None:
        """Stop taking work: fail waiting submissions now, running ones after `grace_seconds`.

        From now on :meth:`submit` raises :class:`ExecutorDraining`; futures not started yet fail at
        once with it, and those still running when the grace period ends fail with it too (the engine
        call goes on in the background; its result is dropped).

        Args:
            grace_seconds: How long running engine calls may go on finishing.
        """
        with self._lock:
            if self._draining:
                return
            self._draining = True
            waiting = [f for f in self._pending if not f.running()]
        for future in waiting:
            self._settle(future, error=ExecutorDraining("the worker is shutting down; the job did not start"))
        logger.info("draining: %d waiting submission(s) failed, %d running get %.1f s", len(waiting),
                    self.running, grace_seconds)  # fmt: skip
        timer = threading.Timer(max(0.0, grace_seconds), self._cancel_running)
        timer.daemon = True
        timer.name = "hark-drain"
        timer.start()

    def _cancel_running(self) -> None:
        with self._lock:
            active = list(self._pending)
        for future in active:
            self._settle(future, error=ExecutorDraining("the worker is shutting down; the job outlived the grace"))
        if active:
            logger.warning("drain grace period over: cancelled %d running submission(s)", len(active))

    def close(self, wait: bool = True) -> None:
        """Take no new work; with `wait`, let submitted work finish first."""
        with self._lock:
            self._closed = True
        self._dispatcher.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> CheckpointExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
