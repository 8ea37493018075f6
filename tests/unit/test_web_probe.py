"""web.audio_probe: real PyAV on generated files (WAV via the `wave` module, others via sox when present)."""

from __future__ import annotations

import io
import math
import random
import shutil
import struct
import subprocess
import time
import wave
from pathlib import Path

import pytest

from web.audio_probe import AudioRejected, probe_audio


def make_wav(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    frames = int(seconds * rate)
    samples = b"".join(struct.pack("<h", int(4000 * math.sin(i / 8))) * channels for i in range(frames))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes(samples)
    return buffer.getvalue()


def rejected(data: bytes, max_seconds: float = 60.0) -> AudioRejected:
    with pytest.raises(AudioRejected) as caught:
        probe_audio(data, max_seconds)
    return caught.value


def test_wav_is_described() -> None:
    info = probe_audio(make_wav(1.5, rate=22050, channels=2), 60)
    assert info.container == "wav" and info.codec == "pcm_s16le"
    assert info.sample_rate == 22050 and info.channels == 2
    assert info.duration == pytest.approx(1.5, abs=0.01)


def test_garbage_is_not_audio() -> None:
    data = bytes(random.Random(7).getrandbits(8) for _ in range(8192))
    error = rejected(data)
    assert error.message.startswith("body is not audio the server can decode")
    assert error.details[0]["code"] == "undecodable_audio"


def test_text_is_not_audio() -> None:
    assert rejected(b"hello, I am not a sound file\n" * 50).details[0]["code"] in ("undecodable_audio",
                                                                                 "no_audio_stream")  # fmt: skip


def test_wav_cut_inside_its_header() -> None:
    assert rejected(make_wav(1.0)[:20]).details[0]["code"] == "undecodable_audio"


def test_header_only_wav_is_empty() -> None:
    data = make_wav(0.0)
    assert len(data) == 44
    error = rejected(data)
    assert error.details[0]["code"] == "empty_audio"
    assert "empty" in error.message


def test_truncated_wav_is_accepted_for_the_part_that_is_there() -> None:
    data = make_wav(2.0)
    info = probe_audio(data[: len(data) // 2], 60)
    assert info.duration == pytest.approx(1.0, abs=0.05)


def test_duration_limit() -> None:
    error = rejected(make_wav(3.0), max_seconds=2.0)
    assert error.details[0]["code"] == "audio_too_long"
    assert "HARK_MAX_AUDIO_SECONDS" in error.message
    probe_audio(make_wav(1.9), 2.0)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
@pytest.mark.parametrize("suffix", ["flac", "ogg"])
def test_other_containers(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "in.wav"
    source.write_bytes(make_wav(1.0))
    target = tmp_path / f"out.{suffix}"
    result = subprocess.run(["sox", str(source), str(target)], capture_output=True, timeout=60)
    if result.returncode != 0:
        pytest.skip(f"sox cannot write {suffix}: {result.stderr.decode()[:200]}")
    info = probe_audio(target.read_bytes(), 60)
    assert info.duration == pytest.approx(1.0, abs=0.1)


# --- hostile containers: demuxers that do I/O must never be reached ---------------------------------

SDP_BODY = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"


def test_sdp_is_refused_at_once_without_binding_ports() -> None:
    started = time.perf_counter()
    error = rejected(SDP_BODY)
    assert time.perf_counter() - started < 0.5, "the SDP demuxer was reached (it binds UDP ports and waits)"
    assert error.details[0]["code"] == "unsupported_container"
    assert "wav" in error.message and "flac" in error.message


def test_ffconcat_is_refused_and_never_reads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the concat demuxer resolves relative paths against the working directory
    (tmp_path / "real.wav").write_bytes(make_wav(2.0))
    started = time.perf_counter()
    error = rejected(b"ffconcat version 1.0\nfile 'real.wav'\n")
    assert time.perf_counter() - started < 0.5
    assert error.details[0]["code"] == "unsupported_container", error.details
