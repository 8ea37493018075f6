"""Language routing inside a deployment: dedicated first, multilingual fallback, detection, pinning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hark.languages import MULTI_GROUPS
from tests.audio import GERMAN_TEXT, AudioFactory
from tests.conftest import Checkpoints, Deployment
from tests.e2e.helpers import BASE, BASE_HI, TINY_EN, assert_error, assert_success, post_audio, wer
from tests.processes import Launcher

pytestmark = pytest.mark.e2e


# --- two checkpoints: tiny.en (dedicated English) + base (multilingual) — the shared deployment ---


def test_english_goes_to_the_dedicated_checkpoint(shared_deployment: Deployment, audio: AudioFactory) -> None:
    body = assert_success(post_audio(shared_deployment.url, audio.english(1), language="en"),
                          deployment=shared_deployment.name, checkpoint=TINY_EN)  # fmt: skip
    assert body["language"] == "en"


def test_german_falls_back_to_the_multilingual_checkpoint(shared_deployment: Deployment, audio: AudioFactory) -> None:
    body = assert_success(post_audio(shared_deployment.url, audio.german(), language="de"),
                          deployment=shared_deployment.name, checkpoint=BASE)  # fmt: skip
    assert body["language"] == "de"
    # whisper-base reads espeak-ng's German almost perfectly (measured WER 0.07: "gerne" -> "gern").
    assert wer(GERMAN_TEXT, body["transcription"]) <= 0.35, body["transcription"]


def test_multi_detects_the_language_on_the_multilingual_checkpoint(shared_deployment: Deployment,
                                                                    audio: AudioFactory) -> None:  # fmt: skip
    body = assert_success(post_audio(shared_deployment.url, audio.german(), language="multi"), checkpoint=BASE)
    assert body["language"] == "de", body


def test_multi_eu_detects_within_its_group(shared_deployment: Deployment, audio: AudioFactory) -> None:
    body = assert_success(post_audio(shared_deployment.url, audio.german(), language="multi-eu"), checkpoint=BASE)
    assert body["language"] == "de", body


def test_detection_group_is_honoured(shared_deployment: Deployment, audio: AudioFactory) -> None:
    # German speech with multi-indic: detection may only pick a language of that group.
    body = assert_success(post_audio(shared_deployment.url, audio.german(), language="multi-indic"), checkpoint=BASE)
    assert body["language"] in (MULTI_GROUPS["multi-indic"] or ()), body["language"]


@pytest.mark.parametrize("language", ["xx", "zu"])
def test_unserved_language_is_refused_listing_the_served_ones(shared_deployment: Deployment, audio: AudioFactory,
                                                              language: str) -> None:  # fmt: skip
    body = assert_error(post_audio(shared_deployment.url, audio.english(1), language=language), 400, language)
    message = body["error"]
    assert "served languages" in message.lower(), message
    listed = set(re.split(r"[^a-z-]+", message.lower().split("served languages", 1)[1]))
    assert {"en", "de", "hi"} <= listed, message
    assert language not in listed


def test_pinning_the_multilingual_checkpoint_for_english(shared_deployment: Deployment, audio: AudioFactory) -> None:
    body = assert_success(post_audio(shared_deployment.url, audio.english(1), model="whisper-base", language="en"),
                          checkpoint=BASE)  # fmt: skip
    assert body["language"] == "en"


def test_pinning_a_checkpoint_that_lacks_the_language(shared_deployment: Deployment, audio: AudioFactory) -> None:
    body = assert_error(post_audio(shared_deployment.url, audio.german(), model="whisper-tiny-en", language="de"),
                        400, "de")  # fmt: skip
    assert "en" in body["error"]


# --- three checkpoints: tiny.en, a dedicated Hindi one, base ----------------------------------------


@pytest.fixture(scope="module")
def three_checkpoints(module_hark: Launcher, bundled_checkpoints: Checkpoints, hindi_checkpoint: Path) -> str:
    """A deployment whose worker serves whisper-tiny-en, whisper-base-hi and whisper-base; its API URL."""
    name = module_hark.new_deployment("three")
    module_hark.start_worker(name, [bundled_checkpoints.tiny_en, hindi_checkpoint, bundled_checkpoints.base],
                             HARK_CONCURRENCY_PER_CHECKPOINT=2)  # fmt: skip
    api = module_hark.start_api(name)
    assert api.base_url
    return api.base_url


@pytest.mark.timeout(400)
@pytest.mark.parametrize(
    ("language", "clip", "checkpoint"),
    [("hi", "hindi", BASE_HI), ("de", "german", BASE), ("en", "english", TINY_EN), ("multi", "german", BASE)],
)
def test_three_checkpoint_routing(three_checkpoints: str, audio: AudioFactory, language: str, clip: str,
                                  checkpoint: str) -> None:  # fmt: skip
    data = {"hindi": audio.hindi, "german": audio.german, "english": lambda: audio.english(1)}[clip]()
    body = assert_success(post_audio(three_checkpoints, data, language=language), checkpoint=checkpoint)
    assert body["language"] == ("de" if language == "multi" else language)


def test_three_checkpoint_ready_lists_all(three_checkpoints: str) -> None:
    import requests

    answer = requests.get(f"{three_checkpoints}/ready", timeout=10)
    assert answer.status_code == 200, answer.text
    text = answer.text
    for name in ("whisper-tiny-en", "whisper-base-hi", "whisper-base"):
        assert name in text
