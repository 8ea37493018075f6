"""`/health`, `/ready` (from the worker registry) and `/openapi.json`, against a real Redis."""

from __future__ import annotations

import json
from typing import Any

import redis
from flask.testing import FlaskClient

from hark import registry
from tests.unit.web_helpers import (
    BASE,
    TINY_EN,
    AppFactory,
    announce,
    assert_error,
)

# --- health, readiness, OpenAPI ------------------------------------------------------------------


def test_health(client: FlaskClient) -> None:
    answer = client.get("/health")
    assert answer.status_code == 200 and answer.get_json() == {"status": "ok"}
    assert answer.headers["X-Request-ID"].startswith("req_")


def test_ready_without_worker_is_503(client: FlaskClient, deployment: str) -> None:
    answer = client.get("/ready")
    assert_error(answer, 503, deployment, "no worker")
    assert answer.headers["Retry-After"] == "5"


def test_ready_after_the_worker_left_names_what_it_served(client: FlaskClient, redis_client: redis.Redis,
                                                          deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN)
    registry.withdraw(redis_client, deployment, "w1", TINY_EN.name)
    assert_error(client.get("/ready"), 503, "no live worker", "whisper-tiny-en@1.0.0")


def test_ready_lists_workers_checkpoints_languages_and_slots(client: FlaskClient, redis_client: redis.Redis,
                                                             deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN, BASE, worker="w1", slots=3)
    announce(redis_client, deployment, TINY_EN, worker="w2", slots=3)
    answer = client.get("/ready")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["status"] == "ready" and body["deployment"] == deployment
    assert body["languages"] == ["de", "en", "fr", "hi"]
    assert body["total_slots"] == 9 and body["in_flight"] == 3
    assert [w["worker_id"] for w in body["workers"]] == ["w1", "w2"]
    w1 = body["workers"][0]
    assert [c["checkpoint"] for c in w1["checkpoints"]] == ["whisper-base@1.0.0", "whisper-tiny-en@1.0.0"]
    tiny = w1["checkpoints"][1]
    assert tiny["languages"] == ["en"] and tiny["multilingual"] is False and tiny["slots"] == 3
    assert tiny["in_flight"] == 1 and tiny["queue"] == f"hark.{deployment}.whisper-tiny-en"
    per_checkpoint = {c["checkpoint"]: c for c in body["checkpoints"]}
    assert per_checkpoint["whisper-tiny-en@1.0.0"]["workers"] == 2
    assert per_checkpoint["whisper-tiny-en@1.0.0"]["slots"] == 6


def test_ready_names_checkpoints_whose_workers_are_gone(client: FlaskClient, redis_client: redis.Redis,
                                                        deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN, BASE)
    assert client.get("/ready").get_json()["checkpoints_down"] == []
    registry.withdraw(redis_client, deployment, "w1", BASE.name)
    body = client.get("/ready").get_json()
    assert body["status"] == "ready" and body["languages"] == ["en"]
    assert [c["checkpoint"] for c in body["checkpoints"]] == ["whisper-tiny-en@1.0.0"]
    assert body["checkpoints_down"] == ["whisper-base@1.0.0"]


def test_openapi_document(client: FlaskClient) -> None:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    document = json.loads(answer.get_data(as_text=True))
    assert document["openapi"].startswith("3.1")
    assert {"/waves/v1/stt/", "/waves/v1/pulse/get_text", "/waves/v1/stt/jobs/{request_id}", "/health",
            "/ready"} <= set(document["paths"])  # fmt: skip
    schemas = document["components"]["schemas"]
    assert {"TranscriptionResponse", "ErrorBody", "Metadata", "Word"} <= set(schemas)
    assert "fileSize" in schemas["Metadata"]["properties"]
    stt = document["paths"]["/waves/v1/stt/"]["post"]
    names = {p["name"]: p for p in stt["parameters"]}
    assert names["model"]["required"] and names["language"]["required"]
    assert names["diarize"]["schema"]["type"] == "boolean"
    legacy = {p["name"]: p for p in document["paths"]["/waves/v1/pulse/get_text"]["post"]["parameters"]}
    assert legacy["model"]["required"] is False
    # Every $ref resolves inside the document.
    refs = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs and all(ref.split("/")[-1] in schemas for ref in refs), refs


# --- what /ready shows without a key -------------------------------------------------------------

def test_ready_without_a_key_shows_only_the_status(make_app: AppFactory, redis_client: redis.Redis,
                                                   deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN, BASE, worker="w1")
    client = make_app(api_keys="k-one").test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        answer = client.get("/ready", headers=headers)
        assert answer.status_code == 200
        assert answer.get_json() == {"status": "ready", "deployment": deployment}
        text = answer.get_data(as_text=True)
        assert "test-host" not in text and "4242" not in text and "w1" not in text and "hark." not in text
    full = client.get("/ready", headers={"Authorization": "Bearer k-one"}).get_json()
    assert full["workers"][0]["worker_id"] == "w1" and full["workers"][0]["host"] == "test-host"


def test_ready_503_without_a_key_names_no_checkpoint_nor_redis_address(make_app: AppFactory,
                                                                         redis_client: redis.Redis,
                                                                         deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN)
    registry.withdraw(redis_client, deployment, "w1", TINY_EN.name)
    client = make_app(api_keys="k-one").test_client()
    body = assert_error(client.get("/ready"), 503, "no live worker")
    assert "whisper" not in json.dumps(body)
    down = make_app(api_keys="k-one", redis_url="redis://127.0.0.1:1/0").test_client()
    body = assert_error(down.get("/ready"), 503, "Redis")
    assert "127.0.0.1" not in json.dumps(body) and ":1" not in body["error"]
    keyed = assert_error(down.get("/ready", headers={"Authorization": "Bearer k-one"}), 503, "Redis")
    assert "127.0.0.1" in keyed["error"] or "connect" in keyed["error"].lower()
