"""Usage accounting: audio seconds per (month, deployment, language, API key name), in Redis.

Shared by every deployment (the license proxy reads it), so the keys are not per deployment:

- ``hark:usage:month:<YYYY-MM>``  hash, one field per (deployment, language, key name), UTC months
- ``hark:usage:total``            the same fields, all time

A field is the JSON list ``["<deployment>", "<language>", "<key name>"]`` and its value integer
milliseconds. Every addition is an ``HINCRBY`` on both hashes in one ``MULTI``: atomic in Redis, so
concurrent API processes and workers never lose an increment (no read-modify-write anywhere), and the
numbers survive API restarts. :func:`add` can join a caller's transaction, so a job's usage is counted
in the same ``EXEC`` that records its answer — exactly once.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

USAGE_PREFIX = "hark:usage"
TOTAL_KEY = f"{USAGE_PREFIX}:total"
#: The key name recorded when the API key has no name (or authentication is off).
DEFAULT_KEY_NAME = "default"
_MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def month_of(timestamp: float | None = None) -> str:
    """``YYYY-MM`` (UTC) of `timestamp` (default: now)."""
    return datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC).strftime("%Y-%m")


def check_month(text: str) -> str:
    """Raises ValueError unless `text` is ``YYYY-MM``."""
    if not _MONTH_RE.match(text):
        raise ValueError(f"month must look like 2026-12 (got {text[:20]!r})")
    return text


def month_key(month: str) -> str:
    return f"{USAGE_PREFIX}:month:{month}"


def field_name(deployment: str, language: str, key_name: str) -> str:
    return json.dumps([deployment, language or "unknown", key_name or DEFAULT_KEY_NAME], separators=(",", ":"))


def add(pipe: redis.client.Pipeline, deployment: str, language: str, key_name: str, milliseconds: int,
        timestamp: float | None = None) -> None:  # fmt: skip
    """Queue the increments on `pipe` (the caller executes it, typically inside its own MULTI)."""
    if milliseconds <= 0:
        return
    name = field_name(deployment, language, key_name)
    pipe.hincrby(month_key(month_of(timestamp)), name, milliseconds)
    pipe.hincrby(TOTAL_KEY, name, milliseconds)


def record(client: redis.Redis, deployment: str, language: str, key_name: str, seconds: float,
           timestamp: float | None = None) -> int:  # fmt: skip
    """Count `seconds` of audio now (one MULTI); returns the milliseconds added."""
    milliseconds = round(seconds * 1000)
    if milliseconds > 0:
        pipe = client.pipeline(transaction=True)
        add(pipe, deployment, language, key_name, milliseconds, timestamp)
        pipe.execute()
    return max(milliseconds, 0)


@dataclass(frozen=True)
class UsageRow:
    deployment: str
    language: str
    key_name: str
    milliseconds: int

    @property
    def seconds(self) -> float:
        return self.milliseconds / 1000

    def wire(self) -> dict[str, Any]:
        return {"deployment": self.deployment, "language": self.language, "key_name": self.key_name,
                "audio_seconds": self.seconds}  # fmt: skip


def read(client: redis.Redis, key: str) -> list[UsageRow]:
    """The rows of one usage hash, sorted; fields that are not ours are skipped."""
    rows = []
    for raw_field, raw_value in client.hgetall(key).items():
        try:
            deployment, language, key_name = json.loads(raw_field)
            rows.append(UsageRow(str(deployment), str(language), str(key_name), int(raw_value)))
        except (ValueError, TypeError):
            continue
    return sorted(rows, key=lambda r: (r.deployment, r.language, r.key_name))


def month_rows(client: redis.Redis, month: str) -> list[UsageRow]:
    return read(client, month_key(month))


def total_rows(client: redis.Redis) -> list[UsageRow]:
    return read(client, TOTAL_KEY)


def month_seconds(client: redis.Redis, month: str | None = None) -> float:
    """Audio seconds of every deployment in `month` (default: this month)."""
    return sum(r.milliseconds for r in month_rows(client, month or month_of())) / 1000


def report(client: redis.Redis, month: str | None = None) -> dict[str, Any]:
    """The ``/usage`` body: the month's rows and all-time rows, with their sums."""
    month = month or month_of()
    this_month, total = month_rows(client, month), total_rows(client)
    return {
        "month": month,
        "month_audio_seconds": sum(r.milliseconds for r in this_month) / 1000,
        "month_usage": [r.wire() for r in this_month],
        "total_audio_seconds": sum(r.milliseconds for r in total) / 1000,
        "total_usage": [r.wire() for r in total],
    }
