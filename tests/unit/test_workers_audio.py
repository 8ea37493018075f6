"""workers.audio.decode_audio on real files made with espeak-ng, sox and ffmpeg."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.audio import AudioFactory, wav_duration
from workers.audio import SAMPLE_RATE, AudioError, DecodedAudio, decode_audio, wav_declared_duration

LIMIT = 60.0


def _decode(path: Path, limit: float = LIMIT) -> DecodedAudio:
    return decode_audio(path.read_bytes(), limit)


def _error(data: bytes, limit: float = LIMIT) -> AudioError:
    with pytest.raises(AudioError) as caught:
        decode_audio(data, limit)
    return caught.value


@pytest.mark.parametrize(
    "variant", ["wav-22k", "wav-8k", "wav-16k", "wav-44k-stereo", "flac", "mp3", "ogg-opus", "m4a-aac", "webm-opus"]
)
def test_containers_rates_and_channels(audio: AudioFactory, variant: str) -> None:
    source = audio.english(1)
    path = {
        "wav-22k": lambda: source,
        "wav-8k": lambda: audio.convert(source, rate=8000),
        "wav-16k": lambda: audio.convert(source, rate=16000),
        "wav-44k-stereo": lambda: audio.convert(source, rate=44100, channels=2),
        "flac": lambda: audio.convert(source, suffix="flac"),
        "mp3": lambda: audio.ffmpeg(source, "mp3", "-c:a", "libmp3lame", "-b:a", "64k"),
        "ogg-opus": lambda: audio.opus(source),
        "m4a-aac": lambda: audio.ffmpeg(source, "m4a", "-c:a", "aac", "-b:a", "64k"),
        "webm-opus": lambda: audio.ffmpeg(source, "webm", "-c:a", "libopus", "-b:a", "32k"),
    }[variant]()
    decoded = _decode(path)
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.duration == pytest.approx(len(decoded.samples) / SAMPLE_RATE)
    assert decoded.duration == pytest.approx(wav_duration(source), abs=0.1)
    peak = float(np.abs(decoded.samples).max())
    assert 0.05 < peak <= 1.0, f"level lost or clipped: peak {peak}"


def test_stereo_is_averaged_not_summed(audio: AudioFactory) -> None:
    mono = _decode(audio.convert(audio.english(1), rate=16000))
    stereo = _decode(audio.convert(audio.english(1), rate=16000, channels=2))
    assert np.abs(stereo.samples).max() == pytest.approx(np.abs(mono.samples).max(), rel=0.02)


def test_silence_decodes_to_zeros(audio: AudioFactory) -> None:
    decoded = _decode(audio.silence(2.0))
    assert decoded.duration == pytest.approx(2.0) and not decoded.samples.any()


def test_empty_bytes() -> None:
    assert _error(b"").code == "empty_audio"


def test_zero_length_wav(audio: AudioFactory) -> None:
    error = _error(audio.zero_length().read_bytes())
    assert error.code == "empty_audio" and "zero length" in error.message


@pytest.mark.parametrize("size", [100, 8192, 65536])
def test_random_bytes_and_text_are_not_audio(audio: AudioFactory, size: int) -> None:
    assert _error(audio.random_bytes(size).read_bytes()).code == "invalid_audio"
    assert _error(b"hello, I am not a sound file\n" * 50).code == "invalid_audio"


def test_wav_cut_inside_its_header(audio: AudioFactory) -> None:
    assert _error(audio.header_only_fragment(audio.english(1)).read_bytes()).code == "invalid_audio"


def test_truncated_wav_is_refused(audio: AudioFactory) -> None:
    source = audio.english(1)
    truncated = audio.truncated(source).read_bytes()
    assert wav_declared_duration(truncated) == pytest.approx(wav_duration(source), abs=0.01)
    error = _error(truncated)
    assert error.code == "truncated_audio" and "declares" in error.message


def test_truncated_compressed_files_are_refused(audio: AudioFactory, tmp_path: Path) -> None:
    source = audio.english(0)
    for path in (audio.convert(source, suffix="flac"), audio.ffmpeg(source, "mp3", "-c:a", "libmp3lame")):
        data = path.read_bytes()
        assert _error(data[: len(data) // 2]).code == "truncated_audio", path.name


def test_streamed_wav_of_unknown_length_is_accepted(audio: AudioFactory) -> None:
    data = bytearray(audio.convert(audio.english(1), rate=16000).read_bytes())
    data[4:8] = b"\xff\xff\xff\xff"  # what ffmpeg writes to a pipe
    offset = data.find(b"data")
    data[offset + 4 : offset + 8] = b"\xff\xff\xff\xff"
    assert wav_declared_duration(bytes(data)) is None
    assert decode_audio(bytes(data), LIMIT).duration > 1


def test_over_the_duration_limit(audio: AudioFactory) -> None:
    error = _error(audio.silence(12.0).read_bytes(), limit=10.0)
    assert error.code == "audio_too_long" and "HARK_MAX_AUDIO_SECONDS" in error.message
    assert _decode(audio.silence(10.0), limit=10.0).duration == pytest.approx(10.0)


def test_over_the_limit_without_a_declared_length(audio: AudioFactory) -> None:
    data = bytearray(audio.silence(12.0).read_bytes())
    offset = data.find(b"data")
    data[offset + 4 : offset + 8] = b"\xff\xff\xff\xff"
    assert _error(bytes(data), limit=10.0).code == "audio_too_long"


def test_decoding_is_linear(audio: AudioFactory) -> None:
    short, long = audio.noise(30.0, rate=44100), audio.noise(300.0, rate=44100)
    timings = []
    for path in (short, long):
        data = path.read_bytes()
        started = time.perf_counter()
        decode_audio(data, 3600)
        timings.append(time.perf_counter() - started)
    assert timings[1] < timings[0] * 10 * 3 + 0.5, timings  # 10x the audio, well under 30x the time


# --- hostile containers -------------------------------------------------------------------------------

SDP_BODY = b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio 5004 RTP/AVP 0\n"


def test_sdp_is_refused_at_once() -> None:
    started = time.perf_counter()
    error = _error(SDP_BODY)
    assert time.perf_counter() - started < 0.5, "the SDP demuxer was reached (it binds UDP ports and waits)"
    assert error.code == "unsupported_container" and "flac" in error.message


def test_ffconcat_never_reads_the_file_it_names(audio: AudioFactory, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # the concat demuxer resolves relative paths against the working directory
    (tmp_path / "real.wav").write_bytes(audio.english(1).read_bytes())
    started = time.perf_counter()
    error = _error(b"ffconcat version 1.0\nfile 'real.wav'\n")  # before the allow-list: real.wav's audio
    assert time.perf_counter() - started < 0.5
    assert error.code == "unsupported_container"
