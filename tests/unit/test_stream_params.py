"""The live endpoint's query: defaults for a bare connection, 400-worthy values named, unknown ones ignored."""

from __future__ import annotations

import pytest

from hark.sessions import SAMPLE_RATES
from web.params import ParamError
from web.stream_params import parse_stream_params


def test_a_bare_connection_gets_every_default() -> None:
    params = parse_stream_params({})
    assert (params.model, params.language, params.sample_rate, params.encoding) == ("pulse", "en", 16000, "linear16")
    assert params.eou_timeout_ms == 800 and params.endpointing and params.vad and not params.vad_events
    assert params.punctuate and params.capitalize and params.max_words is None and params.keywords == []


def test_what_the_sdk_sends_is_accepted() -> None:
    params = parse_stream_params({
        "model": "pulse", "language": "hi", "sample_rate": "8000", "encoding": "mulaw", "word_timestamps": "true",
        "sentence_timestamps": "true", "full_transcript": "true", "punctuate": "false", "capitalize": "false",
        "itn_normalize": "true", "numerals": "true", "finalize_on_words": "false", "max_words": "12",
        "eou_timeout_ms": "1000", "vad_events": "true", "vad_threshold": "0.6", "vad_min_speech_ms": "100",
        "keywords": "Hark:2,Kubernetes", "redact_pii": "false", "diarize": "false", "brand_new_knob": "x",
    })  # fmt: skip
    assert params.language == "hi" and params.sample_rate == 8000 and params.encoding == "mulaw"
    assert params.word_timestamps and params.sentence_timestamps and params.full_transcript
    assert not params.punctuate and not params.capitalize and params.max_words == 12
    assert params.eou_timeout_ms == 1000 and params.vad_events and params.vad_threshold == 0.6
    assert [(k.word, k.boost) for k in params.keywords] == [("Hark", 2.0), ("Kubernetes", 1.0)]


@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_every_listed_rate(rate: int) -> None:
    assert parse_stream_params({"sample_rate": str(rate)}).sample_rate == rate


def test_endpointing_forms() -> None:
    assert not parse_stream_params({"endpointing": "false"}).endpointing
    assert parse_stream_params({"endpointing": "300"}).eou_timeout_ms == 300
    assert parse_stream_params({"endpointing_timeout": "650"}).eou_timeout_ms == 650
    assert parse_stream_params({"eou_timeout_ms": "500", "endpointing_timeout": "650"}).eou_timeout_ms == 500


@pytest.mark.parametrize("query, name", [
    ({"model": "pulse-pro"}, "model"),
    ({"sample_rate": "12000"}, "sample_rate"),
    ({"sample_rate": "fast"}, "sample_rate"),
    ({"encoding": "flac"}, "encoding"),
    ({"eou_timeout_ms": "0"}, "eou_timeout_ms"),
    ({"eou_timeout_ms": "1e3"}, "eou_timeout_ms"),
    ({"max_words": "0"}, "max_words"),
    ({"vad_threshold": "2"}, "vad_threshold"),
    ({"vad_threshold": "nan"}, "vad_threshold"),
    ({"word_timestamps": "yes"}, "word_timestamps"),
    ({"numerals": "maybe"}, "numerals"),
    ({"diarize": "true"}, "diarize"),
    ({"redact_pii": "email,phone"}, "redact_pii"),
    ({"keywords": "Hark:99"}, "keywords"),
    ({"endpointing": "soon"}, "endpointing"),
])  # fmt: skip
def test_bad_values_name_the_parameter(query: dict[str, str], name: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_stream_params(query)
    assert caught.value.name == name
    assert name in caught.value.message
