"""workers.stream_audio: live-stream decoders on real codecs (FFmpeg through PyAV), no mocks.

Test audio is made here: numpy tones and chirps, encoded with FFmpeg's own G.711 and libopus encoders,
muxed into Ogg by FFmpeg, and one espeak-ng utterance.
"""

from __future__ import annotations

import gc
import io
import shutil
import struct
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np
import pytest

from hark.sessions import ENCODINGS, SAMPLE_RATES
from workers.audio import decode_audio
from workers.stream_audio import (
    ALAW_TABLE,
    MODEL_RATE,
    MULAW_TABLE,
    OGG_MAX_BYTES_WITHOUT_PACKET,
    StreamAudioDecoder,
    StreamAudioError,
    make_stream_decoder,
)

PCM = ("linear16", "linear32", "alaw", "mulaw")
RATES = (8000, 16000, 22050, 44100, 48000)


# --- making audio ---------------------------------------------------------------------------------------


def tone(rate: int, seconds: float, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def chirp(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return 0.6 * np.sin(2 * np.pi * (200 * t + 1500 * t * t))


def _ffmpeg_encode(codec: str, samples: np.ndarray, rate: int) -> bytes:
    """`samples` (float in [-1, 1]) through an FFmpeg PCM encoder (pcm_alaw, pcm_mulaw)."""
    encoder = av.CodecContext.create(codec, "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, "mono", "s16"
    frame = av.AudioFrame.from_ndarray(_s16(samples)[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    return b"".join(bytes(packet) for packet in [*encoder.encode(frame), *encoder.encode(None)])


def _s16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * 32767), -32768, 32767).astype(np.int16)


def pcm_bytes(encoding: str, samples: np.ndarray, rate: int) -> bytes:
    if encoding == "linear16":
        return _s16(samples).astype("<i2").tobytes()
    if encoding == "linear32":
        return samples.astype("<f4").tobytes()
    return _ffmpeg_encode(f"pcm_{encoding}", samples, rate)


def _frames(samples: np.ndarray, rate: int, size: int) -> Iterator[av.AudioFrame]:
    for start in range(0, samples.size, size):
        frame = av.AudioFrame.from_ndarray(_s16(samples[start : start + size])[None, :], format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        yield frame


def opus_packets(samples: np.ndarray, rate: int = 48000, layout: str = "mono") -> list[bytes]:
    """Raw Opus packets (20 ms each) from libopus, as a WebRTC sender makes them."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = rate, layout, "s16", 48000
    packets: list[bytes] = []
    if layout == "stereo":
        both = _s16(np.stack([samples, samples], axis=1).reshape(-1))
        for start in range(0, both.size, 2 * rate // 50):
            frame = av.AudioFrame.from_ndarray(both[None, start : start + 2 * rate // 50], format="s16", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start // 2, Fraction(1, rate)
            packets += [bytes(packet) for packet in encoder.encode(frame)]
    else:
        for frame in _frames(samples, rate, rate // 50):
            packets += [bytes(packet) for packet in encoder.encode(frame)]
    return packets + [bytes(packet) for packet in encoder.encode(None)]


def ogg_opus(samples: np.ndarray, rate: int = 48000, page_ms: int | None = None, codec: str = "libopus") -> bytes:
    """An Ogg/Opus file muxed by FFmpeg in memory (`page_ms`: the muxer's page duration, default 1 s)."""
    buffer = io.BytesIO()
    options = {"page_duration": str(page_ms * 1000)} if page_ms else {}
    with av.open(buffer, "w", format="ogg", options=options) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        for frame in _frames(samples, rate, 960):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


# --- driving a decoder -------------------------------------------------------------------------------


def random_splits(data: bytes, seed: int, tiny: int = 600, largest: int = 5000) -> list[bytes]:
    """`data` in random pieces: 1-byte frames for the first `tiny` bytes, then odd and even sizes up to `largest`."""
    rng = np.random.default_rng(seed)
    pieces = [data[i : i + 1] for i in range(min(tiny, len(data)))]
    position = len(pieces)
    while position < len(data):
        size = int(rng.integers(1, largest))
        pieces.append(data[position : position + size])
        position += size
    return pieces


def run(decoder: StreamAudioDecoder, frames: list[bytes]) -> np.ndarray:
    outputs = [decoder.feed(frame) for frame in frames]
    outputs.append(decoder.flush())
    for out in outputs:
        assert out.dtype == np.float32 and out.ndim == 1
    return np.concatenate(outputs)


def decode(encoding: str, rate: int, frames: list[bytes]) -> np.ndarray:
    with make_stream_decoder(encoding, rate) as decoder:
        return run(decoder, frames)


def peak_hz(samples: np.ndarray, rate: int = MODEL_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def invalid(decoder: StreamAudioDecoder, frames: list[bytes]) -> StreamAudioError:
    """Feeding `frames` then flushing raises StreamAudioError (and nothing else)."""
    with pytest.raises(StreamAudioError) as caught:
        for frame in frames:
            decoder.feed(frame)
        decoder.flush()
    assert caught.value.code == "invalid_audio" and caught.value.message
    return caught.value


def ogg_threads() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == "hark-ogg-opus")


# --- the factory ------------------------------------------------------------------------------------------


def test_every_declared_encoding_and_rate_has_a_decoder() -> None:
    for encoding in ENCODINGS:
        for rate in SAMPLE_RATES:
            decoder = make_stream_decoder(encoding, rate)
            assert isinstance(decoder, StreamAudioDecoder) and decoder.input_seconds == 0.0
            decoder.close()
    assert make_stream_decoder("linear16", np.int64(8000)).sample_rate == 8000


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [("flac", 16000), ("LINEAR16", 16000), ("", 16000), ("linear16", 11025), ("linear16", 16000.0), ("mulaw", True)],
)
def test_unknown_encoding_or_rate_is_a_value_error(encoding: str, rate: int) -> None:
    with pytest.raises(ValueError):
        make_stream_decoder(encoding, rate)


# --- PCM encodings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("encoding", PCM)
def test_pcm_any_split_gives_the_same_samples_and_duration(encoding: str, rate: int) -> None:
    samples = chirp(rate, 0.4)
    data = pcm_bytes(encoding, samples, rate)
    whole = decode(encoding, rate, [data])
    split = decode(encoding, rate, random_splits(data, seed=rate))
    assert np.array_equal(whole, split), "frame boundaries changed the output"
    assert abs(whole.size - samples.size * MODEL_RATE / rate) <= 2
    assert np.abs(whole).max() <= 1.0
    with make_stream_decoder(encoding, rate) as decoder:
        for frame in random_splits(data, seed=1, tiny=7):
            decoder.feed(frame)
        assert decoder.input_seconds == pytest.approx(samples.size / rate)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("encoding", PCM)
def test_pcm_tone_keeps_its_frequency_and_level(encoding: str, rate: int) -> None:
    data = pcm_bytes(encoding, tone(rate, 0.5), rate)
    out = decode(encoding, rate, [data[i : i + 3203] for i in range(0, len(data), 3203)])
    assert peak_hz(out) == pytest.approx(440, abs=2.5)
    middle = out[800:-800]  # away from the resampler's edges
    assert float(np.abs(middle).max()) == pytest.approx(0.5, abs=0.02)
    # no clicks at the 3203-byte frame boundaries: the signal stays the smooth sine it was
    expected = tone(MODEL_RATE, 0.5)[: out.size]
    assert float(np.abs(out - expected)[800:-800].max()) < 0.03


def test_linear16_values_and_odd_frames_do_not_shift_samples() -> None:
    values = np.array([-32768, -1, 0, 1, 12345, 32767, -20000, 7], dtype="<i2")
    data = values.tobytes()
    with make_stream_decoder("linear16", 16000) as decoder:
        pieces = [decoder.feed(data[:3]), decoder.feed(data[3:4]), decoder.feed(data[4:9]), decoder.feed(data[9:])]
        assert [p.size for p in pieces] == [1, 1, 2, 4]  # a dangling byte waits for its partner
        assert np.array_equal(np.concatenate(pieces), values / np.float32(32768))
        assert decoder.input_seconds == 8 / 16000
        assert decoder.feed(b"\x01").size == 0 and decoder.flush().size == 0  # an incomplete sample is dropped
        assert decoder.feed(b"\x00\x40")[0] == 0.5  # and does not shift what comes next


def test_linear32_is_float_pcm_clipped_and_carried() -> None:
    values = np.array([0.0, 0.25, -0.5, 1.0, -1.0, 1.5, -7.0, 1e-3], dtype="<f4")
    data = values.tobytes()
    with make_stream_decoder("linear32", 16000) as decoder:
        out = np.concatenate([decoder.feed(data[i : i + 3]) for i in range(0, len(data), 3)])
        assert np.array_equal(out, np.clip(values, -1, 1))
        assert decoder.input_seconds == 8 / 16000


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_linear32_nan_and_infinity_are_invalid_audio(bad: float) -> None:
    data = np.array([0.1, 0.2, bad, 0.3], dtype="<f4").tobytes()
    with make_stream_decoder("linear32", 48000) as decoder:
        error = invalid(decoder, [data[:5], data[5:]])
        assert "linear32" in error.message
        assert decoder.feed(np.array([0.5], dtype="<f4").tobytes()).dtype == np.float32  # still usable


def test_24_bit_integer_pcm_sent_as_linear32_is_refused() -> None:
    # 24-bit samples sign-extended to int32: every negative one reads as a NaN float (exponent bits all set)
    int32 = (tone(16000, 0.05) * 2**23).astype("<i4").tobytes()
    with make_stream_decoder("linear32", 16000) as decoder:
        invalid(decoder, [int32])


@pytest.mark.parametrize(("encoding", "table"), [("alaw", ALAW_TABLE), ("mulaw", MULAW_TABLE)])
def test_g711_tables_match_ffmpeg(encoding: str, table: np.ndarray) -> None:
    decoder = av.CodecContext.create(f"pcm_{encoding}", "r")
    decoder.sample_rate, decoder.layout = 8000, "mono"
    frames = decoder.decode(av.Packet(bytes(range(256))))
    ffmpeg = np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames])
    assert ffmpeg.dtype == np.int16 and ffmpeg.size == 256
    assert np.array_equal(table * 32768, ffmpeg.astype(np.float32))
    assert table.dtype == np.float32 and np.abs(table).max() < 1.0


@pytest.mark.parametrize(("encoding", "table"), [("alaw", ALAW_TABLE), ("mulaw", MULAW_TABLE)])
def test_g711_tables_match_audioop(encoding: str, table: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    expand = audioop.alaw2lin if encoding == "alaw" else audioop.ulaw2lin
    reference = np.frombuffer(expand(bytes(range(256)), 2), dtype="<i2")
    assert np.array_equal(table * 32768, reference.astype(np.float32))


@pytest.mark.parametrize("encoding", ["alaw", "mulaw"])
def test_g711_decodes_ffmpeg_encoded_audio(encoding: str) -> None:
    samples = chirp(16000, 0.3)
    out = decode(encoding, 16000, [pcm_bytes(encoding, samples, 16000)])
    assert out.size == samples.size
    assert float(np.abs(out - samples).max()) < 0.02  # G.711 quantisation only


# --- opus: one raw packet per frame -----------------------------------------------------------------------


@pytest.mark.parametrize(("declared", "encoded_at"), [(48000, 48000), (16000, 16000), (8000, 8000), (44100, 48000)])
def test_opus_packets_decode_frame_by_frame(declared: int, encoded_at: int) -> None:
    samples = tone(encoded_at, 1.0)
    packets = opus_packets(samples, encoded_at)
    with make_stream_decoder("opus", declared) as decoder:
        outputs = [decoder.feed(packet) for packet in packets]
        assert sum(out.size > 0 for out in outputs) >= len(packets) - 2  # output as the packets come
        out = np.concatenate([*outputs, decoder.flush()])
        # libopus adds its look-ahead (6.5 ms) and pads the last packet to 20 ms
        assert 1.0 <= out.size / MODEL_RATE <= 1.0 + 0.0065 + 0.02 + 0.002
        assert decoder.input_seconds == pytest.approx(len(packets) * 0.02, abs=0.001)
    assert peak_hz(out) == pytest.approx(440, abs=2.5)
    assert float(np.abs(out[4000:12000]).max()) == pytest.approx(0.5, abs=0.1)


def test_opus_declared_rate_does_not_change_the_output() -> None:
    packets = opus_packets(chirp(48000, 0.3))
    outputs = [decode("opus", rate, packets) for rate in (8000, 16000, 48000)]
    assert all(np.array_equal(outputs[0], other) for other in outputs[1:])


def test_opus_stereo_packets_become_mono() -> None:
    out = decode("opus", 48000, opus_packets(tone(48000, 0.5), layout="stereo"))
    assert peak_hz(out) == pytest.approx(440, abs=2.5)
    assert float(np.abs(out[2000:6000]).max()) == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("garbage", [b"garbage!", b"\xff" * 10, b"\x03\x00", b"\xff"])
def test_opus_garbage_is_invalid_audio_and_the_decoder_survives(garbage: bytes) -> None:
    packets = opus_packets(tone(48000, 0.1))
    with make_stream_decoder("opus", 48000) as decoder:
        decoder.feed(packets[0])
        invalid(decoder, [garbage])
        assert decoder.feed(packets[1]).size > 0  # the session may decide to carry on


def test_opus_random_bytes_raise_only_stream_audio_errors() -> None:
    rng = np.random.default_rng(7)
    errors = 0
    with make_stream_decoder("opus", 16000) as decoder:
        for _ in range(300):
            try:
                out = decoder.feed(rng.bytes(int(rng.integers(1, 600))))
            except StreamAudioError as error:
                assert error.code == "invalid_audio"
                errors += 1
            else:
                assert out.dtype == np.float32 and np.abs(out).max(initial=0) <= 1.0
        decoder.flush()
    assert errors > 50  # (random bytes are often valid Opus: any TOC byte starts a packet)


def test_opus_empty_frame_is_skipped_and_flush_then_feed_works() -> None:
    packets = opus_packets(tone(48000, 0.2))
    with make_stream_decoder("opus", 48000) as decoder:
        assert decoder.feed(b"").size == 0
        first = run(decoder, packets)
        second = run(decoder, packets)
    assert first.size == second.size and np.allclose(first[1000:], second[1000:], atol=0.05)


# --- ogg_opus: an Ogg stream split anywhere -----------------------------------------------------------------


@pytest.mark.parametrize("page_ms", [20, None])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_ogg_opus_any_split_gives_the_same_samples(page_ms: int | None, rate: int) -> None:
    samples = chirp(48000, 1.5)
    data = ogg_opus(samples, page_ms=page_ms)
    whole = decode("ogg_opus", rate, [data])
    split = decode("ogg_opus", rate, random_splits(data, seed=page_ms or 3))
    assert np.array_equal(whole, split)
    assert abs(whole.size - 1.5 * MODEL_RATE) <= 2  # Ogg granule positions trim the padding exactly
    batch = decode_audio(data, 60).samples  # the batch path's decoder agrees
    assert batch.size == whole.size and float(np.abs(batch - whole).max()) < 1e-3


def test_ogg_opus_output_lags_by_at_most_a_page() -> None:
    data = ogg_opus(tone(48000, 2.0), page_ms=20)
    with make_stream_decoder("ogg_opus", 48000) as decoder:
        started = time.monotonic()
        early = [decoder.feed(frame) for frame in random_splits(data[: len(data) // 2], seed=5, tiny=50)]
        assert time.monotonic() - started < 2.0
        assert sum(out.size for out in early) >= 0.9 * MODEL_RATE  # ~1 s of the first half is out already
        rest = np.concatenate([*early, decoder.feed(data[len(data) // 2 :]), decoder.flush()])
        assert decoder.input_seconds == pytest.approx(2.0, abs=0.001)
    assert rest.size == 2 * MODEL_RATE and peak_hz(rest) == pytest.approx(440, abs=2.5)


def test_ogg_opus_from_the_ffmpeg_cli_with_speech() -> None:
    if not (shutil.which("espeak-ng") and shutil.which("ffmpeg")):
        pytest.skip("espeak-ng / ffmpeg not installed")
    wav = subprocess.run(["espeak-ng", "--stdout", "hello world"], capture_output=True, check=True, timeout=30).stdout
    ogg = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "-", "-c:a", "libopus", "-b:a", "24k", "-f", "ogg", "-"],
        input=wav,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    out = decode("ogg_opus", 22050, random_splits(ogg, seed=11, largest=300))
    reference = decode_audio(wav, 60).samples
    assert abs(out.size - reference.size) <= 2
    assert float(np.abs(out).max()) > 0.1


def test_ogg_opus_flush_then_a_new_stream() -> None:
    data = ogg_opus(tone(48000, 0.5), page_ms=20)
    with make_stream_decoder("ogg_opus", 16000) as decoder:
        first = run(decoder, [data])
        second = run(decoder, random_splits(data, seed=2))
        assert decoder.input_seconds == pytest.approx(1.0, abs=0.001)
    assert np.array_equal(first, second)


def test_ogg_opus_truncated_stream_keeps_what_arrived() -> None:
    data = ogg_opus(tone(48000, 1.0), page_ms=20)
    out = decode("ogg_opus", 48000, [data[: len(data) * 3 // 4 + 17]])  # cut inside a page
    assert 0.6 * MODEL_RATE < out.size < 0.8 * MODEL_RATE


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: [b"\x00" * 100], id="zeros"),
        pytest.param(lambda: [b"Og", b"gX" + b"\x00" * 50], id="wrong-capture-pattern-split"),
        pytest.param(lambda: [np.random.default_rng(1).bytes(4096)], id="random"),
        pytest.param(lambda: [b"OggS" + np.random.default_rng(2).bytes(5000)], id="capture-pattern-then-random"),
        pytest.param(lambda: [ogg_opus(tone(48000, 0.2))[:100]], id="headers-cut"),
        pytest.param(lambda: [ogg_opus(tone(48000, 0.2), codec="flac")], id="ogg-flac"),
        pytest.param(lambda: opus_packets(tone(48000, 0.1)), id="raw-opus-packets"),
        pytest.param(lambda: [b"RIFF" + b"\x00" * 40], id="wav"),
    ],
)
def test_ogg_opus_garbage_is_invalid_audio(make: Callable[[], list[bytes]]) -> None:
    with make_stream_decoder("ogg_opus", 16000) as decoder:
        invalid(decoder, make())
        assert ogg_threads() == 0


def test_ogg_opus_error_while_feeding_is_final() -> None:
    with make_stream_decoder("ogg_opus", 16000) as decoder:
        invalid(decoder, [b"Ogg", b"s"])
        for frame in (b"OggS", ogg_opus(tone(48000, 0.1))):
            with pytest.raises(StreamAudioError):
                decoder.feed(frame)  # the stream cannot resync
        assert decoder.flush().size == 0


def test_ogg_opus_random_garbage_after_the_headers_is_refused_while_feeding() -> None:
    data = ogg_opus(tone(48000, 0.2), page_ms=20)
    rng = np.random.default_rng(3)
    with make_stream_decoder("ogg_opus", 16000) as decoder:
        decoder.feed(data[: len(data) // 2])
        fed = 0
        with pytest.raises(StreamAudioError) as caught:
            while fed < 2 * OGG_MAX_BYTES_WITHOUT_PACKET:
                decoder.feed(rng.bytes(64 * 1024))
                fed += 64 * 1024
        assert caught.value.code == "invalid_audio"
        assert fed <= OGG_MAX_BYTES_WITHOUT_PACKET
    assert ogg_threads() == 0


def _ogg_crc(data: bytes, table: list[int] = []) -> int:  # noqa: B006 (the table is built once)
    """The Ogg page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0)."""
    if not table:
        for byte in range(256):
            value = byte << 24
            for _ in range(8):
                value = (value << 1) ^ 0x04C11DB7 if value & 0x80000000 else value << 1
            table.append(value & 0xFFFFFFFF)
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def _ogg_page(serial: int, sequence: int, payload: bytes, lacing: list[int], continued: bool) -> bytes:
    header = struct.pack("<4sBBqIIIB", b"OggS", 0, int(continued), -1, serial, sequence, 0, len(lacing))
    page = bytearray(header + bytes(lacing) + payload)
    struct.pack_into("<I", page, 22, _ogg_crc(bytes(page)))
    return bytes(page)


def test_ogg_opus_packet_that_never_ends_is_refused_before_memory_grows() -> None:
    # Valid Ogg pages (right checksums) continuing one packet forever: FFmpeg would buffer it all.
    data = ogg_opus(tone(48000, 0.2), page_ms=20)
    (serial,) = struct.unpack_from("<I", data, 14)
    with make_stream_decoder("ogg_opus", 16000) as decoder:
        decoder.feed(data[:800])  # headers and the first audio pages
        fed = 0
        with pytest.raises(StreamAudioError) as caught:
            for sequence in range(100, 120):
                page = _ogg_page(serial, sequence, bytes(255 * 255), [255] * 255, continued=sequence > 100)
                decoder.feed(page)
                fed += len(page)
        assert "without an Opus packet" in caught.value.message
        assert OGG_MAX_BYTES_WITHOUT_PACKET - 2 * len(page) < fed <= OGG_MAX_BYTES_WITHOUT_PACKET
    assert ogg_threads() == 0


# --- lifecycle ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_close_is_idempotent_and_final(encoding: str) -> None:
    decoder = make_stream_decoder(encoding, 8000)
    frame = ogg_opus(tone(48000, 0.1))[:200] if encoding == "ogg_opus" else b"\x00" * 10
    decoder.feed(frame if encoding != "opus" else opus_packets(tone(48000, 0.02))[0])
    decoder.close()
    decoder.close()
    assert decoder.flush().size == 0
    with pytest.raises(ValueError):
        decoder.feed(b"\x00\x00")
    decoder.close()


def test_ogg_opus_threads_end_on_close_and_when_dropped() -> None:
    baseline = threading.active_count()
    data = ogg_opus(tone(48000, 0.3), page_ms=20)
    for index in range(50):
        decoder = make_stream_decoder("ogg_opus", 48000)
        decoder.feed(data[: 500 + index * 37])  # mid-headers or mid-audio: the thread is blocked in read()
        assert ogg_threads() == 1
        decoder.close()
        assert ogg_threads() == 0 and threading.active_count() <= baseline
    for _ in range(5):  # dropped without close(): the finalizer stops the thread
        make_stream_decoder("ogg_opus", 48000).feed(data[:1000])
    gc.collect()
    deadline = time.monotonic() + 5
    while ogg_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ogg_threads() == 0 and threading.active_count() <= baseline
    decoder = make_stream_decoder("ogg_opus", 48000)
    run(decoder, [data])  # flush ends the thread too
    assert ogg_threads() == 0 and threading.active_count() <= baseline
    decoder.close()
