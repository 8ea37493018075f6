"""Bearer-key authentication on a second API of the shared deployment started with HARK_API_KEYS."""

from __future__ import annotations

import pytest
import requests

from tests.audio import AudioFactory
from tests.conftest import SHARED_ENV, Deployment
from tests.e2e.helpers import JOBS_PATH, TINY_EN, assert_error, assert_success, post_audio
from tests.processes import Launcher

pytestmark = pytest.mark.e2e

KEYS = "key-one,key-two"


@pytest.fixture(scope="module")
def secured_url(shared_deployment: Deployment, module_hark: Launcher) -> str:
    api = module_hark.start_api(shared_deployment.name, **{**SHARED_ENV, "HARK_API_WORKERS": "1"},
                                HARK_API_KEYS=KEYS)  # fmt: skip
    assert api.base_url
    return api.base_url


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
