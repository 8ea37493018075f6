"""The proxy's answer to "is deployment X licensed now?", from the license key, the clock and the usage.

The proxy verifies ``LICENSE_KEY`` on every check (an Ed25519 verification costs microseconds), so a
license that expires while the proxy runs is reported expired at once, without a restart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hark import usage
from hark.license import License, LicenseError, LicenseExpired, verify

#: Proxy ``status`` values.
VALID, EXPIRED, INVALID, OVER_LIMIT = "valid", "expired", "invalid", "over_limit"


class LicenseChecker:
    """Answers license checks for one license key.

    Args:
        key: ``LICENSE_KEY`` (may be empty: every check then says so).
        public_keys: Trusted key id -> public key.
        client: Redis, for this month's usage (audio-hours limit).
        clock: Unix time source (tests move it).
    """

    def __init__(self, key: str, public_keys: Mapping[str, Ed25519PublicKey], client: redis.Redis,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.key = key.strip()
        self.public_keys = dict(public_keys)
        self.redis = client
        self.clock = clock

    def license(self) -> License:
        """The verified license now.

        Raises:
            LicenseError: Missing, malformed, tampered, unknown key, not yet valid or expired.
        """
        if not self.key:
            raise LicenseError("LICENSE_KEY is not set on the license proxy; set it to the key you received")
        if not self.public_keys:
            raise LicenseError("no trusted public key is configured on the license proxy "
                               "(HARK_LICENSE_PUBLIC_KEYS is empty and this build has none)")  # fmt: skip
        return verify(self.key, self.public_keys, now=self.clock())

    def check(self, deployment: str | None = None) -> dict[str, Any]:
        """The ``GET /v1/license`` body for `deployment` (None: the license alone)."""
        now = self.clock()
        try:
            lic = self.license()
        except LicenseError as error:
            status = EXPIRED if isinstance(error, LicenseExpired) else INVALID
            return {"status": status, "code": error.code, "reason": error.message, "customer": None,
                    "expires_at": None, "languages": [], "deployments": [], "limits": {},
                    "checked_at": now}  # fmt: skip
        body: dict[str, Any] = {"status": VALID, "code": "ok", "reason": "", **lic.describe(),
                                "expires_at_unix": lic.expires_at, "checked_at": now}  # fmt: skip
        if deployment is not None and not lic.allows_deployment(deployment):
            body.update(status=INVALID, code="deployment_not_licensed",
                        reason=f"deployment {deployment!r} is not licensed (licensed: {', '.join(lic.deployments)})")
            return body
        if lic.audio_hours_per_month is not None:
            try:
                used = usage.month_seconds(self.redis, usage.month_of(now))
            except redis.RedisError as error:  # usage unknown: do not refuse a paying customer for it
                body["usage_error"] = f"usage could not be read from Redis ({type(error).__name__})"
                return body
            body["month_audio_seconds"] = used
            if used >= lic.audio_hours_per_month * 3600:
                body.update(status=OVER_LIMIT, code="audio_hours",
                            reason=f"this month's {used / 3600:.2f} audio hours reached the licensed "
                                   f"{lic.audio_hours_per_month:g} hours per month")  # fmt: skip
        return body
