"""Test audio made at test time: espeak-ng speech, sox/ffmpeg conversions and deliberately bad files.

Nothing binary is committed: every clip is generated on first use into a cache directory (one per
test session) and reused by later tests. The generators are the command-line tools the make target
installs (`espeak-ng`, `sox`, `ffmpeg`).
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import wave
from pathlib import Path

#: Twenty short English sentences (2.6-6.1 s each in espeak-ng's default voice) shared by the tests and the
#: benchmarks: bench/packing.py speaks all twenty, bench/streaming.py's conversation the first six. Only append:
#: those benches' clips, and so the numbers in BENCHMARKS.md, depend on these texts in this order.
ENGLISH_CORPUS: tuple[str, ...] = (
    "please call me back tomorrow morning",
    "open the window and let the fresh air in",
    "i would like to order a large pizza for dinner",
    "the meeting has been moved to next monday",
    "your order has shipped and should arrive on thursday",
    "thank you for calling and have a nice day",
    "the quick brown fox jumps over the lazy dog",
    "can you send me the report before lunch",
    "my flight leaves at seven in the evening",
    "the train to the city was late again this morning",
    "if you have any questions about your bill please stay on the line and an agent will be with you shortly",
    "turn left at the next corner and then go straight ahead until you reach the bank",
    "the doctor said i should rest for a few days",
    "she bought a new car last week from her neighbour",
    "remember to lock the door when you leave the house tonight",
    "how much does the blue jacket in the window cost",
    "our team won the game by three points in the final minute of the match",
    "the children are playing in the garden behind the school",
    "please confirm your address and your phone number so that we can deliver the package on time",
    "it is going to rain all weekend so bring an umbrella",
)

#: Five of :data:`ENGLISH_CORPUS` with known text for the English accuracy tests (see
#: tests/e2e/test_transcription.py), in the order the tests index them: 0 "the quick brown fox...",
#: 1 "please call me back...", 2 "open the window...", 3 "...a large pizza...", 4 "the meeting...".
ENGLISH_SENTENCES: tuple[str, ...] = tuple(ENGLISH_CORPUS[index] for index in (6, 0, 1, 2, 3))

#: German and Hindi phrases for the routing and detection tests.
GERMAN_TEXT = "Guten Morgen, wie geht es Ihnen heute? Ich möchte gerne einen Kaffee bestellen."
HINDI_TEXT = "नमस्ते, आप कैसे हैं? आज मौसम बहुत अच्छा है।"


class AudioToolMissing(RuntimeError):
    """A command-line audio tool the tests need is not installed."""


def _run(command: list[str]) -> None:
    if shutil.which(command[0]) is None:
        raise AudioToolMissing(f"{command[0]} is not installed (run `bash scripts/ensure-system-packages.sh`)")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")


def _key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode("utf-8")).hexdigest()[:16]


def wav_duration(path: Path) -> float:
    """Duration in seconds of a PCM WAV file, from its header."""
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes() / float(handle.getframerate())


class AudioFactory:
    """Makes and caches test clips in `cache_dir`; every method returns the path of a file."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def _path(self, stem: str, suffix: str, *parts: object) -> Path:
        return self.cache_dir / f"{stem}-{_key(stem, *parts)}.{suffix}"

    # --- speech -------------------------------------------------------------------------------
    def speech(self, text: str, voice: str = "en", speed: int = 150) -> Path:
        """espeak-ng reading `text` (22050 Hz mono 16-bit WAV)."""
        out = self._path(f"speech-{voice}", "wav", text, speed)
        if not out.exists():
            tmp = out.with_suffix(".partial.wav")
            _run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(tmp), text])
            tmp.rename(out)
        return out

    def speech_streamed(self, text: str, voice: str = "en", speed: int = 150) -> Path:
        """espeak-ng writing to a pipe (``--stdout``): a WAV whose RIFF and data sizes hold the streaming
        placeholder 0x7FFFF000 instead of the real length, as many recorders and pipelines produce."""
        out = self._path(f"streamed-{voice}", "wav", text, speed)
        if not out.exists():
            if shutil.which("espeak-ng") is None:
                raise AudioToolMissing("espeak-ng is not installed (run `bash scripts/ensure-system-packages.sh`)")
            result = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                                    capture_output=True, timeout=120, check=True)  # fmt: skip
            out.write_bytes(result.stdout)
        return out

    def piped(self, source: Path) -> Path:
        """`source` re-muxed by ffmpeg to a pipe: WAV sizes are 0xFFFFFFFF (unknown length)."""
        out = self._path(f"{source.stem}-piped", "wav", str(source))
        if not out.exists():
            if shutil.which("ffmpeg") is None:
                raise AudioToolMissing("ffmpeg is not installed (run `bash scripts/ensure-system-packages.sh`)")
            result = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(source), "-f", "wav", "-"],
                                    capture_output=True, timeout=120, check=True)  # fmt: skip
            out.write_bytes(result.stdout)
        return out

    def english(self, index: int = 0) -> Path:
        """One of :data:`ENGLISH_SENTENCES` spoken in English."""
        return self.speech(ENGLISH_SENTENCES[index], "en")

    def german(self) -> Path:
        return self.speech(GERMAN_TEXT, "de")

    def hindi(self) -> Path:
        return self.speech(HINDI_TEXT, "hi")

    def long_english(self, min_seconds: float) -> Path:
        """English speech at least `min_seconds` long (the sentences repeated, 16 kHz mono)."""
        out = self._path("long-en", "wav", min_seconds)
        if out.exists():
            return out
        clips: list[Path] = []
        total = 0.0
        while total < min_seconds:
            clip = self.english(len(clips) % len(ENGLISH_SENTENCES))
            clips.append(clip)
            total += wav_duration(clip) + 0.3
        tmp = out.with_suffix(".partial.wav")
        pause = self.silence(0.3, rate=22050)
        parts: list[str] = []
        for clip in clips:
            parts += [str(clip), str(pause)]
        _run(["sox", *parts, "-r", "16000", "-c", "1", str(tmp)])
        tmp.rename(out)
        return out

    # --- conversions --------------------------------------------------------------------------
    def convert(self, source: Path, suffix: str = "wav", rate: int | None = None, channels: int | None = None) -> Path:
        """`source` re-encoded by sox into another container, sample rate or channel count."""
        out = self._path(f"{source.stem}-sox", suffix, str(source), rate, channels)
        if not out.exists():
            tmp = out.with_name(f"partial-{out.name}")
            command = ["sox", str(source)]
            if rate is not None:
                command += ["-r", str(rate)]
            if channels is not None:
                command += ["-c", str(channels)]
            _run([*command, str(tmp)])
            tmp.rename(out)
        return out

    def ffmpeg(self, source: Path, suffix: str, *codec_args: str) -> Path:
        """`source` encoded by ffmpeg (e.g. ``ffmpeg(p, "ogg", "-c:a", "libopus")``)."""
        out = self._path(f"{source.stem}-ff", suffix, str(source), codec_args)
        if not out.exists():
            tmp = out.with_name(f"partial-{out.name}")
            _run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), *codec_args, str(tmp)])
            tmp.rename(out)
        return out

    def opus(self, source: Path) -> Path:
        """Ogg/Opus at 48 kHz (Opus' native rate)."""
        return self.ffmpeg(source, "ogg", "-c:a", "libopus", "-b:a", "32k")

    # --- non-speech ---------------------------------------------------------------------------
    def silence(self, seconds: float = 3.0, rate: int = 16000) -> Path:
        """Digital silence, all-zero samples (`sox -D -n -r RATE -c 1 out.wav trim 0 SECONDS`, no dither)."""
        out = self._path("silence", "wav", seconds, rate)
        if not out.exists():
            tmp = out.with_name(f"partial-{out.name}")
            _run(["sox", "-D", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(tmp), "trim", "0", str(seconds)])
            tmp.rename(out)
        return out

    def noise(self, seconds: float = 3.0, rate: int = 16000, amplitude: float = 0.1) -> Path:
        """White noise."""
        out = self._path("noise", "wav", seconds, rate, amplitude)
        if not out.exists():
            tmp = out.with_name(f"partial-{out.name}")
            _run(["sox", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(tmp),
                  "synth", str(seconds), "whitenoise", "vol", str(amplitude)])  # fmt: skip
            tmp.rename(out)
        return out

    # --- broken files -------------------------------------------------------------------------
    def truncated(self, source: Path) -> Path:
        """The first half of a WAV file: the header still announces the full length."""
        out = self._path(f"{source.stem}-truncated", "wav", str(source))
        if not out.exists():
            data = source.read_bytes()
            out.write_bytes(data[: len(data) // 2])
        return out

    def header_only_fragment(self, source: Path, size: int = 20) -> Path:
        """The first `size` bytes of a WAV: cut inside the RIFF header itself."""
        out = self._path(f"{source.stem}-cut{size}", "wav", str(source), size)
        if not out.exists():
            out.write_bytes(source.read_bytes()[:size])
        return out

    def zero_length(self, rate: int = 16000) -> Path:
        """A valid 44-byte WAV header announcing zero frames."""
        out = self._path("zero-length", "wav", rate)
        if not out.exists():
            with wave.open(str(out), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(rate)
                handle.writeframes(b"")
            assert out.stat().st_size == 44
        return out

    def random_bytes(self, size: int = 8192, seed: int = 1234) -> Path:
        """Bytes that are no audio container at all (deterministic)."""
        out = self._path("random", "bin", size, seed)
        if not out.exists():
            generator = random.Random(seed)
            out.write_bytes(bytes(generator.getrandbits(8) for _ in range(size)))
        return out
