"""hark.webhook_policy (strict parsing and the SSRF allow-list, with an injected resolver),
hark.webhook_signature, and workers.webhooks.deliver against real HTTP servers on loopback, with the
job state on fakeredis and the Celery countdown replaced by a recording scheduler."""

from __future__ import annotations

import ipaddress
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import pytest

from hark.jobs import JobStore
from hark.queues import redis_key
from hark.schemas import JobFailure
from hark.webhook_policy import CheckedTarget, WebhookRefused, check_webhook_url, is_public
from hark.webhook_signature import SIGNATURE_HEADER, sign, verify_signature
from tests.receivers import Receiver, TrickleServer
from workers.webhook_http import TLSOptions
from workers.webhooks import DeliveryConfig, deliver, webhook_body

DNS = {
    "hooks.example.com": ["93.184.216.34"],
    "evil.example.com": ["127.0.0.1"],
    "meta.example.com": ["169.254.169.254"],
    "mixed.example.com": ["93.184.216.34", "10.0.0.5"],
    "cgnat.example.com": ["100.64.1.1"],
    "mapped.example.com": ["::ffff:127.0.0.1"],
    "sixtofour.example.com": ["2002:7f00:1::1"],
    "multicast.example.com": ["224.0.0.1"],
    "zero.example.com": ["0.0.0.0"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
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
        ("HTTPS://hooks.example.com", ["hooks.example.com"], True),
        ("https://hooks.example.com/x", ["other.example.com"], False),
        ("https://hooks.example.com/x", ["*.example.com"], True),
        ("https://v6.example.com/x", ["*.example.com"], True),
        ("https://example.com/x", ["*.example.com"], False),           # a wildcard is subdomains only
        ("https://evil.example.com/x", ["*.example.com"], False),      # DNS pointing inside
        ("https://meta.example.com/x", ["*.example.com"], False),
        ("https://mixed.example.com/x", ["*.example.com"], False),     # any internal address refuses
        ("https://mixed.example.com/x", ["*.example.com", "10.0.0.0/8"], True),
        ("https://cgnat.example.com/x", ["*.example.com"], False),     # 100.64.0.0/10 is not global
        ("https://mapped.example.com/x", ["*.example.com"], False),    # ::ffff:127.0.0.1
        ("https://sixtofour.example.com/x", ["*.example.com"], False),  # 2002:7f00:1:: embeds 127.0.0.1
        ("https://multicast.example.com/x", ["*.example.com"], False),
        ("https://zero.example.com/x", ["*.example.com"], False),
        ("https://evil.example.com/x", ["evil.example.com"], False),   # a listed name must still resolve public
        ("https://evil.example.com/x", ["evil.example.com", "127.0.0.1"], True),  # ...or to a listed address
        ("http://127.0.0.1:8080/hook", ["127.0.0.1"], True),           # a listed IP literal: the operator's call
        ("http://127.0.0.2/hook", ["127.0.0.0/8"], True),
        ("http://100.64.1.1/hook", ["127.0.0.1"], False),
        ("http://100.64.1.1/hook", ["100.64.0.0/10"], True),
        ("http://10.1.2.3/hook", ["127.0.0.1"], False),
        ("http://169.254.169.254/latest/meta-data", ["127.0.0.1", "*.example.com"], False),
        ("http://[::1]:9000/h", ["::1"], True),
        ("http://[::ffff:127.0.0.1]:9000/h", ["127.0.0.1"], True),
        ("http://internal.corp/h", ["10.0.0.0/8"], True),               # every address inside a listed CIDR
        ("http://localhost/h", ["127.0.0.1"], False),                   # ::1 is not listed
        ("http://localhost/h", ["localhost"], False),                   # loopback addresses are not listed
        ("http://localhost/h", ["localhost", "127.0.0.1", "::1"], True),
        ("http://unknown.example.com/h", ["*.example.com"], False),     # cannot resolve
        # syntax: one strict parser, refused whatever the allow-list says
        ("http://127.0.0.1:7188\\@hooks.example.com/hook", ["hooks.example.com", "127.0.0.1"], False),
        ("http://127.0.0.1:7188\\@hooks.example.com/hook", ["*.example.com"], False),
        ("http://user:pw@127.0.0.1/hook", ["127.0.0.1"], False),
        ("http://hooks.example.com@127.0.0.1/hook", ["127.0.0.1"], False),
        ("http://127.0.0.1/hook#@hooks.example.com", ["127.0.0.1"], False),
        ("http://127.0.0.1/h\u00f6ok", ["127.0.0.1"], False),
        ("http://hooks.ex\u0430mple.com/x", ["*.example.com"], False),  # Cyrillic a
        ("http://127.0.0.1/a b", ["127.0.0.1"], False),
        ("http://127.0.0.1/a%zz", ["127.0.0.1"], False),
        ("http://127.0.0.1/a\r\nX-Injected: 1", ["127.0.0.1"], False),
        ("http://127.0.0.1/a%20b?x=%C3%B6", ["127.0.0.1"], True),
        ("http://2130706433/", ["127.0.0.1"], False),                   # numeric forms a resolver would accept
        ("http://127.1/", ["127.0.0.1"], False),
        ("http://0x7f.0.0.1/", ["127.0.0.1"], False),
        ("http://[::1%25lo]/", ["::1"], False),
        ("http://bad_label-.example.com/", ["*.example.com"], False),
        ("http://127.0.0.1:0/x", ["127.0.0.1"], False),
        ("ftp://127.0.0.1/hook", ["127.0.0.1"], False),
        ("not a url", ["127.0.0.1"], False),
        ("http:///nohost", ["127.0.0.1"], False),
        ("http://127.0.0.1:99999/x", ["127.0.0.1"], False),
        ("http://127.0.0.1/hook", [], False),
    ],
)  # fmt: skip
def test_policy(url: str, entries: list[str], ok: bool) -> None:
    assert allowed(url, entries) is ok


@pytest.mark.parametrize(
    "address",
    ["100.64.1.1", "100.127.255.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254",
     "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.0.8", "192.0.2.1", "198.18.0.1",
     "::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1", "2002:a00:1::1", "64:ff9b::7f00:1",
     "2001:db8::1", "64:ff9b:1::a00:1", "3fff::1", "2001:2::1"],
)  # fmt: skip
def test_non_global_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


def test_public_addresses() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    assert is_public(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"))


def test_checked_target_is_what_the_connection_uses() -> None:
    target = check_webhook_url("https://Hooks.Example.com:8443/a/./b/../c?x=1&y=%2F", ["hooks.example.com"],
                               resolver=resolver)  # fmt: skip
    assert target == CheckedTarget("https", "hooks.example.com", 8443, "/a/c?x=1&y=%2F", ("93.184.216.34",))
    assert target.host_header == "hooks.example.com:8443" and target.origin == "https://hooks.example.com:8443"
    literal = check_webhook_url("http://[::1]/h", ["::1"])
    assert literal.addresses == ("::1",) and literal.is_ip_literal and literal.host_header == "[::1]"


def test_the_name_is_resolved_once_and_the_checked_address_kept() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    calls: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    target = check_webhook_url("https://hooks.example.com/x", ["hooks.example.com"], resolver=rebinding)
    assert target.addresses == ("93.184.216.34",) and calls == ["hooks.example.com"]


def test_policy_messages_say_what_is_wrong() -> None:
    with pytest.raises(WebhookRefused, match="HARK_WEBHOOK_ALLOWED_HOSTS"):
        check_webhook_url("http://127.0.0.1/x", [], resolver=resolver)
    with pytest.raises(WebhookRefused, match=r"internal address 127\.0\.0\.1"):
        check_webhook_url("https://evil.example.com/x", ["*.example.com"], resolver=resolver)
    with pytest.raises(WebhookRefused, match="backslash"):
        check_webhook_url("http://127.0.0.1:7188\\@hooks.example.com/", ["*.example.com"], resolver=resolver)
    with pytest.raises(WebhookRefused, match="userinfo"):
        check_webhook_url("http://u:p@127.0.0.1/", ["127.0.0.1"], resolver=resolver)
    with pytest.raises(WebhookRefused, match="fragment"):
        check_webhook_url("http://127.0.0.1/#x", ["127.0.0.1"], resolver=resolver)


def test_policy_uses_real_dns_by_default() -> None:
    check_webhook_url("http://localhost:1/x", ["localhost", "127.0.0.1", "::1"])
    with pytest.raises(ValueError):
        check_webhook_url("http://localhost:1/x", ["localhost"])
    with pytest.raises(ValueError):
        check_webhook_url("http://localhost:1/x", ["*.localhost"])


# --- signatures ------------------------------------------------------------------------------------


def test_signature_round_trip_and_refusals() -> None:
    body = b'{"request_id":"req_1"}'
    header = sign("s3cret", body, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature("s3cret", header, body, now=1_700_000_100)
    assert not verify_signature("s3cret", header, body + b" ", now=1_700_000_100)      # tampered body
    assert not verify_signature("other", header, body, now=1_700_000_100)              # wrong secret
    assert not verify_signature("s3cret", header, body, now=1_700_000_000 + 301)       # too old (replay)
    assert verify_signature("s3cret", header, body, tolerance=600, now=1_700_000_000 + 301)
    forged = header.replace("t=1700000000", "t=1700000200")                            # re-dated
    assert not verify_signature("s3cret", forged, body, now=1_700_000_200)
    for bad in (None, "", "v1=abc", "t=x,v1=abc", "t=1700000000", "t=1700000000,v1=\u00e9"):
        assert not verify_signature("s3cret", bad, body, now=1_700_000_000)
    assert not verify_signature("", header, body, now=1_700_000_000)
    with pytest.raises(ValueError):
        sign("", body)


# --- delivery ---------------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver().start()
    yield box
    box.close()


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


class Scheduled:
    """Stands in for the Celery countdown: records (attempt, countdown), runs nothing by itself."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, attempt: int, countdown: float) -> None:
        self.calls.append((attempt, countdown))


def _config(**kwargs: Any) -> DeliveryConfig:
    return DeliveryConfig(**{"allowed": ["127.0.0.1"], "retries": 3, "timeout": 5.0, **kwargs})


def _deliver(store: JobStore, attempt: int = 1, schedule: Callable[[int, float], None] | None = None,
             **kwargs: Any) -> str:  # fmt: skip
    return deliver(store, "req_1", None, config=_config(**kwargs), schedule=schedule or Scheduled(), attempt=attempt)


def _run_all(store: JobStore, **kwargs: Any) -> tuple[list[str], list[tuple[int, float]]]:
    """Run attempt 1 and every attempt it schedules, as the broker would (without waiting)."""
    scheduled = Scheduled()
    outcomes = [_deliver(store, 1, scheduled, **kwargs)]
    while len(scheduled.calls) >= len(outcomes):
        outcomes.append(_deliver(store, scheduled.calls[len(outcomes) - 1][0], scheduled, **kwargs))
    return outcomes, scheduled.calls


def test_post_with_extra_and_recorded(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url(), "method": "POST", "extra": "order-42"})
    assert _deliver(store) == "delivered"
    (call,) = receiver.calls
    assert call.method == "POST" and call.path == "/hook"
    assert json.loads(call.body) == {**RESULT, "webhook_extra": "order-42"}
    assert call.headers["Host"] == f"127.0.0.1:{receiver.port}"
    state = store.get("req_1") or {}
    assert state["status"] == "success" and state["webhook_status"] == "delivered" and state["webhook_attempts"] == 1
    assert 0 < store.redis.ttl(store.job_key("req_1")) <= 600, "recording must keep the expiry"
    assert _deliver(store) == "skipped", "a redelivered message must not call twice"
    assert _deliver(store, attempt=2) == "skipped"
    assert len(receiver.calls) == 1


def test_retries_are_scheduled_with_backoff_not_slept(store: JobStore, receiver: Receiver) -> None:
    receiver.status = lambda n: 503 if n <= 2 else 200
    _finished(store, {"url": receiver.url()})
    started = time.monotonic()
    outcomes, scheduled = _run_all(store, backoff_first=4.0)
    assert time.monotonic() - started < 3.0, "no attempt may wait for its backoff"
    assert outcomes == ["retrying", "retrying", "delivered"]
    assert scheduled == [(2, 4.0), (3, 8.0)]
    assert len(receiver.calls) == 3 and (store.get("req_1") or {})["webhook_attempts"] == 3


def test_retrying_is_recorded_between_attempts(store: JobStore, receiver: Receiver) -> None:
    receiver.status = lambda _n: 429
    _finished(store, {"url": receiver.url()})
    before = time.time()
    assert _deliver(store) == "retrying"
    state = store.get("req_1") or {}
    assert state["webhook_status"] == "retrying" and state["webhook_attempts"] == 1
    assert "HTTP 429" in state["webhook_error"] and state["webhook_next_attempt_at"] >= before + 1.0
    assert _deliver(store, attempt=1) == "skipped", "attempt 1 was made already"


def test_backoff_is_capped() -> None:
    config = _config(backoff_first=1.0, backoff_max=30.0)
    assert [config.backoff(n) for n in (1, 2, 3, 5, 6, 10)] == [1.0, 2.0, 4.0, 16.0, 30.0, 30.0]


def test_gives_up_after_the_retries(store: JobStore, receiver: Receiver) -> None:
    receiver.status = lambda _n: 503
    _finished(store, {"url": receiver.url()})
    outcomes, scheduled = _run_all(store, retries=2)
    state = store.get("req_1") or {}
    assert outcomes == ["retrying", "retrying", "failed"] and len(scheduled) == 2
    assert len(receiver.calls) == 3 and state["webhook_status"] == "failed" and "503" in state["webhook_error"]
    assert "webhook_next_attempt_at" not in state


def test_client_errors_and_redirects_are_not_retried(store: JobStore, receiver: Receiver) -> None:
    for status in (404, 302):
        receiver.calls.clear()
        receiver.status = lambda _n, s=status: s
        _finished(store, {"url": receiver.url()})
        outcomes, scheduled = _run_all(store)
        assert outcomes == ["failed"] and scheduled == [] and len(receiver.calls) == 1


def test_unreachable_receiver_is_retried(store: JobStore, receiver: Receiver) -> None:
    url = receiver.url()
    receiver.close()  # nothing listens there any more
    _finished(store, {"url": url})
    scheduled = Scheduled()
    assert _deliver(store, schedule=scheduled) == "retrying" and scheduled.calls == [(2, 1.0)]
    assert "cannot connect" in (store.get("req_1") or {})["webhook_error"]


def test_get_carries_the_answer_in_the_query(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url("/hook?token=abc"), "method": "GET", "extra": "e"})
    assert _deliver(store) == "delivered"
    path, _, raw_query = receiver.calls[0].path.partition("?")
    query = parse_qs(raw_query)
    assert path == "/hook" and query["token"] == ["abc"]
    assert query["request_id"] == ["req_1"] and query["status"] == ["success"] and query["webhook_extra"] == ["e"]
    assert json.loads(query["payload"][0])["transcription"] == "hello"


def test_calls_are_signed_with_an_idempotency_key(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url()})
    assert _deliver(store, secret="s3cret") == "delivered"
    call = receiver.calls[0]
    assert call.headers["Idempotency-Key"] == "req_1" and call.headers["X-Request-ID"] == "req_1"
    assert verify_signature("s3cret", call.headers[SIGNATURE_HEADER], call.body)
    stamp = int(call.headers[SIGNATURE_HEADER].split(",")[0].removeprefix("t="))
    assert abs(stamp - time.time()) < 10


def test_get_signs_the_query_string(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url("/hook?token=abc"), "method": "GET"})
    assert _deliver(store, secret="s3cret") == "delivered"
    call = receiver.calls[0]
    assert verify_signature("s3cret", call.headers[SIGNATURE_HEADER], urlsplit(call.path).query.encode())


def test_no_secret_no_signature(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url()})
    assert _deliver(store) == "delivered"
    assert SIGNATURE_HEADER not in receiver.calls[0].headers and receiver.calls[0].headers["Idempotency-Key"]


def test_target_no_longer_allowed_is_not_called(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url()})
    assert _deliver(store, allowed=["hooks.example.com"]) == "failed"
    assert receiver.calls == [] and "not allowed" in (store.get("req_1") or {})["webhook_error"]


@pytest.mark.parametrize("kind", ["backslash", "userinfo"])
def test_stored_smuggled_target_is_not_called(store: JobStore, receiver: Receiver, kind: str) -> None:
    url = {"backslash": f"http://127.0.0.1:{receiver.port}\\@localhost/hook",
           "userinfo": f"http://user:pw@127.0.0.1:{receiver.port}/hook"}[kind]  # fmt: skip
    _finished(store, {"url": url})
    outcomes, scheduled = _run_all(store, allowed=["127.0.0.1", "localhost", "::1"])
    assert outcomes == ["failed"] and scheduled == [] and receiver.calls == []
    assert kind in (store.get("req_1") or {})["webhook_error"]


def test_connects_to_the_checked_address_only() -> None:
    """DNS answers 127.0.0.2 (listed) at check time and 127.0.0.1 afterwards: only 127.0.0.2 is called."""
    checked = Receiver(host="127.0.0.2").start()
    victim = Receiver(host="127.0.0.1", port=checked.port).start()
    answers = iter([["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]])
    asked: list[str] = []

    def rebinding(host: str, _port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    store = JobStore(fakeredis.FakeRedis(), "dep", result_ttl=600, audio_ttl=60)
    try:
        _finished(store, {"url": f"http://hooks.test:{checked.port}/hook"})
        assert _deliver(store, allowed=["hooks.test", "127.0.0.2/32"], resolver=rebinding) == "delivered"
        assert asked == ["hooks.test"], "the name must be resolved once per attempt"
        assert len(checked.calls) == 1 and victim.calls == []
        assert checked.calls[0].headers["Host"] == f"hooks.test:{checked.port}"
    finally:
        checked.close()
        victim.close()


def test_rebinding_to_loopback_after_a_public_answer_never_reaches_loopback(store: JobStore,
                                                                            receiver: Receiver) -> None:  # fmt: skip
    """A public address first, 127.0.0.1 second: the attempt goes to the public address (unreachable here)."""
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    _finished(store, {"url": f"http://hooks.example.com:{receiver.port}/hook"})
    outcome = _deliver(store, allowed=["hooks.example.com"], resolver=lambda _h, _p: next(answers), timeout=1.0)
    assert outcome in ("retrying", "delivered")  # "delivered" only if that public host answered
    state = store.get("req_1") or {}
    assert receiver.calls == [], "the loopback listener must never be called"
    if outcome == "retrying":
        assert "hooks.example.com" in state["webhook_error"]


def test_trickling_receiver_is_cut_at_the_deadline(store: JobStore) -> None:
    trickle = TrickleServer()
    try:
        _finished(store, {"url": trickle.url()})
        started = time.monotonic()
        assert _deliver(store, timeout=1.5) == "retrying"
        elapsed = time.monotonic() - started
        assert elapsed < 1.5 + 1.0, f"the attempt took {elapsed:.1f} s"
        assert trickle.wait_closed(timeout=5)[0] < 1.5 + 1.0
        assert "deadline" in (store.get("req_1") or {})["webhook_error"]
    finally:
        trickle.close()


def test_claim_held_by_another_worker_skips(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url()})
    claim = redis_key("dep", "webhook-claim", "req_1")
    store.redis.set(claim, b"someone-else", ex=60)
    assert _deliver(store) == "skipped" and receiver.calls == []
    assert store.redis.get(claim) == b"someone-else", "another worker's claim must not be released"
    store.redis.delete(claim)
    assert _deliver(store) == "delivered" and store.redis.get(claim) is None, "the claim is released afterwards"


def test_failed_job_is_reported(store: JobStore, receiver: Receiver) -> None:
    _finished(store, {"url": receiver.url()}, result=None)
    assert _deliver(store) == "delivered"
    body = json.loads(receiver.calls[0].body)
    assert body["status"] == "failed" and body["request_id"] == "req_1" and body["error"] == "not audio"
    assert body["details"][0] == {"code": "invalid_audio", "http_status": 400}


def test_unfinished_or_unknown_jobs_are_skipped(store: JobStore, receiver: Receiver) -> None:
    assert _deliver(store) == "skipped"
    store.create("req_1", webhook={"url": receiver.url()})
    assert _deliver(store) == "skipped" and receiver.calls == []


def test_webhook_body_without_extra() -> None:
    assert "webhook_extra" not in webhook_body({"status": "success", "result": RESULT}, None)


# --- https: SNI and certificate checked against the name, connection to the checked address ---------


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("served_name", ["hooks.test", "other.test"])
def test_https_uses_sni_and_verifies_the_name(store: JobStore, tmp_path: Path, served_name: str) -> None:
    cert, key = _certificate(tmp_path, served_name)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Receiver(host="127.0.0.2", tls=context).start()
    try:
        _finished(store, {"url": f"https://hooks.test:{server.port}/hook"})
        outcome = _deliver(store, allowed=["hooks.test", "127.0.0.2"], resolver=lambda _h, _p: ["127.0.0.2"],
                           tls=TLSOptions(ca_certs=str(cert)))  # fmt: skip
        assert server.sni == ["hooks.test"]
        if served_name == "hooks.test":
            assert outcome == "delivered" and server.calls[0].headers["Host"] == f"hooks.test:{server.port}"
        else:
            assert outcome == "failed" and server.calls == []
            assert "certificate" in (store.get("req_1") or {})["webhook_error"]
    finally:
        server.close()
