"""The per-checkpoint executor: admission slots in front of the engine's inference lanes.

Two limits, two mechanisms:

- **Slots** (128/64/48, or ``HARK_CONCURRENCY_PER_CHECKPOINT``): requests a worker child holds for
  the checkpoint at once. Celery already enforces them (``-c <slots>``, prefetch 1), so extra jobs
  wait in the queue; :meth:`CheckpointExecutor.admit` counts them (``in_flight``, announced in the
  registry) and refuses an admission beyond the limit as a safety net. With ``HARK_AUTOSCALE=on`` the
  pack's scaler (:mod:`workers.autoscaler`) moves the limit (:meth:`CheckpointExecutor.set_capacity`)
  together with Celery's prefetch, between ``HARK_AUTOSCALE_MIN`` and the slots.
- **Lanes** (``HARK_ENGINE_WORKERS``): engine calls that run at once. Admitted requests
  :meth:`~CheckpointExecutor.submit` their *encoded* audio and get a :class:`Submission`; ``lanes``
  dispatcher threads run them. The audio is decoded by the engine on the lane, a bounded window at a
  time, so the many requests that only wait hold their compressed bytes, never decoded samples.

Each submission has a :class:`CancelToken` the engine checks between windows and segments. Its time
budget (``timeout``) starts when a lane starts running it, not while it waits for one; past it the
waiter gets :class:`SubmissionTimeout` at once and the engine stops at its next check, freeing the lane.
:meth:`CheckpointExecutor.begin_drain` (worker shutdown) fails waiting submissions at once and cancels
running ones after a grace period, both with :class:`ExecutorDraining`.

Live sessions decode short utterances with :meth:`CheckpointExecutor.call` (any callable, a plain
future back): the same lanes, counted in ``running``, refused the same way while draining or closed.
Such calls are short and carry no cancel token: a drain fails those still waiting, running ones finish.

**Scheduling** (:mod:`workers.scheduler`): submissions and calls wait in one first-come-first-served
queue, and each of the ``lanes`` threads takes the oldest. With ``max_batch`` above 1 and an engine that
can run batches (:class:`BatchEngine`), a lane takes the oldest submission together with later ones of
the same options (:func:`~workers.scheduler.options_key`), collecting for at most ``batch_wait``
seconds, and runs them as one :meth:`BatchEngine.transcribe_many` call; each member keeps its own token,
time budget and outcome, so a timed-out or cancelled member leaves the batch without breaking the
others, and the call may hand a member back to the queue (:class:`Requeue`) to run later. With
``share_batches`` (window packing) the lanes balance batches instead of the first free lane taking
everything waiting. ``running`` counts submissions and calls being run (up to ``lanes × max_batch`` with batches).

Callers only see ``admit()`` / ``submit() -> Submission`` / ``run()`` / ``call()``: tasks and the API do
not know whether their request ran alone or in a batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hark.schemas import TranscriptionOptions
from workers.scheduler import RunQueue, options_key
from workers.transcript import Transcript

if TYPE_CHECKING:
    from workers.audio import AudioSource

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SlotsExhausted(RuntimeError):
    """More requests were admitted than the checkpoint has slots (Celery's concurrency should prevent it)."""


class ExecutorClosed(RuntimeError):
    """The executor is shutting down and takes no new work."""


class ExecutorDraining(RuntimeError):
    """The worker is draining (shutdown): the submission was refused, not started, or cut after the grace."""


class SubmissionTimeout(TimeoutError):
    """The engine call ran longer than its time budget (counted from the moment a lane started it)."""


class SubmissionCancelled(RuntimeError):
    """The caller cancelled the submission."""


class Requeue(Exception):
    """Not an outcome: a batched engine call hands a member back to the run queue (``done(index, None,
    Requeue(...))``), e.g. the packer's members it will not decode in this call. The member goes back to
    its place in the queue by arrival (ahead of everything that came after it) with its token and time
    budget; ``alone`` makes it run by itself."""

    def __init__(self, audio: AudioSource, *, alone: bool) -> None:
        super().__init__("handed back to the run queue")
        self.audio = audio
        self.alone = alone


class CancelToken:
    """Cooperative cancellation of one engine call: the engine calls :meth:`check` between steps.

    The first reason wins: a token cancelled for a timeout stays a timeout if a drain comes later.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: Exception | None = None
        self._deadline: float | None = None
        self._budget = 0.0

    def cancel(self, error: Exception) -> bool:
        """Ask the engine to stop; :meth:`check` will raise `error`. False if already cancelled."""
        with self._lock:
            if self._error is not None:
                return False
            self._error = error
            return True

    def expire_after(self, seconds: float) -> None:
        """Cancel with :class:`SubmissionTimeout` once `seconds` have passed from now."""
        with self._lock:
            self._budget = seconds
            self._deadline = time.monotonic() + seconds

    @property
    def cancelled(self) -> bool:
        """True once cancelled or past the deadline."""
        self._expire_if_due()
        return self._error is not None

    def check(self) -> None:
        """Return if the call may go on.

        Raises:
            Exception: The cancellation's error (:class:`SubmissionTimeout`, :class:`ExecutorDraining`...).
        """
        self._expire_if_due()
        error = self._error
        if error is not None:
            raise error

    def _expire_if_due(self) -> None:
        deadline = self._deadline
        if deadline is not None and self._error is None and time.monotonic() >= deadline:
            self.cancel(SubmissionTimeout(f"the engine call ran past its budget of {self._budget:g} s"))


class Engine(Protocol):
    """What the executor needs from an engine (see :class:`workers.engine.WhisperEngine`)."""

    def transcribe(self, audio: AudioSource, options: TranscriptionOptions, cancel: CancelToken) -> Transcript: ...


#: One member of a batch: its audio, options and cancel token.
BatchRequest = tuple["AudioSource", TranscriptionOptions, CancelToken]
#: Called once per member as it ends: ``(index, transcript, None)`` or ``(index, None, error)``; an error
#: that is a :class:`Requeue` hands the member back to the run queue instead of ending it.
BatchDone = Callable[[int, "Transcript | None", "BaseException | None"], None]


class BatchEngine(Engine, Protocol):
    """An engine that can run several transcriptions as one batched call."""

    def transcribe_many(self, requests: Sequence[BatchRequest], done: BatchDone) -> None:
        """Transcribe every request (each exactly as :meth:`transcribe` would), calling `done` for each
        as it ends; return when all have ended. One member's error or cancellation is its own."""
        ...


class _Call:
    """A live session's call queued on the lanes."""

    __slots__ = ("args", "fn", "future")

    def __init__(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.future = future
        self.fn = fn
        self.args = args


class Submission:
    """One transcription queued on the lanes: its future, its cancel token and when a lane started it."""

    def __init__(self, audio: AudioSource, options: TranscriptionOptions, timeout: float | None) -> None:
        self.audio: AudioSource | None = audio
        self.options = options
        self.timeout = timeout
        self.token = CancelToken()
        self.future: Future[Transcript] = Future()
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        """``time.monotonic()`` when a lane took it (None while waiting, or if it never ran)."""
        self._started = threading.Event()
        self._lock = threading.Lock()
        self.future.add_done_callback(lambda _future: self._started.set())  # wakes waiters of a never-run one

    def result(self) -> Transcript:
        """Wait for a lane (as long as it takes), then at most ``timeout`` seconds for the transcript.

        Raises:
            SubmissionTimeout: The call ran past ``timeout``; its token is cancelled so the lane frees itself.
            ExecutorDraining: The worker drained before or while it ran.
            AudioError: The audio is unusable (found while decoding on the lane).
        """
        self._started.wait()
        if self.timeout is None or self.started_at is None:
            return self.future.result()
        remaining = self.started_at + self.timeout - time.monotonic()
        try:
            return self.future.result(timeout=max(0.0, remaining))
        except FutureTimeout:
            error = SubmissionTimeout(f"the engine call ran past its budget of {self.timeout:g} s")
            self.token.cancel(error)
            self.finish(error=error)
            raise error from None

    def cancel(self, error: Exception | None = None) -> None:
        """Stop it: not started yet, it never runs; running, the engine stops at its next check."""
        error = error or SubmissionCancelled("the submission was cancelled")
        self.token.cancel(error)
        self.finish(error=error)

    def finish(self, result: Transcript | None = None, error: BaseException | None = None) -> bool:
        """Resolve the future once (later outcomes are dropped); True if this call resolved it."""
        with self._lock:
            if self.future.done():
                return False
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]
            return True

    def release(self) -> None:
        """Drop the audio (close its decoder) once nothing will read it."""
        audio, self.audio = self.audio, None
        if audio is not None:
            audio.close()

    def _start(self) -> bool:
        """Called by the lane: False if it was resolved (cancelled, drained) while waiting."""
        with self._lock:
            if self.future.done() or not self.future.set_running_or_notify_cancel():
                return False
            self.started_at = time.monotonic()
            if self.timeout is not None:
                self.token.expire_after(self.timeout)
        self._started.set()
        return True


class CheckpointExecutor:
    """Admission slots and inference lanes of one loaded checkpoint.

    Use as a context manager (closes the lanes on exit)::

        with CheckpointExecutor(engine, slots=64, lanes=2) as executor:
            with executor.admit():
                transcript = executor.submit(EncodedAudio(data, max_seconds), options, timeout=600).result()
    """

    def __init__(self, engine: Engine, slots: int, lanes: int,
                 on_in_flight: Callable[[int], None] | None = None, *, max_batch: int = 1,
                 batch_wait: float = 0.0, share_batches: bool = False) -> None:  # fmt: skip
        """Args:
            engine: The loaded checkpoint.
            slots: Requests admitted at once.
            lanes: Engine calls (single or batched) run at once.
            on_in_flight: Called with the new in-flight count whenever a slot is taken or freed (under
                the executor's lock: keep it cheap; the worker sets a Prometheus gauge).
            max_batch: Submissions run together in one batched engine call (``HARK_MAX_BATCH``); batches
                form only when the engine has ``transcribe_many``.
            batch_wait: Seconds a lane collects companions for a batch (``HARK_BATCH_WAIT_MS`` / 1000).
            share_batches: Balance batches between the lanes instead of the first free lane taking
                everything waiting: each aims for its share of the outstanding work (window packing:
                two windows side by side answer sooner than two in a row); see
                :class:`~workers.scheduler.RunQueue`.
        """
        if slots < 1 or lanes < 1 or max_batch < 1:
            raise ValueError(f"slots, lanes and max_batch must be at least 1 (got slots={slots}, lanes={lanes}, "
                             f"max_batch={max_batch})")  # fmt: skip
        self.engine = engine
        self.slots = slots
        self.lanes = lanes
        self.max_batch = max_batch if callable(getattr(engine, "transcribe_many", None)) else 1
        self._lock = threading.Lock()
        self._capacity = slots
        self._in_flight = 0
        self._on_in_flight = on_in_flight
        self._running = 0
        self._peak_in_flight = 0
        self._peak_running = 0
        self._closed = False
        self._draining = False
        self._waiting: set[Submission] = set()
        self._active: set[Submission] = set()
        self._waiting_calls: set[Future[Any]] = set()
        self._drain_timer: threading.Timer | None = None
        self._queue: RunQueue[Submission | _Call] = RunQueue(
            self.max_batch, max(0.0, batch_wait), share=lanes if share_batches else 0)
        self._lane_threads = [threading.Thread(target=self._lane, name=f"hark-lane-{index}", daemon=True)
                              for index in range(lanes)]  # fmt: skip
        for thread in self._lane_threads:
            thread.start()

    # --- counters ---------------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Requests admitted and not finished (what the registry announces)."""
        with self._lock:
            return self._in_flight

    @property
    def capacity(self) -> int:
        """Admissions allowed at once now: ``slots`` unless the pack's scaler lowered it (``HARK_AUTOSCALE``)."""
        with self._lock:
            return self._capacity

    def set_capacity(self, capacity: int) -> None:
        """Allow `capacity` admissions at once (1..``slots``); requests already admitted keep their slot.

        Raises:
            ValueError: `capacity` is outside ``1..slots``.
        """
        if not 1 <= capacity <= self.slots:
            raise ValueError(f"capacity must be within 1..{self.slots} (got {capacity})")
        with self._lock:
            self._capacity = capacity

    @property
    def running(self) -> int:
        """Submissions and calls running right now (at most ``lanes``, or ``lanes × max_batch`` in batches)."""
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

    @property
    def draining(self) -> bool:
        with self._lock:
            return self._draining

    # --- admission --------------------------------------------------------------------------------
    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one slot for the duration of a request (fetching, waiting for a lane, transcribing).

        Raises:
            SlotsExhausted: Every slot is taken.
            ExecutorClosed: The executor is closed.
        """
        with self._lock:
            if self._closed:
                raise ExecutorClosed("the executor is closed")
            if self._in_flight >= self._capacity:
                raise SlotsExhausted(f"all {self._capacity} slots are in use (budget {self.slots})")
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._report_in_flight()
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._report_in_flight()

    def _report_in_flight(self) -> None:
        if self._on_in_flight is not None:
            self._on_in_flight(self._in_flight)

    # --- inference --------------------------------------------------------------------------------
    def submit(self, audio: AudioSource, options: TranscriptionOptions, *, timeout: float | None = None) -> Submission:
        """Queue one transcription on the lanes.

        The caller should hold a slot (:meth:`admit`); :meth:`run` does both.

        Args:
            audio: The audio, still encoded (decoded by the engine on the lane).
            options: Language, detection set, word timestamps, keywords.
            timeout: Seconds the engine call may run once a lane starts it (None: no limit).

        Returns:
            The submission; :meth:`Submission.result` waits for the transcript.

        Raises:
            ExecutorClosed: The executor is closed.
            ExecutorDraining: The worker is draining.
        """
        with self._lock:
            if self._closed:
                raise ExecutorClosed("the executor is closed")
            if self._draining:
                raise ExecutorDraining("the worker is shutting down and takes no new work")
            submission = Submission(audio, options, timeout)
            self._waiting.add(submission)
            self._queue.put(submission, options_key(options))
        return submission

    def run(self, audio: AudioSource, options: TranscriptionOptions, *, timeout: float | None = None) -> Transcript:
        """Admit, transcribe and wait: the one-call form of :meth:`admit` + :meth:`submit`."""
        with self.admit():
            return self.submit(audio, options, timeout=timeout).result()

    def call(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``fn(*args)`` on a lane (like a submission: counted in ``running``, one lane each).

        For short engine calls that need no slot or time budget (a live session's utterance decodes).

        Returns:
            A future resolving with what `fn` returns or raises; cancelling it before a lane takes it
            skips the call.

        Raises:
            ExecutorClosed: The executor is closed.
            ExecutorDraining: The worker is draining.
        """
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise ExecutorClosed("the executor is closed")
            if self._draining:
                raise ExecutorDraining("the worker is shutting down and takes no new work")
            self._waiting_calls.add(future)
            self._queue.put(_Call(future, fn, args))
        return future

    def _lane(self) -> None:
        """One lane: run the queue's oldest work (a call, a submission or a batch) until closed."""
        while (work := self._queue.take()) is not None:
            try:
                first = work[0]
                if isinstance(first, _Call):
                    self._execute_call(first.future, first.fn, first.args)
                elif len(work) == 1:
                    self._execute(first)
                else:
                    self._execute_batch(work)  # type: ignore[arg-type]
            except BaseException:  # a bug here must not kill the lane: log it and go on
                logger.exception("lane failed to run its work")

    def _execute_call(self, future: Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        with self._lock:
            if future not in self._waiting_calls:  # failed by a drain or close while it waited
                return
            self._waiting_calls.discard(future)
            if not future.set_running_or_notify_cancel():
                return
            self._running += 1
            self._peak_running = max(self._peak_running, self._running)
        try:
            result = fn(*args)
        except BaseException as error:
            future.set_exception(error)
        else:
            future.set_result(result)
        finally:
            with self._lock:
                self._running -= 1

    def _take_waiting_calls(self) -> list[Future[Any]]:
        """Under the lock: the calls no lane has taken yet, now owned by the caller to fail."""
        waiting = list(self._waiting_calls)
        self._waiting_calls.clear()
        return waiting

    @staticmethod
    def _fail_calls(futures: list[Future[Any]], error: Exception) -> None:
        for future in futures:
            if future.set_running_or_notify_cancel():  # False: the caller cancelled it already
                future.set_exception(error)

    def _begin(self, submission: Submission) -> bool:
        """Start a submission a lane took: False (and its audio dropped) if it was resolved meanwhile."""
        with self._lock:
            self._waiting.discard(submission)
            if submission.started_at is not None:  # handed back by a batch (Requeue): started already
                if submission.future.done():  # cancelled, timed out or drained meanwhile
                    self._active.discard(submission)
                    submission.release()
                    return False
            elif not submission._start():
                submission.release()
                return False
            self._active.add(submission)
            self._running += 1
            self._peak_running = max(self._peak_running, self._running)
            return True

    def _end(self, submission: Submission, result: Transcript | None, error: BaseException | None) -> None:
        if error is not None:
            submission.finish(error=error)
        else:
            submission.finish(result=result)
        submission.release()
        with self._lock:
            self._running -= 1
            self._active.discard(submission)

    def _execute(self, submission: Submission) -> None:
        if self._begin(submission):
            with self._lock:  # nothing else running or waiting: the engine may give it every core
                alone = self._running == 1 and len(self._queue) == 0
            self._run_started(submission, alone)

    def _execute_batch(self, batch: list[Submission]) -> None:
        """Run several submissions as one batched engine call; each ends on its own."""
        members = [submission for submission in batch if self._begin(submission)]
        if len(members) <= 1:
            if members:
                self._run_started(members[0])
            return
        ended: set[int] = set()
        ended_lock = threading.Lock()

        def done(index: int, result: Transcript | None, error: BaseException | None) -> None:
            with ended_lock:
                if index in ended:
                    return
                ended.add(index)
            if isinstance(error, Requeue):
                self._requeue(members[index], error)
            else:
                self._end(members[index], result, error)

        logger.debug("running a batch of %d submission(s)", len(members))
        try:
            self.engine.transcribe_many(  # type: ignore[attr-defined]
                [(member.audio, member.options, member.token) for member in members], done)
        except BaseException as error:
            for index in range(len(members)):
                done(index, None, error)
        for index in range(len(members)):  # an engine that forgot one must not strand it
            done(index, None, RuntimeError("the batched engine call returned no outcome"))

    def _requeue(self, submission: Submission, request: Requeue) -> None:
        """Put a started member of a batch back in its place in the run queue (see :class:`Requeue`)."""
        old, submission.audio = submission.audio, request.audio
        if old is not None and old is not request.audio:
            old.close()
        with self._lock:
            self._running -= 1
            try:
                self._queue.put(submission, None if request.alone else options_key(submission.options),
                                arrived=submission.submitted_at)  # back in its place by arrival
                return
            except RuntimeError:  # closed meanwhile (close(wait=False)): nothing will run it
                self._active.discard(submission)
        submission.cancel(ExecutorClosed("the executor closed before the job finished"))
        submission.release()

    def _run_started(self, submission: Submission, alone: bool = False) -> None:
        """:meth:`_execute` for a submission already begun (`alone`: through ``transcribe_alone`` if the
        engine has it, e.g. a replica with all the cores)."""
        result: Transcript | None = None
        error: BaseException | None = None
        transcribe = getattr(self.engine, "transcribe_alone", None) if alone else None
        try:
            assert submission.audio is not None
            result = (transcribe or self.engine.transcribe)(submission.audio, submission.options, submission.token)
        except BaseException as caught:
            error = caught
        finally:
            self._end(submission, result, error)

    # --- lifecycle --------------------------------------------------------------------------------
    def begin_drain(self, grace_seconds: float) -> None:
        """Stop taking work: fail the waiting submissions now, cancel the running ones after `grace_seconds`.

        From now on :meth:`submit` raises :class:`ExecutorDraining`; submissions not started yet fail
        at once with it; those still running when the grace period ends are cancelled through their
        token and fail with it (their lane frees itself at the engine's next check).

        Args:
            grace_seconds: How long running engine calls may go on finishing.
        """
        with self._lock:
            if self._draining:
                return
            self._draining = True
            waiting = list(self._waiting)
            self._waiting.clear()
            calls = self._take_waiting_calls()
        for submission in waiting:
            submission.cancel(ExecutorDraining("the worker is shutting down; the job did not start"))
            submission.release()
        self._fail_calls(calls, ExecutorDraining("the worker is shutting down; the call did not start"))
        logger.info("draining: %d waiting submission(s) failed, %d running get %.1f s", len(waiting),
                    self.running, grace_seconds)  # fmt: skip
        if grace_seconds <= 0:
            self._cancel_running()
            return
        timer = threading.Timer(grace_seconds, self._cancel_running)
        timer.daemon = True
        timer.name = "hark-drain"
        self._drain_timer = timer
        timer.start()

    def _cancel_running(self) -> None:
        with self._lock:
            active = list(self._active)
        for submission in active:
            submission.cancel(ExecutorDraining("the worker is shutting down; the job outlived the grace period"))
        if active:
            logger.warning("drain grace period over: cancelled %d running submission(s)", len(active))

    def close(self, wait: bool = True) -> None:
        """Take no new work; with `wait`, let submitted work finish first, else fail what has not started."""
        with self._lock:
            self._closed = True
            waiting = [] if wait else list(self._waiting)
            self._waiting.difference_update(waiting)
            calls = [] if wait else self._take_waiting_calls()
            # Handed back by a batch (started, so not in _waiting): nobody else would resolve them either.
            requeued = [item for item in self._queue.remove(lambda _item: True) if isinstance(item, Submission)
                        and item not in waiting] if not wait else []  # fmt: skip
            self._active.difference_update(requeued)
            self._queue.close()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        for submission in waiting + requeued:  # taken off the queue above: nobody else would resolve them
            submission.cancel(ExecutorClosed("the executor closed before the job started"))
            submission.release()
        self._fail_calls(calls, ExecutorClosed("the executor closed before the call started"))
        if wait:
            for thread in self._lane_threads:
                if thread is not threading.current_thread():
                    thread.join()

    def __enter__(self) -> CheckpointExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
