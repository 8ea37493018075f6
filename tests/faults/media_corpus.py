"""A corpus of malformed and unusual media, generated at test time (sox/ffmpeg + byte surgery).

Every case is a name, the bytes to POST, and what the API may answer:

- ``audio``: a common, valid audio file; it must be transcribed (200).
- ``refuse-fast``: text playlists and descriptors (SDP, ffconcat, HLS, ffmetadata) that make FFmpeg open
  other files or sockets; they must be refused with 400 within :data:`REFUSE_FAST_SECONDS` (fix 3).
- ``any``: anything else (other containers, images, lying headers, truncations, random mutations): any
  answer below 500, and the worker must survive it.
"""

from __future__ import annotations

import random
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.audio import AudioFactory

REFUSE_FAST_SECONDS = 2.0


@dataclass(frozen=True)
class MediaCase:
    """One body to POST and the class of answers it may get."""

    name: str
    data: bytes
    expect: str  # audio | refuse-fast | any


#: (name, file suffix, ffmpeg output arguments) of containers FFmpeg can write from a mono clip.
COMMON_AUDIO: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("wav-pcm16", "wav", ("-c:a", "pcm_s16le")),
    ("mp3", "mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
    ("flac", "flac", ("-c:a", "flac")),
    ("ogg-vorbis", "ogg", ("-c:a", "libvorbis")),
    ("ogg-opus", "ogg", ("-c:a", "libopus", "-ar", "48000")),
    ("m4a-aac", "m4a", ("-c:a", "aac", "-b:a", "64k")),
    ("webm-opus", "webm", ("-c:a", "libopus", "-ar", "48000")),
)
OTHER_CONTAINERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("wav-u8", "wav", ("-c:a", "pcm_u8")),
    ("wav-f32", "wav", ("-c:a", "pcm_f32le")),
    ("wav-mulaw", "wav", ("-c:a", "pcm_mulaw")),
    ("wav-alaw", "wav", ("-c:a", "pcm_alaw")),
    ("wav-adpcm", "wav", ("-c:a", "adpcm_ms")),
    ("mka-pcm", "mka", ("-c:a", "pcm_s16le")),
    ("aiff", "aiff", ()),
    ("au", "au", ()),
    ("caf", "caf", ()),
    ("w64", "w64", ()),
    ("voc", "voc", ()),
    ("ac3", "ac3", ("-c:a", "ac3", "-ar", "48000")),
    ("mp2", "mp2", ("-c:a", "mp2", "-ar", "48000")),
    ("adts-aac", "aac", ("-c:a", "aac")),
    ("wma-asf", "wma", ("-c:a", "wmav2")),
    ("mpegts-aac", "ts", ("-c:a", "aac", "-f", "mpegts")),
    ("mpegts-mp2", "ts", ("-c:a", "mp2", "-ar", "48000", "-f", "mpegts")),
    ("avi-pcm", "avi", ("-c:a", "pcm_s16le")),
    ("flv-mp3", "flv", ("-c:a", "libmp3lame", "-ar", "44100")),
    ("nut", "nut", ()),
    ("mov-alac", "mov", ("-c:a", "alac")),
    ("3gp-aac", "3gp", ("-c:a", "aac", "-ar", "8000")),
    ("tta", "tta", ()),
    ("wavpack", "wv", ()),
    ("sox-native", "sox", ()),
    ("ircam", "sf", ()),
    ("rso", "rso", ("-c:a", "pcm_u8", "-ar", "8000")),
    ("mxf", "mxf", ("-c:a", "pcm_s16le", "-ar", "48000")),
    ("dv-none", "dv", ()),
    ("rm", "rm", ("-c:a", "ac3", "-ar", "48000")),
    ("gsm", "gsm", ("-c:a", "libgsm", "-ar", "8000", "-f", "gsm")),
    ("amr-nb", "amr", ("-c:a", "libopencore_amrnb", "-ar", "8000")),
    ("spdif-ac3", "spdif", ("-c:a", "ac3", "-ar", "48000", "-f", "spdif")),
)
IMAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("png", "png", ("-frames:v", "1")),
    ("jpeg", "jpg", ("-frames:v", "1")),
    ("gif", "gif", ("-frames:v", "3")),
    ("bmp", "bmp", ("-frames:v", "1")),
    ("tiff", "tiff", ("-frames:v", "1")),
    ("webp", "webp", ("-frames:v", "1")),
    ("mp4-video-only", "mp4", ("-frames:v", "10", "-c:v", "mpeg4")),
    ("mkv-video-only", "mkv", ("-frames:v", "10", "-c:v", "mpeg4")),
)


def _ffmpeg(inputs: list[str], out: Path, args: tuple[str, ...]) -> bytes | None:
    command = ["ffmpeg", "-loglevel", "error", "-y", *inputs, *args, str(out)]
    result = subprocess.run(command, capture_output=True, timeout=60)
    if result.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        return None
    return out.read_bytes()


def wav_bytes(rate: int = 16000, channels: int = 1, bits: int = 16, frames: int = 16000, *,
              riff_size: int | None = None, data_size: int | None = None, fmt_tag: int = 1,
              block_align: int | None = None, byte_rate: int | None = None, fmt_size: int = 16,
              payload: bytes | None = None) -> bytes:  # fmt: skip
    """A RIFF/WAVE file whose every header field can lie."""
    width = max(1, bits // 8)
    body = payload if payload is not None else bytes(frames * width * max(1, min(channels, 8)))
    align = block_align if block_align is not None else (channels * width) & 0xFFFF
    rate_bytes = byte_rate if byte_rate is not None else (rate * channels * width) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", fmt_tag, channels & 0xFFFF, rate & 0xFFFFFFFF, rate_bytes, align, bits & 0xFFFF)
    fmt += bytes(max(0, fmt_size - 16))
    data_len = data_size if data_size is not None else len(body)
    chunks = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size & 0xFFFFFFFF) + fmt[: max(fmt_size, 0)]
    chunks += b"data" + struct.pack("<I", data_len & 0xFFFFFFFF) + body
    size = riff_size if riff_size is not None else len(chunks)
    return b"RIFF" + struct.pack("<I", size & 0xFFFFFFFF) + chunks


def wav_surgery(valid_wav: bytes) -> Iterator[MediaCase]:
    """Lying sizes, absurd rates and channel counts, missing chunks, truncations of a valid WAV."""
    speech = valid_wav[44:]
    yield MediaCase("wav-rate-1hz", wav_bytes(rate=1, payload=speech), "any")
    yield MediaCase("wav-rate-4ghz", wav_bytes(rate=4_294_967_295, payload=speech), "any")
    yield MediaCase("wav-rate-0", wav_bytes(rate=0, payload=speech), "any")
    yield MediaCase("wav-channels-0", wav_bytes(channels=0, payload=speech), "any")
    yield MediaCase("wav-channels-65535", wav_bytes(channels=65535, payload=speech), "any")
    yield MediaCase("wav-channels-65535-rate-4ghz", wav_bytes(channels=65535, rate=4_294_967_295, payload=speech),
                    "any")  # fmt: skip
    yield MediaCase("wav-bits-0", wav_bytes(bits=0, payload=speech), "any")
    yield MediaCase("wav-bits-7", wav_bytes(bits=7, payload=speech), "any")
    yield MediaCase("wav-bits-65535", wav_bytes(bits=65535, payload=speech), "any")
    yield MediaCase("wav-block-align-0", wav_bytes(block_align=0, payload=speech), "any")
    yield MediaCase("wav-byte-rate-0", wav_bytes(byte_rate=0, payload=speech), "any")
    yield MediaCase("wav-fmt-tag-unknown", wav_bytes(fmt_tag=0x7777, payload=speech), "any")
    yield MediaCase("wav-fmt-extensible-garbage", wav_bytes(fmt_tag=0xFFFE, fmt_size=40, payload=speech), "any")
    yield MediaCase("wav-fmt-size-huge", wav_bytes(fmt_size=0x7FFFFFFF, payload=speech), "any")
    yield MediaCase("wav-riff-size-0", wav_bytes(riff_size=0, payload=speech), "any")
    yield MediaCase("wav-riff-size-max", wav_bytes(riff_size=0xFFFFFFFF, payload=speech), "any")
    yield MediaCase("wav-riff-size-small", wav_bytes(riff_size=12, payload=speech), "any")
    yield MediaCase("wav-data-size-0", wav_bytes(data_size=0, payload=speech), "any")
    yield MediaCase("wav-data-size-max", wav_bytes(data_size=0xFFFFFFFF, payload=speech), "any")
    yield MediaCase("wav-data-size-streaming", wav_bytes(data_size=0x7FFFF000, riff_size=0x7FFFF024, payload=speech),
                    "any")  # fmt: skip
    yield MediaCase("wav-data-size-odd", wav_bytes(data_size=len(speech) - 1, payload=speech), "any")
    yield MediaCase("wav-no-data-chunk", valid_wav[:36], "any")
    yield MediaCase("wav-no-fmt-chunk", b"RIFF" + struct.pack("<I", 4 + 8 + len(speech)) + b"WAVE" + b"data"
                    + struct.pack("<I", len(speech)) + speech, "any")  # fmt: skip
    yield MediaCase("wav-fmt-twice", valid_wav[:36] + valid_wav[12:36] + valid_wav[36:], "any")
    yield MediaCase("wav-junk-chunk-huge", valid_wav[:12] + b"JUNK" + struct.pack("<I", 0xFFFFFFF0) + valid_wav[12:],
                    "any")  # fmt: skip
    yield MediaCase("wav-rf64-lying", b"RF64" + valid_wav[4:], "any")
    yield MediaCase("riff-not-wave", b"RIFF" + valid_wav[4:8] + b"AVI " + valid_wav[12:], "any")
    for cut in (1, 4, 8, 11, 12, 16, 20, 24, 35, 36, 40, 43, 44, 45):
        yield MediaCase(f"wav-cut-{cut}", valid_wav[:cut], "any")
    yield MediaCase("wav-half", valid_wav[: len(valid_wav) // 2], "any")
    yield MediaCase("wav-header-only", valid_wav[:44], "any")
    yield MediaCase("wav-then-garbage", valid_wav + random.Random(7).randbytes(4096), "any")
    yield MediaCase("garbage-then-wav", random.Random(8).randbytes(512) + valid_wav, "any")


def text_cases(canary_port: int) -> Iterator[MediaCase]:
    """Playlists and descriptors that point FFmpeg at files, sockets and URLs: refused at once."""
    sdp = (f"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio {canary_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()  # fmt: skip
    yield MediaCase("sdp-rtp", sdp, "refuse-fast")
    yield MediaCase("sdp-multicast", sdp.replace(b"127.0.0.1", b"239.1.1.1"), "refuse-fast")
    yield MediaCase("ffconcat-file", b"ffconcat version 1.0\nfile '/etc/passwd'\nfile '/dev/zero'\n", "refuse-fast")
    yield MediaCase("ffconcat-http", f"ffconcat version 1.0\nfile 'http://127.0.0.1:{canary_port}/a.wav'\n".encode(),
                    "refuse-fast")  # fmt: skip
    yield MediaCase("ffconcat-subfile", b"ffconcat version 1.0\nfile 'subfile,,start,0,end,0,,:/etc/shadow'\n",
                    "refuse-fast")  # fmt: skip
    yield MediaCase("hls-local", b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
                    "refuse-fast")  # fmt: skip
    yield MediaCase("hls-http", f"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:{canary_port}/seg.ts\n#EXT-X-ENDLIST\n".encode(),
                    "refuse-fast")  # fmt: skip
    yield MediaCase("hls-dev-zero", b"#EXTM3U\n#EXTINF:1,\n/dev/zero\n#EXT-X-ENDLIST\n", "refuse-fast")
    yield MediaCase("ffmetadata", b";FFMETADATA1\ntitle=x\n", "refuse-fast")
    yield MediaCase("html", b"<!doctype html><html><body>no audio</body></html>", "any")
    yield MediaCase("json", b'{"audio": "no"}', "any")
    yield MediaCase("elf", b"\x7fELF\x02\x01\x01" + bytes(57), "any")
    yield MediaCase("zip", b"PK\x03\x04" + bytes(26) + b"a.wav", "any")
    yield MediaCase("gzip", b"\x1f\x8b\x08\x00" + bytes(16), "any")
    yield MediaCase("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "any")
    yield MediaCase("one-byte", b"\x00", "any")
    yield MediaCase("zeros-64k", bytes(65536), "any")
    yield MediaCase("ff-64k", b"\xff" * 65536, "any")
    yield MediaCase("random-64k", random.Random(9).randbytes(65536), "any")


def build_corpus(audio: AudioFactory, workdir: Path, canary_port: int,
                 every_container: bool = True) -> tuple[list[MediaCase], list[str]]:  # fmt: skip
    """Every base case of the corpus, and the names of the formats this FFmpeg could not write.

    The common containers carry 1 s of speech; the others, and the byte surgery, 1 s of silence (the
    decoder is what they exercise; voice activity detection then spares the model). Without
    `every_container` (fast scale) only every third uncommon container and image is made.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    speech, quiet = workdir / "speech.wav", workdir / "silence.wav"
    if not speech.exists():
        subprocess.run(["sox", str(audio.english(1)), "-r", "16000", "-c", "1", "-b", "16", str(speech),
                        "trim", "0", "1.0"], check=True, capture_output=True, timeout=60)  # fmt: skip
    if not quiet.exists():
        quiet.write_bytes(audio.silence(1.0).read_bytes())
    step = 1 if every_container else 3
    cases: list[MediaCase] = []
    skipped: list[str] = []
    for group, expect, source in ((COMMON_AUDIO, "audio", speech), (OTHER_CONTAINERS[::step], "any", quiet)):
        for name, suffix, args in group:
            data = _ffmpeg(["-i", str(source)], workdir / f"{name}.{suffix}", args)
            if data is None:
                skipped.append(name)
            else:
                cases.append(MediaCase(name, data, expect))
    source = quiet
    for name, suffix, args in IMAGES[::step]:
        data = _ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=5"], workdir / f"img-{name}.{suffix}", args)
        if data is None:
            skipped.append(name)
        else:
            cases.append(MediaCase(f"image-{name}", data, "any"))
    valid = source.read_bytes()
    cases.extend(wav_surgery(valid))
    cases.extend(text_cases(canary_port))
    for base in [c for c in cases if c.expect == "audio"]:
        data = base.data
        cases.append(MediaCase(f"{base.name}-truncated-half", data[: len(data) // 2], "any"))
        cases.append(MediaCase(f"{base.name}-header-256", data[:256], "any"))
    return cases, skipped


def mutations(cases: list[MediaCase], count: int, seed: int = 20260) -> Iterator[MediaCase]:
    """`count` seeded mutations of the base cases: byte flips, truncations, splices, repeated headers."""
    rng = random.Random(seed)
    bases = [c for c in cases if len(c.data) > 64]
    for index in range(count):
        base = rng.choice(bases)
        data = bytearray(base.data)
        kind = index % 5
        if kind == 0:
            for _ in range(rng.randint(1, 16)):
                position = rng.randrange(min(len(data), 512))
                data[position] = rng.randrange(256)
        elif kind == 1:
            data = data[: rng.randrange(1, len(data))]
        elif kind == 2:
            other = rng.choice(bases).data
            cut = rng.randrange(1, len(data))
            data = data[:cut] + other[rng.randrange(len(other)) :]
        elif kind == 3:
            position = rng.randrange(len(data))
            data[position:position] = data[: rng.randint(4, 64)] * rng.randint(1, 8)
        else:
            for _ in range(rng.randint(1, 64)):
                position = rng.randrange(len(data))
                data[position] = rng.randrange(256)
        yield MediaCase(f"mut{index}-{base.name}-{kind}", bytes(data), "any")
