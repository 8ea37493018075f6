"""web.params: the query-parameter table of the REST endpoints (pure functions, no I/O)."""

from __future__ import annotations

import pytest

from hark.schemas import Keyword, WebhookTarget
from web.params import (
    MAX_KEYWORDS,
    PARAMS_BY_NAME,
    STT_PARAMS,
    ParamError,
    parse_bool,
    parse_keywords,
    parse_stt_params,
)

UNSUPPORTED = ("diarize", "redact_pii", "redact_pci", "emotion_detection", "gender_detection")


def parse(model_required: bool = True, **args: str) -> object:
    return parse_stt_params({"model": "pulse", "language": "en", **args}, model_required=model_required)


def test_minimal_query() -> None:
    params = parse()
    assert params.model == "pulse" and params.language == "en"
    assert params.word_timestamps is False and params.keywords == [] and params.webhook is None
    assert not params.is_async


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("false", False), ("TRUE", True), ("False", False),
                                                (" true ", True), (None, False)])  # fmt: skip
def test_booleans(raw: str | None, expected: bool) -> None:
    assert parse_bool("word_timestamps", raw) is expected


@pytest.mark.parametrize("raw", ["1", "0", "yes", "no", "", "t", "truee", "on"])
def test_malformed_booleans_name_the_parameter(raw: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse(word_timestamps=raw)
    assert "word_timestamps" in caught.value.message
    assert caught.value.details[0]["field"] == "word_timestamps"


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ({"model": ""}, "model"),
        ({"model": "   "}, "model"),
        ({"language": ""}, "language"),
        ({"diarize": "maybe"}, "diarize"),
        ({"redact_pii": "1"}, "redact_pii"),
        ({"keywords": "Hark:x"}, "keywords"),
        ({"webhook_url": "http://127.0.0.1/h", "webhook_method": "PUT"}, "webhook_method"),
        ({"webhook_url": "http://127.0.0.1/" + "a" * 3000}, "webhook_url"),
        ({"webhook_url": "http://127.0.0.1/h", "webhook_extra": "x" * 5000}, "webhook_extra"),
    ],
)  # fmt: skip
def test_errors_name_the_offending_parameter(args: dict[str, str], name: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse(**args)
    assert caught.value.name == name
    assert name in caught.value.message


def test_missing_model_and_language() -> None:
    with pytest.raises(ParamError, match="'model' is required"):
        parse_stt_params({"language": "en"})
    with pytest.raises(ParamError, match="'language' is required"):
        parse_stt_params({"model": "pulse"})


def test_legacy_path_defaults_the_model() -> None:
    assert parse_stt_params({"language": "en"}, model_required=False).model == "pulse"
    assert parse_stt_params({"language": "en", "model": ""}, model_required=False).model == "pulse"
    assert parse_stt_params({"language": "en", "model": "whisper-base"}, model_required=False).model == "whisper-base"


def test_model_is_passed_through_for_routing_to_judge() -> None:
    assert parse(model="whisper-9000").model == "whisper-9000"


def test_language_is_normalised_to_lower_case() -> None:
    assert parse(language="EN").language == "en"
    assert parse(language="multi-EU").language == "multi-eu"


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_options_are_refused_when_true(name: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse(**{name: "true"})
    assert caught.value.message.startswith(f"option {name} is not supported yet")
    assert caught.value.details[0]["supported"] is False


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_unsupported_options_are_accepted_when_false(name: str) -> None:
    parse(**{name: "false"})


def test_unknown_parameters_are_ignored() -> None:
    assert parse(sample_rate="16000", foo="bar", punctuate="yes").language == "en"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("Hark", [Keyword(word="Hark", boost=1.0)]),
        ("Hark:2,Kubernetes:1.5", [Keyword(word="Hark", boost=2.0), Keyword(word="Kubernetes", boost=1.5)]),
        (" Hark : 2 , pod ,", [Keyword(word="Hark", boost=2.0), Keyword(word="pod", boost=1.0)]),
        ("New York:10", [Keyword(word="New York", boost=10.0)]),
        ("tiny:0.01", [Keyword(word="tiny", boost=0.01)]),
    ],
)  # fmt: skip
def test_keywords(raw: str, expected: list[Keyword]) -> None:
    assert parse_keywords(raw) == expected


@pytest.mark.parametrize("raw", ["Hark:0", "Hark:-1", "Hark:10.5", "Hark:abc", "Hark:nan", "Hark:inf", ":2",
                                 "x" * 101])  # fmt: skip
def test_bad_keywords(raw: str) -> None:
    with pytest.raises(ParamError) as caught:
        parse_keywords(raw)
    assert caught.value.name == "keywords"


def test_too_many_keywords() -> None:
    with pytest.raises(ParamError, match="at most"):
        parse_keywords(",".join(f"w{i}" for i in range(MAX_KEYWORDS + 1)))


def test_webhook_target() -> None:
    params = parse(webhook_url="https://hooks.example.com/x", webhook_method="get", webhook_extra="order-42")
    assert params.is_async
    assert params.webhook == WebhookTarget(url="https://hooks.example.com/x", method="GET", extra="order-42")
    assert parse(webhook_url="http://127.0.0.1/h").webhook.method == "POST"
    assert parse(webhook_url="  ").webhook is None
    assert parse(webhook_method="GET").webhook is None  # a method alone does not make a request async


def test_the_table_is_the_single_source() -> None:
    names = [spec.name for spec in STT_PARAMS]
    assert len(names) == len(set(names))
    assert {"model", "language", "word_timestamps", "keywords", "webhook_url", *UNSUPPORTED} <= set(names)
    assert all(PARAMS_BY_NAME[name].unsupported for name in UNSUPPORTED)
    assert all(spec.description for spec in STT_PARAMS)
