"""hark.webhook_policy (the SSRF allow-list, with an injected resolver) and workers.webhooks.deliver
against a real local HTTP server, with the job state on fakeredis."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import pytest

from hark.jobs import JobStore
from hark.schemas import JobFailure
from hark.webhook_policy import check_webhook_url
from workers.webhooks import deliver, webhook_body

DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "evil.example.com": ["127.0.0.1"],
    "meta.example.com": ["169.254.169.254"],
    "mixed.example.com": ["93.184.216.34", "10.0.0.5"],
    "internal.corp": ["10.1.2.3"],
    "localhost": ["127.0.0.1", "::1"],
}


def resolver(host: str, _port: int) -> list[str]:
    if host not in DNS:
        raise OSError("Name or service not known")
    return DNS[host]


def allowed(url: str, entries: list[str]) -> bool:
    try:
        check_webhook_url(url, entries, resolver=resolver)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("url", "entries", "ok"),
    [
        ("https://hooks.example.com/x", ["hooks.example.com"], True),
        ("https://HOOKS.example.com./x", ["hooks.example.com"], True),
        ("https://hooks.example.com/x", ["other.example.com"], False),
        ("https://hooks.example.com/x", ["*.example.com"], True),
        ("https://example.com/x", ["*.example.com"], False),           # a wildcard is subdomains only
        ("https://evil.example.com/x", ["*.example.com"], False),      # DNS pointing inside
        ("https://meta.example.com/x", ["*.example.com"], False),
        ("https://mixed.example.com/x", ["*.example.com"], False),     # any internal address refuses
        ("https://mixed.example.com/x", ["*.example.com", "10.0.0.0/8"], True),
        ("https://evil.example.com/x", ["evil.example.com"], True),    # listed exactly: the operator's call
        ("http://127.0.0.1:8080/hook", ["127.0.0.1"], True),
        ("http://127.0.0.2/hook", ["127.0.0.0/8"], True),
        ("http://10.1.2.3/hook", ["127.0.0.1"], False),
        ("http://169.254.169.254/latest/meta-data", ["127.0.0.1", "*.example.com"], False),
        ("http://[::1]:9000/h", ["::1"], True),
        ("http://internal.corp/h", ["10.0.0.0/8"], True),               # every address inside a listed CIDR
        ("http://localhost/h", ["127.0.0.1"], False),                   # ::1 is not listed
        ("http://localhost/h", ["localhost"], True),
        ("http://unknown.example.com/h", ["*.example.com"], False),     # cannot resolve
        ("ftp://127.0.0.1/hook", ["127.0.0.1"], False),
        ("not a url", ["127.0.0.1"], False),
        ("http:///nohost", ["127.0.0.1"], False),
        ("http://127.0.0.1:99999/x", ["127.0.0.1"], False),
        ("http://127.0.0.1/hook", [], False),
    ],
)  # fmt: skip
def test_policy(url: str, entries: list[str], ok: bool) -> None:
    assert allowed(url, entries) is ok


def test_policy_messages_say_what_to_set() -> None:
    with pytest.raises(ValueError, match="HARK_WEBHOOK_ALLOWED_HOSTS"):
        check_webhook_url("http://127.0.0.1/x", [], resolver=resolver)
    with pytest.raises(ValueError, match=r"internal address 127\.0\.0\.1"):
        check_webhook_url("https://evil.example.com/x", ["*.example.com"], resolver=resolver)


def test_policy_uses_real_dns_by_default() -> None:
    check_webhook_url("http://localhost:1/x", ["localhost"])
    with pytest.raises(ValueError):
        check_webhook_url("http://localhost:1/x", ["*.localhost"])


# --- delivery ---------------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    status_after: int = 200
    calls: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: Receiver

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            box.calls.append({"method": self.command, "path": self.path, "body": json.loads(raw) if raw else None})
            status = 503 if len(box.calls) <= box.fail_first else box.status_after
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET = _handle

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hook")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield box
    server.shutdown()
    server.server_close()


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), "dep", result_ttl=600, audio_ttl=60)


RESULT = {"status": "success", "transcription": "hello", "language": "en", "request_id": "req_1",
          "metadata": {"duration": 1.0}}  # fmt: skip


def _finished(store: JobStore, webhook: dict[str, Any], result: dict[str, Any] | None = RESULT) -> None:
    store.create("req_1", webhook=webhook)
    if result is None:
        store.fail("req_1", JobFailure(code="invalid_audio", message="not audio", http_status=400))
    else:
        store.complete("req_1", result)


def _deliver(store: JobStore, **kwargs: Any) -> str:
    options = {"allowed": ["127.0.0.1"], "retries": 3, "timeout": 5.0, "backoff_first": 0.01, **kwargs}
    return deliver(store, "req_1", None, **options)


def test_post_with_extra_and_recorded(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url, "method": "POST", "extra": "order-42"})
    assert _deliver(store) == "delivered"
    (call,) = receiver.calls
    assert call["method"] == "POST" and call["path"] == "/hook"
    assert call["body"] == {**RESULT, "webhook_extra": "order-42"}
    state = store.get("req_1") or {}
    assert state["status"] == "success" and state["webhook_status"] == "delivered" and state["webhook_attempts"] == 1
    assert 0 < store.redis.ttl(store.job_key("req_1")) <= 600, "recording must keep the expiry"
    assert _deliver(store) == "skipped", "a redelivered message must not call twice"


def test_retries_with_backoff(store: JobStore, receiver: Receiver) -> None:
    receiver.fail_first = 2
    _finished(store, {"url": receiver.url})
    assert _deliver(store) == "delivered"
    assert len(receiver.calls) == 3 and (store.get("req_1") or {})["webhook_attempts"] == 3


def test_gives_up_after_the_retries(store: JobStore, receiver: Receiver) -> None:
    receiver.fail_first = 100
    _finished(store, {"url": receiver.url})
    assert _deliver(store, retries=2) == "failed"
    state = store.get("req_1") or {}
    assert len(receiver.calls) == 3 and state["webhook_status"] == "failed" and "503" in state["webhook_error"]


def test_client_errors_are_not_retried(store: JobStore, receiver: Receiver) -> None:
    receiver.status_after = 404
    _finished(store, {"url": receiver.url})
    assert _deliver(store) == "failed" and len(receiver.calls) == 1


def test_get_carries_the_answer_in_the_query(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url, "method": "GET", "extra": "e"})
    assert _deliver(store) == "delivered"
    query = parse_qs(urlsplit(receiver.calls[0]["path"]).query)
    assert query["request_id"] == ["req_1"] and query["status"] == ["success"] and query["webhook_extra"] == ["e"]
    assert json.loads(query["payload"][0])["transcription"] == "hello"


def test_target_no_longer_allowed_is_not_called(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url})
    assert _deliver(store, allowed=["hooks.example.com"]) == "failed"
    assert receiver.calls == [] and "not allowed" in (store.get("req_1") or {})["webhook_error"]


def test_failed_job_is_reported(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url}, result=None)
    assert _deliver(store) == "delivered"
    body = receiver.calls[0]["body"]
    assert body["status"] == "failed" and body["request_id"] == "req_1" and body["error"] == "not audio"
    assert body["details"][0] == {"code": "invalid_audio", "http_status": 400}


def test_unfinished_or_unknown_jobs_are_skipped(store: JobStore, receiver: Receiver) -> None:
    assert _deliver(store) == "skipped"
    store.create("req_1", webhook={"url": receiver.url})
    assert _deliver(store) == "skipped" and receiver.calls == []


def test_webhook_body_without_extra() -> None:
    assert "webhook_extra" not in webhook_body({"status": "success", "result": RESULT}, None)
