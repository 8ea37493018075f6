"""Live-session helpers for the tests: raw audio for the socket, paced sending, and a recording client.

The client is the ``websockets`` library the SDK itself uses (sync API), so the wire seen here is
what SDK users see; the SDK's own helper is exercised in tests/e2e/test_streaming.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

LIVE_PATH = "/waves/v1/stt/live"


def raw_audio(source: Path, rate: int = 16000, encoding: str = "linear16") -> bytes:
    """`source` as headerless mono audio in a live-session `encoding` (sox does the conversion)."""
    kinds = {
        "linear16": ["-e", "signed-integer", "-b", "16", "-t", "raw"],
        "linear32": ["-e", "floating-point", "-b", "32", "-t", "raw"],
        "alaw": ["-e", "a-law", "-b", "8", "-t", "raw"],
        "mulaw": ["-e", "mu-law", "-b", "8", "-t", "raw"],
    }
    command = ["sox", str(source), "-r", str(rate), "-c", "1", *kinds[encoding], "-L", "-"]
    return subprocess.run(command, capture_output=True, check=True, timeout=60).stdout


def silence_pcm(seconds: float, rate: int = 16000) -> bytes:
    return bytes(int(seconds * rate) * 2)


def frames(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def handshake(base_url: str, query: dict[str, str], headers: dict[str, str] | None = None,
              path: str = LIVE_PATH) -> tuple[int, Any]:  # fmt: skip
    """A raw upgrade request: the HTTP status and the JSON body (text when not JSON) of the answer."""
    import requests

    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    url = base_url + path + "?" + urllib.parse.urlencode(query)
    response = requests.get(url, timeout=30, headers={**upgrade, **(headers or {})})
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def ws_url(base_url: str, path: str = LIVE_PATH, **params: object) -> str:
    query = {k: ("true" if v is True else "false" if v is False else str(v)) for k, v in params.items()}
    return base_url.replace("http://", "ws://") + path + ("?" + urllib.parse.urlencode(query) if query else "")


@dataclass
class Received:
    """Everything a session sent, with arrival times (``time.monotonic()``)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    close_code: int | None = None
    error: BaseException | None = None

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.of_type("transcription") if m.get("is_final")]

    @property
    def partials(self) -> list[dict[str, Any]]:
        return [m for m in self.of_type("transcription") if not m.get("is_final")]

    @property
    def final_text(self) -> str:
        return " ".join(m["transcript"] for m in self.finals if m["transcript"]).strip()


class LiveClient:
    """A live session over a real WebSocket, with a background reader recording every message."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, open_timeout: float = 30) -> None:
        self.connection: ClientConnection = connect(url, additional_headers=headers or {}, open_timeout=open_timeout,
                                                    max_size=2**20)  # fmt: skip
        self.received = Received()
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for raw in self.connection:
                self.received.messages.append(json.loads(raw))
                self.received.times.append(time.monotonic())
        except ConnectionClosed as closed:
            self.received.error = closed
        finally:
            self.received.close_code = self.connection.close_code

    def send_audio(self, data: bytes, frame_bytes: int = 3200, realtime_bytes_per_second: float | None = None,
                   speed: float = 1.0) -> None:  # fmt: skip
        """Send `data` in frames; paced at `speed` x real time when a byte rate is given."""
        start = time.monotonic()
        sent = 0
        for frame in frames(data, frame_bytes):
            self.connection.send(frame)
            sent += len(frame)
            if realtime_bytes_per_second:
                due = start + sent / realtime_bytes_per_second / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def control(self, kind: str) -> None:
        self.connection.send(json.dumps({"type": kind}))

    def send_text(self, text: str) -> None:
        self.connection.send(text)

    def wait_for(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        """The first message matching `predicate`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            messages = self.received.messages
            for message in messages[seen:]:
                if predicate(message):
                    return message
            seen = len(messages)
            if not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no matching message within {timeout} s; got {self.received.messages!r}")

    def wait_closed(self, timeout: float = 60) -> Received:
        self._reader.join(timeout)
        assert not self._reader.is_alive(), f"the session did not close within {timeout} s"
        return self.received

    def close(self) -> None:
        self.connection.close()
        self._reader.join(10)
