"""The whole bad-input table against the real running API: documented JSON errors, right status,
never a 5xx or a stack trace. The shared API runs with HARK_MAX_UPLOAD_BYTES=2000000 and
HARK_MAX_AUDIO_SECONDS=30 (see tests/conftest.py SHARED_ENV)."""

from __future__ import annotations

import pytest
import requests

from tests.audio import AudioFactory
from tests.conftest import SHARED_ENV, Deployment
from tests.e2e.helpers import LEGACY_PATH, STT_PATH, assert_error, assert_success, post_audio

pytestmark = pytest.mark.e2e

MAX_UPLOAD = int(SHARED_ENV["HARK_MAX_UPLOAD_BYTES"])


def test_empty_body(shared_deployment: Deployment) -> None:
    assert_error(post_audio(shared_deployment.url, b"", language="en"), 400)


def test_bytes_that_are_not_audio(shared_deployment: Deployment, audio: AudioFactory) -> None:
    assert_error(post_audio(shared_deployment.url, audio.random_bytes(), language="en"), 400)


def test_text_is_not_audio(shared_deployment: Deployment) -> None:
    assert_error(post_audio(shared_deployment.url, b"hello, I am not a sound file\n" * 50, language="en"), 400)


def test_wav_cut_inside_its_header(shared_deployment: Deployment, audio: AudioFactory) -> None:
    assert_error(post_audio(shared_deployment.url, audio.header_only_fragment(audio.english(1)), language="en"), 400)


def test_truncated_wav(shared_deployment: Deployment, audio: AudioFactory) -> None:
    # A WAV cut in half: the header still announces the full length. The API compares the samples
    # present with the header and refuses the file rather than transcribing half of it silently.
    assert_error(post_audio(shared_deployment.url, audio.truncated(audio.english(1)), language="en"), 400,
                 "truncated")  # fmt: skip


def test_zero_length_audio(shared_deployment: Deployment, audio: AudioFactory) -> None:
    assert_error(post_audio(shared_deployment.url, audio.zero_length(), language="en"), 400)


def test_upload_over_the_size_limit(shared_deployment: Deployment) -> None:
    assert_error(post_audio(shared_deployment.url, b"\0" * (MAX_UPLOAD + 1024), language="en"), 413)


def test_chunked_upload_over_the_size_limit(shared_deployment: Deployment) -> None:
    def chunks() -> object:
        block = b"\0" * 65536
        for _ in range(MAX_UPLOAD // len(block) + 4):
            yield block

    try:
        answer = post_audio(shared_deployment.url, chunks(), language="en")
    except requests.ConnectionError:
        pytest.fail("the API dropped the connection instead of answering 413")
    assert_error(answer, 413)


def test_audio_over_the_duration_limit(shared_deployment: Deployment, audio: AudioFactory) -> None:
    clip = audio.silence(40.0)  # 40 s at 16 kHz mono: 1.28 MB, under the size limit
    assert clip.stat().st_size < MAX_UPLOAD
    assert_error(post_audio(shared_deployment.url, clip, language="en"), 400)


@pytest.mark.parametrize(
    ("params", "status", "mention"),
    [
        ({"model": None, "language": "en"}, 400, "model"),
        ({"model": "whisper-9000", "language": "en"}, 400, "model"),
        ({"model": "", "language": "en"}, 400, "model"),
        ({"language": None}, 400, "language"),
        ({"language": ""}, 400, "language"),
        ({"language": "xx"}, 400, "xx"),
        ({"language": "EN!"}, 400, "language"),
        ({"language": "en", "word_timestamps": "yes"}, 400, "word_timestamps"),
        ({"language": "en", "word_timestamps": "1"}, 400, "word_timestamps"),
        ({"language": "en", "diarize": "maybe"}, 400, "diarize"),
        ({"language": "en", "diarize": "true"}, 400, "diarize"),
        ({"language": "en", "redact_pii": "true"}, 400, "redact_pii"),
        ({"language": "en", "redact_pci": "true"}, 400, "redact_pci"),
        ({"language": "en", "emotion_detection": "true"}, 400, "emotion_detection"),
        ({"language": "en", "gender_detection": "true"}, 400, "gender_detection"),
        ({"language": "en", "webhook_url": "http://127.0.0.1:9/x", "webhook_method": "PUT"}, 400, "webhook_method"),
    ],
    ids=lambda value: str(value) if not isinstance(value, dict) else "&".join(f"{k}={v}" for k, v in value.items()),
)
def test_bad_parameters(shared_deployment: Deployment, audio: AudioFactory, params: dict, status: int,
                        mention: str) -> None:  # fmt: skip
    assert_error(post_audio(shared_deployment.url, audio.english(1), **params), status, mention)


def test_unimplemented_options_set_to_false_are_accepted(shared_deployment: Deployment, audio: AudioFactory) -> None:
    assert_success(post_audio(shared_deployment.url, audio.english(1), language="en", diarize=False,
                              redact_pii=False, redact_pci=False, emotion_detection=False,
                              gender_detection=False))  # fmt: skip


def test_legacy_endpoint_validates_too(shared_deployment: Deployment, audio: AudioFactory) -> None:
    assert_error(post_audio(shared_deployment.url, audio.english(1), path=LEGACY_PATH, model=None, language="xx"),
                 400, "xx")  # fmt: skip
    assert_error(post_audio(shared_deployment.url, b"", path=LEGACY_PATH, model=None, language="en"), 400)


def test_wrong_method_gets_json(shared_deployment: Deployment) -> None:
    answer = requests.get(f"{shared_deployment.url}{STT_PATH}", timeout=10)
    assert answer.status_code == 405
    assert "Traceback" not in answer.text


def test_unknown_path_gets_json_404(shared_deployment: Deployment) -> None:
    answer = requests.get(f"{shared_deployment.url}/no/such/path", timeout=10)
    assert_error(answer, 404)
