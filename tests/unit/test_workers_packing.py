"""workers.packing on the real tiny.en checkpoint (one packed window against the solo path, one crafted
ambiguous case), plus the pure parts: window planning, word assignment and its guard rails, settings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from checkpoints.manifest import load_manifest
from hark.schemas import TranscriptionOptions
from hark.settings import ConfigError, load_settings
from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import normalize, wer
from workers.audio import SAMPLE_RATE, PcmAudio, decode_audio
from workers.device import DevicePlan
from workers.engine import WhisperEngine
from workers.executor import CancelToken, SubmissionTimeout
from workers.packing import PackRequest, Speech, WindowPacker, _loop, _Placed, plan_windows, trim

PLAN = DevicePlan(device="cpu", compute_type="int8", lanes=1, cpu_threads=2)
EN_WORDS = TranscriptionOptions(language="en", word_timestamps=True)
#: One word only its own sentence holds, per clip of the packed set.
MARKERS = ("dog", "tomorrow", "window", "pizza", "monday")


@pytest.fixture(scope="module")
def tiny(bundled_checkpoints: Checkpoints) -> Iterator[WhisperEngine]:
    manifest = load_manifest(bundled_checkpoints.tiny_en)
    engine = WhisperEngine(bundled_checkpoints.tiny_en, PLAN, languages=manifest.languages,
                           multilingual=manifest.multilingual, label=manifest.label)  # fmt: skip
    yield engine
    del engine


def _samples(path: Path) -> np.ndarray:
    return decode_audio(path.read_bytes(), 60).samples


# --- real model ------------------------------------------------------------------------------------


def test_packed_window_matches_the_solo_path(tiny: WhisperEngine, audio: AudioFactory) -> None:
    clips = [_samples(audio.english(index)) for index in range(len(MARKERS))]
    # The first clip with a second of silence in front: its words must come back on its own timeline.
    clips[0] = np.concatenate((np.zeros(SAMPLE_RATE, dtype=np.float32), clips[0]))
    silence = _samples(audio.silence(3.0))
    cancelled = CancelToken()
    cancelled.cancel(SubmissionTimeout("too late"))
    requests = [PackRequest(f"clip{i}", samples, EN_WORDS) for i, samples in enumerate(clips)]
    requests += [PackRequest("silence", silence, EN_WORDS), PackRequest("cancelled", clips[1], EN_WORDS, cancelled)]

    packed = WindowPacker(tiny, max_seconds=10).pack(requests)

    assert packed.windows == 1 and packed.fallback == {}, packed.fallback
    assert isinstance(packed.errors.pop("cancelled"), SubmissionTimeout) and not packed.errors
    empty = packed.transcripts.pop("silence")
    assert (empty.text, empty.segments, empty.words, empty.duration) == ("", [], [], pytest.approx(3.0))
    solo = [tiny.transcribe(PcmAudio(samples), EN_WORDS) for samples in clips]
    reference = " ".join(ENGLISH_SENTENCES[: len(clips)])
    solo_wer = wer(reference, " ".join(t.text for t in solo))
    packed_wer = wer(reference, " ".join(packed.transcripts[f"clip{i}"].text for i in range(len(clips))))
    print(f"WER solo {solo_wer:.4f} packed {packed_wer:.4f}")
    # At most one word worse over these 5 sentences (the 0.5-point target is bench/packing.py's, on 40 clips).
    assert packed_wer <= solo_wer + 1 / len(reference.split()) + 1e-9
    for index, (alone, samples) in enumerate(zip(solo, clips, strict=True)):
        mine = packed.transcripts[f"clip{index}"]
        print(f"solo:   {alone.text}\npacked: {mine.text}")
        assert mine.language == "en" and mine.duration == pytest.approx(samples.size / SAMPLE_RATE)
        assert wer(alone.text, mine.text) <= 0.25
        # Never split, never mixed: each sentence's marker in its own transcript only.
        for other, marker in enumerate(MARKERS):
            assert (marker in normalize(mine.text).split()) == (other == index), (marker, mine.text)
        assert normalize(" ".join(w.word for w in mine.words)) == normalize(mine.text)
        assert " ".join(s.text for s in mine.segments) == mine.text
        previous_end = 0.0
        for word in mine.words:  # on the request's own timeline, in order, inside its audio
            assert previous_end <= word.start <= word.end <= mine.duration and 0 <= word.probability <= 1, word
            previous_end = word.end
        assert abs(mine.words[0].start - alone.words[0].start) < 0.5, (mine.words[0], alone.words[0])
        assert abs(mine.words[-1].end - alone.words[-1].end) < 0.5, (mine.words[-1], alone.words[-1])
    assert packed.transcripts["clip0"].words[0].start > 0.5  # the leading second was trimmed, then added back


def test_a_word_cut_between_two_requests_sends_both_to_solo(tiny: WhisperEngine, audio: AudioFactory) -> None:
    samples = _samples(audio.english(1))  # "please call me back tomorrow morning"
    words = tiny.transcribe(PcmAudio(samples), EN_WORDS).words
    long_word = next(w for w in words if normalize(w.word) == "tomorrow")
    cut = int((long_word.start + long_word.end) / 2 * SAMPLE_RATE)
    # No separator: the two halves play as the original sentence, "tomorrow" across the boundary.
    packer = WindowPacker(tiny, separator_seconds=0.0)
    result = packer.pack([PackRequest("a", samples[:cut], EN_WORDS), PackRequest("b", samples[cut:], EN_WORDS)])
    print(result)
    assert result.windows == 1 and result.transcripts == {}
    assert set(result.fallback) == {"a", "b"} and "straddles" in result.fallback["a"]


def test_requests_that_cannot_share_a_window_go_solo(tiny: WhisperEngine, audio: AudioFactory) -> None:
    sentence = _samples(audio.english(0))  # ~3 s
    detecting = WindowPacker(tiny, multilingual=True, languages=["en", "de"])
    result = detecting.pack([PackRequest(i, sentence, TranscriptionOptions()) for i in range(2)])
    assert result.fallback == {0: "language detection", 1: "language detection"} and result.windows == 0
    short = WindowPacker(tiny, max_seconds=2.0).pack([PackRequest(i, sentence, EN_WORDS) for i in range(2)])
    assert set(short.fallback) == {0, 1} and "limit 2 s" in short.fallback[0] and short.windows == 0
    keyworded = TranscriptionOptions(language="en", keywords=[{"word": "fox"}])
    mixed = WindowPacker(tiny).pack([PackRequest("plain", sentence, EN_WORDS), PackRequest("kw", sentence, keyworded)])
    assert mixed.fallback == {"plain": "alone in its window", "kw": "alone in its window"} and mixed.windows == 0


# --- pure parts ------------------------------------------------------------------------------------


def test_plan_windows_never_splits_and_respects_the_capacity() -> None:
    lengths = [9.0, 9.0, 4.0, 12.0, 3.0, 29.0, 1.0]
    windows = plan_windows(lengths, separator=1.0, capacity=29.0)
    assert windows == [[0, 1, 2, 4], [3, 6], [5]]
    assert sorted(i for window in windows for i in window) == list(range(len(lengths)))
    for window in windows:
        assert sum(lengths[i] for i in window) + 1.0 * (len(window) - 1) <= 29.0


def _placed(index: int, start: float, end: float) -> _Placed:
    speech = Speech(audio=np.zeros(int((end - start) * SAMPLE_RATE), dtype=np.float32),
                    chunks=[{"start": 0, "end": int((end - start) * SAMPLE_RATE)}], duration=end - start)  # fmt: skip
    return _Placed(index, PackRequest(index, speech.audio, EN_WORDS), speech, start, end)


def _segment(text: str, start: float, end: float, words: list[tuple[str, float, float]],
             ratio: float = 1.2, logprob: float = -0.3) -> SimpleNamespace:  # fmt: skip
    """A decoded segment as faster-whisper yields it (only the fields the mapping reads)."""
    timed = [SimpleNamespace(word=w, start=s, end=e, probability=0.9) for w, s, e in words]
    return SimpleNamespace(text=text, start=start, end=end, compression_ratio=ratio, avg_logprob=logprob,
                           words=timed)  # fmt: skip


def test_words_are_assigned_by_midpoint_and_ambiguity_is_flagged() -> None:
    packer = WindowPacker(object(), multilingual=False, languages=["en"], separator_seconds=1.0)  # type: ignore[arg-type]
    window = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0), _placed(2, 8.0, 10.0)]
    # One segment over two requests, split at the separator by its words' timestamps.
    split = _segment(" hello there. good day", 0.2, 6.0, [(" hello", 0.2, 0.6), (" there.", 0.7, 3.3),
                                                        (" good", 4.1, 4.5), (" day", 4.6, 6.0)])  # fmt: skip
    assert packer._assign(split, window) is True
    assert window[0].pieces == [(" hello there.", 0.2, 3.3)] and window[1].pieces == [(" good day", 4.1, 6.0)]
    assert window[0].problem is None and window[1].problem is None  # 0.3 s into the separator is fine
    # A word reaching well into the next request's speech straddles the separator.
    packer._assign(_segment(" straddle", 5.8, 8.6, [(" straddle", 5.8, 8.6)]), window)
    assert "straddles" in (window[1].problem or "") and "straddles" in (window[2].problem or "")
    fresh = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0)]
    packer._assign(_segment(" no words here", 2.0, 5.0, []), fresh)  # no timestamps to split it
    assert fresh[0].problem == fresh[1].problem == "segment without words over two requests"
    tail = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0)]
    packer._assign(_segment(" thanks", 8.0, 9.0, [(" thanks", 8.0, 9.0)]), tail)
    assert tail[1].problem == "word 'thanks' outside the requests' speech" and tail[0].problem is None
    gap = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0)]
    packer._assign(_segment(" um", 3.3, 3.45, [(" um", 3.3, 3.45)]), gap)  # inside the separator
    assert gap[0].problem == "word 'um' outside the requests' speech" and gap[1].problem is None
    # A loop in a request's own words sends it solo, even inside a chunk that is not repetitive overall.
    loop = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0)]
    looped = [(" la", 0.1 * i, 0.1 * i + 0.1) for i in range(24)]
    packer._assign(_segment(" la" * 24, 0.0, 2.4, looped, ratio=1.9), loop)
    assert _loop(loop[0]) == "decoding loop" and _loop(loop[1]) is None
    # A chunk faster-whisper would decode again at a higher temperature sends the requests with words in
    # it solo (a packed window is decoded once, at temperature 0): too repetitive (two callers saying the
    # same sentence, which Whisper tends to merge) ...
    alike = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0), _placed(2, 8.0, 10.0)]
    said = " I would like to check my account balance please"
    words = [(w, 0.2 + 0.3 * i, 0.4 + 0.3 * i) for i, w in enumerate(said.split(" ")[1:])]
    words += [(w, 4.2 + 0.3 * i, 4.4 + 0.3 * i) for i, w in enumerate(said.split(" ")[1:])]
    packer._assign(_segment(said * 2, 0.2, 6.7, [(" " + w, a, b) for w, a, b in words], ratio=2.6), alike)
    assert [placed.problem for placed in alike] == ["repetitive chunk", "repetitive chunk", None]
    # ... or too unlikely.
    doubtful = [_placed(0, 0.0, 3.0), _placed(1, 4.0, 7.0)]
    packer._assign(_segment(" mumble", 4.2, 6.0, [(" mumble", 4.2, 6.0)], logprob=-1.4), doubtful)
    assert doubtful[1].problem == "low confidence" and doubtful[0].problem is None


def test_a_failed_window_sends_its_requests_to_solo(audio: AudioFactory) -> None:
    class Broken:
        def transcribe(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("out of memory")

    sentence = _samples(audio.english(0))
    packer = WindowPacker(Broken(), multilingual=False, languages=["en"])  # type: ignore[arg-type]
    result = packer.pack([PackRequest(i, sentence, EN_WORDS) for i in range(2)])
    assert result.fallback == {0: "window decode failed: out of memory", 1: "window decode failed: out of memory"}
    assert result.transcripts == {} and result.errors == {}
    with pytest.raises(ValueError, match="own key"):
        packer.pack([PackRequest("same", sentence, EN_WORDS), PackRequest("same", sentence, EN_WORDS)])


def test_trim_keeps_speech_and_maps_times_back(audio: AudioFactory) -> None:
    speech = _samples(audio.english(2))
    gap = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    trimmed = trim(np.concatenate((gap, speech, gap, speech)))
    assert len(trimmed.chunks) == 2 and trimmed.seconds < 2 * speech.size / SAMPLE_RATE + 1.7
    assert trimmed.original_time(0.0) == pytest.approx(trimmed.chunks[0]["start"] / SAMPLE_RATE, abs=0.01)
    assert 2.5 < trimmed.original_time(0.0) < 3.0  # the leading silence, less the VAD padding
    assert trimmed.original_time(trimmed.seconds, is_end=True) <= trimmed.duration
    assert trim(np.zeros(SAMPLE_RATE, dtype=np.float32)).audio.size == 0


def test_packing_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("HARK_PACKING") or name == "HARK_BATCH_WAIT_MS":
            monkeypatch.delenv(name)
    assert (load_settings().packing, load_settings().packing_max_seconds) == ("off", 10.0)
    assert load_settings().batch_wait_seconds == 0.005
    monkeypatch.setenv("HARK_PACKING", "1")
    monkeypatch.setenv("HARK_PACKING_MAX_SECONDS", "6.5")
    assert (load_settings().packing, load_settings().packing_max_seconds) == ("on", 6.5)
    assert load_settings().batch_wait_seconds == 0.025, "packing collects a little longer by default"
    monkeypatch.setenv("HARK_BATCH_WAIT_MS", "0")
    assert load_settings().batch_wait_seconds == 0.0, "an explicit wait wins"
    for bad in ("0", "40"):
        monkeypatch.setenv("HARK_PACKING_MAX_SECONDS", bad)
        with pytest.raises(ConfigError, match="HARK_PACKING_MAX_SECONDS"):
            load_settings()
