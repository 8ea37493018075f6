"""Parallel, ranged, resumable downloads of one or more files, whatever the protocol.

A :class:`RangeSource` (HTTP, S3) knows how to probe a remote file and stream a byte range of it;
this module does the rest:

- a large file is split into range *segments* fetched by ``workers`` threads (all files of a
  checkpoint share the same pool, so several files download in parallel too);
- each network chunk is written in place with ``pwrite`` into ``<dest>.part`` and its segment's
  progress recorded right after (8 bytes per segment in ``<dest>.part.progress``), so a process
  killed at any moment leaves a partial file that the next run completes by fetching only the
  bytes not yet written; ``<dest>.part.json`` records the size and the server's validator (ETag or
  Last-Modified) so a file that changed remotely is started over instead of spliced;
- transient failures (connection errors, stalls, 5xx, truncated bodies) are retried per segment
  with exponential backoff and full jitter, counting only failures without progress in between;
  permanent ones (404, 403...) stop everything at once;
- the whole transfer has a deadline (``MODEL_DOWNLOAD_TIMEOUT``); a connection that stalls for
  ``stall_timeout`` seconds is dropped and retried long before that.

Servers that do not support ranges (or do not announce a size) are downloaded in one stream; such a
download restarts from zero after a failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from checkpoints import events
from checkpoints.errors import FetchError
from checkpoints.options import FetchOptions
from checkpoints.progress import byte_progress, human_size
from checkpoints.sources import FileJob as FileJob
from checkpoints.sources import RangeSource as RangeSource
from checkpoints.sources import RemoteInfo as RemoteInfo
from checkpoints.sources import TransientError as TransientError
from checkpoints.sources import backoff_delay
from checkpoints.sources import with_retries as with_retries

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"
META_SUFFIX = ".part.json"
PROGRESS_SUFFIX = ".part.progress"
SEGMENTS_PER_WORKER = 4


@dataclass
class TransferResult:
    """What a transfer did."""

    files: int
    size: int
    transferred: int
    """Bytes received from the network in this run."""
    resumed: int
    """Bytes already on disk from an earlier, interrupted run."""
    seconds: float


@dataclass
class _Segment:
    job: _State
    index: int
    start: int
    length: int
    done: int


@dataclass
class _State:
    """One file being downloaded: its open descriptors and segment progress."""

    job: FileJob
    info: RemoteInfo
    segment_size: int
    segments: list[_Segment] = field(default_factory=list)
    data_fd: int = -1
    progress_fd: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def part(self) -> Path:
        return _with_suffix(self.job.dest, PART_SUFFIX)

    def record(self, segment: _Segment) -> None:
        """Persist the segment's progress (after its bytes were written)."""
        if self.progress_fd >= 0:
            os.pwrite(self.progress_fd, struct.pack("<Q", segment.done), 8 * segment.index)

    def close(self) -> None:
        for fd in (self.data_fd, self.progress_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.data_fd = self.progress_fd = -1


def _with_suffix(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def partial_bytes(dest: Path) -> int:
    """Bytes of ``dest`` already downloaded by an interrupted run (0 when there is none)."""
    try:
        meta = json.loads(_with_suffix(dest, META_SUFFIX).read_text("utf-8"))
        data = _with_suffix(dest, PROGRESS_SUFFIX).read_bytes()
        return sum(struct.unpack(f"<{meta['segments']}Q", data[: 8 * meta["segments"]]))
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return 0


def discard_partial(dest: Path) -> None:
    """Delete the partial download of ``dest`` (data, size record and progress)."""
    for suffix in (PART_SUFFIX, META_SUFFIX, PROGRESS_SUFFIX):
        _with_suffix(dest, suffix).unlink(missing_ok=True)


def _segment_size(size: int, options: FetchOptions) -> int:
    wanted = -(-size // max(1, options.workers * SEGMENTS_PER_WORKER))
    return max(options.min_segment, min(options.max_segment, wanted))


def _load_resumable(state: _State, options: FetchOptions) -> bool:
    """Reopen an earlier partial download of the same remote file; False when there is none."""
    dest, info = state.job.dest, state.info
    meta_path = _with_suffix(dest, META_SUFFIX)
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        usable = (
            meta.get("size") == info.size
            and meta.get("validator") == info.validator
            and isinstance(meta.get("segment_size"), int)
            and meta["segment_size"] > 0
            and state.part.stat().st_size == info.size
        )
        progress = _with_suffix(dest, PROGRESS_SUFFIX).read_bytes()
    except (OSError, ValueError):
        return False
    if not usable:
        logger.info("%s changed on the server since the interrupted download; starting over", state.job.source.shown)
        return False
    assert info.size is not None
    state.segment_size = meta["segment_size"]
    count = -(-info.size // state.segment_size)
    if len(progress) < 8 * count:
        return False
    done = struct.unpack(f"<{count}Q", progress[: 8 * count])
    for index in range(count):
        start = index * state.segment_size
        length = min(state.segment_size, info.size - start)
        state.segments.append(_Segment(state, index, start, length, min(done[index], length)))
    state.data_fd = os.open(state.part, os.O_RDWR)
    state.progress_fd = os.open(_with_suffix(dest, PROGRESS_SUFFIX), os.O_RDWR)
    return True


def _start_fresh(state: _State, options: FetchOptions) -> None:
    dest, info = state.job.dest, state.info
    discard_partial(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    state.data_fd = os.open(state.part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    if info.ranges and info.size is not None:
        os.ftruncate(state.data_fd, info.size)  # sparse: disk blocks are used as bytes arrive
        state.segment_size = _segment_size(info.size, options)
        count = -(-info.size // state.segment_size) if info.size else 0
        for index in range(count):
            start = index * state.segment_size
            state.segments.append(_Segment(state, index, start, min(state.segment_size, info.size - start), 0))
        progress = _with_suffix(dest, PROGRESS_SUFFIX)
        state.progress_fd = os.open(progress, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.pwrite(state.progress_fd, bytes(8 * count), 0)
        meta = {"size": info.size, "validator": info.validator, "segment_size": state.segment_size,
                "segments": count}  # fmt: skip
        _with_suffix(dest, META_SUFFIX).write_text(json.dumps(meta), encoding="utf-8")
    else:  # one stream, not resumable
        state.segment_size = info.size or 0
        state.segments.append(_Segment(state, 0, 0, -1 if info.size is None else info.size, 0))


class _Run:
    """One call of :func:`transfer`: shared deadline, cancellation and byte counters."""

    def __init__(self, options: FetchOptions, deadline: float, advance: Callable[[int], None]) -> None:
        self.options = options
        self.deadline = deadline
        self.cancel = threading.Event()
        self._advance = advance
        self._lock = threading.Lock()
        self.transferred = 0

    def add(self, count: int) -> None:
        with self._lock:
            self.transferred += count
            self._advance(count)
        events.downloaded(count)

    def check(self, shown: str, done: int, total: int) -> None:
        if self.cancel.is_set():
            raise _Cancelled
        if time.monotonic() > self.deadline:
            raise FetchError(
                f"download of {shown} did not finish within MODEL_DOWNLOAD_TIMEOUT={self.options.timeout:.0f} s "
                f"({human_size(done)} of {human_size(total) if total >= 0 else 'unknown'} for this part); the "
                "partial download is kept and resumes on the next start; raise MODEL_DOWNLOAD_TIMEOUT or check "
                "the network throughput"
            )


class _Cancelled(Exception):
    """Another segment failed for good; stop quietly."""


def _run_segment(segment: _Segment, run: _Run) -> None:
    state = segment.job
    source, info, options = state.job.source, state.info, run.options
    streamed = segment.length < 0 or not info.ranges
    failures = 0
    while segment.length < 0 or segment.done < segment.length:
        run.check(source.shown, segment.done, segment.length)
        start = segment.start + segment.done
        end = None if segment.length < 0 else segment.start + segment.length - 1
        progressed = False
        try:
            with source.stream(start, end if info.ranges else None) as chunks:
                for chunk in chunks:
                    run.check(source.shown, segment.done, segment.length)
                    if segment.length >= 0 and segment.done + len(chunk) > segment.length:
                        raise FetchError(f"{source.shown} sent more bytes than announced; check the server")
                    os.pwrite(state.data_fd, chunk, segment.start + segment.done)
                    segment.done += len(chunk)
                    state.record(segment)
                    run.add(len(chunk))
                    progressed = True
            if segment.length < 0:
                return
            if segment.done < segment.length:
                raise TransientError(
                    f"the connection closed after {segment.done} of {segment.length} bytes of a range"
                )
        except TransientError as error:
            # progress resets the count, except on a plain stream, which starts over from zero anyway
            failures = 1 if progressed and not streamed else failures + 1
            if failures > options.retries:
                where = f" at byte {segment.start + segment.done}"
                of = f" of {human_size(segment.length)}" if streamed and segment.length >= 0 else ""
                raise FetchError(
                    f"cannot download {source.shown}: {error}{where}{of} (gave up after {options.retries} "
                    "retries); check the server and the network, then retry (the partial download is kept)"
                ) from None
            delay = backoff_delay(failures, options.backoff_base)
            logger.warning("%s: %s; retry %d of %d in %.1f s", source.shown, error, failures, options.retries,
                           delay)  # fmt: skip
            if streamed and segment.done:  # no ranges: start this file over
                os.ftruncate(state.data_fd, 0)
                segment.done = 0
            if run.cancel.wait(min(delay, max(0.0, run.deadline - time.monotonic()))):
                raise _Cancelled from None


def _finish(state: _State) -> None:
    os.fsync(state.data_fd)
    size = os.fstat(state.data_fd).st_size
    state.close()
    if state.info.size is not None and size != state.info.size:
        raise FetchError(f"{state.job.source.shown}: got {size} bytes, expected {state.info.size}")
    os.replace(state.part, state.job.dest)
    _with_suffix(state.job.dest, META_SUFFIX).unlink(missing_ok=True)
    _with_suffix(state.job.dest, PROGRESS_SUFFIX).unlink(missing_ok=True)


def probe_all(jobs: list[FileJob], options: FetchOptions, deadline: float) -> list[RemoteInfo]:
    """Probe every job's source (in parallel), checking sizes announced against expected ones."""

    def one(job: FileJob) -> RemoteInfo:
        info = with_retries(job.source.probe, job.source.shown, options, deadline)
        assert isinstance(info, RemoteInfo)
        if job.expected_size is not None and info.size is not None and info.size != job.expected_size:
            raise FetchError(
                f"{job.source.shown} has {info.size} bytes but the manifest says {job.expected_size}; the files "
                "on the server do not belong to this manifest: upload the checkpoint again"
            )
        return info

    with ThreadPoolExecutor(max_workers=max(1, min(options.workers, len(jobs)))) as pool:
        return list(pool.map(one, jobs))


def transfer(
    jobs: list[FileJob],
    options: FetchOptions,
    *,
    label: str,
    progress: bool | None = None,
    deadline: float | None = None,
    infos: list[RemoteInfo] | None = None,
) -> TransferResult:
    """Download every job's file to its ``dest`` (resuming earlier partial downloads).

    Args:
        jobs: The files; their ``dest`` directories should be on the cache volume.
        options: Workers, retries, timeouts, resume.
        label: What to call the transfer in progress output ("downloading whisper-base@1").
        progress: Progress display (see :func:`checkpoints.progress.byte_progress`).
        deadline: ``time.monotonic()`` deadline; default now + ``options.timeout``.
        infos: Probe results of the jobs when already known (see :func:`probe_all`).

    Returns:
        Bytes transferred and resumed.

    Raises:
        FetchError: A permanent failure, retries exhausted, or the deadline passed. Partial files
            stay for the next run unless resuming is off.
    """
    started = time.monotonic()
    deadline = started + options.timeout if deadline is None else deadline
    if infos is None:
        infos = probe_all(jobs, options, deadline)
    states: list[_State] = []
    try:
        for job, info in zip(jobs, infos, strict=True):
            state = _State(job, info, 0)
            if job.dest.exists() and info.size is not None and job.dest.stat().st_size == info.size:
                states.append(state)  # finished by an earlier run
                continue
            if not (options.resume and info.ranges and info.size is not None and _load_resumable(state, options)):
                _start_fresh(state, options)
            states.append(state)
        resumed = sum(s.done for st in states for s in st.segments if s.length >= 0)
        resumed += sum(st.info.size or 0 for st in states if not st.segments)
        sizes = [st.info.size for st in states]
        total = None if None in sizes else sum(s or 0 for s in sizes)
        if resumed:
            logger.info("%s: resuming, %s of %s already downloaded", label, human_size(resumed),
                        human_size(total) if total is not None else "?")  # fmt: skip
        todo = [seg for st in states for seg in st.segments if seg.length < 0 or seg.done < seg.length]
        with byte_progress(label, total, progress, start=resumed) as advance:
            run = _Run(options, deadline, advance)
            _run_all(todo, run, options)
        for state in states:
            if state.data_fd >= 0:
                _finish(state)
    finally:
        for state in states:
            state.close()
    seconds = time.monotonic() - started
    logger.info("%s: %s received in %.1f s (%s/s)%s", label, human_size(run.transferred), seconds,
                human_size(run.transferred / max(seconds, 1e-6)),
                f", {human_size(resumed)} resumed" if resumed else "")  # fmt: skip
    return TransferResult(files=len(jobs), size=total or 0, transferred=run.transferred, resumed=resumed,
                          seconds=seconds)  # fmt: skip


def _run_all(todo: list[_Segment], run: _Run, options: FetchOptions) -> None:
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(options.workers, len(todo))),
                            thread_name_prefix="hark-download") as pool:  # fmt: skip
        futures = [pool.submit(_run_segment, segment, run) for segment in todo]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() for f in futures):
                run.cancel.set()  # a permanent failure: stop the other segments at their next chunk
            wait(futures)
        except BaseException:  # interrupted (KeyboardInterrupt, a signal): stop the threads too
            run.cancel.set()
            raise
    errors = [f.exception() for f in futures]
    real = [e for e in errors if e is not None and not isinstance(e, _Cancelled)]
    if real:
        raise real[0]
