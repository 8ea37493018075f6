"""Incremental decoders for live (WebSocket) audio: binary frames in, 16 kHz mono float32 in [-1, 1] out.

A live session declares an ``encoding`` and a ``sample_rate`` (:data:`hark.sessions.ENCODINGS`,
:data:`hark.sessions.SAMPLE_RATES`) and then sends binary frames of any size. :func:`make_stream_decoder`
returns a :class:`StreamAudioDecoder` whose :meth:`~StreamAudioDecoder.feed` turns each frame into the
samples it completes, :meth:`~StreamAudioDecoder.flush` returns what is still held at the end of the
stream, and :meth:`~StreamAudioDecoder.close` releases the codec. Not thread-safe: one session, one caller.

Choices:

- **Carried bytes.** A frame boundary may fall inside a sample (an odd-sized ``linear16`` frame, 6 bytes of
  ``linear32``). The dangling bytes are kept and prefixed to the next frame, so a stream decodes to the
  same samples however it is split; decoding each frame on its own would drop or shift every later sample.
  At most ``width - 1`` bytes are carried; :meth:`flush` drops an incomplete last sample.
- **linear32 is 32-bit IEEE float** (little-endian, nominal range [-1, 1]), as in Deepgram's API, not 32-bit
  integers. Values beyond [-1, 1] are clipped. NaN or infinity cannot come from a float audio pipeline but
  do come from other bytes read as floats (negative 24-bit samples in int32 words all read as NaN), so they raise
  :class:`StreamAudioError` instead of being silently zeroed.
- **G.711** (``alaw``, ``mulaw``) decodes through 256-entry lookup tables built from the G.711 expansion
  formulas (``audioop`` is deprecated and gone in Python 3.13); the tests check them against FFmpeg's.
- **PyAV (FFmpeg) for everything else.** ``opus`` packets go to FFmpeg's Opus decoder (always 48 kHz: an Opus
  packet does not depend on the rate the sender encoded at, so the declared rate only has to be valid).
  ``ogg_opus`` is demuxed by FFmpeg's Ogg demuxer, the well-kept parser, restricted like the batch path
  (:func:`hark.audio_formats.open_options`: only the ``ogg`` demuxer, no nested protocols). The demuxer
  pulls bytes through a blocking reader, so it runs in a background thread; :meth:`feed` hands the frame
  over and waits only until the demuxer has consumed it and asks for more (never for a whole page), so
  samples lag by at most one Ogg page. Resampling uses libswresample (``av.AudioResampler``), one instance
  per stream, so its filter state carries across frames: no clicks at frame boundaries and no drift (the
  output length matches the input duration after :meth:`flush`). 16 kHz PCM passes through untouched.

Bad input raises :class:`StreamAudioError` (code ``invalid_audio``); the session decides what to do.
Memory is bounded: carried bytes (< 4), under 10 ms of resampler input, the codec state, and for
``ogg_opus`` at most :data:`OGG_MAX_BYTES_WITHOUT_PACKET` bytes read without an Opus packet coming out.
"""

from __future__ import annotations

import operator
import struct
import threading
import weakref
from collections import deque
from fractions import Fraction

import av
import numpy as np

from hark.audio_formats import open_options
from hark.sessions import ENCODINGS, SAMPLE_RATES

#: The speech model's sample rate: every decoder outputs mono float32 at this rate.
MODEL_RATE = 16000

#: The rate FFmpeg's Opus decoder outputs (Opus packets are rate-independent).
OPUS_RATE = 48000

#: An ``ogg_opus`` stream that delivers this many bytes without one Opus packet is not Ogg/Opus (garbage
#: after the headers, a packet continued over endless pages, another codec's logical stream).
OGG_MAX_BYTES_WITHOUT_PACKET = 1 << 20

#: Every Ogg page starts with this capture pattern.
OGG_CAPTURE = b"OggS"

#: How long :meth:`StreamAudioDecoder.feed` waits for the Ogg demuxer to consume one frame (it takes
#: milliseconds; this only bounds a wedged thread).
OGG_FEED_TIMEOUT = 30.0

#: The code of every :class:`StreamAudioError`.
INVALID_AUDIO = "invalid_audio"

_EMPTY = np.empty(0, dtype=np.float32)
_EMPTY.flags.writeable = False


class StreamAudioError(Exception):
    """Bytes that are not audio of the declared encoding."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> StreamAudioError:
    return StreamAudioError(INVALID_AUDIO, message)


# --- G.711 tables -----------------------------------------------------------------------------------


def _mulaw_table() -> np.ndarray:
    """μ-law byte → linear value (16-bit scale, ±32124), ITU-T G.711 expansion."""
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, 0x84 - magnitude, magnitude - 0x84)


def _alaw_table() -> np.ndarray:
    """A-law byte → linear value (16-bit scale, ±32256), ITU-T G.711 expansion (even bits inverted)."""
    code = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    return np.where(code & 0x80, magnitude, -magnitude)


#: 256-entry tables, float32 in [-1, 1] (16-bit values / 32768, as FFmpeg's s16 output divided).
MULAW_TABLE: np.ndarray = (_mulaw_table() / 32768.0).astype(np.float32)
ALAW_TABLE: np.ndarray = (_alaw_table() / 32768.0).astype(np.float32)


# --- resampling ---------------------------------------------------------------------------------------


class _Resampler:
    """Mono float32 at any rate → :data:`MODEL_RATE`, streaming (libswresample keeps its state across calls).

    Input shorter than 10 ms is held until more arrives: every call into FFmpeg costs ~1 ms, and a stream
    of 1-byte frames must not cost one call per sample. libswresample's output does not depend on how
    its input is split, so holding changes only latency.
    """

    def __init__(self) -> None:
        self._rate = 0
        self._resampler: av.AudioResampler | None = None
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._pts = 0

    def push(self, samples: np.ndarray, rate: int) -> np.ndarray:
        out: list[np.ndarray] = []
        if rate != self._rate:
            if self._rate:
                out.append(self.flush())
            self._rate = rate
        if rate == MODEL_RATE:
            out.append(samples)
        elif samples.size:
            self._pending.append(samples)
            self._pending_size += samples.size
            if self._pending_size >= rate // 100:
                out.extend(self._run(self._take()))
        return _join(out)

    def flush(self) -> np.ndarray:
        """Everything held (the filter's delay line included); the next push starts a fresh stream."""
        out: list[np.ndarray] = []
        if self._pending_size:
            out.extend(self._run(self._take()))
        if self._resampler is not None:
            out.extend(self._convert(self._resampler.resample(None)))
        self._resampler = None
        self._pts = 0
        return _join(out)

    def _take(self) -> np.ndarray:
        samples = _join(self._pending)
        self._pending, self._pending_size = [], 0
        return samples

    def _run(self, samples: np.ndarray) -> list[np.ndarray]:
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=MODEL_RATE)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="flt", layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._pts
        self._pts += samples.size
        return self._convert(self._resampler.resample(frame))

    @staticmethod
    def _convert(frames: list[av.AudioFrame]) -> list[np.ndarray]:
        return [frame.to_ndarray()[0] for frame in frames if frame.samples]


def _join(pieces: list[np.ndarray]) -> np.ndarray:
    pieces = [piece for piece in pieces if piece.size]
    if not pieces:
        return _EMPTY
    # Always a fresh array: pieces may be views of FFmpeg frames or of the caller's bytes.
    return np.concatenate(pieces) if len(pieces) > 1 else pieces[0].copy()


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded frame as mono float32 (channels averaged: FFmpeg's downmix sums correlated channels)."""
    array = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        array = array.reshape(-1, channels).T
    if array.dtype.kind == "i":
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    array = array.astype(np.float32, copy=False)
    return array[0] if channels == 1 else array.mean(axis=0, dtype=np.float32)


# --- the decoders -------------------------------------------------------------------------------------


class StreamAudioDecoder:
    """One live stream's decoder: :meth:`feed` frames, :meth:`flush` at the end, :meth:`close` always.

    Subclasses implement :meth:`_decode` and :meth:`_drain`, returning mono float32 at their own rate;
    this base class resamples to :data:`MODEL_RATE` and clips to [-1, 1].
    """

    def __init__(self, encoding: str, sample_rate: int) -> None:
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._resampler = _Resampler()
        self._samples_in = 0  # at self._rate_in
        self._rate_in = sample_rate
        self._closed = False

    def feed(self, data: bytes) -> np.ndarray:
        """Decode one binary frame (any size, possibly empty).

        Returns:
            The float32 mono 16 kHz samples this frame completes (possibly none: the resampler and the
            codecs hold a little back; :meth:`flush` returns it).

        Raises:
            StreamAudioError: the bytes are not audio of the declared encoding.
            ValueError: the decoder is closed.
        """
        if self._closed:
            raise ValueError("the stream decoder is closed")
        samples, rate = self._decode(memoryview(data).cast("B"))
        return self._output(self._resampler.push(samples, rate))

    def flush(self) -> np.ndarray:
        """End of stream: whatever the codec and the resampler still hold (an incomplete sample is dropped).

        A later :meth:`feed` starts a new stream (for ``ogg_opus``, one with its own headers).

        Raises:
            StreamAudioError: the end of the stream shows it was not audio of the declared encoding.
        """
        if self._closed:
            return _EMPTY
        try:
            samples, rate = self._drain()
        except StreamAudioError:
            self._resampler.flush()  # the stream is over either way: a later feed() starts clean
            raise
        head = self._resampler.push(samples, rate) if samples.size else _EMPTY
        return self._output(_join([head, self._resampler.flush()]))

    def close(self) -> None:
        """Release the codec (and the ``ogg_opus`` demuxer thread). Safe to call more than once."""
        self._closed = True

    @property
    def input_seconds(self) -> float:
        """Seconds of audio fed so far: complete samples at the declared rate (compressed encodings: decoded)."""
        return self._samples_in / self._rate_in

    def _decode(self, data: memoryview) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _drain(self) -> tuple[np.ndarray, int]:
        return _EMPTY, self._rate_in

    @staticmethod
    def _output(samples: np.ndarray) -> np.ndarray:
        return np.clip(samples, -1.0, 1.0, out=samples) if samples.size else _EMPTY

    def __enter__(self) -> StreamAudioDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.encoding} @{self.sample_rate} Hz, {self.input_seconds:.2f} s fed>"


class _PcmDecoder(StreamAudioDecoder):
    """Fixed-width samples (linear16, linear32, alaw, mulaw); bytes of an incomplete sample are carried."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        super().__init__(encoding, sample_rate)
        self._width = {"linear16": 2, "linear32": 4, "alaw": 1, "mulaw": 1}[encoding]
        self._carry = b""

    def _decode(self, data: memoryview) -> tuple[np.ndarray, int]:
        if self._carry:
            data = memoryview(self._carry + data.tobytes())
        usable = len(data) - len(data) % self._width
        samples = self._convert(data[:usable])
        self._carry = data[usable:].tobytes()
        self._samples_in += samples.size
        return samples, self.sample_rate

    def _convert(self, data: memoryview) -> np.ndarray:
        if self.encoding == "linear16":
            return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)
        if self.encoding == "mulaw":
            return MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
        if self.encoding == "alaw":
            return ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
        samples = np.frombuffer(data, dtype="<f4")
        if not np.isfinite(samples).all():
            bad = int(np.flatnonzero(~np.isfinite(samples))[0])
            raise _invalid(
                f"linear32 is 32-bit float PCM, but sample {self._samples_in + bad} is {samples[bad]} "
                "(integer PCM sent as linear32?)"
            )
        return np.clip(samples, -1.0, 1.0).astype(np.float32)

    def _drain(self) -> tuple[np.ndarray, int]:
        self._carry = b""
        return _EMPTY, self.sample_rate


class _OpusDecoder(StreamAudioDecoder):
    """Each frame is one raw Opus packet (RFC 6716), as WebRTC and LiveKit send them; an empty frame is skipped."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        super().__init__(encoding, sample_rate)
        self._rate_in = OPUS_RATE
        self._codec: av.AudioCodecContext | None = None

    def _context(self) -> av.AudioCodecContext:
        if self._codec is None:
            codec = av.CodecContext.create("opus", "r")
            codec.sample_rate = OPUS_RATE
            codec.layout = "mono"  # FFmpeg's decoder downmixes stereo packets
            self._codec = codec
        return self._codec

    def _decode(self, data: memoryview) -> tuple[np.ndarray, int]:
        if not len(data):
            return _EMPTY, OPUS_RATE
        try:
            frames = self._context().decode(av.Packet(data.tobytes()))
        except av.FFmpegError as error:
            raise _invalid(f"the frame is not an Opus packet ({_reason(error)})") from None
        samples = _join([_frame_to_mono(frame) for frame in frames])
        self._samples_in += samples.size
        return samples, OPUS_RATE

    def _drain(self) -> tuple[np.ndarray, int]:
        if self._codec is None:
            return _EMPTY, OPUS_RATE
        try:
            frames = self._codec.decode(None)
        except av.FFmpegError:
            frames = []
        self._codec.flush_buffers()  # out of draining mode: a later feed() decodes again
        samples = _join([_frame_to_mono(frame) for frame in frames])
        self._samples_in += samples.size
        return samples, OPUS_RATE

    def close(self) -> None:
        super().close()
        self._codec = None  # PyAV frees the AVCodecContext with the object


class _OggOpusDecoder(StreamAudioDecoder):
    """An Ogg/Opus byte stream (RFC 7845) split arbitrarily across frames, demuxed by FFmpeg in a thread."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        super().__init__(encoding, sample_rate)
        self._rate_in = OPUS_RATE
        self._pump: _OggPump | None = None
        self._finalizer: weakref.finalize | None = None
        self._head = b""  # the stream's first bytes, until they show the capture pattern
        self._failed: StreamAudioError | None = None

    def _decode(self, data: memoryview) -> tuple[np.ndarray, int]:
        if self._failed is not None:
            raise self._failed
        if not len(data):
            return _EMPTY, OPUS_RATE
        if len(self._head) < len(OGG_CAPTURE):
            # FFmpeg would skip leading junk while hunting for a page; a live stream starts with one.
            self._head += data[: len(OGG_CAPTURE) - len(self._head)].tobytes()
            if not OGG_CAPTURE.startswith(self._head):
                raise _invalid(f"an Ogg stream starts with {OGG_CAPTURE!r}, not {self._head!r}")
        if self._pump is None:
            self._pump = _OggPump()
            # A decoder dropped without close() must not leave its thread blocked in read() forever.
            self._finalizer = weakref.finalize(self, self._pump.stop)
        return self._collect(self._pump.push(data.tobytes()))

    def _drain(self) -> tuple[np.ndarray, int]:
        if self._pump is None:
            return _EMPTY, OPUS_RATE
        pump, self._pump = self._pump, None
        self._head = b""  # a later feed() starts a new Ogg stream
        try:
            return self._collect(pump.finish())
        finally:
            self._stop()
            pump.stop()

    def _collect(self, pieces: list[np.ndarray]) -> tuple[np.ndarray, int]:
        samples = _join(pieces)
        self._samples_in += samples.size
        return samples, OPUS_RATE

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None

    def feed(self, data: bytes) -> np.ndarray:
        try:
            return super().feed(data)
        except StreamAudioError as error:
            # The stream cannot resync: later frames raise the same error. The demuxer has stopped, so its
            # thread must not wait for bytes that will not come.
            self._failed = error
            self._release()
            raise

    def flush(self) -> np.ndarray:
        if self._failed is not None:
            return _EMPTY
        return super().flush()

    def close(self) -> None:
        super().close()
        self._release()

    def _release(self) -> None:
        pump, self._pump = self._pump, None
        self._stop()
        if pump is not None:
            pump.stop()


class _Closed(Exception):
    """Raised inside the demuxer's read() when the decoder is closed: unwinds FFmpeg and ends the thread."""


class _OggReader:
    """The file-like object FFmpeg reads from: ``read`` only (no ``seek``/``tell``: a non-seekable stream)."""

    def __init__(self, pump: _OggPump) -> None:
        self.read = pump.read


class _OggPump:
    """FFmpeg's Ogg demuxer and Opus decoder in a thread, fed bytes through a blocking reader.

    The thread blocks in :meth:`read` whenever it has consumed everything it was given. :meth:`push`
    hands over one frame and returns once the thread is blocked again (or has failed), with the samples
    decoded meanwhile, so output does not depend on thread timing and buffered input never exceeds one
    frame. :meth:`finish` signals end of stream (``read`` returns ``b""``) and waits for the thread to drain.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._stopped = False
        self._waiting = False  # blocked in read() with no bytes to give
        self._done = False
        self._error: BaseException | None = None
        self._out: list[np.ndarray] = []
        self._since_packet = 0  # bytes handed to FFmpeg since the last Opus packet came out
        self._thread = threading.Thread(target=self._run, name="hark-ogg-opus", daemon=True)
        self._thread.start()

    # the caller's side

    def push(self, data: bytes) -> list[np.ndarray]:
        with self._cond:
            self._chunks.append(data)
            self._waiting = False
            self._cond.notify_all()
            idle = self._cond.wait_for(lambda: self._done or (self._waiting and not self._chunks), OGG_FEED_TIMEOUT)
            if not idle:
                self._error = _invalid("the Ogg demuxer did not keep up with the stream")
            elif self._since_packet > OGG_MAX_BYTES_WITHOUT_PACKET and not self._done:
                self._error = _invalid(
                    f"{self._since_packet} bytes of Ogg stream without an Opus packet: this is not Ogg/Opus"
                )
            return self._take()

    def finish(self) -> list[np.ndarray]:
        with self._cond:
            self._eof = True
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done, OGG_FEED_TIMEOUT):
                self._error = _invalid("the Ogg demuxer did not finish the stream")
            return self._take()

    def stop(self) -> None:
        """End the thread (idempotent; also the finalizer of a decoder dropped without close())."""
        with self._cond:
            self._stopped = True
            self._chunks.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=OGG_FEED_TIMEOUT)

    def _take(self) -> list[np.ndarray]:
        out, self._out = self._out, []
        if self._error is not None:
            error = self._error
            raise error
        return out

    # the thread's side

    def read(self, size: int) -> bytes:
        with self._cond:
            while not self._chunks and not self._eof and not self._stopped:
                self._waiting = True
                self._cond.notify_all()
                self._cond.wait()
            self._waiting = False
            if self._stopped:
                raise _Closed
            if not self._chunks:
                return b""  # end of stream
            chunk = self._chunks.popleft()
            if len(chunk) > size:
                chunk, rest = chunk[:size], chunk[size:]
                self._chunks.appendleft(rest)
            self._since_packet += len(chunk)
            return chunk

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self._demux()
        except _Closed:
            pass
        except StreamAudioError as caught:
            error = caught
        except EOFError:
            error = _invalid("the Ogg stream ended before its Opus headers did (or holds no Ogg pages)")
        except (av.FFmpegError, ValueError, UnicodeDecodeError, IndexError, struct.error) as caught:
            error = _invalid(f"the data is not an Ogg/Opus stream ({_reason(caught)})")
        except BaseException as caught:  # a bug: re-raised in the caller's thread, not lost here
            error = caught
        with self._cond:
            if error is not None and self._error is None:
                self._error = error
            self._done = True
            self._cond.notify_all()

    def _demux(self) -> None:
        options = open_options(format_whitelist="ogg")  # no other demuxer, no nested protocol
        container = av.open(_OggReader(self), mode="r", format="ogg", options=options, metadata_errors="ignore")
        try:
            audio = container.streams.audio
            if not audio:
                raise _invalid("the Ogg stream holds no audio")
            stream = audio[0]
            if stream.codec_context.name != "opus":
                raise _invalid(f"the Ogg stream holds {stream.codec_context.name}, not Opus")
            for packet in container.demux(stream):
                if packet.size:
                    with self._cond:
                        self._since_packet = 0
                try:
                    frames = packet.decode()
                except av.FFmpegError as error:
                    raise _invalid(f"an Opus packet in the Ogg stream does not decode ({_reason(error)})") from None
                pieces = [_frame_to_mono(frame) for frame in frames if frame.samples]
                if pieces:
                    with self._cond:
                        self._out.append(_join(pieces))
        finally:
            container.close()


def _reason(error: BaseException) -> str:
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return str(text).strip().rstrip(".")


_DECODERS: dict[str, type[StreamAudioDecoder]] = {
    "linear16": _PcmDecoder,
    "linear32": _PcmDecoder,
    "alaw": _PcmDecoder,
    "mulaw": _PcmDecoder,
    "opus": _OpusDecoder,
    "ogg_opus": _OggOpusDecoder,
}


def make_stream_decoder(encoding: str, sample_rate: int) -> StreamAudioDecoder:
    """A decoder for one live stream of `encoding` at `sample_rate`.

    Raises:
        ValueError: `encoding` is not one of :data:`hark.sessions.ENCODINGS` or `sample_rate` not one of
            :data:`hark.sessions.SAMPLE_RATES`.
    """
    if encoding not in ENCODINGS or encoding not in _DECODERS:
        raise ValueError(f"unknown encoding {encoding!r}: expected one of {', '.join(ENCODINGS)}")
    try:
        rate = operator.index(sample_rate)  # an int (numpy ints too), not 16000.0 or True
    except TypeError:
        rate = 0
    if isinstance(sample_rate, bool) or rate not in SAMPLE_RATES:
        raise ValueError(
            f"unsupported sample rate {sample_rate!r}: expected one of {', '.join(map(str, SAMPLE_RATES))}"
        )
    return _DECODERS[encoding](encoding, rate)
