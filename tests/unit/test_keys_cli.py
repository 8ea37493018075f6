"""`hark keys add|list|remove`: a round trip on a real file, through `hark.cli` as operators run it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hark import cli
from hark.api_keys import KeyRing, read_keys_file


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["keys", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_list_remove_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    keys = tmp_path / "keys"
    code, alice_key, err = run(capsys, "add", "alice", "--file", str(keys))
    alice_key = alice_key.strip()
    assert code == 0 and alice_key.startswith("hark_") and len(alice_key) == 5 + 43 and "shown this once" in err
    monkeypatch.setenv("HARK_API_KEYS_FILE", str(keys))  # the default --file
    code, bob_key, _ = run(capsys, "add", "bob")
    bob_key = bob_key.strip()
    assert code == 0 and bob_key != alice_key
    assert (keys.stat().st_mode & 0o777) == 0o600
    text = keys.read_text()
    assert alice_key not in text and bob_key not in text  # hashed at rest
    ring = KeyRing(read_keys_file(keys)[0])
    assert ring.lookup(alice_key) == "alice" and ring.lookup(bob_key) == "bob"

    code, out, _ = run(capsys, "list")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "CREATED", "DIGEST"]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {"alice", "bob"}
    digest = hashlib.sha256(alice_key.encode()).hexdigest()
    assert rows["alice"][2] == f"sha256:{digest[:8]}..." and digest not in out and rows["alice"][1].startswith("20")

    assert run(capsys, "add", "alice")[0] == 1  # names are unique
    assert run(capsys, "add", "bad name")[0] == 1
    code, _, err = run(capsys, "remove", "alice")
    assert code == 0 and "removed key 'alice'" in err
    ring = KeyRing(read_keys_file(keys)[0])
    assert ring.lookup(alice_key) is None and ring.lookup(bob_key) == "bob"
    assert text.splitlines()[0].startswith("#") and keys.read_text().startswith(text.splitlines()[0])  # comments kept
    assert run(capsys, "remove", "alice")[0] == 1
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_a_malformed_file_is_never_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# mine\nalice:sha256:1234\n")
    code, out, err = run(capsys, "add", "bob", "--file", str(keys))
    assert code == 1 and out == "" and "line 2: the digest of key 'alice' must be 64 hexadecimal digits" in err
    assert keys.read_text() == "# mine\nalice:sha256:1234\n"


def test_no_file_configured_is_a_configuration_error(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("HARK_API_KEYS_FILE", raising=False)
    code, _, err = run(capsys, "list")
    assert code == 2 and "HARK_API_KEYS_FILE" in err
