"""The signed license format: what a customer may run, signed by the vendor with Ed25519.

A license key is one copy-pasteable line of four dot-separated parts::

    hark1.<key id>.<base64url(JSON payload)>.<base64url(Ed25519 signature)>

The signature covers everything before the last dot (version, key id and payload, as the exact text),
so changing any character of them, or of the signature, is refused as tampered. The key id names the
vendor key that signed it (the first 12 hex characters of the SHA-256 of the raw public key); the
verifying side trusts the public keys in ``HARK_LICENSE_PUBLIC_KEYS`` (base64 raw 32-byte keys; a vendor
build sets :data:`VENDOR_PUBLIC_KEYS` as the default).

:func:`verify` returns the :class:`License` or raises one precise :class:`LicenseError` subclass:
malformed, bad signature (tampered), unknown key id, not yet valid, expired (with the date).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: Version prefix of the key format; part of the signed text.
PREFIX = "hark1"
#: Trusted public keys of an official build (base64 raw keys); the default of HARK_LICENSE_PUBLIC_KEYS.
VENDOR_PUBLIC_KEYS: tuple[str, ...] = ()
#: Any language / any deployment.
ANY = "*"
#: Clocks of the issuer and the proxy may differ by this much (seconds) before "not yet valid".
CLOCK_SKEW_SECONDS = 300
#: Longest accepted key text; a license is a few hundred characters.
MAX_KEY_CHARS = 8192


class LicenseError(ValueError):
    """A license key was refused; :attr:`code` says why (``malformed``, ``bad_signature``, ...)."""

    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LicenseMalformed(LicenseError):
    code = "malformed"


class LicenseTampered(LicenseError):
    code = "bad_signature"


class LicenseUnknownKey(LicenseError):
    code = "unknown_key"


class LicenseNotYetValid(LicenseError):
    code = "not_yet_valid"


class LicenseExpired(LicenseError):
    code = "expired"


@dataclass(frozen=True)
class License:
    """The signed payload: who, until when, what, how much.

    ``languages`` and ``deployments`` are lists of names, or ``["*"]`` for any. Times are Unix seconds (UTC).
    """

    customer: str
    issued_at: int
    not_before: int
    expires_at: int
    key_id: str
    languages: list[str] = field(default_factory=lambda: [ANY])
    deployments: list[str] = field(default_factory=lambda: [ANY])
    max_concurrent_streams: int | None = None
    audio_hours_per_month: float | None = None

    def allows_language(self, language: str) -> bool:
        return ANY in self.languages or language in self.languages

    def allows_deployment(self, deployment: str) -> bool:
        return ANY in self.deployments or deployment in self.deployments

    @property
    def limits(self) -> dict[str, int | float | None]:
        return {"max_concurrent_streams": self.max_concurrent_streams,
                "audio_hours_per_month": self.audio_hours_per_month}  # fmt: skip

    def payload(self) -> dict[str, Any]:
        """The JSON object that is signed (without the key id, which travels in its own part)."""
        data = asdict(self)
        data.pop("key_id")
        data["v"] = 1
        return data

    def describe(self) -> dict[str, Any]:
        """The fields for people and the proxy's answer: dates as ISO 8601 UTC."""
        return {"customer": self.customer, "key_id": self.key_id, "issued_at": iso(self.issued_at),
                "not_before": iso(self.not_before), "expires_at": iso(self.expires_at), "languages": self.languages,
                "deployments": self.deployments, "limits": self.limits}  # fmt: skip


def iso(timestamp: float) -> str:
    """Unix seconds as ``2027-12-31T23:59:59Z``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64url without padding: the text must be the canonical encoding of the bytes."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if _b64encode(data) != text:  # unused bits set, or characters outside the alphabet
        raise ValueError("not canonical base64url")
    return data


# --- keys -----------------------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in standard base64 (the form HARK_LICENSE_PUBLIC_KEYS takes)."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def key_id_of(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:12]


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A base64 (standard or url-safe, padded or not) raw Ed25519 public key.

    Raises:
        ValueError: Not 32 bytes of base64.
    """
    cleaned = text.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"public key {text[:16]!r}... is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"public key {text[:16]!r}... is {len(raw)} bytes; an Ed25519 public key is 32")
    return Ed25519PublicKey.from_public_bytes(raw)


def trusted_keys(texts: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key for each base64 key in `texts` (empty items skipped)."""
    keys = [parse_public_key(t) for t in texts if t.strip()]
    return {key_id_of(k): k for k in keys}


def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Raises ValueError when `pem` is not an unencrypted Ed25519 private key."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the private key is not an Ed25519 key (make one with `hark license keygen`)")
    return key


# --- encode / verify ------------------------------------------------------------------------------


def issue(private_key: Ed25519PrivateKey, *, customer: str, expires_at: int, languages: Sequence[str] = (ANY,),
          deployments: Sequence[str] = (ANY,), max_concurrent_streams: int | None = None,
          audio_hours_per_month: float | None = None, issued_at: int | None = None,
          not_before: int | None = None) -> str:  # fmt: skip
    """Sign a license and return its key text."""
    now = int(time.time()) if issued_at is None else issued_at
    lic = License(customer=customer, issued_at=now, not_before=now if not_before is None else not_before,
                  expires_at=expires_at, key_id=key_id_of(private_key.public_key()),
                  languages=sorted(set(languages)) or [ANY], deployments=sorted(set(deployments)) or [ANY],
                  max_concurrent_streams=max_concurrent_streams,
                  audio_hours_per_month=audio_hours_per_month)  # fmt: skip
    payload = json.dumps(lic.payload(), separators=(",", ":"), sort_keys=True).encode("utf-8")
    signed = f"{PREFIX}.{lic.key_id}.{_b64encode(payload)}"
    return f"{signed}.{_b64encode(private_key.sign(signed.encode('ascii')))}"


def _license_from(payload: Mapping[str, Any], key_id: str) -> License:
    def names(value: Any, what: str) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            raise LicenseMalformed(f"the license's {what} are not a list of names")
        return list(value)

    try:
        lic = License(customer=str(payload["customer"]), issued_at=int(payload["issued_at"]),
                      not_before=int(payload["not_before"]), expires_at=int(payload["expires_at"]), key_id=key_id,
                      languages=names(payload["languages"], "languages"),
                      deployments=names(payload["deployments"], "deployments"),
                      max_concurrent_streams=payload.get("max_concurrent_streams"),
                      audio_hours_per_month=payload.get("audio_hours_per_month"))  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, LicenseError):
            raise
        raise LicenseMalformed(f"the license payload lacks or garbles a field ({error})") from None
    streams, hours = lic.max_concurrent_streams, lic.audio_hours_per_month
    if streams is not None and (not isinstance(streams, int) or streams < 0):
        raise LicenseMalformed("max_concurrent_streams is not a whole number")
    if hours is not None and (not isinstance(hours, int | float) or hours < 0):
        raise LicenseMalformed("audio_hours_per_month is not a number")
    return lic


def verify(key: str, public_keys: Mapping[str, Ed25519PublicKey], now: float | None = None) -> License:
    """Check a license key against the trusted public keys and the clock.

    Args:
        key: The license text (surrounding whitespace ignored).
        public_keys: Key id -> trusted public key (:func:`trusted_keys`).
        now: Unix time to check validity at (default: the clock).

    Returns:
        The license, when it is genuine and valid now.

    Raises:
        LicenseMalformed: Not a ``hark1.<kid>.<payload>.<signature>`` line at all.
        LicenseUnknownKey: Signed by a key that is not trusted here (or its key id was altered).
        LicenseTampered: The signature does not match the text (any character changed).
        LicenseNotYetValid: Its ``not_before`` is in the future.
        LicenseExpired: Its ``expires_at`` has passed (the message carries the date).
    """
    text = key.strip()
    if not text:
        raise LicenseMalformed("the license key is empty")
    if len(text) > MAX_KEY_CHARS:
        raise LicenseMalformed(f"the license key is {len(text)} characters long; a license is a few hundred")
    parts = text.split(".")
    if len(parts) != 4 or not all(parts):
        raise LicenseMalformed(f"a license key looks like {PREFIX}.<key id>.<payload>.<signature>; this one has "
                               f"{len(parts)} dot-separated part(s)")  # fmt: skip
    _, key_id, payload_text, signature_text = parts
    public_key = public_keys.get(key_id)
    if public_key is None:
        trusted = ", ".join(sorted(public_keys)) or "none"
        raise LicenseUnknownKey(f"the license is signed by key id {key_id[:32]!r}, which is not a trusted key "
                                f"(trusted key ids: {trusted}; set HARK_LICENSE_PUBLIC_KEYS), or its key id "
                                "was altered")  # fmt: skip
    signed = text.rsplit(".", 1)[0].encode("ascii", errors="replace")
    try:
        public_key.verify(_b64decode(signature_text), signed)
        payload = json.loads(_b64decode(payload_text))
    except (InvalidSignature, ValueError):
        raise LicenseTampered("the license's signature does not match its contents: it was altered or "
                              "damaged when copied") from None  # fmt: skip
    if not isinstance(payload, dict) or payload.get("v") != 1 or parts[0] != PREFIX:
        raise LicenseMalformed(f"unsupported license version (this build reads {PREFIX}, payload v1)")
    lic = _license_from(payload, key_id)
    now = time.time() if now is None else now
    if now + CLOCK_SKEW_SECONDS < lic.not_before:
        raise LicenseNotYetValid(f"the license is not valid before {iso(lic.not_before)}")
    if now > lic.expires_at:
        raise LicenseExpired(f"the license expired on {iso(lic.expires_at)}")
    return lic


def parse_expiry(text: str) -> int:
    """``2027-12-31`` (valid through that day, UTC) or an ISO 8601 date-time -> Unix seconds.

    Raises:
        ValueError: Not a date.
    """
    value = text.strip()
    try:
        if len(value) == 10:
            day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
            return int(day.timestamp()) + 86400 - 1  # through the last second of that day
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2027-12-31) or date-time (2027-12-31T12:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def parse_start(text: str) -> int:
    """``2026-01-01`` (from the start of that day, UTC) or an ISO 8601 date-time -> Unix seconds."""
    value = text.strip()
    return parse_expiry(value) - 86400 + 1 if len(value) == 10 else parse_expiry(value)
