"""The official `smallestai` SDK (5.14.0), pointed at the running API exactly as the wire spec shows."""

from __future__ import annotations

import pytest

from tests.audio import ENGLISH_SENTENCES, AudioFactory
from tests.e2e.helpers import TINY_EN, wer

pytestmark = pytest.mark.e2e


def test_sdk_gets_a_typed_transcription(sdk_client: object, audio: AudioFactory) -> None:
    from smallestai.waves.types.transcription_response import TranscriptionResponse

    wav = audio.english(1).read_bytes()
    result = sdk_client.waves.speech_to_text.transcribe(  # type: ignore[attr-defined]
        model="pulse", language="en", request=wav, word_timestamps=True
    )
    assert type(result) is TranscriptionResponse, f"SDK parsed the answer as {type(result).__name__}: {result!r}"
    assert result.status == "success"
    assert wer(ENGLISH_SENTENCES[1], result.transcription) <= 0.5, result.transcription
    assert result.language == "en"
    assert result.request_id
    assert result.words and all(w.start <= w.end for w in result.words)
    assert result.metadata is not None and result.metadata.duration > 0
    extra = result.metadata.model_extra or {}
    assert extra.get("checkpoint", TINY_EN) == TINY_EN


def test_sdk_gets_bad_request_for_a_bad_language(sdk_client: object, audio: AudioFactory) -> None:
    from smallestai.waves.errors import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        sdk_client.waves.speech_to_text.transcribe(  # type: ignore[attr-defined]
            model="pulse", language="xx", request=audio.english(1).read_bytes()
        )
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict) and "xx" in body["error"], body


def test_sdk_gets_bad_request_for_an_unimplemented_option(sdk_client: object, audio: AudioFactory) -> None:
    from smallestai.waves.errors import BadRequestError

    with pytest.raises(BadRequestError) as caught:
        sdk_client.waves.speech_to_text.transcribe(  # type: ignore[attr-defined]
            model="pulse", language="en", request=audio.english(1).read_bytes(), diarize=True
        )
    assert "diarize" in caught.value.body["error"]
