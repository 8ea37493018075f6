"""web.keyring: the keys file re-read on change (in place, atomic rename, Kubernetes symlink swap), at most
once per interval, keeping the previous keys when the new file is bad (real files, a controllable clock)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from hark.api_keys import KeyEntry, env_entries, hash_key, write_atomically
from web.keyring import LiveKeyRing


def entry(name: str, key: str) -> str:
    return KeyEntry(name=name, digest=hash_key(key)).line() + "\n"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def ring_on(path: Path, clock: Clock) -> LiveKeyRing:
    return LiveKeyRing(env_entries([("ci", "env-key")]), path, interval=1.0, clock=clock)


def test_a_change_is_seen_at_the_next_check_not_before(tmp_path: Path, clock: Clock) -> None:
    keys = tmp_path / "keys"
    keys.write_text(entry("alice", "key-a"))
    ring = ring_on(keys, clock)
    assert ring.lookup("key-a") == "alice" and ring.lookup("env-key") == "ci"
    write_atomically(keys, entry("bob", "key-b"))  # rotation: alice out, bob in (a new inode)
    clock.now += 0.5
    assert ring.lookup("key-a") == "alice"  # not looked at yet: at most one stat per interval
    clock.now += 0.5
    assert ring.lookup("key-a") is None and ring.lookup("key-b") == "bob" and ring.lookup("env-key") == "ci"
    assert (keys.stat().st_mode & 0o777) == 0o600


def test_an_in_place_rewrite_is_seen(tmp_path: Path, clock: Clock) -> None:
    keys = tmp_path / "keys"
    keys.write_text(entry("alice", "key-a"))
    ring = ring_on(keys, clock)
    inode = keys.stat().st_ino
    with keys.open("a") as handle:
        handle.write(entry("bob", "key-b"))
    assert keys.stat().st_ino == inode
    clock.now += 1
    assert ring.lookup("key-b") == "bob" and ring.lookup("key-a") == "alice"


def test_a_kubernetes_secret_symlink_swap_is_seen(tmp_path: Path, clock: Clock) -> None:
    """A secret volume: keys -> ..data/keys, ..data -> ..<timestamp>/; an update swaps ..data atomically."""
    first, second = tmp_path / "..2026_12_01", tmp_path / "..2026_12_02"
    first.mkdir()
    second.mkdir()
    (first / "keys").write_text(entry("alice", "key-a"))
    (second / "keys").write_text(entry("bob", "key-b"))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "keys").symlink_to("..data/keys")
    ring = ring_on(tmp_path / "keys", clock)
    assert ring.lookup("key-a") == "alice"
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    clock.now += 1
    assert ring.lookup("key-a") is None and ring.lookup("key-b") == "bob"


def test_a_bad_file_keeps_the_previous_keys_and_is_logged_once(tmp_path: Path, clock: Clock,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    keys = tmp_path / "keys"
    keys.write_text(entry("alice", "key-a"))
    ring = ring_on(keys, clock)
    write_atomically(keys, "# rotated\n" + entry("bob", "key-b") + "hark_pasted-raw-key\n")
    with caplog.at_level(logging.INFO, logger="web.keyring"):
        for _ in range(3):
            clock.now += 1
            assert ring.lookup("key-a") == "alice" and ring.lookup("key-b") is None
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "line 3: expected NAME:sha256" in errors[0] and "keeping the 2 key(s)" in errors[0]
    assert "hark_pasted-raw-key" not in caplog.text
    caplog.clear()
    write_atomically(keys, entry("bob", "key-b"))  # fixed
    with caplog.at_level(logging.INFO, logger="web.keyring"):
        clock.now += 1
        assert ring.lookup("key-b") == "bob" and ring.lookup("key-a") is None
    assert "added bob; removed alice" in caplog.text and "key-b" not in caplog.text


def test_a_missing_file_keeps_the_previous_keys(tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    keys = tmp_path / "keys"
    keys.write_text(entry("alice", "key-a"))
    ring = ring_on(keys, clock)
    keys.unlink()
    with caplog.at_level(logging.ERROR, logger="web.keyring"):
        clock.now += 1
        assert ring.lookup("key-a") == "alice"
        clock.now += 1
        assert ring.lookup("key-a") == "alice"
    assert len(caplog.records) == 1 and "cannot read the file" in caplog.text
    keys.write_text(entry("carol", "key-c"))
    clock.now += 1
    assert ring.lookup("key-c") == "carol" and ring.lookup("key-a") is None
