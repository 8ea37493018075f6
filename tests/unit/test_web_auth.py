"""web.auth: bearer parsing and the constant-time key comparison (pure, no Redis)."""

from __future__ import annotations

import hmac

import pytest

from web import auth
from web.auth import bearer_token, key_matches

KEYS = ["alpha-key-1", "beta-key-2", "gamma-key-3"]


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("  Bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize("key", KEYS)
def test_every_configured_key_is_accepted(key: str) -> None:
    assert key_matches(key, KEYS)


@pytest.mark.parametrize("candidate", ["", "alpha", "alpha-key-1 ", "ALPHA-KEY-1", "delta", "alpha-key-1x"])
def test_other_strings_are_refused(candidate: str) -> None:
    assert not key_matches(candidate, KEYS)


def test_no_keys_matches_nothing() -> None:
    assert not key_matches("anything", [])


def test_non_ascii_candidates_do_not_crash() -> None:
    assert not key_matches("clé-é", KEYS)


@pytest.mark.parametrize("candidate", ["alpha-key-1", "gamma-key-3", "wrong"])
def test_comparison_does_not_stop_at_the_first_match(monkeypatch: pytest.MonkeyPatch, candidate: str) -> None:
    """Every key is compared with hmac.compare_digest whatever matches, so timing reveals nothing."""
    calls: list[bytes] = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return original(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    key_matches(candidate, KEYS)
    assert calls == [key.encode() for key in KEYS]
