"""Named API keys: the keys file (hashed at rest), ``HARK_API_KEYS`` entries, and lookup by digest.

The keys file (``HARK_API_KEYS_FILE``) holds one key per line; ``#`` comments and blank lines are allowed::

    # NAME:sha256:<64 hex digits of SHA-256(key)>[:<created, ISO 8601 UTC>]
    alice:sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08:2026-12-02T04:27:21Z

**Why plain SHA-256, not scrypt or argon2.** Slow password hashes protect *guessable* secrets from offline
guessing. Hark's keys are 32 random bytes (``hark keys add``: ``hark_`` + ``secrets.token_urlsafe(32)``, 256
bits): no guess is feasible whatever the hash's speed, so one SHA-256 is the standard choice (as GitHub and
Stripe tokens are stored), and it keeps the check of every request at a microsecond instead of handing a
client a way to spend the server's CPU. A leaked file reveals names, never keys.

**Timing.** A presented key is hashed, and the digest is looked up in a dict keyed by digest (then
compared with :func:`hmac.compare_digest`). The dict's comparisons run on the digest, which an attacker
cannot steer byte by byte, so the time taken says nothing about which key, or which prefix of one, is close.

Keys given in ``HARK_API_KEYS`` get names too: ``name=key`` entries, and bare keys named ``key-1``,
``key-2``... in order. Keys are never logged or printed after creation; names are.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

KEY_PREFIX = "hark_"
SCHEME = "sha256"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
#: Characters of a digest ``hark keys list`` shows (enough to tell entries apart, never the whole hash).
DIGEST_SHOWN = 8


class KeysFileError(ValueError):
    """The keys file cannot be used; ``problems`` holds ``(line number, what is wrong)`` (line 0: the file)."""

    def __init__(self, path: Path | str, problems: list[tuple[int, str]]) -> None:
        self.path = str(path)
        self.problems = problems
        where = "; ".join(f"line {line}: {text}" if line else text for line, text in problems)
        super().__init__(f"HARK_API_KEYS_FILE {self.path}: {where}")


@dataclass(frozen=True)
class KeyEntry:
    """One accepted key, known by its name and the SHA-256 digest of the key."""

    name: str
    digest: bytes
    created: str | None = None
    source: str = "file"  # "file" or "env"

    def line(self) -> str:
        """The entry as a keys-file line."""
        text = f"{self.name}:{SCHEME}:{self.digest.hex()}"
        return f"{text}:{self.created}" if self.created else text


def hash_key(key: str) -> bytes:
    """The SHA-256 digest of `key` (UTF-8), as stored in the keys file."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def generate_key() -> str:
    """A new key: ``hark_`` + 32 random bytes, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def now_stamp() -> str:
    """The current UTC time as stored in the ``created`` column (``2026-12-02T04:27:21Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_name(name: str) -> str | None:
    """What is wrong with `name` as a key name, or None."""
    if NAME_RE.match(name):
        return None
    return (f"key name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit")  # fmt: skip


def _parse_line(text: str) -> KeyEntry | str:
    """One non-comment line: the entry, or what is wrong with it (never echoing the line, it may hold a key)."""
    parts = text.split(":", 3)
    if len(parts) < 3:
        return "expected NAME:sha256:<64 hex digits>[:CREATED]"
    name, scheme, hexdigest = parts[0].strip(), parts[1].strip().lower(), parts[2].strip().lower()
    created = parts[3].strip() if len(parts) == 4 else None
    if problem := check_name(name):
        return problem
    if scheme != SCHEME:
        return f"unknown hash scheme {scheme[:16]!r} for key {name!r}; only sha256 is supported"
    if not _HEX_RE.match(hexdigest):
        return f"the digest of key {name!r} must be 64 hexadecimal digits (SHA-256)"
    if created:
        try:
            datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return f"the created date of key {name!r} is not an ISO 8601 date ({created[:32]!r})"
    return KeyEntry(name=name, digest=bytes.fromhex(hexdigest), created=created or None)


def parse_keys_file(text: str, path: Path | str) -> list[KeyEntry]:
    """Every entry of a keys file's `text`.

    Raises:
        KeysFileError: Every malformed line (with its number) and every name or key listed twice.
    """
    entries: list[KeyEntry] = []
    problems: list[tuple[int, str]] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parsed = _parse_line(line)
        if isinstance(parsed, str):
            problems.append((number, parsed))
            continue
        if parsed.name in names:
            problems.append((number, f"key name {parsed.name!r} is already used on line {names[parsed.name]}"))
            continue
        if parsed.digest in digests:
            problems.append((number, f"key {parsed.name!r} is the same key as line {digests[parsed.digest]}"))
            continue
        names[parsed.name] = digests[parsed.digest] = number
        entries.append(parsed)
    if problems:
        raise KeysFileError(path, problems)
    return entries


def read_keys_file(path: Path | str) -> tuple[list[KeyEntry], os.stat_result]:
    """Read and parse the keys file; also returns the ``fstat`` of exactly the file that was read.

    Raises:
        KeysFileError: Unreadable (line 0) or malformed.
    """
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            data = handle.read()
    except OSError as error:
        raise KeysFileError(path, [(0, f"cannot read the file: {error.strerror or error}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeysFileError(path, [(0, "the file is not UTF-8 text")]) from None
    return parse_keys_file(text, path), stat


def parse_env_keys(value: str) -> list[tuple[str, str]]:
    """``HARK_API_KEYS`` as ``(name, key)`` pairs: ``name=key`` entries, bare keys named ``key-1``, ``key-2``...

    An entry is read as ``name=key`` when the text before the first ``=`` is a valid name and a key follows
    (so base64 padding such as ``abc==`` stays a bare key).

    Raises:
        ValueError: A name is used twice (the message names it, never a key).
    """
    pairs: list[tuple[str, str]] = []
    bare = 0
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name, sep, key = item.partition("=")
        if sep and NAME_RE.match(name.strip()) and key.strip() and not key.startswith("="):
            pairs.append((name.strip(), key.strip()))
        else:
            bare += 1
            pairs.append((f"key-{bare}", item))
    seen: set[str] = set()
    for name, _ in pairs:
        if name in seen:
            raise ValueError(f"key name {name!r} is used twice")
        seen.add(name)
    return pairs


def env_entries(pairs: Iterable[tuple[str, str]]) -> list[KeyEntry]:
    """``HARK_API_KEYS`` pairs as entries (hashed: the ring holds no plain key)."""
    return [KeyEntry(name=name, digest=hash_key(key), source="env") for name, key in pairs]


class KeyRing:
    """An immutable set of accepted keys, looked up by the digest of the presented key."""

    def __init__(self, entries: Iterable[KeyEntry]) -> None:
        self._by_digest: dict[bytes, KeyEntry] = {}
        names: set[str] = set()
        for entry in entries:
            if entry.name in names:
                raise ValueError(f"key name {entry.name!r} is given both in HARK_API_KEYS and HARK_API_KEYS_FILE "
                                 "(or twice); names must be unique")  # fmt: skip
            if entry.digest in self._by_digest:
                other = self._by_digest[entry.digest].name
                raise ValueError(f"keys {other!r} and {entry.name!r} are the same key; each key needs one name")
            names.add(entry.name)
            self._by_digest[entry.digest] = entry

    def lookup(self, token: str) -> str | None:
        """The name of the key `token`, or None when it is not one of them."""
        digest = hash_key(token)
        entry = self._by_digest.get(digest)
        if entry is None or not hmac.compare_digest(entry.digest, digest):
            return None
        return entry.name

    @property
    def entries(self) -> list[KeyEntry]:
        return list(self._by_digest.values())

    @property
    def names(self) -> list[str]:
        return sorted(entry.name for entry in self._by_digest.values())

    def __len__(self) -> int:
        return len(self._by_digest)


def write_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text`: a 0600 temporary file in the same directory, fsynced, then renamed.

    A symlinked path (a Kubernetes secret volume's ``..data`` link) is replaced at its target, so the link
    survives. Readers see the old file or the new one, never half of one.
    """
    target = Path(os.path.realpath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
