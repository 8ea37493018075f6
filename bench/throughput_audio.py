"""The fixed audio of ``bench/throughput.py``: 20 short espeak-ng clips (2.8-6.5 s), a 60 s file, a mix.

Made with the tests' :class:`tests.audio.AudioFactory` (espeak-ng, sox) into a cache directory, so the
set is the same on every run and machine with the same espeak-ng; every clip keeps its spoken text.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.throughput_load import Clip
from tests.audio import AudioFactory, wav_duration

#: Spoken by espeak-ng (en-us, 150 words a minute): 2.8-6.5 s each, 4.4 s on average (87 s in all). A set of its
#: own, not :data:`tests.audio.ENGLISH_CORPUS` (three sentences coincide): the clips BENCHMARKS.md was measured on.
SENTENCES: tuple[str, ...] = (
    "please call me back tomorrow morning before ten",
    "the meeting starts at nine in the big room",
    "open the window and let the fresh air in",
    "my flight was delayed by two hours today",
    "the quick brown fox jumps over the lazy dog",
    "i would like to order a large pizza for dinner",
    "the meeting has been moved to next monday afternoon",
    "your order has shipped and should arrive on thursday morning",
    "thank you for calling and have a very nice day",
    "can you send me the report before the end of the week",
    "we need to check the numbers again before we sign the contract",
    "the train to the city leaves from platform four every twenty minutes",
    "please remember to lock the door and turn off the lights when you leave",
    "the doctor said that i should drink more water and sleep at least eight hours",
    "our team finished the project early because everyone worked together and shared the load",
    "if the package does not arrive by friday please call our support line and ask for a refund",
    "she bought fresh bread two bottles of milk a dozen eggs and some apples at the market this morning",
    "the weather forecast says it will rain in the afternoon so bring an umbrella and a warm jacket with you",
    "after the long meeting we walked to the small cafe on the corner and talked about our plans for the summer",
    "the new software update fixes several security problems and starts much faster",
)
VOICE = "en-us"
PAUSE_SECONDS = 0.4
LONG_SECONDS = 60.0


def short_clips(factory: AudioFactory, count: int = len(SENTENCES)) -> list[Clip]:
    """The first `count` sentences, each a 16 kHz mono WAV."""
    clips = []
    for index, text in enumerate(SENTENCES[:count]):
        wav = factory.convert(factory.speech(text, VOICE), "wav", rate=16000, channels=1)
        clips.append(Clip(f"short{index:02d}", wav.read_bytes(), wav_duration(wav), text))
    return clips


def long_clip(factory: AudioFactory, seconds: float = LONG_SECONDS) -> Clip:
    """The sentences read one after another with short pauses until at least `seconds` (16 kHz WAV)."""
    pause = factory.silence(PAUSE_SECONDS, rate=22050)
    parts: list[str] = []
    texts: list[str] = []
    total = 0.0
    while total < seconds:
        text = SENTENCES[len(texts) % len(SENTENCES)]
        speech = factory.speech(text, VOICE)
        parts += [str(speech), str(pause)]
        texts.append(text)
        total += wav_duration(speech) + PAUSE_SECONDS
    out = factory.cache_dir / f"throughput-long-{len(texts)}.wav"
    if not out.exists():
        partial = out.with_name(f"partial-{out.name}")
        subprocess.run(["sox", *parts, "-r", "16000", "-c", "1", str(partial)], check=True, capture_output=True)
        partial.rename(out)
    return Clip("long60", out.read_bytes(), wav_duration(out), " ".join(texts))


def mix(clips: list[Clip], long: Clip, longs: int = 2) -> list[Clip]:
    """The short clips with `longs` copies of the long file spread evenly among them."""
    mixed = list(clips)
    step = max(1, len(mixed) // (longs + 1))
    for index in range(longs):
        mixed.insert(min(len(mixed), (index + 1) * step + index), long)
    return mixed


def cache_dir() -> Path:
    """Where the clips are kept between runs."""
    return Path.home() / ".cache" / "hark" / "bench-audio"
