"""Live sessions against a deployment of their own: keys on the upgrade, one slot shared with batch jobs,
and a model child killed mid-session."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import websockets

from hark.registry import live_instances
from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.conftest import Checkpoints
from tests.e2e.helpers import wer
from tests.live import LiveClient, handshake, raw_audio, silence_pcm, ws_url
from tests.processes import HarkProcess, Launcher

pytestmark = pytest.mark.e2e

KEY = "stream-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENV = {"HARK_CONCURRENCY_PER_CHECKPOINT": "1", "HARK_STREAM_START_TIMEOUT_SECONDS": "3",
       "HARK_STREAM_LEASE_SECONDS": "2", "HARK_API_KEYS": KEY, "HARK_HEARTBEAT_SECONDS": "0.5",
       "HARK_STREAM_IDLE_TIMEOUT_SECONDS": "4"}  # fmt: skip


@pytest.fixture(scope="module")
def one_slot(module_hark: Launcher, bundled_checkpoints: Checkpoints) -> Iterator[tuple[str, HarkProcess, str]]:
    name = module_hark.new_deployment("live1")
    worker = module_hark.start_worker(name, [bundled_checkpoints.tiny_en], **ENV)
    api = module_hark.start_api(name, **ENV)
    assert api.base_url
    yield name, worker, api.base_url


def test_the_upgrade_needs_a_key(one_slot: tuple[str, HarkProcess, str]) -> None:
    _name, _worker, url = one_slot
    status, body = handshake(url, {"language": "en"})
    assert status == 401 and "API key" in body["error"], body  # type: ignore[index]
    with pytest.raises(websockets.exceptions.InvalidStatus):
        LiveClient(ws_url(url, language="en"), headers={"Authorization": "Bearer wrong"})


def test_a_stream_holds_the_slot_and_a_second_is_refused(one_slot: tuple[str, HarkProcess, str],
                                                         audio: AudioFactory) -> None:  # fmt: skip
    _name, _worker, url = one_slot
    first = LiveClient(ws_url(url, language="en"), headers=AUTH)
    first.send_audio(raw_audio(audio.english(2)), 6400, 32000, 4.0)
    started = time.monotonic()
    status, body = handshake(url, {"language": "en"}, AUTH)
    assert status == 503, body
    assert "no_free_slot" in str(body) and time.monotonic() - started < 6
    first.control("close_stream")
    received = first.wait_closed(60)
    assert wer(ENGLISH_SENTENCES[2], received.final_text) <= 0.3
    time.sleep(1.5)  # the registry shows the slot free again after a heartbeat
    second = LiveClient(ws_url(url, language="en"), headers=AUTH)
    second.control("close_stream")
    assert second.wait_closed(30).close_code == 1000


def test_a_session_without_audio_times_out_with_a_clear_message(one_slot: tuple[str, HarkProcess, str]) -> None:
    _name, _worker, url = one_slot
    client = LiveClient(ws_url(url, language="en"), headers=AUTH)
    started = time.monotonic()
    for _ in range(3):  # keepalives keep the socket, not the session
        client.control("keepalive")
        time.sleep(1)
    error = client.wait_for(lambda m: m.get("type") == "error", timeout=15)
    received = client.wait_closed(10)
    assert error["status"] == "idle_timeout" and "no audio" in error["message"], error
    assert 3.5 <= time.monotonic() - started <= 10
    assert received.close_code == 1001
    assert len(received.of_type("pong")) == 3


def test_a_killed_worker_ends_the_session_with_an_error(one_slot: tuple[str, HarkProcess, str],
                                                        audio: AudioFactory) -> None:  # fmt: skip
    name, worker, url = one_slot
    client = LiveClient(ws_url(url, language="en"), headers=AUTH)
    client.send_audio(silence_pcm(0.2) + raw_audio(audio.english(0)), 6400, 32000, 4.0)
    client.wait_for(lambda m: m.get("type") == "transcription", timeout=60)
    redis_client = _redis(worker)
    (instance,) = live_instances(redis_client, name)
    os.kill(instance.pid, signal.SIGKILL)
    killed = time.monotonic()
    error = client.wait_for(lambda m: m.get("type") == "error", timeout=15)
    received = client.wait_closed(15)
    took = time.monotonic() - killed
    assert error["status"] == "worker_lost", error
    assert received.close_code == 1011
    assert took < 6, f"the client learnt of the dead worker after {took:.1f} s"


def _redis(process: HarkProcess):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(process.env["REDIS_URL"])


def test_a_draining_worker_ends_its_sessions_with_a_restart_close(one_slot: tuple[str, HarkProcess, str],
                                                                  audio: AudioFactory) -> None:  # fmt: skip
    """SIGTERM (a rolling update): the session is told at once to reconnect; it does not hang to the grace end."""
    name, worker, url = one_slot
    redis_client = _redis(worker)
    deadline = time.monotonic() + 90  # the previous test's model child is being restarted
    while time.monotonic() < deadline and not live_instances(redis_client, name):
        time.sleep(0.5)
    (instance,) = live_instances(redis_client, name)
    time.sleep(1)  # let the registry show the slot free
    client = LiveClient(ws_url(url, language="en"), headers=AUTH)
    client.send_audio(silence_pcm(0.2) + raw_audio(audio.english(1)), 6400, 32000, 4.0)
    os.kill(instance.pid, signal.SIGTERM)
    signalled = time.monotonic()
    error = client.wait_for(lambda m: m.get("type") == "error", timeout=15)
    received = client.wait_closed(15)
    assert error["status"] == "worker_shutdown", error
    assert received.close_code == 1012
    assert time.monotonic() - signalled < 5
