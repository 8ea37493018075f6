"""HTTP helpers and strict wire-contract checks for the end-to-end tests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jiwer
import requests

STT_PATH = "/waves/v1/stt/"
LEGACY_PATH = "/waves/v1/pulse/get_text"
JOBS_PATH = "/waves/v1/stt/jobs/"
TINY_EN = "whisper-tiny-en@1.0.0"
BASE = "whisper-base@1.0.0"
BASE_HI = "whisper-base-hi@1.0.0"

#: Generous client timeout: a request waits for a real model on a busy 2-core machine.
HTTP_TIMEOUT = 150


def post_audio(base_url: str, data: bytes | Path | Iterable[bytes] | None, *, path: str = STT_PATH,
               timeout: float = HTTP_TIMEOUT, headers: dict[str, str] | None = None,
               **params: object) -> requests.Response:  # fmt: skip
    """POST raw audio bytes (or a file's bytes, or a chunk iterator) with query parameters.

    Params default to ``model=pulse``; pass ``model=None`` to leave it out. Booleans become
    ``true``/``false`` strings as the SDK sends them.
    """
    query: dict[str, str] = {"model": "pulse"}
    for key, value in params.items():
        if value is None:
            query.pop(key, None)
        elif isinstance(value, bool):
            query[key] = "true" if value else "false"
        else:
            query[key] = str(value)
    body = data.read_bytes() if isinstance(data, Path) else data
    all_headers = {"Content-Type": "application/octet-stream", **(headers or {})}
    return requests.post(f"{base_url}{path}", params=query, data=body, headers=all_headers, timeout=timeout)


def normalize(text: str) -> str:
    """Lowercase, punctuation removed (apostrophes kept), single spaces."""
    text = re.sub(r"[^\w' ]+", " ", text.lower())
    return re.sub(r"\s+", " ", text).strip()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate after :func:`normalize`; an empty hypothesis is 1.0."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def assert_no_nulls(value: Any, where: str = "body") -> None:
    """The SDK mis-parses typed nulls: no key may hold None anywhere in the answer."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert item is not None, f"{where}.{key} is null"
            assert_no_nulls(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_no_nulls(item, f"{where}[{index}]")


def assert_success(response: requests.Response, *, deployment: str | None = None,
                   checkpoint: str | None = None, check_header: bool = True) -> dict[str, Any]:  # fmt: skip
    """A 200 transcription answer whose every field has the type the wire spec fixes."""
    assert response.status_code == 200, f"HTTP {response.status_code}: {response.text[:2000]}"
    assert response.headers.get("Content-Type", "").startswith("application/json")
    body = response.json()
    assert_no_nulls(body)
    assert body["status"] == "success", body
    for key in ("status", "transcription", "language", "request_id"):
        assert isinstance(body[key], str), f"{key} must be a string: {body[key]!r}"
    assert body["request_id"], "request_id must not be empty"
    if check_header:
        assert response.headers.get("X-Request-ID") == body["request_id"]
    meta = body["metadata"]
    for key in ("duration", "fileSize", "processing_time_ms", "rtfx"):
        assert _is_number(meta[key]), f"metadata.{key} must be a number: {meta[key]!r}"
    assert meta["duration"] >= 0 and meta["fileSize"] > 0 and meta["processing_time_ms"] >= 0
    assert isinstance(meta["deployment"], str) and isinstance(meta["checkpoint"], str)
    if deployment is not None:
        assert meta["deployment"] == deployment, meta
    if checkpoint is not None:
        assert meta["checkpoint"] == checkpoint, meta
    for word in body.get("words", []):
        assert isinstance(word["word"], str)
        for key in ("start", "end", "confidence"):
            assert _is_number(word[key]), f"words[].{key} must be a number: {word!r}"
        if "speaker" in word:
            assert isinstance(word["speaker"], str)
    for utterance in body.get("utterances", []):
        assert isinstance(utterance["text"], str)
        assert _is_number(utterance["start"]) and _is_number(utterance["end"])
        if "speaker" in utterance:
            assert isinstance(utterance["speaker"], str)
    return body


def assert_error(response: requests.Response, status: int, *mentions: str) -> dict[str, Any]:
    """The documented error body: `error` string, `request_id`, `details` list; no stack trace.

    Args:
        response: the HTTP answer.
        status: the expected HTTP status.
        *mentions: substrings (case-insensitive) the `error` message must contain.
    """
    text = response.text
    assert response.status_code == status, f"expected {status}, got {response.status_code}: {text[:2000]}"
    assert "Traceback" not in text and 'File "' not in text, f"stack trace leaked: {text[:2000]}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("request_id"), str) and body["request_id"], body
    assert isinstance(body.get("details"), list), body
    if response.headers.get("X-Request-ID") is not None:
        assert response.headers["X-Request-ID"] == body["request_id"]
    for mention in mentions:
        assert mention.lower() in body["error"].lower(), f"{mention!r} not in error {body['error']!r}"
    return body


def poll_job(base_url: str, request_id: str, *, until: Iterable[str] = ("success", "failed"),
             timeout: float = 120.0, interval: float = 0.2) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Poll ``GET /waves/v1/stt/jobs/<id>`` until its status is in `until`.

    Returns:
        The last body and the sequence of distinct statuses seen; while a job has not ended the
        status is written ``processing/<state>`` (``state`` is queued or processing).
    """
    wanted = set(until)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = requests.get(f"{base_url}{JOBS_PATH}{request_id}", timeout=10)
        assert answer.status_code in (200, 202), f"HTTP {answer.status_code}: {answer.text[:1000]}"
        body = answer.json()
        status = body.get("status")
        label = f"{status}/{body.get('state', '?')}" if status == "processing" else status
        if not seen or seen[-1] != label:
            seen.append(label)
        if status in wanted:
            return body, seen
        time.sleep(interval)
    raise AssertionError(f"job {request_id} did not reach {sorted(wanted)} in {timeout:.0f} s; seen {seen}: {body}")


def sdk_environment(base_url: str) -> Any:
    """The `smallestai` SDK's environment for a Hark API at `base_url`, as the wire spec shows."""
    from smallestai.environment import SmallestAIEnvironment

    return SmallestAIEnvironment(atoms=f"{base_url}/atoms/v1", waves=base_url,
                                 waves_ws=base_url.replace("http://", "ws://"), payment=base_url)  # fmt: skip
