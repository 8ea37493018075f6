"""workers.engine on the real bundled checkpoints (few, short clips: the machine has 2 cores), plus its
pure helpers (language choice, hotwords, word clean-up)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from checkpoints.manifest import load_manifest
from hark.schemas import Keyword, TranscriptionOptions
from tests.audio import AudioFactory, wav_duration
from tests.conftest import Checkpoints
from workers.audio import decode_audio
from workers.device import DevicePlan
from workers.engine import WhisperEngine, build_hotwords, forced_language, pick_language, sanitize_words

PLAN = DevicePlan(device="cpu", compute_type="int8", lanes=1, cpu_threads=2)


def _engine(path: object) -> WhisperEngine:
    manifest = load_manifest(path)
    return WhisperEngine(path, PLAN, languages=manifest.languages, multilingual=manifest.multilingual,
                         label=manifest.label)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(bundled_checkpoints: Checkpoints) -> Iterator[WhisperEngine]:
    engine = _engine(bundled_checkpoints.tiny_en)
    yield engine
    del engine


def _samples(path: object) -> object:
    return decode_audio(path.read_bytes(), 120).samples  # type: ignore[attr-defined]


# --- real model ------------------------------------------------------------------------------------


def test_hello_world(tiny: WhisperEngine, audio: AudioFactory) -> None:
    transcript = tiny.transcribe(_samples(audio.speech("hello world")), TranscriptionOptions(language="en"))
    words = transcript.text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split()
    assert words == ["hello", "world"], transcript.text
    assert transcript.language == "en" and transcript.words == []
    assert [s.text for s in transcript.segments] == [transcript.text]


def test_silence_and_noise_give_no_words(tiny: WhisperEngine, audio: AudioFactory) -> None:
    options = TranscriptionOptions(language="en", word_timestamps=True)
    silence = tiny.transcribe(_samples(audio.silence(3.0)), options)
    assert silence.text == "" and silence.words == [] and silence.segments == []
    assert silence.duration == pytest.approx(3.0)
    noise = tiny.transcribe(_samples(audio.noise(3.0, amplitude=0.3)), options)
    assert len(noise.text.split()) <= 2, noise.text


def test_word_timestamps_are_monotonic_and_inside_the_audio(tiny: WhisperEngine, audio: AudioFactory) -> None:
    clip = audio.english(0)
    duration = wav_duration(clip)
    transcript = tiny.transcribe(_samples(clip), TranscriptionOptions(language="en", word_timestamps=True))
    assert len(transcript.words) >= 6, transcript.words
    previous_end = 0.0
    for word in transcript.words:
        assert word.word == word.word.strip() and word.word
        assert previous_end <= word.start <= word.end <= duration + 1e-6, word
        assert 0.0 <= word.probability <= 1.0
        previous_end = word.end


def test_keywords_are_accepted(tiny: WhisperEngine, audio: AudioFactory) -> None:
    options = TranscriptionOptions(language="en", keywords=[Keyword(word="pizza", boost=2), Keyword(word="dinner")])
    assert "pizza" in tiny.transcribe(_samples(audio.english(3)), options).text.lower()


def test_dedicated_checkpoint_ignores_a_foreign_language(tiny: WhisperEngine, audio: AudioFactory) -> None:
    transcript = tiny.transcribe(_samples(audio.speech("hello world")), TranscriptionOptions(language=None))
    assert transcript.language == "en" and transcript.language_probability == 1.0


def test_detection_restricted_to_a_group(bundled_checkpoints: Checkpoints, audio: AudioFactory) -> None:
    base = _engine(bundled_checkpoints.base)
    german = _samples(audio.german())
    free = base.transcribe(german, TranscriptionOptions())
    assert free.language == "de", free
    # Restricted to languages the audio is not in, the best of those is chosen (never "de").
    restricted = base.transcribe(german, TranscriptionOptions(detect_among=["en", "fr"]))
    assert restricted.language in ("en", "fr")
    grouped = base.transcribe(german, TranscriptionOptions(detect_among=["fr", "de", "it"]))
    assert grouped.language == "de" and "morgen" in grouped.text.lower()


# --- pure helpers ----------------------------------------------------------------------------------


def test_forced_language() -> None:
    assert forced_language("en", ["en"], False) == "en"
    assert forced_language("de", ["en"], False) == "en"     # a dedicated checkpoint speaks its language
    assert forced_language(None, ["hi"], False) == "hi"
    assert forced_language("ta", ["hi", "ta"], False) == "ta"
    assert forced_language("de", ["en", "de"], True) == "de"
    assert forced_language(None, ["en", "de"], True) is None  # detect


def test_pick_language() -> None:
    probs = [("en", 0.6), ("de", 0.3), ("fr", 0.05), ("hi", 0.01)]
    assert pick_language(probs, ["de", "fr"]) == ("de", 0.3)
    assert pick_language(probs, ["hi"]) == ("hi", 0.01)
    assert pick_language(probs, ["xx"]) is None


def test_build_hotwords() -> None:
    assert build_hotwords([]) is None
    keywords = [Keyword(word="Kubernetes", boost=1.5), Keyword(word=" Hark ", boost=2), Keyword(word="kubernetes"),
                Keyword(word="ignored", boost=0), Keyword(word="  ")]  # fmt: skip
    assert build_hotwords(keywords) == "Hark Kubernetes"
    many = [Keyword(word=f"word{i:03d}", boost=1 + i / 1000) for i in range(200)]
    text = build_hotwords(many) or ""
    assert len(text) <= 400 and text.startswith("word199")  # most boosted first, capped


def test_sanitize_words() -> None:
    raw = [(" hello", -0.2, 0.5, 0.9), ("", 0.5, 0.6, 0.5), (" big", 0.4, 0.3, 1.3),
           (" world", 0.45, 9.0, float("nan")), (" tail", 8.0, 7.0, -0.1)]  # fmt: skip
    words = sanitize_words(raw, duration=2.0)
    assert [w.word for w in words] == ["hello", "big", "world", "tail"]
    assert [(w.start, w.end) for w in words] == [(0.0, 0.5), (0.5, 0.5), (0.5, 2.0), (2.0, 2.0)]
    assert [w.probability for w in words] == [0.9, 1.0, 0.0, 0.0]
