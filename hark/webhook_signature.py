"""The ``X-Hark-Signature`` header of webhook calls, and its check for receivers.

``X-Hark-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + signed bytes)>`` where the
signed bytes are the raw request body of a POST, or the exact query string (after ``?``) of a GET.
The timestamp is inside the MAC so a captured call cannot be replayed later than the receiver's
tolerance; ``Idempotency-Key`` (the request id) recognises a legitimate redelivery. Pure functions
with no Hark imports, so a receiver can copy this file.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Hark-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Default age (seconds) past which a signature is refused, either way (clock skew).
DEFAULT_TOLERANCE_SECONDS = 300.0


def _mac(secret: str, timestamp: int, signed: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + signed, hashlib.sha256).hexdigest()


def sign(secret: str, signed: bytes, timestamp: int | None = None) -> str:
    """The ``X-Hark-Signature`` value for `signed` (POST body, or GET query string).

    Args:
        secret: ``HARK_WEBHOOK_SECRET`` (must not be empty).
        signed: The exact bytes the receiver gets.
        timestamp: Unix seconds (default: now).

    Returns:
        ``t=<timestamp>,v1=<hex digest>``.
    """
    if not secret:
        raise ValueError("an empty secret signs nothing")
    stamp = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={stamp},v1={_mac(secret, stamp, signed)}"


def verify_signature(secret: str, header: str | None, body: bytes,
                     tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> bool:  # fmt: skip
    """Whether `header` is a valid, fresh signature of `body` under `secret` (constant-time compare).

    Args:
        secret: The shared secret (``HARK_WEBHOOK_SECRET`` of the sender).
        header: The received ``X-Hark-Signature`` value.
        body: The raw request body (POST) or the raw query string after ``?`` (GET), as received.
        tolerance: Largest accepted age (and clock skew) of the timestamp, in seconds.
        now: The current Unix time (default: ``time.time()``); for tests.

    Returns:
        True when one ``v1`` value matches and ``t`` is within `tolerance` of `now`.
    """
    if not secret or not header:
        return False
    stamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            stamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if stamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = _mac(secret, stamp, body).encode("ascii")
    return any(hmac.compare_digest(expected, c.encode("utf-8", "surrogateescape")) for c in candidates)
