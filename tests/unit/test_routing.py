"""hark.routing.choose: the routing table, without any I/O."""

from __future__ import annotations

import time

import pytest

from hark.languages import MULTI_GROUPS, WHISPER_LANGUAGES
from hark.routing import Route, RoutingError, choose, served_languages
from hark.schemas import CheckpointInfo, InstanceRecord

TINY_EN = CheckpointInfo(name="whisper-tiny-en", version="1.0.0", languages=["en"], multilingual=False)
BASE = CheckpointInfo(name="whisper-base", version="1.0.0", languages=list(WHISPER_LANGUAGES), multilingual=True)
BASE_HI = CheckpointInfo(name="whisper-base-hi", version="1.0.0", languages=["hi"], multilingual=False)
EU_ONLY = CheckpointInfo(name="eu", version="2", languages=["de", "fr"], multilingual=True)


def live(*checkpoints: CheckpointInfo, deployment: str = "dep") -> list[InstanceRecord]:
    now = time.time()
    return [
        InstanceRecord(deployment=deployment, worker_id=f"w{i}", host="h", pid=100 + i,
                       queue=f"hark.{deployment}.{c.name}", checkpoint=c, slots=4, started_at=now,
                       heartbeat_at=now)
        for i, c in enumerate(checkpoints)
    ]


def route(language: str, catalog: list[CheckpointInfo], alive: list[CheckpointInfo] | None = None,
          model: str = "pulse") -> Route:  # fmt: skip
    return choose(deployment="dep", model=model, language=language, catalog=catalog,
                  live=live(*(catalog if alive is None else alive)))  # fmt: skip


@pytest.mark.parametrize(
    ("language", "catalog", "expected"),
    [
        ("en", [TINY_EN, BASE], "whisper-tiny-en"),  # dedicated first
        ("en", [BASE, TINY_EN], "whisper-tiny-en"),  # whatever the catalog order
        ("de", [TINY_EN, BASE], "whisper-base"),  # multilingual fallback
        ("hi", [TINY_EN, BASE_HI, BASE], "whisper-base-hi"),
        ("hi", [TINY_EN, BASE], "whisper-base"),
        ("de", [TINY_EN, BASE_HI, BASE], "whisper-base"),
        ("en", [TINY_EN, BASE_HI, BASE], "whisper-tiny-en"),
        ("en", [BASE], "whisper-base"),
        ("en", [TINY_EN], "whisper-tiny-en"),
    ],
)
def test_language_routing(language: str, catalog: list[CheckpointInfo], expected: str) -> None:
    chosen = route(language, catalog)
    assert chosen.checkpoint.name == expected
    assert chosen.language == language
    assert chosen.detect_among is None
    assert chosen.live_instances == 1


def test_dedicated_checkpoint_without_live_worker_falls_back_to_a_live_multilingual_one() -> None:
    chosen = route("en", [TINY_EN, BASE], alive=[BASE])
    assert chosen.checkpoint.name == "whisper-base"


def test_multi_detects_on_a_multilingual_checkpoint() -> None:
    chosen = route("multi", [TINY_EN, BASE_HI, BASE])
    assert chosen.checkpoint.name == "whisper-base"
    assert chosen.language is None
    assert chosen.detect_among is None


@pytest.mark.parametrize("group", [g for g in MULTI_GROUPS if g != "multi"])
def test_multi_groups_restrict_detection_to_the_group(group: str) -> None:
    chosen = route(group, [TINY_EN, BASE])
    assert chosen.checkpoint.name == "whisper-base"
    assert chosen.language is None
    expected = sorted(set(MULTI_GROUPS[group] or ()) & set(WHISPER_LANGUAGES))
    assert chosen.detect_among == expected


def test_multi_group_picks_a_multilingual_checkpoint_that_covers_the_group() -> None:
    chosen = route("multi-eu", [EU_ONLY, BASE])
    assert chosen.checkpoint.name == "eu"
    assert chosen.detect_among == ["de", "fr"]
    with pytest.raises(RoutingError) as caught:
        route("multi-asian", [EU_ONLY, TINY_EN])
    assert caught.value.status == 400


def test_multi_without_a_multilingual_checkpoint_is_400() -> None:
    with pytest.raises(RoutingError) as caught:
        route("multi", [TINY_EN, BASE_HI])
    assert caught.value.status == 400
    assert "en" in caught.value.message and "hi" in caught.value.message


def test_pinning_a_checkpoint() -> None:
    chosen = route("en", [TINY_EN, BASE], model="whisper-base")
    assert chosen.checkpoint.name == "whisper-base" and chosen.language == "en"
    chosen = route("multi", [TINY_EN, BASE], model="whisper-base")
    assert chosen.checkpoint.name == "whisper-base" and chosen.language is None


def test_pinning_a_checkpoint_that_lacks_the_language_is_400() -> None:
    with pytest.raises(RoutingError) as caught:
        route("de", [TINY_EN, BASE], model="whisper-tiny-en")
    assert caught.value.status == 400
    assert "'de'" in caught.value.message and "served languages: en" in caught.value.message


def test_pinning_an_unknown_checkpoint_lists_the_allowed_models() -> None:
    with pytest.raises(RoutingError) as caught:
        route("en", [TINY_EN, BASE], model="whisper-large")
    assert caught.value.status == 400
    assert "whisper-large" in caught.value.message
    assert caught.value.details[0]["allowed"] == ["pulse", "pulse-pro", "whisper-base", "whisper-tiny-en"]


@pytest.mark.parametrize("language", ["xx", "zu", "qq"])
def test_unsupported_language_is_400_listing_served_languages(language: str) -> None:
    with pytest.raises(RoutingError) as caught:
        route(language, [TINY_EN, BASE_HI])
    error = caught.value
    assert error.status == 400
    assert f"{language!r}" in error.message
    assert "served languages: en, hi" in error.message
    assert error.details[0]["served_languages"] == ["en", "hi"]
    assert error.details[0]["field"] == "language"


def test_unsupported_language_mentions_detection_when_a_multilingual_checkpoint_exists() -> None:
    with pytest.raises(RoutingError) as caught:
        route("xx", [TINY_EN, BASE])
    assert "multi" in caught.value.message


@pytest.mark.parametrize("language", ["", "EN", "e", "english", "en-US", "12", "é"])
def test_malformed_language_is_400(language: str) -> None:
    with pytest.raises(RoutingError) as caught:
        route(language, [TINY_EN, BASE])
    assert caught.value.status == 400
    assert caught.value.details[0]["field"] == "language"


def test_no_live_worker_is_503() -> None:
    with pytest.raises(RoutingError) as caught:
        route("en", [TINY_EN, BASE], alive=[])
    assert caught.value.status == 503
    assert "whisper-tiny-en@1.0.0" in caught.value.message


def test_live_worker_of_another_checkpoint_is_not_enough() -> None:
    with pytest.raises(RoutingError) as caught:
        route("de", [TINY_EN, BASE], alive=[TINY_EN])
    assert caught.value.status == 503
    assert "whisper-base@1.0.0" in caught.value.message


def test_no_catalog_is_503() -> None:
    with pytest.raises(RoutingError) as caught:
        route("en", [], alive=[])
    assert caught.value.status == 503
    assert "dep" in caught.value.message


def test_live_count_counts_instances_of_the_chosen_checkpoint() -> None:
    chosen = choose(deployment="dep", model="pulse", language="en", catalog=[TINY_EN, BASE],
                    live=live(TINY_EN, TINY_EN, BASE))  # fmt: skip
    assert chosen.live_instances == 2


def test_served_languages_is_sorted_and_unique() -> None:
    assert served_languages([BASE_HI, TINY_EN, EU_ONLY, TINY_EN]) == ["de", "en", "fr", "hi"]
