"""Cross-request batching at the Whisper encoder: the members of a batch meet there.

Whisper encodes a full 30 s window per decode whatever the speech's length; the encoder is the part
a batch shares best (one matrix product over several windows, on a GPU at little more than the cost
of one). Each member of a batch runs the ordinary solo transcription in a thread of its own; when it
reaches the encoder (:meth:`EncoderMeeting.encode`) it waits for the other members still running to
arrive too — or for at most ``wait`` seconds — and one batched encode serves them all. Everything
else (VAD, features, prompts, beam search, temperature fallback, word timestamps) is the solo code,
so a member's result is what it would get alone, up to the encoder's floating-point order.
Windows of a long request meet the windows of others the same way.

The binding is thread-local: :class:`MeetingWhisperModel` routes ``encode`` to the meeting of the
calling thread, and to the plain encoder everywhere else (solo calls, live sessions).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

_local = threading.local()


class _Seat:
    __slots__ = ("error", "features", "output")

    def __init__(self, features: np.ndarray) -> None:
        self.features = features
        self.output: object | None = None
        self.error: BaseException | None = None


class EncoderMeeting:
    """Where `members` threads' encoder calls are gathered into batched ones."""

    def __init__(self, members: int, wait: float,
                 encode_batch: Callable[[np.ndarray], tuple[list[object], object]]) -> None:  # fmt: skip
        """Args:
            members: Threads taking part (each calls :meth:`leave` when done).
            wait: Longest an arrival waits for the others before encoding what has arrived.
            encode_batch: Encodes a ``[n, mels, frames]`` array, returning ``(outputs, keep)``: one encoder
                output per row and an object owning their memory (kept for the meeting's life).
        """
        self._active = members
        self._wait = wait
        self._encode_batch = encode_batch
        self._cond = threading.Condition()
        self._pending: list[_Seat] = []
        self._keep: list[object] = []  # StorageViews made from arrays share their memory
        self.batches: list[int] = []
        """Sizes of the encoder calls made (for tests and logs)."""

    def encode(self, features: np.ndarray) -> object:
        """The encoder output of `features` (``[mels, frames]`` or ``[1, mels, frames]``), batched with others'."""
        seat = _Seat(features[0] if features.ndim == 3 else features)
        deadline = time.monotonic() + self._wait
        with self._cond:
            self._pending.append(seat)
            while seat.output is None and seat.error is None:
                ready = len(self._pending) >= self._active
                if seat in self._pending and (ready or time.monotonic() >= deadline):
                    self._flush_locked()
                    continue
                self._cond.wait(max(0.0, deadline - time.monotonic()) if seat in self._pending else None)
        if seat.error is not None:
            raise seat.error
        return seat.output

    def leave(self) -> None:
        """A member is done (or failed): the others no longer wait for it."""
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _flush_locked(self) -> None:
        """Encode every pending seat in one call (the lock is released while the encoder runs)."""
        seats, self._pending = self._pending, []
        self._cond.release()
        try:
            outputs, keep = self._encode_batch(np.stack([seat.features for seat in seats]))
            self._keep.append(keep)
            for seat, output in zip(seats, outputs, strict=True):
                seat.output = output
        except BaseException as error:
            for seat in seats:
                seat.error = error
        finally:
            self._cond.acquire()
            self.batches.append(len(seats))
            self._cond.notify_all()

    # --- binding to the calling thread ------------------------------------------------------------
    def join(self) -> None:
        """Route this thread's encoder calls to the meeting (until :meth:`part`)."""
        _local.meeting = self

    @staticmethod
    def part() -> None:
        _local.meeting = None


class MeetingWhisperModel(WhisperModel):
    """faster-whisper's model whose ``encode`` goes through the calling thread's meeting, if any."""

    def encode(self, features: np.ndarray):  # type: ignore[no-untyped-def]
        meeting: EncoderMeeting | None = getattr(_local, "meeting", None)
        if meeting is None:
            return super().encode(features)
        return meeting.encode(features)

    def encode_batch(self, features: np.ndarray) -> tuple[list[object], object]:
        """Encode ``[n, mels, frames]`` in one call; one CTranslate2 StorageView per row, and the host
        array they share (the caller keeps it alive while they are used).

        The rows are split through host memory (on CUDA the batched output is copied to the CPU and
        each row handed back as a CPU StorageView, which ``generate`` accepts, as faster-whisper does
        on several GPUs).
        """
        import ctranslate2

        on_gpu = self.model.device == "cuda"
        output = self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=on_gpu)
        array = np.array(output)  # a copy in host memory, shared by the rows' views below
        return [ctranslate2.StorageView.from_array(array[index : index + 1]) for index in range(array.shape[0])], array
