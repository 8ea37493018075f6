"""Decode uploaded bytes into the 16 kHz mono float32 samples the engine wants, a bounded piece at a time.

The engine pulls audio from an :class:`AudioSource` with ``read(max_samples)``, so a request never holds
its whole decoded file: a 4-hour upload is ~900 MB as float32, while the engine keeps a couple of
minutes. :class:`EncodedAudio` wraps the uploaded bytes and opens the decoder on its first ``read``,
which happens when an inference lane runs the request, not while it waits for one. :class:`PcmAudio`
wraps samples already in memory (warm-up, tests). :func:`decode_audio` decodes a whole (short) file
at once for tools and tests.

PyAV (FFmpeg) reads the containers of :mod:`hark.audio_formats` straight from memory; FFmpeg refuses
any other demuxer before reading a header (SDP binds sockets, ffconcat reads local files). Bad input
becomes an :class:`AudioError` whose ``code`` the task turns into a 400 answer:
``unsupported_container``, ``invalid_audio``, ``empty_audio``, ``truncated_audio`` or
``audio_too_long``. Errors found at the end of the stream (truncation, emptiness) are raised by the
``read`` that reaches the end.

Channels are averaged into mono (FFmpeg's mono downmix lets correlated channels peak over 1.0).
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from hark.audio_formats import UNSUPPORTED_CONTAINER, is_allowed, open_options, unsupported_message

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

#: Declared and decoded durations may differ a little (encoder delay, padding); a truncated file
#: misses more than this many seconds *and* more than this share of its declared length.
TRUNCATION_MIN_SECONDS = 0.25
TRUNCATION_MIN_SHARE = 0.10

#: A declared duration over the limit by more than this is refused before decoding.
DECLARED_DURATION_SLACK = 1.0

#: WAV data sizes at or above this mean "unknown length": writers that stream to a pipe put a
#: placeholder there (0xFFFFFFFF, or 0x7FFFF000 from espeak-ng/FFmpeg); no upload is that large.
_WAV_PLACEHOLDER_SIZE = 0x7F000000

#: Allow-list options (see :mod:`hark.audio_formats`); the decoder reads the whole file anyway.
_OPEN_OPTIONS = open_options()


class AudioError(ValueError):
    """The bytes cannot be used as audio; ``code`` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedAudio:
    """Mono 16 kHz float32 samples in [-1, 1] and their duration in seconds."""

    samples: np.ndarray
    duration: float


class AudioSource(Protocol):
    """Audio the engine pulls in bounded pieces (16 kHz mono float32)."""

    def read(self, max_samples: int) -> np.ndarray:
        """Up to `max_samples` samples; fewer only at the end of the audio, an empty array after it.

        Raises:
            AudioError: The audio is unusable (found when opening, or at the end of the stream).
        """
        ...

    def close(self) -> None:
        """Release the decoder (safe to call twice)."""
        ...


class PcmAudio:
    """Samples already in memory, as an :class:`AudioSource` (warm-up, tests)."""

    def __init__(self, samples: np.ndarray) -> None:
        self._samples = np.asarray(samples, dtype=np.float32)
        self._position = 0

    def read(self, max_samples: int) -> np.ndarray:
        piece = self._samples[self._position : self._position + max(0, max_samples)]
        self._position += piece.size
        return piece

    def close(self) -> None:
        self._samples = np.empty(0, dtype=np.float32)


class EncodedAudio:
    """Uploaded bytes, decoded on demand: the decoder opens at the first :meth:`read`.

    Memory held: the encoded bytes, FFmpeg's decoder state and at most one read's worth of samples
    (plus one decoded frame), whatever the duration.
    """

    def __init__(self, data: bytes, max_seconds: float) -> None:
        """Wrap `data`; nothing is parsed yet.

        Args:
            data: The file's bytes, one of the allowed containers.
            max_seconds: Longest accepted audio (``HARK_MAX_AUDIO_SECONDS``).
        """
        self._data: bytes | None = data
        self.max_seconds = max_seconds
        self._chunks: Generator[np.ndarray, None, None] | None = None
        self._pending: np.ndarray | None = None
        self._finished = False
        self._opened = False
        self.samples_decoded = 0

    @property
    def opened(self) -> bool:
        """True once the decoder was opened (the first :meth:`read`)."""
        return self._opened

    @property
    def duration(self) -> float:
        """Seconds decoded so far (the full duration once :meth:`read` returned short)."""
        return self.samples_decoded / SAMPLE_RATE

    def read(self, max_samples: int) -> np.ndarray:
        if self._chunks is None:
            if self._data is None:
                return np.empty(0, dtype=np.float32)
            self._chunks = _decode_chunks(self._data, self.max_seconds)
            self._opened = True
        pieces: list[np.ndarray] = []
        have = 0
        while have < max_samples:
            chunk = self._pending
            self._pending = None
            if chunk is None:
                if self._finished:
                    break
                chunk = next(self._chunks, None)
                if chunk is None:
                    self._finished = True
                    self._data = None  # the bytes are no longer needed
                    break
                self.samples_decoded += chunk.size
            want = max_samples - have
            if chunk.size > want:
                chunk, self._pending = chunk[:want], chunk[want:]
            pieces.append(chunk)
            have += chunk.size
        if not pieces:
            return np.empty(0, dtype=np.float32)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def close(self) -> None:
        if self._chunks is not None:
            self._chunks.close()  # runs the generator's finally: closes the FFmpeg container
        self._chunks = self._pending = self._data = None
        self._finished = True


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode a whole uploaded file to 16 kHz mono float32 (tools and tests; workers stream instead).

    Args:
        data: The file's bytes, one of the allowed containers.
        max_seconds: Longest accepted audio (``HARK_MAX_AUDIO_SECONDS``).

    Returns:
        The samples and their duration.

    Raises:
        AudioError: see :func:`_decode_chunks`.
    """
    chunks = list(_decode_chunks(data, max_seconds))
    samples = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
    return DecodedAudio(samples=np.ascontiguousarray(samples, dtype=np.float32), duration=samples.size / SAMPLE_RATE)


def _decode_chunks(data: bytes, max_seconds: float) -> Generator[np.ndarray, None, None]:
    """Decoded mono 16 kHz pieces as FFmpeg produces them (a few ms to a few hundred ms each).

    Raises:
        AudioError: ``unsupported_container`` (not on the allow-list), ``invalid_audio`` (not audio,
            undecodable, no audio stream), ``empty_audio`` (no samples), ``truncated_audio`` (the
            file ends before its declared length or its decoder fails part-way), ``audio_too_long``
            (over `max_seconds`). The last three are raised when the stream ends (or overflows).
    """
    if not data:
        raise AudioError("empty_audio", "the audio is empty (0 bytes)")
    try:
        container = av.open(io.BytesIO(data), mode="r", metadata_errors="ignore", options=_OPEN_OPTIONS)
    except av.ArgumentError:  # EINVAL before any header is read: FFmpeg's format_whitelist refused it
        raise AudioError(UNSUPPORTED_CONTAINER, unsupported_message()) from None
    except EOFError:
        raise AudioError("truncated_audio", "the audio file ends before its headers do: it is truncated") from None
    except (av.FFmpegError, ValueError, UnicodeDecodeError, IndexError, struct.error) as error:
        raise AudioError("invalid_audio", f"the data is not a readable audio file ({_reason(error)})") from None
    try:
        if not is_allowed(container.format.name):
            raise AudioError(UNSUPPORTED_CONTAINER, unsupported_message(container.format.name))
        yield from _decode_container(container, data, max_seconds)
    finally:
        container.close()


def _decode_container(container: av.container.InputContainer, data: bytes, max_seconds: float) -> Iterator[np.ndarray]:
    if not container.streams.audio:
        raise AudioError("invalid_audio", "the file holds no audio stream")
    stream = container.streams.audio[0]
    declared = _declared_duration(container, stream, data)
    if declared is not None and declared > max_seconds + DECLARED_DURATION_SLACK:
        raise AudioError("audio_too_long", _too_long_message(declared, max_seconds))

    limit = int(max_seconds * SAMPLE_RATE) + SAMPLE_RATE // 10
    total = 0
    failure: Exception | None = None
    skipped = 0
    resampler: av.AudioResampler | None = None
    shape: tuple[str, str, int] | None = None

    def take(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
        nonlocal total
        for out in frames:
            planes = out.to_ndarray()  # (channels, samples), planar float32
            array = planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)
            if array.size:
                total += array.size
                if total > limit:
                    raise AudioError("audio_too_long", _too_long_message(total / SAMPLE_RATE, max_seconds))
                yield array

    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as error:
                # A bad packet: fatal only if nothing decodes after it (see below).
                failure, skipped = error, skipped + 1
                continue
            for frame in frames:
                key = (frame.format.name, frame.layout.name, frame.sample_rate)
                if resampler is None or key != shape:
                    if resampler is not None:
                        yield from take(resampler.resample(None))
                    # Keep the channels and average them below: FFmpeg's own downmix to mono sums
                    # correlated channels to peaks over 1.0 (a stereo clip of identical channels).
                    resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=SAMPLE_RATE)
                    shape = key
                yield from take(resampler.resample(frame))
                failure = None
        if resampler is not None:
            yield from take(resampler.resample(None))
    except AudioError:
        raise
    except (av.FFmpegError, EOFError, ValueError) as error:  # the demuxer gave up part-way
        failure = error

    if failure is not None:
        if not total:
            raise AudioError("invalid_audio", f"the audio cannot be decoded ({_reason(failure)})")
        raise AudioError(
            "truncated_audio",
            f"the audio is truncated or corrupt: decoding failed after {total / SAMPLE_RATE:.2f} s "
            f"({_reason(failure)})",
        )
    if skipped:
        logger.info("skipped %d undecodable packet(s) in the middle of the audio", skipped)
    if not total:
        if declared:
            raise AudioError("truncated_audio", f"the audio declares {declared:.2f} s but holds no samples")
        raise AudioError("empty_audio", "the audio holds no samples (zero length)")

    decoded = total / SAMPLE_RATE
    if declared is not None and _clearly_shorter(decoded, declared):
        raise AudioError(
            "truncated_audio",
            f"the audio is truncated: its header declares {declared:.2f} s but only {decoded:.2f} s are there",
        )


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream, data: bytes) -> float | None:
    """The length the file announces, in seconds, or None when it announces none.

    FFmpeg derives a WAV's duration from the bytes present, so the WAV header's data size is read
    directly; otherwise the audio stream's duration, else the container's.
    """
    wav = wav_declared_duration(data)
    if wav is not None:
        return wav
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def wav_declared_duration(data: bytes) -> float | None:
    """Seconds of audio a RIFF/WAVE header's ``data`` chunk announces (None if not a WAV or unknown)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, byte_rate = 12, 0
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        if chunk_id == b"fmt " and offset + 20 <= len(data):
            (byte_rate,) = struct.unpack_from("<I", data, offset + 16)  # fmt body: tag, channels, rate, byte rate
        elif chunk_id == b"data":
            if size == 0 or size >= _WAV_PLACEHOLDER_SIZE or byte_rate <= 0:
                return None
            return size / byte_rate
        offset += 8 + size + (size & 1)
    return None


def _clearly_shorter(decoded: float, declared: float) -> bool:
    missing = declared - decoded
    return missing > TRUNCATION_MIN_SECONDS and missing > TRUNCATION_MIN_SHARE * declared


def _too_long_message(seconds: float, max_seconds: float) -> str:
    return (
        f"the audio is {seconds:.1f} s long, over the limit of {max_seconds:g} s "
        "(HARK_MAX_AUDIO_SECONDS): split it into shorter files"
    )


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).strip().rstrip(".")
