"""Audio for `hark stream`: a file decoded with PyAV, or the microphone captured by an ffmpeg subprocess.

Both give mono 16-bit little-endian PCM at the session's rate; :func:`encode_pcm` turns it into the
encoding the session declares (``linear16``, ``linear32`` float, G.711 ``mulaw`` / ``alaw``) and
:func:`frames` cuts it into frames of :data:`FRAME_SECONDS`.

Files are opened like uploads are (:mod:`hark.audio_formats`): only the allowed demuxers, and FFmpeg
reads the bytes through a Python file object, never by a protocol of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from hark.audio_formats import ALLOWED_DESCRIPTION, is_allowed, open_options, unsupported_message

#: Duration of one binary frame sent to the server.
FRAME_SECONDS = 0.1
#: Encodings `hark stream` can produce from PCM (opus needs an encoder the CLI does not carry).
CLI_ENCODINGS: tuple[str, ...] = ("linear16", "linear32", "mulaw", "alaw")
BYTES_PER_SAMPLE = {"linear16": 2, "linear32": 4, "mulaw": 1, "alaw": 1}
#: ffmpeg capture inputs tried in order for ``--mic`` (format, device).
MIC_INPUTS: tuple[tuple[str, str], ...] = (("pulse", "default"), ("alsa", "default"))


def parse_device(text: str) -> tuple[str, str]:
    """``FORMAT:NAME`` (``alsa:hw:1``, ``pulse:alsa_input.usb-mic``) as ffmpeg's (format, device)."""
    fmt, sep, device = text.partition(":")
    if not sep or not fmt or not device:
        raise ValueError(f"a capture device is FORMAT:NAME (e.g. alsa:hw:1 or pulse:default), not {text!r}")
    return fmt, device


class AudioSourceError(Exception):
    """The audio cannot be read: a bad or missing file, or no capture device (``message`` says which)."""


# --- files ----------------------------------------------------------------------------------------


def decode_file(path: Path, rate: int = 16000) -> bytes:
    """The audio of `path` as mono signed 16-bit little-endian PCM at `rate` Hz.

    Raises:
        AudioSourceError: missing file, a container outside the allow-list, no audio stream, no samples,
            or bytes FFmpeg cannot decode.
    """
    if not path.is_file():
        raise AudioSourceError(f"no such file: {path}")
    chunks: list[bytes] = []
    with path.open("rb") as handle:
        try:
            container = av.open(handle, mode="r", options=open_options())
        except av.ArgumentError:  # refused by format_whitelist before any header was read
            raise AudioSourceError(f"{path}: {unsupported_message()}") from None
        except Exception as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise AudioSourceError(f"{path} is not audio that can be decoded ({reason}); "
                                   f"send one of {ALLOWED_DESCRIPTION}") from None
        with container:
            if not is_allowed(container.format.name):
                raise AudioSourceError(f"{path}: {unsupported_message(container.format.name)}")
            if not container.streams.audio:
                raise AudioSourceError(f"{path} holds no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            try:
                for frame in container.decode(stream):
                    chunks.extend(_pcm(out) for out in resampler.resample(frame))
                chunks.extend(_pcm(out) for out in resampler.resample(None))
            except av.FFmpegError as error:
                raise AudioSourceError(f"{path}: decoding failed ({error})") from None
    pcm = b"".join(chunks)
    if not pcm:
        raise AudioSourceError(f"{path} holds no audio samples")
    return pcm


def _pcm(frame: av.AudioFrame) -> bytes:
    return frame.to_ndarray().astype("<i2", copy=False).tobytes()


# --- encodings ------------------------------------------------------------------------------------

_ULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _mulaw(samples: np.ndarray) -> np.ndarray:
    """G.711 mu-law of 16-bit samples (the reference algorithm, as ``audioop.lin2ulaw``)."""
    value = samples.astype(np.int32) >> 2
    mask = np.where(value < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + 0x21
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, value)
    code = (segment << 4) | ((value >> (segment + 1)) & 0x0F)
    return (np.where(segment >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def _alaw(samples: np.ndarray) -> np.ndarray:
    """G.711 A-law of 16-bit samples (the reference algorithm, as ``audioop.lin2alaw``)."""
    value = samples.astype(np.int32) >> 3
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, value)
    low = np.where(segment < 2, value >> 1, value >> segment) & 0x0F
    code = (segment << 4) | low
    return (np.where(segment >= 8, 0x7F, code) ^ mask).astype(np.uint8)


def encode_pcm(pcm: bytes, encoding: str) -> bytes:
    """16-bit little-endian PCM as `encoding` (one of :data:`CLI_ENCODINGS`); a dangling odd byte is dropped."""
    if encoding == "linear16":
        return pcm[: len(pcm) - len(pcm) % 2]
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    if encoding == "linear32":
        return (samples.astype("<f4") / np.float32(32768.0)).astype("<f4").tobytes()
    if encoding == "mulaw":
        return _mulaw(samples).tobytes()
    if encoding == "alaw":
        return _alaw(samples).tobytes()
    raise ValueError(f"hark stream cannot send {encoding!r}; use one of {', '.join(CLI_ENCODINGS)}")


def frame_bytes(rate: int, encoding: str) -> int:
    """Bytes of one :data:`FRAME_SECONDS` frame."""
    return int(rate * FRAME_SECONDS) * BYTES_PER_SAMPLE[encoding]


def frames(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- the microphone -------------------------------------------------------------------------------


class Microphone:
    """The default capture device through ``ffmpeg`` (PulseAudio, else ALSA) as 16-bit PCM chunks.

    :meth:`open` fails with :class:`AudioSourceError` when ffmpeg is missing or no input gives audio;
    :meth:`chunks` then yields PCM until :meth:`stop` (or ffmpeg ends).
    """

    def __init__(self, rate: int = 16000, inputs: tuple[tuple[str, str], ...] | None = None) -> None:
        self.rate = rate
        self.inputs = inputs or MIC_INPUTS
        self.chunk_bytes = int(rate * FRAME_SECONDS) * 2
        self.process: subprocess.Popen[bytes] | None = None
        self.name = ""
        self._first = b""

    def command(self, fmt: str, device: str) -> list[str]:
        # A synthetic lavfi source (a test tone) is read at its native rate, as a device delivers audio.
        pace = ["-re"] if fmt == "lavfi" else []
        return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *pace, "-f", fmt, "-i", device,
                "-ac", "1", "-ar", str(self.rate), "-f", "s16le", "-"]  # fmt: skip

    def open(self) -> Microphone:
        if shutil.which("ffmpeg") is None:
            raise AudioSourceError("--mic needs ffmpeg to capture audio: install it (e.g. apt-get install ffmpeg)")
        failures: list[str] = []
        for fmt, device in self.inputs:
            # stderr to a file, not a pipe: a long capture's warnings must never block ffmpeg. A session of
            # its own: Ctrl-C reaches `hark stream` only, which then ends the capture and the session in order.
            with tempfile.TemporaryFile() as errors:
                process = subprocess.Popen(self.command(fmt, device), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=errors, start_new_session=True)  # fmt: skip
                assert process.stdout is not None
                first = process.stdout.read(self.chunk_bytes)
                if first:
                    self.process, self.name, self._first = process, f"{fmt}:{device}", first
                    return self
                process.wait(timeout=10)
                process.stdout.close()
                errors.seek(0)
                reason = errors.read().decode(errors="replace").strip().splitlines()
            failures.append(f"{fmt} {device}: {reason[-1] if reason else f'ffmpeg exited with {process.returncode}'}")
        raise AudioSourceError("no audio capture device found (" + "; ".join(failures) + "); "
                               "stream a file instead: hark stream FILE")  # fmt: skip

    def chunks(self) -> Iterator[bytes]:
        assert self.process is not None and self.process.stdout is not None, "open() first"
        if self._first:
            yield self._first
            self._first = b""
        while chunk := self.process.stdout.read(self.chunk_bytes):
            yield chunk

    def stop(self) -> None:
        """End the capture (ffmpeg exits cleanly on SIGTERM; killed if it lingers)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=3)
