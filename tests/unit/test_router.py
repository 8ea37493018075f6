"""hark.router / hark.route_map: map validation, routing by language, round-robin, failover, errors,
against tiny real HTTP upstreams that report which one was hit."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from hark.route_map import RouteMap, RouteMapError
from hark.router import Router, RouterError, UnroutedLanguage, UpstreamUnavailable
from hark.schemas import ProcessingResponse, TranscriptionResponse
from tests.upstreams import Upstream, refused_url, upstreams


@pytest.mark.parametrize(("routes", "mentions"), [
    ({"xx": "http://a:1"}, ["'xx'", "not a known language"]),
    ({"en": "ftp://a"}, ["'en'", "http"]),
    ({"en": "http://a:1/?k=1"}, ["'en'", "bare base URL"]),
    ({"de": []}, ["'de'", "non-empty list"]),
    ({"de": ["http://a:1", "http://a:1"]}, ["'de'", "twice"]),
    ({"en": "http://a:99999"}, ["'en'", "port"]),
    ({"*": "http://a:1", "default": "http://b:1"}, ["fallback"]),
    ({}, ["empty"]),
])  # fmt: skip
def test_invalid_maps_name_the_entry(routes: dict, mentions: list[str]) -> None:
    with pytest.raises(RouteMapError) as caught:
        RouteMap(routes)
    for mention in mentions:
        assert mention in str(caught.value)


def test_map_files_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "routes.yaml"
    yaml_file.write_text("en: http://en:7100/\nde: [http://eu-1:7100, http://eu-2:7100]\nfr: [http://eu-1:7100, "
                         "http://eu-2:7100]\n'*': http://multi:7100\n")  # fmt: skip
    routes = RouteMap.from_file(yaml_file)
    assert routes.routed_languages == ["de", "en", "fr", "*"]
    assert routes.deployment_for("de") is routes.deployment_for("fr")  # same replicas = one deployment
    assert routes.deployment_for("en").urls == ("http://en:7100",)
    assert routes.deployment_for("hi").urls == ("http://multi:7100",)  # fallback
    assert len(routes.deployments) == 3
    json_file = tmp_path / "routes.json"
    json_file.write_text(json.dumps({"hi": "http://hi:7100", "multi-indic": "http://hi:7100"}))
    assert RouteMap.from_file(json_file).routed_languages == ["hi", "multi-indic"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("en: http://en:7100\nzz: http://x:1\n")
    with pytest.raises(RouteMapError, match=r"bad\.yaml.*'zz'"):
        RouteMap.from_file(bad)
    with pytest.raises(RouteMapError, match="cannot read"):
        RouteMap.from_file(tmp_path / "missing.yaml")


def test_round_robin_is_even_across_threads() -> None:
    deployment = RouteMap({"en": ["http://a:1", "http://b:1", "http://c:1"]}).deployment_for("en")
    firsts: list[str] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(100):
            order = deployment.rotation()
            assert sorted(order) == ["http://a:1", "http://b:1", "http://c:1"]
            with lock:
                firsts.append(order[0])

    threads = [threading.Thread(target=take) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {url: firsts.count(url) for url in set(firsts)} == {"http://a:1": 200, "http://b:1": 200,
                                                               "http://c:1": 200}  # fmt: skip


def test_transcribe_routes_by_language_with_key_and_options() -> None:
    with upstreams(Upstream("en-pack"), Upstream("eu-pack", ["de", "fr"])) as (en, eu):
        router = Router({"en": en.url, "de": eu.url, "fr": eu.url}, api_key="k-123")
        answer = router.transcribe(b"RIFFaudio", "de", word_timestamps=True, keywords={"Hark": 2})
        assert isinstance(answer, TranscriptionResponse)
        assert answer.metadata.deployment == "eu-pack"
        assert router.transcribe(io.BytesIO(b"x"), "en").metadata.deployment == "en-pack"  # type: ignore[union-attr]
        queued = router.transcribe(b"x", "fr", webhook_url="https://hooks.example/a", api_key="other")
        assert isinstance(queued, ProcessingResponse) and queued.request_id.startswith("req_")
        with pytest.raises(UnroutedLanguage) as caught:
            router.transcribe(b"x", "hi")
        assert "'hi'" in str(caught.value) and "de, en, fr" in str(caught.value)
        with pytest.raises(TypeError, match="word_timestamp"):
            router.transcribe(b"x", "en", word_timestamp=True)
        assert router.url_for("en") == en.url
        router.close()
    first = eu.seen[0]
    assert (first.method, first.path, first.body) == ("POST", "/waves/v1/stt/", b"RIFFaudio")
    assert first.query == {"model": "pulse", "language": "de", "word_timestamps": "true", "keywords": "Hark:2"}
    assert first.headers["Authorization"] == "Bearer k-123"
    assert eu.seen[1].headers["Authorization"] == "Bearer other"
    assert [s.query["language"] for s in en.seen] == ["en"]


def test_failover_to_the_next_replica_then_a_clear_error() -> None:
    with upstreams(Upstream("busy", status=503), Upstream("ok"), Upstream("bad", status=400)) as (busy, ok, bad):
        router = Router({"en": [refused_url(), busy.url, ok.url], "de": [busy.url, refused_url()], "fr": bad.url})
        hits = [router.transcribe(io.BytesIO(b"0123456789"), "en").metadata.deployment  # type: ignore[union-attr]
                for _ in range(3)]  # fmt: skip
        assert hits == ["ok", "ok", "ok"]  # whichever replica is first in turn, the live one answers
        assert {s.body for s in ok.seen} == {b"0123456789"}  # the file was rewound after the 503 attempt
        with pytest.raises(UpstreamUnavailable) as caught:
            router.transcribe(b"x", "de")
        assert caught.value.status == 503
        with pytest.raises(RouterError) as refused:
            router.transcribe(b"x", "fr")
        assert refused.value.status == 400 and "bad says 400" in refused.value.body.error
        assert len(bad.seen) == 1  # a 400 is not retried elsewhere
