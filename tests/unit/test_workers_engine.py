"""workers.engine on the real bundled checkpoints (few, short clips: the machine has 2 cores), plus its
pure helpers (language choice, hotwords, word clean-up)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from faster_whisper.vad import VadOptions

from checkpoints.manifest import load_manifest
from hark.schemas import Keyword, TranscriptionOptions
from tests.audio import ENGLISH_SENTENCES, AudioFactory, wav_duration
from tests.conftest import Checkpoints
from tests.e2e.helpers import normalize, wer
from workers.audio import SAMPLE_RATE, AudioError, EncodedAudio, decode_audio
from workers.device import DevicePlan
from workers.engine import (
    CUT_GUARD_SECONDS,
    WINDOW_SECONDS,
    WhisperEngine,
    build_hotwords,
    find_cut,
    forced_language,
    pick_language,
    sanitize_words,
    tail_words,
)
from workers.executor import CancelToken, ExecutorDraining

PLAN = DevicePlan(device="cpu", compute_type="int8", lanes=1, cpu_threads=2)


def _engine(path: object, window_seconds: float = WINDOW_SECONDS) -> WhisperEngine:
    manifest = load_manifest(path)
    return WhisperEngine(path, PLAN, languages=manifest.languages, multilingual=manifest.multilingual,
                         label=manifest.label, window_seconds=window_seconds)  # fmt: skip


@pytest.fixture(scope="module")
def tiny(bundled_checkpoints: Checkpoints) -> Iterator[WhisperEngine]:
    engine = _engine(bundled_checkpoints.tiny_en)
    yield engine
    del engine


def _source(path: Path) -> EncodedAudio:
    """The file as the worker hands it to the engine: encoded bytes, decoded on the lane."""
    return EncodedAudio(path.read_bytes(), 120)


# --- real model ------------------------------------------------------------------------------------


def test_hello_world(tiny: WhisperEngine, audio: AudioFactory) -> None:
    transcript = tiny.transcribe(_source(audio.speech("hello world")), TranscriptionOptions(language="en"))
    words = transcript.text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split()
    assert words == ["hello", "world"], transcript.text
    assert transcript.language == "en" and transcript.words == []
    assert [s.text for s in transcript.segments] == [transcript.text]


def test_silence_and_noise_give_no_words(tiny: WhisperEngine, audio: AudioFactory) -> None:
    options = TranscriptionOptions(language="en", word_timestamps=True)
    silence = tiny.transcribe(_source(audio.silence(3.0)), options)
    assert silence.text == "" and silence.words == [] and silence.segments == []
    assert silence.duration == pytest.approx(3.0)
    noise = tiny.transcribe(_source(audio.noise(3.0, amplitude=0.3)), options)
    assert len(noise.text.split()) <= 2, noise.text


def test_word_timestamps_are_monotonic_and_inside_the_audio(tiny: WhisperEngine, audio: AudioFactory) -> None:
    clip = audio.english(0)
    duration = wav_duration(clip)
    transcript = tiny.transcribe(_source(clip), TranscriptionOptions(language="en", word_timestamps=True))
    assert len(transcript.words) >= 6, transcript.words
    previous_end = 0.0
    for word in transcript.words:
        assert word.word == word.word.strip() and word.word
        assert previous_end <= word.start <= word.end <= duration + 1e-6, word
        assert 0.0 <= word.probability <= 1.0
        previous_end = word.end


def test_keywords_are_accepted(tiny: WhisperEngine, audio: AudioFactory) -> None:
    options = TranscriptionOptions(language="en", keywords=[Keyword(word="pizza", boost=2), Keyword(word="dinner")])
    assert "pizza" in tiny.transcribe(_source(audio.english(3)), options).text.lower()


def test_dedicated_checkpoint_ignores_a_foreign_language(tiny: WhisperEngine, audio: AudioFactory) -> None:
    transcript = tiny.transcribe(_source(audio.speech("hello world")), TranscriptionOptions(language=None))
    assert transcript.language == "en" and transcript.language_probability == 1.0


def test_detection_restricted_to_a_group(bundled_checkpoints: Checkpoints, audio: AudioFactory) -> None:
    base = _engine(bundled_checkpoints.base)
    german = audio.german()
    free = base.transcribe(_source(german), TranscriptionOptions())
    assert free.language == "de", free
    # Restricted to languages the audio is not in, the best of those is chosen (never "de").
    restricted = base.transcribe(_source(german), TranscriptionOptions(detect_among=["en", "fr"]))
    assert restricted.language in ("en", "fr")
    grouped = base.transcribe(_source(german), TranscriptionOptions(detect_among=["fr", "de", "it"]))
    assert grouped.language == "de" and "morgen" in grouped.text.lower()


# --- windows ----------------------------------------------------------------------------------------


def _long_reference(audio: AudioFactory, min_seconds: float) -> str:
    """The text of ``audio.long_english(min_seconds)`` (the sentences in the order it joins them)."""
    texts: list[str] = []
    total = 0.0
    while total < min_seconds:
        index = len(texts) % len(ENGLISH_SENTENCES)
        texts.append(ENGLISH_SENTENCES[index])
        total += wav_duration(audio.english(index)) + 0.3
    return " ".join(texts)


def _count(text: str, word: str) -> int:
    return normalize(text).split().count(word)


def test_speech_across_window_boundaries_is_neither_lost_nor_doubled(
    tiny: WhisperEngine, bundled_checkpoints: Checkpoints, audio: AudioFactory
) -> None:
    clip = audio.long_english(40)  # ~42 s: sentences with 0.3 s pauses, so speech crosses any boundary
    reference = _long_reference(audio, 40)
    options = TranscriptionOptions(language="en", word_timestamps=True)
    whole = tiny.transcribe(_source(clip), options)  # one window
    # Put the first window's end in the middle of a word, then let every later boundary fall where it may.
    straddled = next(w for w in whole.words if w.start >= 9.0 and w.end - w.start >= 0.2)
    boundary = (straddled.start + straddled.end) / 2
    windowed = _engine(bundled_checkpoints.tiny_en, window_seconds=boundary).transcribe(_source(clip), options)

    print(f"boundary {boundary:.2f} s in {straddled}\nwhole:    {whole.text}\nwindowed: {windowed.text}")
    assert windowed.duration == pytest.approx(whole.duration)
    assert wer(reference, windowed.text) <= max(0.15, wer(reference, whole.text) + 0.05)
    for word in ("dog", "tomorrow", "window", "pizza", "monday"):  # each sentence's word, as often as said
        assert _count(windowed.text, word) == _count(reference, word), (word, windowed.text)
    again = [w for w in windowed.words if normalize(w.word) == normalize(straddled.word)
             and abs(w.start - straddled.start) < 0.5]  # fmt: skip
    assert len(again) == 1, f"{straddled} cut by the window: found {again}"
    previous_end = 0.0
    for word in windowed.words:  # offsets applied: one timeline, in order, inside the audio
        assert previous_end <= word.start <= word.end <= windowed.duration + 1e-6, word
        previous_end = word.end
    assert [s.start for s in windowed.segments] == sorted(s.start for s in windowed.segments)


def test_the_cut_falls_before_speech_that_reaches_the_window_end(audio: AudioFactory) -> None:
    speech = decode_audio(audio.speech("hello world, this is a test").read_bytes(), 60).samples
    silence = np.zeros(6 * SAMPLE_RATE, dtype=np.float32)
    guard = int(CUT_GUARD_SECONDS * SAMPLE_RATE)
    vad = VadOptions(max_speech_duration_s=30)

    window = np.concatenate((silence, speech[: speech.size // 2]))  # the sentence goes on after the window
    cut, has_speech = find_cut(window, guard, vad)
    assert 5.0 * SAMPLE_RATE < cut <= 6 * SAMPLE_RATE and not has_speech  # in the silence before it

    window = np.concatenate((silence, speech, silence))  # speech well inside: keep it, carry the guard
    cut, has_speech = find_cut(window, guard, vad)
    assert cut == window.size - guard and has_speech

    cut, has_speech = find_cut(np.concatenate((silence, silence)), guard, vad)
    assert cut == 12 * SAMPLE_RATE - guard and not has_speech


def test_a_cancelled_token_stops_the_engine(tiny: WhisperEngine, audio: AudioFactory) -> None:
    token = CancelToken()
    token.cancel(ExecutorDraining("stop"))
    with pytest.raises(ExecutorDraining):
        tiny.transcribe(_source(audio.english(0)), TranscriptionOptions(language="en"), token)


def test_bad_audio_found_on_the_lane_is_an_audio_error(tiny: WhisperEngine, audio: AudioFactory) -> None:
    with pytest.raises(AudioError) as caught:
        tiny.transcribe(_source(audio.truncated(audio.english(1))), TranscriptionOptions(language="en"))
    assert caught.value.code == "truncated_audio"


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


def test_tail_words() -> None:
    assert tail_words("short text", 200) == "short text"
    assert tail_words("one two three four", 10) == "four"
    assert tail_words("abcdefghijkl", 5) == "hijkl"


def test_sanitize_words() -> None:
    raw = [(" hello", -0.2, 0.5, 0.9), ("", 0.5, 0.6, 0.5), (" big", 0.4, 0.3, 1.3),
           (" world", 0.45, 9.0, float("nan")), (" tail", 8.0, 7.0, -0.1)]  # fmt: skip
    words = sanitize_words(raw, duration=2.0)
    assert [w.word for w in words] == ["hello", "big", "world", "tail"]
    assert [(w.start, w.end) for w in words] == [(0.0, 0.5), (0.5, 0.5), (0.5, 2.0), (2.0, 2.0)]
    assert [w.probability for w in words] == [0.9, 1.0, 0.0, 0.0]
