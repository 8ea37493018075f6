"""Bearer-key authentication on a second API of the shared deployment started with HARK_API_KEYS and a
keys file (HARK_API_KEYS_FILE, written by `hark keys`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from hark.commands import keys as keys_command
from tests.audio import AudioFactory
from tests.conftest import SHARED_ENV, Deployment
from tests.e2e.helpers import JOBS_PATH, TINY_EN, assert_error, assert_success, post_audio
from tests.live import LiveClient, handshake, ws_url
from tests.processes import HarkProcess, Launcher

pytestmark = pytest.mark.e2e

KEYS = "key-one,key-two"


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "api-keys"


@pytest.fixture(scope="module")
def file_key(keys_file: Path) -> str:
    return keys_command.add(keys_file, "alice")


@pytest.fixture(scope="module")
def secured_api(shared_deployment: Deployment, module_hark: Launcher, keys_file: Path, file_key: str) -> HarkProcess:
    return module_hark.start_api(shared_deployment.name, **{**SHARED_ENV, "HARK_API_WORKERS": "1"},
                                 HARK_API_KEYS=KEYS, HARK_API_KEYS_FILE=str(keys_file))  # fmt: skip


@pytest.fixture(scope="module")
def secured_url(secured_api: HarkProcess) -> str:
    assert secured_api.base_url
    return secured_api.base_url


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer", "Basic a2V5LW9uZQ==", "key-one"])
def test_requests_without_a_valid_key_are_401(secured_url: str, audio: AudioFactory, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    assert_error(post_audio(secured_url, audio.english(1), language="en", headers=headers), 401)


@pytest.mark.parametrize("key", ["key-one", "key-two"])
def test_each_configured_key_works(secured_url: str, audio: AudioFactory, key: str) -> None:
    answer = post_audio(secured_url, audio.english(1), language="en", headers={"Authorization": f"Bearer {key}"})
    assert_success(answer, checkpoint=TINY_EN)


def test_key_in_the_query_string_is_not_accepted(secured_url: str, audio: AudioFactory) -> None:
    assert_error(post_audio(secured_url, audio.english(1), language="en", api_key="key-one"), 401)


def test_job_polling_needs_a_key_too(secured_url: str) -> None:
    assert_error(requests.get(f"{secured_url}{JOBS_PATH}req_{'0' * 24}", timeout=10), 401)


def test_probes_need_no_key(secured_url: str) -> None:
    assert requests.get(f"{secured_url}/health", timeout=10).status_code == 200
    assert requests.get(f"{secured_url}/ready", timeout=10).status_code == 200
    assert requests.get(f"{secured_url}/openapi.json", timeout=10).status_code == 200


def test_sdk_sends_its_key(secured_url: str, audio: AudioFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMALLESTAI_TELEMETRY", "0")
    from smallestai import SmallestAI
    from smallestai.environment import SmallestAIEnvironment
    from smallestai.waves.types.transcription_response import TranscriptionResponse

    environment = SmallestAIEnvironment(atoms=f"{secured_url}/atoms/v1", waves=secured_url,
                                        waves_ws=secured_url.replace("http://", "ws://"),
                                        payment=secured_url)  # fmt: skip
    client = SmallestAI(api_key="key-two", environment=environment)
    result = client.waves.speech_to_text.transcribe(model="pulse", language="en", request=audio.english(1).read_bytes())
    assert type(result) is TranscriptionResponse


def _poll_status(url: str, key: str, expected: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = requests.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code
        if status == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"still {status}, not {expected}, after {timeout} s")


def test_keys_file_works_and_rotates_without_a_restart(secured_url: str, secured_api: HarkProcess, audio: AudioFactory,
                                                       keys_file: Path, file_key: str) -> None:  # fmt: skip
    start = secured_api.log_size()
    answer = post_audio(secured_url, audio.english(1), language="en", headers={"Authorization": f"Bearer {file_key}"})
    assert_success(answer, checkpoint=TINY_EN)
    deadline = time.monotonic() + 5
    while " 200 " not in secured_api.log_text(start) and time.monotonic() < deadline:
        time.sleep(0.05)  # gunicorn writes the access line once the answer is sent
    access = [line for line in secured_api.log_text(start).splitlines() if "POST /waves/v1/stt" in line]
    assert access and " key=alice " in access[0] and "key_name=alice" in access[0], access  # names the key
    job = f"{secured_url}{JOBS_PATH}req_{'0' * 24}"  # an unknown job: 404 with a key, 401 without one
    new_key = keys_command.add(keys_file, "bob")
    _poll_status(job, new_key, 404)  # re-read within about a second
    assert keys_command.remove(keys_file, "bob")
    _poll_status(job, new_key, 401)
    assert requests.get(job, headers={"Authorization": f"Bearer {file_key}"}, timeout=10).status_code == 404


def test_websocket_takes_the_key_from_the_query_and_never_logs_it(secured_url: str, secured_api: HarkProcess,
                                                                  file_key: str) -> None:  # fmt: skip
    start = secured_api.log_size()
    status, body = handshake(secured_url, {"language": "en", "api_key": "not-a-key"})
    assert status == 401 and body["details"][0]["code"] == "unauthorized"
    client = LiveClient(ws_url(secured_url, language="en", api_key=file_key))
    client.control("keepalive")
    client.wait_for(lambda m: m.get("type") == "pong", timeout=10)
    client.control("close_stream")
    assert client.wait_closed(30).close_code == 1000
    deadline = time.monotonic() + 5
    while "live session closed" not in secured_api.log_text(start) and time.monotonic() < deadline:
        time.sleep(0.05)
    log = secured_api.log_text(start, limit=None)
    assert "live session closed" in log and "key_name=alice" in log  # the session's lines name the key
    assert "GET /waves/v1/stt/live 401" in log  # the refused upgrade's access line: the path, no query
    assert file_key not in log and "not-a-key" not in log and "api_key" not in log
