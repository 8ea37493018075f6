"""Streaming voice activity detection for live sessions: Silero VAD fed chunk by chunk, state per session.

Why the silero-vad package's ONNX model rather than the Silero model faster-whisper bundles: streaming
needs Silero's recurrent state (and its 64-sample context) carried from one 512-sample chunk to the
next, per session. faster-whisper's ``SileroVADModel`` is a whole-clip helper: every call starts from a
zero state, wants the complete clip (a multiple of 512 samples) and builds the context inside the call,
so it cannot continue where the previous audio frame stopped. The silero-vad package ships the upstream
model with the chunk-level interface (``input`` = context + chunk, ``state``, ``sr``) used here. Its ONNX
mode was measured at 0.18 ms per chunk against 0.93 ms for the TorchScript model.

One loaded model serves every session of the process: the package's ``OnnxWrapper`` keeps ``_state`` and
``_context`` on itself, so sharing it would mix sessions. :class:`VadModel` keeps only the onnxruntime
session (whose ``run`` is safe to call from several threads at once) and each :class:`StreamingVad`
passes its own state and context explicitly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np

SAMPLE_RATE = 16000
#: Samples per Silero step at 16 kHz.
CHUNK = 512
#: Samples of the previous chunk Silero sees in front of each chunk.
CONTEXT = 64
#: Below ``threshold - HYSTERESIS`` a chunk counts as silence (Silero's own streaming rule).
HYSTERESIS = 0.15

_load_lock = threading.Lock()
_loaded: VadModel | None = None


class VadModel:
    """The loaded Silero ONNX network, stateless: callers carry the recurrent state."""

    def __init__(self, session: object) -> None:
        self.session = session
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def probability(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Speech probability of the last 512 samples of `window` (context + chunk), and the next state."""
        out, new_state = self.session.run(None, {"input": window[np.newaxis, :], "state": state, "sr": self._sr})
        return float(out[0, 0]), new_state


def load_vad_model() -> VadModel:
    """The process' Silero model (loaded on first use, then shared by every session)."""
    global _loaded
    with _load_lock:
        if _loaded is None:
            import torch  # silero_vad sets torch's thread count at import: keep the process' setting

            threads = torch.get_num_threads()
            from silero_vad import load_silero_vad

            wrapper = load_silero_vad(onnx=True)
            torch.set_num_threads(threads)
            _loaded = VadModel(wrapper.session)
        return _loaded


@dataclass(frozen=True)
class VadChange:
    """Speech started or ended.

    ``sample`` is where the model saw the change (first speech chunk / first silent chunk), in samples
    since the stream's first one; ``bound`` is the speech segment's edge with the padding applied (earlier
    for a start, later for an end), clamped to the audio seen so far.
    """

    kind: Literal["start", "end"]
    sample: int
    bound: int


class StreamingVad:
    """Silero over a stream: feed any number of samples, get speech starts and ends.

    A start is reported once speech lasted ``min_speech_ms`` (shorter blips are ignored); an end once
    ``min_silence_ms`` of silence followed speech. In between, :attr:`silence_start` and
    :attr:`trailing_silence_samples` tell how long speech has been paused, so a caller can act on a pause
    before it becomes an end (the transcriber's speculative finals). Not thread-safe by itself: one per
    session, used by the session's thread (the shared :class:`VadModel` is).
    """

    def __init__(self, model: VadModel, threshold: float = 0.5, min_speech_ms: int = 250,
                 min_silence_ms: int = 800, speech_pad_ms: int = 250) -> None:  # fmt: skip
        self.model = model
        self.threshold = threshold
        self.min_speech = int(min_speech_ms * SAMPLE_RATE / 1000)
        self.min_silence = int(min_silence_ms * SAMPLE_RATE / 1000)
        self.pad = int(speech_pad_ms * SAMPLE_RATE / 1000)
        self.speaking = False
        self.position = 0
        """Samples processed by the model (a remainder shorter than a chunk waits for more)."""
        self.last_speech = 0
        """End of the newest chunk at or above the threshold."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._window = np.zeros(CONTEXT + CHUNK, dtype=np.float32)
        self._remainder = np.empty(0, dtype=np.float32)
        self._candidate: int | None = None  # where a speech run began that is not yet long enough
        self._silence_from: int | None = None  # where silence began inside speech

    @property
    def silence_start(self) -> int | None:
        """Where the silence that speech is paused in began (the ``sample`` its end will carry), else None.

        Set while :attr:`speaking` once a chunk fell below ``threshold - HYSTERESIS``; cleared by the next
        chunk at or above the threshold. The same value for the whole pause, so a caller can tell whether
        speech came back since it last looked (a new pause starts elsewhere).
        """
        return self._silence_from if self.speaking else None

    @property
    def trailing_silence_samples(self) -> int:
        """Samples of the current pause inside speech (0 while speech goes on or before any)."""
        start = self.silence_start
        return 0 if start is None else self.position - start

    def feed(self, samples: np.ndarray) -> list[VadChange]:
        """Run the model over `samples` (float32, 16 kHz) and report the changes, in order."""
        data = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._remainder.size:
            data = np.concatenate((self._remainder, data))
        usable = data.size - data.size % CHUNK
        self._remainder = data[usable:].copy()
        changes: list[VadChange] = []
        for offset in range(0, usable, CHUNK):
            change = self._step(data[offset : offset + CHUNK])
            if change is not None:
                changes.append(change)
        return changes

    def _step(self, chunk: np.ndarray) -> VadChange | None:
        window = self._window
        window[:CONTEXT] = window[-CONTEXT:]
        window[CONTEXT:] = chunk
        probability, self._state = self.model.probability(window, self._state)
        start, self.position = self.position, self.position + CHUNK
        speech = probability >= self.threshold
        if speech:
            self.last_speech = self.position
        silence = probability < self.threshold - HYSTERESIS
        if not self.speaking:
            if speech and self._candidate is None:
                self._candidate = start
            elif silence:
                self._candidate = None
            if self._candidate is not None and self.position - self._candidate >= max(self.min_speech, CHUNK):
                onset, self._candidate = self._candidate, None
                self.speaking = True
                self._silence_from = None
                return VadChange("start", onset, max(0, onset - self.pad))
            return None
        if speech:
            self._silence_from = None
        elif silence and self._silence_from is None:
            self._silence_from = start
        if self._silence_from is not None and self.position - self._silence_from >= self.min_silence:
            offset, self._silence_from = self._silence_from, None
            self.speaking = False
            return VadChange("end", offset, min(self.position, offset + self.pad))
        return None
