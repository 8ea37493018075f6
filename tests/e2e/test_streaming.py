"""Live transcription over WebSocket on the shared deployment: real Redis, real workers, the real model.

Audio is sent at twice real time (the speech logic keys its cadence to audio time, so partials still
come while the decodes run on the 2-core machine).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import requests

from hark import registry, usage
from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import Deployment
from tests.e2e.helpers import sdk_environment, wer
from tests.live import LiveClient, handshake, raw_audio, silence_pcm, ws_url

pytestmark = pytest.mark.e2e

RATE_BYTES = 32000  # linear16 at 16 kHz
SPEED = 2.0


def _conversation(audio: AudioFactory) -> bytes:
    """Two English sentences with a pause long enough for an endpoint (16 kHz linear16)."""
    return (silence_pcm(0.3) + raw_audio(audio.english(0)) + silence_pcm(1.5) + raw_audio(audio.english(2))
            + silence_pcm(1.5))  # fmt: skip


def test_sdk_streams_partials_finals_finalize_and_one_last(sdk_client: object, audio: AudioFactory) -> None:
    """The SDK's stream helper: partials, endpoint finals, the from_finalize final, exactly one is_last."""
    import threading

    from smallestai.waves.helpers import stream_speech_to_text
    from smallestai.waves.speech_to_text.types.close_stream import CloseStream
    from smallestai.waves.speech_to_text.types.finalize_signal import FinalizeSignal

    events: list[object] = []
    with stream_speech_to_text(sdk_client, language="en", sample_rate=16000, word_timestamps=True,
                               eou_timeout_ms=500) as socket_client:  # fmt: skip
        reader = threading.Thread(target=lambda: events.extend(socket_client), daemon=True)
        reader.start()
        pcm = _conversation(audio)
        for start in range(0, len(pcm), 3201):  # odd-sized frames: a sample straddles every boundary
            socket_client.send_audio_chunk_out(pcm[start : start + 3201])
            time.sleep(3201 / RATE_BYTES / SPEED)
        tail = raw_audio(audio.english(1))
        socket_client.send_audio_chunk_out(tail)
        time.sleep(len(tail) / RATE_BYTES / SPEED)
        socket_client.send_finalize_signal(FinalizeSignal(type="finalize"))
        socket_client.send_audio_chunk_out(raw_audio(audio.english(3)))
        socket_client.send_close_stream(CloseStream(type="close_stream"))
        reader.join(120)
        assert not reader.is_alive(), "the SDK's iteration did not end after close_stream"
    transcriptions = [e for e in events if getattr(e, "type", None) == "transcription"]
    finals = [e for e in transcriptions if e.is_final]
    partials = [e for e in transcriptions if not e.is_final and e.transcript]
    assert partials, "no partial transcript arrived"
    assert sum(1 for e in finals if e.is_last) == 1 and finals[-1].is_last, [e.transcript for e in finals]
    assert transcriptions[-1].is_last, "is_last must be the session's last transcript"
    assert sum(1 for e in finals if e.from_finalize) == 1
    assert all(e.transcript == e.transcription for e in transcriptions)
    assert all(isinstance(e.session_id, str) and e.session_id.startswith("s_") for e in transcriptions)
    text = " ".join(e.transcript for e in finals if e.transcript)
    spoken = " ".join(ENGLISH_SENTENCES[i] for i in (0, 2, 1, 3))
    assert wer(spoken, text) <= 0.3, text
    assert all(e.language == "en" for e in finals)
    words = [w for e in finals for w in (e.words or [])]
    assert words and all(0 <= w.start <= w.end for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words), "word times are relative to the stream start"


def test_async_sdk_streams_and_ends_cleanly(shared_deployment: Deployment, audio: AudioFactory,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from smallestai import AsyncSmallestAI
    from smallestai.waves.helpers import stream_speech_to_text
    from smallestai.waves.speech_to_text.types.close_stream import CloseStream

    monkeypatch.setenv("SMALLESTAI_TELEMETRY", "0")
    client = AsyncSmallestAI(api_key="test-key", environment=sdk_environment(shared_deployment.url))
    pcm = raw_audio(audio.english(4))

    async def run() -> list[object]:
        received: list[object] = []
        async with stream_speech_to_text(client, language="en", sample_rate=16000) as socket_client:
            for start in range(0, len(pcm), 6400):
                await socket_client.send_audio_chunk_out(pcm[start : start + 6400])
                await asyncio.sleep(0.1)
            await socket_client.send_close_stream(CloseStream(type="close_stream"))
            async for event in socket_client:
                received.append(event)
        return received

    events = asyncio.run(asyncio.wait_for(run(), timeout=120))
    finals = [e for e in events if getattr(e, "is_final", False)]
    assert finals and finals[-1].is_last
    assert wer(ENGLISH_SENTENCES[4], " ".join(e.transcript for e in finals)) <= 0.3


def _live_usage_seconds(deployment: Deployment) -> float:
    rows = usage.total_rows(deployment.redis)
    return sum(r.seconds for r in rows if r.deployment == deployment.name and r.language == "en")


def test_vad_events_keepalive_and_sentences(shared_deployment: Deployment, audio: AudioFactory) -> None:
    used_before = _live_usage_seconds(shared_deployment)
    client = LiveClient(ws_url(shared_deployment.url, language="en", vad_events=True, sentence_timestamps=True,
                               full_transcript=True, eou_timeout_ms=400))  # fmt: skip
    client.control("keepalive")
    client.wait_for(lambda m: m.get("type") == "pong", timeout=10)
    pcm = silence_pcm(1.0) + raw_audio(audio.english(1)) + silence_pcm(1.2)
    client.send_audio(pcm, 3200, RATE_BYTES, SPEED)
    final = client.wait_for(lambda m: m.get("is_final"), timeout=60)
    client.control("close_stream")
    received = client.wait_closed(60)
    assert received.close_code == 1000
    started, ended = received.of_type("speech_started"), received.of_type("speech_ended")
    assert started and ended, received.messages
    assert 0.7 <= started[0]["timestamp"] <= 1.6, started
    assert ended[0]["timestamp"] > started[0]["timestamp"]
    assert final["utterances"] and final["utterances"][0]["start"] >= 0.7
    assert wer(ENGLISH_SENTENCES[1], final["full_transcript"]) <= 0.3
    assert sum(1 for m in received.finals if m.get("is_last")) == 1
    # Usage accounting: the session's audio, counted once by the worker when the session ended.
    deadline, sent_seconds = time.monotonic() + 5, len(pcm) / RATE_BYTES
    while _live_usage_seconds(shared_deployment) - used_before < sent_seconds - 0.01 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_usage_seconds(shared_deployment) - used_before == pytest.approx(sent_seconds, abs=0.01)


def test_silence_and_noise_give_no_text(shared_deployment: Deployment, audio: AudioFactory) -> None:
    client = LiveClient(ws_url(shared_deployment.url, language="en"))
    client.send_audio(silence_pcm(3.0) + raw_audio(audio.noise(3.0)) + silence_pcm(1.0), 6400, RATE_BYTES, 4.0)
    client.control("close_stream")
    received = client.wait_closed(60)
    assert received.close_code == 1000
    texts = [m["transcript"] for m in received.of_type("transcription") if m["transcript"]]
    assert texts == [], texts
    assert len(received.finals) == 1 and received.finals[0]["is_last"]


@pytest.mark.parametrize("encoding, rate", [("mulaw", 8000), ("alaw", 8000), ("linear32", 48000),
                                            ("linear16", 44100)])  # fmt: skip
def test_encodings_and_rates(shared_deployment: Deployment, audio: AudioFactory, encoding: str, rate: int) -> None:
    data = raw_audio(audio.english(2), rate, encoding)
    per_second = rate * {"linear16": 2, "linear32": 4}.get(encoding, 1)
    client = LiveClient(ws_url(shared_deployment.url, language="en", encoding=encoding, sample_rate=rate))
    client.send_audio(data, per_second // 10 + 1, per_second, 4.0)
    client.control("close_stream")
    received = client.wait_closed(60)
    assert received.close_code == 1000
    assert wer(ENGLISH_SENTENCES[2], received.final_text) <= 0.3, (encoding, rate, received.final_text)


def test_bad_frames_get_clear_errors(shared_deployment: Deployment) -> None:
    client = LiveClient(ws_url(shared_deployment.url, language="en"))
    client.send_text("this is not json")
    first = client.wait_for(lambda m: m.get("type") == "error", timeout=10)
    assert first["status"] == "invalid_message"
    client.send_text('{"type": "dance"}')
    client.wait_for(lambda m: m.get("type") == "error" and "dance" in m["message"], timeout=10)
    client.control("keepalive")  # the session is still usable
    client.wait_for(lambda m: m.get("type") == "pong", timeout=10)
    client.connection.send(b"\x00" * (2**20 + 10))
    too_big = client.wait_for(lambda m: m.get("status") == "frame_too_large", timeout=10)
    assert "bytes" in too_big["message"]
    assert client.wait_closed(20).close_code == 1009


def test_garbage_opus_ends_the_session_with_invalid_audio(shared_deployment: Deployment) -> None:
    client = LiveClient(ws_url(shared_deployment.url, language="en", encoding="ogg_opus", sample_rate=48000))
    client.send_audio(bytes(range(256)) * 64, 4096)
    error = client.wait_for(lambda m: m.get("type") == "error", timeout=30)
    assert error["status"] == "invalid_audio"
    assert client.wait_closed(20).close_code == 1007


@pytest.mark.parametrize("query, field", [
    ({"model": "pulse-pro"}, "model"), ({"sample_rate": "12345"}, "sample_rate"), ({"encoding": "mp3"}, "encoding"),
    ({"eou_timeout_ms": "soon"}, "eou_timeout_ms"), ({"diarize": "true"}, "diarize"), ({"language": "xx"}, "language"),
])  # fmt: skip
def test_bad_query_is_refused_before_the_upgrade(shared_deployment: Deployment, query: dict[str, str],
                                                 field: str) -> None:  # fmt: skip
    status, body = handshake(shared_deployment.url, {"language": "en", **query})
    assert status == 400, (status, body)
    assert field in json.dumps(body), body


def test_unknown_parameters_are_ignored_and_plain_get_is_426(shared_deployment: Deployment) -> None:
    client = LiveClient(ws_url(shared_deployment.url, language="en", shiny_new_option="yes", itn_normalize=True))
    client.control("close_stream")
    assert client.wait_closed(30).close_code == 1000
    response = requests.get(shared_deployment.url + "/waves/v1/stt/live", timeout=10)
    assert response.status_code == 426 and "WebSocket" in response.json()["error"]


@pytest.mark.parametrize("path", ["/waves/v1/pulse/get_text", "/transcribe"])
def test_legacy_paths_stream_too(shared_deployment: Deployment, audio: AudioFactory, path: str) -> None:
    client = LiveClient(ws_url(shared_deployment.url, path, language="en"))
    client.send_audio(raw_audio(audio.english(3)), 6400, RATE_BYTES, 4.0)
    client.control("close_stream")
    received = client.wait_closed(60)
    assert wer(ENGLISH_SENTENCES[3], received.final_text) <= 0.3, received.final_text


def test_two_sessions_in_two_languages_use_two_checkpoints(shared_deployment: Deployment,
                                                           audio: AudioFactory) -> None:  # fmt: skip
    english = LiveClient(ws_url(shared_deployment.url, language="en"))
    german = LiveClient(ws_url(shared_deployment.url, language="de"))
    en_pcm, de_pcm = raw_audio(audio.english(2)), raw_audio(audio.german())
    import threading

    senders = [threading.Thread(target=c.send_audio, args=(pcm, 6400, RATE_BYTES, SPEED))
               for c, pcm in ((english, en_pcm), (german, de_pcm))]  # fmt: skip
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    checkpoints = {}
    for name, client in (("en", english), ("de", german)):
        sid = client.wait_for(lambda m: "session_id" in m, timeout=60)["session_id"]
        key = f"hark:{shared_deployment.name}:session:{sid}"
        checkpoints[name] = shared_deployment.redis.hget(key, "checkpoint")
        client.control("close_stream")
    en_final, de_final = english.wait_closed(90), german.wait_closed(90)
    assert checkpoints == {"en": b"whisper-tiny-en", "de": b"whisper-base"}, checkpoints
    assert wer(ENGLISH_SENTENCES[2], en_final.final_text) <= 0.3
    assert de_final.finals[-1]["language"] == "de"
    assert "morgen" in de_final.final_text.lower(), de_final.final_text


def test_abrupt_disconnect_frees_the_slot(shared_deployment: Deployment, audio: AudioFactory) -> None:
    client = LiveClient(ws_url(shared_deployment.url, language="en"))
    client.send_audio(raw_audio(audio.english(1))[:32000], 3200)
    sid = None
    deadline = time.monotonic() + 10
    while sid is None and time.monotonic() < deadline:  # the session id comes with the first message
        keys = shared_deployment.redis.keys(f"hark:{shared_deployment.name}:session:s_*:owner")
        sid = keys[0].decode().split(":")[3] if keys else None
        time.sleep(0.1)
    assert sid, "no session owner lease in Redis"
    client.connection.socket.shutdown(socket.SHUT_RDWR)  # no close frame: the TCP connection just drops
    client.connection.socket.close()
    deadline = time.monotonic() + 15
    owner = f"hark:{shared_deployment.name}:session:{sid}:owner"
    while time.monotonic() < deadline and shared_deployment.redis.exists(owner):
        time.sleep(0.2)
    gone_after = 15 - (deadline - time.monotonic())
    assert not shared_deployment.redis.exists(owner), "the worker still owns the session of a vanished client"
    assert not shared_deployment.redis.exists(f"hark:{shared_deployment.name}:session:{sid}:audio")
    assert gone_after < 10
    _wait_in_flight_zero(shared_deployment)


def _wait_in_flight_zero(deployment: Deployment, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    busy: list[int] = []
    while time.monotonic() < deadline:
        busy = [i.in_flight for i in registry.live_instances(deployment.redis, deployment.name)]
        if not any(busy):
            return
        time.sleep(0.3)
    raise AssertionError(f"slots still held: {busy}")
