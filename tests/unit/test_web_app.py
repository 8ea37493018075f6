"""The API's error answers through Flask's test client against a real Redis: the bad-input table,
routing errors (400/503), generic errors (404/405/500, Redis down) and bearer-key auth.

No worker runs: the registry is filled by hand with `hark.registry.announce`. Each test has its own
deployment name (the `deployment` fixture), so keys never collide and are deleted afterwards.
"""

from __future__ import annotations

import io
import json

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import EnvironBuilder, TestResponse
from werkzeug.wrappers import Request

from hark import registry
from tests.unit.web_helpers import (
    JOBS,
    LEGACY,
    MAX_UPLOAD,
    STT,
    TINY_EN,
    WAV,
    AppFactory,
    announce,
    assert_error,
    make_wav,
    post,
)

# --- bad input -----------------------------------------------------------------------------------


def test_empty_body(client: FlaskClient, live: None) -> None:
    assert_error(post(client, b""), 400, "empty")


@pytest.mark.parametrize(
    ("data", "mention"),
    [
        (bytes(range(256)) * 32, "not audio"),
        (b"hello, I am not a sound file\n" * 50, "not audio"),
        (WAV[:20], "not audio"),
        (make_wav(0.0), "empty"),
        (make_wav(1.5), "limit"),
    ],
    ids=["garbage", "text", "cut-header", "zero-length", "too-long"],
)  # fmt: skip
def test_bad_audio(client: FlaskClient, live: None, data: bytes, mention: str) -> None:
    assert_error(post(client, data), 400, mention)


def test_upload_over_the_limit_is_413(client: FlaskClient, live: None) -> None:
    body = assert_error(post(client, b"\0" * (MAX_UPLOAD + 1)), 413, "upload limit")
    assert body["details"] == [{"max_upload_bytes": MAX_UPLOAD}]


def _chunked(app: Flask, data: bytes, **query: str) -> TestResponse:
    builder = EnvironBuilder(path=STT, method="POST", query_string={"model": "pulse", "language": "en", **query},
                             input_stream=io.BytesIO(data), content_type="application/octet-stream")  # fmt: skip
    environ = builder.get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return app.test_client().open(Request(environ))


def test_chunked_upload_over_the_limit_is_413(app: Flask, live: None) -> None:
    assert_error(_chunked(app, b"\0" * (MAX_UPLOAD * 3)), 413)


def test_chunked_upload_under_the_limit_is_read(app: Flask, live: None) -> None:
    # Garbage under the limit: read in full (no 413) and refused by the probe.
    assert_error(_chunked(app, b"\1" * (MAX_UPLOAD // 2)), 400, "not audio")


@pytest.mark.parametrize(
    ("params", "mention"),
    [
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"model": "whisper-9000"}, "model"),
        ({"language": None}, "language"),
        ({"language": ""}, "language"),
        ({"language": "EN!"}, "language"),
        ({"word_timestamps": "yes"}, "word_timestamps"),
        ({"word_timestamps": "1"}, "word_timestamps"),
        ({"diarize": "maybe"}, "diarize"),
        ({"diarize": "true"}, "diarize"),
        ({"redact_pii": "true"}, "redact_pii"),
        ({"redact_pci": "true"}, "redact_pci"),
        ({"emotion_detection": "true"}, "emotion_detection"),
        ({"gender_detection": "true"}, "gender_detection"),
        ({"keywords": "Hark:99"}, "keywords"),
        ({"keywords": "Hark:abc"}, "keywords"),
        ({"webhook_url": "http://127.0.0.1:9/x", "webhook_method": "PUT"}, "webhook_method"),
        ({"webhook_url": "http://10.1.2.3/hook"}, "webhook"),
        ({"webhook_url": "http://example.com/hook"}, "webhook"),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data"}, "webhook"),
        ({"webhook_url": "ftp://127.0.0.1/hook"}, "webhook"),
        ({"webhook_url": "not a url"}, "webhook"),
    ],
)  # fmt: skip
def test_bad_parameters(client: FlaskClient, live: None, params: dict[str, str | None], mention: str) -> None:
    assert_error(post(client, **params), 400, mention)


def test_unknown_model_lists_the_allowed_ones(client: FlaskClient, live: None) -> None:
    body = assert_error(post(client, model="whisper-9000"), 400, "whisper-9000")
    assert "whisper-tiny-en" in body["error"] and "pulse" in body["error"]


def test_unsupported_language_lists_served_languages(client: FlaskClient, live: None) -> None:
    body = assert_error(post(client, language="xx"), 400, "xx", "served languages")
    assert body["details"][0]["served_languages"] == ["de", "en", "fr", "hi"]


def test_unimplemented_options_set_to_false_are_accepted(client: FlaskClient, live: None) -> None:
    flags = {name: "false" for name in ("diarize", "redact_pii", "redact_pci", "emotion_detection",
                                        "gender_detection")}  # fmt: skip
    answer = post(client, webhook_url="http://127.0.0.1:9/hook", **flags)
    assert answer.status_code == 200, answer.get_data(as_text=True)


def test_webhooks_refused_when_no_host_is_allowed(make_app: AppFactory, live: None) -> None:
    client = make_app(webhook_allowed_hosts="").test_client()
    assert_error(post(client, webhook_url="http://127.0.0.1/hook"), 400, "HARK_WEBHOOK_ALLOWED_HOSTS")


def test_legacy_path_validates_too(client: FlaskClient, live: None) -> None:
    assert_error(post(client, path=LEGACY, model=None, language="xx"), 400, "xx")
    assert_error(post(client, b"", path=LEGACY, model=None), 400, "empty")


# --- routing errors ------------------------------------------------------------------------------


def test_no_worker_ever_registered_is_503(client: FlaskClient) -> None:
    answer = post(client)
    assert_error(answer, 503, "no worker")
    assert answer.headers["Retry-After"] == "5"


def test_served_checkpoint_without_live_worker_is_503(client: FlaskClient, redis_client: redis.Redis,
                                                      deployment: str) -> None:  # fmt: skip
    announce(redis_client, deployment, TINY_EN)
    registry.withdraw(redis_client, deployment, "w1", TINY_EN.name)
    assert [c.name for c in registry.catalog(redis_client, deployment)] == [TINY_EN.name]
    answer = post(client)
    assert_error(answer, 503, "whisper-tiny-en@1.0.0", "retry")
    assert answer.headers["Retry-After"] == "5"
    # A language the catalog never served is still a 400, not a 503.
    assert_error(post(client, language="de"), 400, "de")


# --- generic errors ------------------------------------------------------------------------------


def test_unknown_route_is_json_404(client: FlaskClient) -> None:
    assert_error(client.get("/no/such/path"), 404, "/no/such/path")


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    answer = client.get(STT)
    assert_error(answer, 405, "POST")
    assert answer.headers["Allow"] == "POST"


def test_unexpected_exception_is_json_500_without_trace(app: Flask, client: FlaskClient, live: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    def explode(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr("web.stt.probe_audio", explode)
    body = assert_error(post(client), 500, "internal error")
    assert "secret" not in json.dumps(body)


def test_redis_down_is_503(make_app: AppFactory, live: None) -> None:
    client = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    answer = post(client)
    assert_error(answer, 503, "redis")
    assert answer.headers["Retry-After"] == "5"
    assert_error(client.get("/ready"), 503, "redis")
    assert client.get("/health").status_code == 200


def test_no_trailing_slash_is_served_without_redirect(client: FlaskClient, live: None) -> None:
    answer = client.post("/waves/v1/stt", query_string={"model": "pulse", "language": "xx"}, data=WAV)
    assert_error(answer, 400, "xx")


# --- auth ----------------------------------------------------------------------------------------


@pytest.fixture
def keyed_client(make_app: AppFactory) -> FlaskClient:
    return make_app(api_keys="k-one, k-two").test_client()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic azE6eA==", "Bearer ", "k-one"])
def test_bad_or_missing_key_is_401(keyed_client: FlaskClient, live: None, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    answer = post(keyed_client, headers=headers)
    assert_error(answer, 401, "API key")
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert_error(keyed_client.get(JOBS + "req_" + "0" * 24, headers=headers), 401)


@pytest.mark.parametrize("key", ["k-one", "k-two"])
def test_good_key_passes(keyed_client: FlaskClient, live: None, key: str) -> None:
    assert_error(post(keyed_client, language="xx", headers={"Authorization": f"Bearer {key}"}), 400, "xx")


def test_open_endpoints_need_no_key(keyed_client: FlaskClient, live: None) -> None:
    assert keyed_client.get("/health").status_code == 200
    assert keyed_client.get("/ready").status_code == 200
    assert keyed_client.get("/openapi.json").status_code == 200
