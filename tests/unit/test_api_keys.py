"""hark.api_keys: the keys file format, HARK_API_KEYS names, lookup by digest; and their settings (pure logic)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest

from hark import api_keys
from hark.api_keys import KeyRing, KeysFileError, env_entries, hash_key, parse_env_keys, parse_keys_file
from hark.settings import ConfigError, load_settings

SECRET_A = "hark_" + "a" * 43
SECRET_B = "hark_" + "b" * 43


def line(name: str, key: str, created: str = "") -> str:
    text = f"{name}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"
    return f"{text}:{created}" if created else text


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("HARK_"):
            monkeypatch.delenv(name, raising=False)


def test_file_entries_with_comments_blank_lines_and_created_dates() -> None:
    text = f"# keys\n\n  {line('alice', SECRET_A, '2026-12-02T04:27:21Z')}\n# bob below\n{line('bob', SECRET_B)}\n"
    entries = parse_keys_file(text, "keys")
    assert [(e.name, e.created) for e in entries] == [("alice", "2026-12-02T04:27:21Z"), ("bob", None)]
    assert entries[0].digest == hash_key(SECRET_A)
    upper_hex = line("alice", SECRET_A).upper().replace("ALICE:SHA256", "alice:sha256")
    assert parse_keys_file(upper_hex, "k")[0].digest == hash_key(SECRET_A)


def test_every_malformed_line_is_reported_with_its_number_and_no_key_is_echoed() -> None:
    text = "\n".join([
        "# fine", line("alice", SECRET_A),
        SECRET_B,                                           # 3: a raw key pasted by mistake
        "bad name:sha256:" + "0" * 64,                      # 4
        "carol:md5:" + "0" * 32,                            # 5
        "dave:sha256:" + "0" * 63,                          # 6
        line("alice", SECRET_B),                            # 7: name used twice
        line("erin", SECRET_A),                             # 8: the same key as line 2
        line("frank", "x") + ":yesterday",                  # 9
    ])  # fmt: skip
    with pytest.raises(KeysFileError) as caught:
        parse_keys_file(text, "/etc/hark/keys")
    assert [number for number, _ in caught.value.problems] == [3, 4, 5, 6, 7, 8, 9]
    message = str(caught.value)
    assert message.startswith("HARK_API_KEYS_FILE /etc/hark/keys: line 3: expected NAME:sha256")
    assert "already used on line 2" in message and "same key as line 2" in message and "md5" in message
    assert SECRET_B not in message and hashlib.sha256(SECRET_A.encode()).hexdigest() not in message


def test_env_keys_get_names() -> None:
    assert parse_env_keys(" k-one , ci=sekrit-ci, k-two,, ") == [("key-1", "k-one"), ("ci", "sekrit-ci"),
                                                                   ("key-2", "k-two")]
    assert parse_env_keys("YWJjZA==,abc=def=") == [("key-1", "YWJjZA=="), ("abc", "def=")]  # padding stays bare
    with pytest.raises(ValueError, match="'ci' is used twice") as caught:
        parse_env_keys("ci=one,ci=two")
    assert "one" not in str(caught.value).replace("'ci' is used twice", "")


def test_ring_names_the_key_and_refuses_the_rest() -> None:
    ring = KeyRing(env_entries([("ci", SECRET_B)]) + parse_keys_file(line("alice", SECRET_A), "k"))
    assert ring.lookup(SECRET_A) == "alice" and ring.lookup(SECRET_B) == "ci"
    for other in ("", SECRET_A[:-1], SECRET_A + "x", SECRET_A.upper(), "clé-é"):
        assert ring.lookup(other) is None
    assert ring.names == ["alice", "ci"] and len(ring) == 2


def test_ring_compares_digests_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", counting)
    assert KeyRing(env_entries([("ci", SECRET_A)])).lookup(SECRET_A) == "ci"
    assert calls == [(hash_key(SECRET_A), hash_key(SECRET_A))]


def test_a_name_or_key_in_both_sources_is_refused() -> None:
    with pytest.raises(ValueError, match="'alice' is given both"):
        KeyRing(env_entries([("alice", SECRET_B)]) + parse_keys_file(line("alice", SECRET_A), "k"))
    with pytest.raises(ValueError, match="same key"):
        KeyRing(env_entries([("ci", SECRET_A)]) + parse_keys_file(line("alice", SECRET_A), "k"))


def test_settings_strip_names_and_keep_keys_out_of_repr() -> None:
    settings = load_settings(api_keys=f"ci={SECRET_A},{SECRET_B}")
    assert settings.api_key_list == [SECRET_A, SECRET_B]  # what clients (hark transcribe/stream) send
    assert settings.api_key_ring().names == ["ci", "key-1"]
    assert SECRET_A not in repr(settings)
    with pytest.raises(ConfigError, match=r"HARK_API_KEYS: .*'ci' is used twice"):
        load_settings(api_keys="ci=a,ci=b")


def test_a_keys_file_alone_requires_keys_and_is_checked_at_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# header\n{line('alice', SECRET_A)}\nnot a key line\n")
    settings = load_settings(api_keys_file=str(keys), api_host="0.0.0.0")
    assert settings.auth_required
    with pytest.raises(ConfigError, match=r"API keys: HARK_API_KEYS_FILE .*keys: line 3: expected"):
        settings.check_api_auth()
    keys.write_text(line("alice", SECRET_A) + "\n")
    settings.check_api_auth()
    assert load_settings(api_keys_file="").api_keys_file is None
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_settings(api_keys_file=str(tmp_path / "missing"), api_host="0.0.0.0").check_api_auth()
