"""A cheap look at uploaded bytes before they are queued: is it audio we can decode, how long is it?

PyAV reads the container headers (no full decode) and decodes packets only until the first one
holding samples, which catches empty files whose header announces nothing. The worker decodes the
whole file later and re-checks the duration limit for containers that do not declare a duration.

Only the containers of :mod:`hark.audio_formats` are opened: FFmpeg refuses any other demuxer before it
reads a header (an SDP body would otherwise bind UDP ports for ~20 s, an ffconcat body read local
files), and the answer is the 400 ``unsupported_container`` in well under a millisecond.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import av

from hark.audio_formats import ALLOWED_DESCRIPTION, UNSUPPORTED_CONTAINER, is_allowed, open_options, unsupported_message

log = logging.getLogger(__name__)

#: Packets decoded at most while looking for the first samples.
MAX_PROBE_PACKETS = 64

#: Format detection reads at most this much; FFmpeg's default (5 MB, 5 s of analysis) halves the
#: API's throughput for nothing on the usual formats, whose headers sit in the first kilobytes.
_OPEN_OPTIONS = open_options(probesize="65536", analyzeduration="0")


class AudioRejected(ValueError):
    """The body cannot be accepted as audio; `message` says why and `details` carries the specifics."""

    def __init__(self, message: str, code: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[dict[str, Any]] = [{"code": code, **details}]


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about the upload."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None
    """Seconds, when the container declares (or lets FFmpeg estimate) it."""


def _declared_duration(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _has_samples(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> bool:
    for index, packet in enumerate(container.demux(stream)):
        if index >= MAX_PROBE_PACKETS:
            return False
        for frame in packet.decode():
            if frame.samples > 0:
                return True
    return False


def probe_audio(data: bytes, max_seconds: float) -> AudioInfo:
    """Check that `data` is decodable, non-empty audio no longer than `max_seconds`.

    Args:
        data: the uploaded bytes (not empty).
        max_seconds: the duration limit (HARK_MAX_AUDIO_SECONDS), enforced when the container declares it.

    Returns:
        The container's description of the audio.

    Raises:
        AudioRejected: not audio, a container outside the allow-list, no audio stream, no samples, or
            too long.
    """
    try:
        opened = av.open(io.BytesIO(data), mode="r", options=_OPEN_OPTIONS)
    except av.ArgumentError:  # EINVAL before any header is read: FFmpeg's format_whitelist refused it
        raise AudioRejected(unsupported_message(), UNSUPPORTED_CONTAINER) from None
    except Exception as error:
        raise _undecodable(error) from None
    try:
        with opened as container:
            if not is_allowed(container.format.name):
                raise AudioRejected(unsupported_message(container.format.name), UNSUPPORTED_CONTAINER,
                                    container=container.format.name)  # fmt: skip
            streams = container.streams.audio
            if not streams:
                raise AudioRejected("body is not audio the server can decode: it holds no audio stream",
                                    "no_audio_stream", container=container.format.name)  # fmt: skip
            stream = streams[0]
            duration = _declared_duration(container, stream)
            info = AudioInfo(container=container.format.name, codec=stream.codec_context.name,
                             sample_rate=int(stream.sample_rate or 0), channels=int(stream.channels or 0),
                             duration=duration)  # fmt: skip
            if duration is not None and duration > max_seconds:
                raise AudioRejected(f"audio is {duration:.1f} s long, over the limit of {max_seconds:g} s "
                                    "(HARK_MAX_AUDIO_SECONDS)", "audio_too_long", duration=round(duration, 3),
                                    max_audio_seconds=max_seconds)  # fmt: skip
            if (duration is not None and duration <= 0) or not _has_samples(container, stream):
                raise AudioRejected("audio is empty: the file holds no samples", "empty_audio",
                                    container=info.container)  # fmt: skip
            return info
    except AudioRejected:
        raise
    except Exception as error:  # any demuxer/decoder failure means "not audio we can decode"
        raise _undecodable(error) from None


def _undecodable(error: Exception) -> AudioRejected:
    log.debug("probe failed: %s: %s", type(error).__name__, error)
    return AudioRejected(f"body is not audio the server can decode ({ALLOWED_DESCRIPTION})",
                         "undecodable_audio", reason=str(error)[:200])  # fmt: skip
