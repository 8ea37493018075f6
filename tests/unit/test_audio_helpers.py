"""The test-audio generators (tests/audio.py) make what the e2e tests assume they make."""

from __future__ import annotations

import wave

import av
import pytest

from tests.audio import ENGLISH_SENTENCES, AudioFactory, wav_duration


def probe(path: object) -> tuple[str, int, int, float]:
    """(codec, sample rate, channels, seconds) as PyAV (the API's decoder) sees the file."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, stream.channels, frames / stream.rate


def test_speech_is_cached(audio: AudioFactory) -> None:
    first = audio.english(0)
    mtime = first.stat().st_mtime_ns
    assert audio.english(0) == first and first.stat().st_mtime_ns == mtime
    assert 1.5 < wav_duration(first) < 6
    assert audio.english(1) != first
    assert len(ENGLISH_SENTENCES) >= 5


def test_other_languages(audio: AudioFactory) -> None:
    assert wav_duration(audio.german()) > 2
    assert wav_duration(audio.hindi()) > 1


def test_long_english(audio: AudioFactory) -> None:
    clip = audio.long_english(12)
    with wave.open(str(clip)) as handle:
        assert handle.getframerate() == 16000 and handle.getnchannels() == 1
    assert 12 <= wav_duration(clip) < 20


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (44100, 2)])
def test_sox_conversions(audio: AudioFactory, rate: int, channels: int) -> None:
    codec, got_rate, got_channels, seconds = probe(audio.convert(audio.english(0), rate=rate, channels=channels))
    assert (codec, got_rate, got_channels) == ("pcm_s16le", rate, channels)
    assert seconds == pytest.approx(wav_duration(audio.english(0)), abs=0.05)


@pytest.mark.parametrize(("make", "codec"), [
    (lambda a: a.convert(a.english(0), suffix="flac"), "flac"),
    (lambda a: a.ffmpeg(a.english(0), "mp3", "-c:a", "libmp3lame"), "mp3"),
    (lambda a: a.opus(a.english(0)), "opus"),
])  # fmt: skip
def test_compressed_formats(audio: AudioFactory, make: object, codec: str) -> None:
    got, _, _, seconds = probe(make(audio))  # type: ignore[operator]
    assert got.startswith(codec)
    assert seconds == pytest.approx(wav_duration(audio.english(0)), abs=0.1)


def test_silence_and_noise(audio: AudioFactory) -> None:
    assert wav_duration(audio.silence(3.0)) == pytest.approx(3.0)
    assert wav_duration(audio.silence(40.0)) == pytest.approx(40.0)
    assert wav_duration(audio.noise(3.0)) == pytest.approx(3.0)
    with wave.open(str(audio.silence(1.0))) as handle:
        assert set(handle.readframes(handle.getnframes())) == {0}


def test_broken_files(audio: AudioFactory) -> None:
    source = audio.english(1)
    truncated = audio.truncated(source)
    assert truncated.read_bytes() == source.read_bytes()[: source.stat().st_size // 2]
    zero = audio.zero_length()
    assert zero.stat().st_size == 44 and wav_duration(zero) == 0
    assert audio.header_only_fragment(source).stat().st_size == 20
    random_bytes = audio.random_bytes()
    assert random_bytes.read_bytes() == audio.random_bytes().read_bytes()
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(random_bytes))


def test_streamed_wavs_carry_placeholder_sizes(audio: AudioFactory) -> None:
    import struct

    streamed = audio.speech_streamed(ENGLISH_SENTENCES[4]).read_bytes()
    assert struct.unpack_from("<I", streamed, 40)[0] == 0x7FFFF000  # data size of the 44-byte header
    piped = audio.piped(audio.english(0)).read_bytes()
    assert b"data\xff\xff\xff\xff" in piped
    seconds = probe(audio.speech_streamed(ENGLISH_SENTENCES[4]))[3]
    assert seconds == pytest.approx(wav_duration(audio.english(4)), abs=0.05)
