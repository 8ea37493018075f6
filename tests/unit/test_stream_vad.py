"""workers.stream_vad: the streaming segmenter on scripted probabilities (pure logic), then on the real
Silero model with espeak speech (fast: Silero takes a fraction of a millisecond per chunk)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.audio import AudioFactory
from workers.audio import decode_audio
from workers.stream_vad import CHUNK, SAMPLE_RATE, StreamingVad, VadChange, VadModel, load_vad_model


class ScriptedModel(VadModel):
    """Returns the next scripted probability per chunk; the state counts the chunks it went through."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = list(probabilities)
        self.states: list[float] = []

    def probability(self, window: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        assert window.shape == (64 + CHUNK,)
        self.states.append(float(state[0, 0, 0]))
        return self.probabilities.pop(0), state + 1


def run(vad: StreamingVad, samples: int, step: int) -> list[VadChange]:
    changes: list[VadChange] = []
    for start in range(0, samples, step):
        changes += vad.feed(np.zeros(min(step, samples - start), dtype=np.float32))
    return changes


def load(path: object) -> np.ndarray:
    return decode_audio(path.read_bytes(), 120).samples  # type: ignore[attr-defined]


# --- the state machine -------------------------------------------------------------------------------


def test_speech_start_and_end_with_padding() -> None:
    script = [0.0] * 10 + [0.9] * 20 + [0.0] * 40
    vad = StreamingVad(ScriptedModel(script), threshold=0.5, min_speech_ms=250, min_silence_ms=800, speech_pad_ms=100)
    changes = run(vad, len(script) * CHUNK, CHUNK)
    pad = 1600
    assert changes == [VadChange("start", 10 * CHUNK, 10 * CHUNK - pad), VadChange("end", 30 * CHUNK, 30 * CHUNK + pad)]
    assert vad.last_speech == 30 * CHUNK and not vad.speaking


def test_the_start_is_reported_once_speech_lasted_min_speech_and_the_end_after_min_silence() -> None:
    script = [0.9] * 8 + [0.0] * 30
    model = ScriptedModel(script)
    vad = StreamingVad(model, min_speech_ms=250, min_silence_ms=800)
    reported = [(index, vad.feed(np.zeros(CHUNK, dtype=np.float32))) for index in range(len(script))]
    at = {index: changes[0].kind for index, changes in reported if changes}
    assert at == {7: "start", 32: "end"}, "250 ms = 8 chunks of speech; 800 ms = 25 chunks of silence"
    assert model.states == list(range(len(script))), "the recurrent state is carried chunk to chunk"


def test_short_blips_and_wavering_probabilities() -> None:
    blip = [0.0] * 5 + [0.9] * 5 + [0.0] * 10
    assert run(StreamingVad(ScriptedModel(blip), min_speech_ms=250), len(blip) * CHUNK, CHUNK) == []
    # between threshold - 0.15 and threshold: neither starts silence inside speech nor cancels a start
    wavering = [0.9] * 4 + [0.4] * 10 + [0.0] * 30
    changes = run(StreamingVad(ScriptedModel(wavering), min_speech_ms=250, min_silence_ms=500), len(wavering) * CHUNK,
                  CHUNK)  # fmt: skip
    assert [(c.kind, c.sample) for c in changes] == [("start", 0), ("end", 14 * CHUNK)]


def test_any_feed_size_gives_the_same_changes_and_remainders_wait() -> None:
    script = ([0.0] * 7 + [0.9] * 15 + [0.0] * 30) * 2
    total = len(script) * CHUNK
    expected = run(StreamingVad(ScriptedModel(script), min_silence_ms=500), total, CHUNK)
    assert len(expected) == 4
    for step in (100, 333, 1600, total):
        assert run(StreamingVad(ScriptedModel(script), min_silence_ms=500), total, step) == expected, step
    vad = StreamingVad(ScriptedModel([0.0]))
    assert vad.feed(np.zeros(CHUNK - 1, dtype=np.float32)) == [] and vad.position == 0
    assert vad.feed(np.zeros(0, dtype=np.float32)) == []
    vad.feed(np.zeros(1, dtype=np.float32))
    assert vad.position == CHUNK


def test_the_trailing_silence_of_a_pause_in_speech() -> None:
    # speech, a wavering chunk (no silence yet), a pause that speech ends, another pause that ends the speech
    script = [0.0] * 2 + [0.9] * 10 + [0.4] + [0.0] * 5 + [0.9] * 3 + [0.0] + [0.4] + [0.0] * 20
    vad = StreamingVad(ScriptedModel(script), min_speech_ms=250, min_silence_ms=500)
    seen: list[tuple[int | None, int]] = []
    changes: list[VadChange] = []
    for _ in script:
        changes += vad.feed(np.zeros(CHUNK, dtype=np.float32))
        seen.append((vad.silence_start, vad.trailing_silence_samples))
    assert seen[:13] == [(None, 0)] * 13, "not speaking yet, then speech, then a chunk above threshold - 0.15"
    assert seen[13:18] == [(13 * CHUNK, (n + 1) * CHUNK) for n in range(5)]
    assert seen[18] == (None, 0), "speech is back: the pause is over"
    assert seen[21:36] == [(21 * CHUNK, (n + 1) * CHUNK) for n in range(15)], "hysteresis keeps the pause going"
    assert seen[36] == (None, 0) and not vad.speaking
    assert [(c.kind, c.sample) for c in changes] == [("start", 2 * CHUNK), ("end", 21 * CHUNK)]
    assert changes[-1].sample == seen[35][0], "the end carries the pause's start"


# --- the real Silero model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> VadModel:
    return load_vad_model()


def test_the_model_is_loaded_once_and_leaves_torch_threads_alone(model: VadModel) -> None:
    import torch

    threads = torch.get_num_threads()
    assert load_vad_model() is model
    assert torch.get_num_threads() == threads


def test_espeak_sentences_are_found_where_they_are(model: VadModel, audio: AudioFactory) -> None:
    speech = load(audio.speech("please call me back tomorrow morning", "en-us"))
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    stream = np.concatenate((gap, speech, gap, gap, speech, gap))
    vad = StreamingVad(model, min_silence_ms=500, speech_pad_ms=250)
    changes: list[VadChange] = []
    for start in range(0, stream.size, 1600):
        changes += vad.feed(stream[start : start + 1600])
    starts = [c.sample / SAMPLE_RATE for c in changes if c.kind == "start"]
    ends = [c.sample / SAMPLE_RATE for c in changes if c.kind == "end"]
    length = speech.size / SAMPLE_RATE
    assert [c.kind for c in changes] == ["start", "end"] * 2
    assert starts == pytest.approx([1.0, 3.0 + length], abs=0.2)
    assert ends == pytest.approx([1.0 + length, 3.0 + 2 * length], abs=0.4)
    assert all(c.bound <= c.sample for c in changes if c.kind == "start")


def test_silence_and_white_noise_are_not_speech(model: VadModel, audio: AudioFactory) -> None:
    for clip in (audio.silence(3.0), audio.noise(3.0, amplitude=0.1), audio.noise(3.0, amplitude=0.3)):
        vad = StreamingVad(model)
        assert vad.feed(load(clip)) == [], clip


def test_sessions_sharing_the_model_across_threads_keep_their_own_state(model: VadModel,
                                                                        audio: AudioFactory) -> None:  # fmt: skip
    clips = [load(audio.speech("open the window", "en-us")), load(audio.speech("good morning everyone", "en-us"))]
    gap = np.zeros(SAMPLE_RATE, dtype=np.float32)
    streams = [np.concatenate((gap, clip, gap, clip[::-1].copy(), gap)) for clip in clips]

    def changes(stream: np.ndarray) -> list[VadChange]:
        vad = StreamingVad(model, min_silence_ms=300)
        found: list[VadChange] = []
        for start in range(0, stream.size, 512 * 3):
            found += vad.feed(stream[start : start + 512 * 3])
        return found

    streams *= 2
    alone = [changes(stream) for stream in streams]
    together: list[list[VadChange] | None] = [None] * 4
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, changes(streams[i]))) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    assert alone[0] and alone[0] != alone[1]
