"""The signed license format (hark.license) and `hark license keygen | issue | inspect`."""

from __future__ import annotations

import io
import json
import stat
import time
from pathlib import Path

import pytest

from hark.commands import license as license_cli
from hark.license import (
    PREFIX,
    LicenseExpired,
    LicenseMalformed,
    LicenseNotYetValid,
    LicenseTampered,
    LicenseUnknownKey,
    issue,
    new_private_key,
    public_key_text,
    trusted_keys,
    verify,
)

NOW = 1_800_000_000  # 2027-01-15
YEAR = 365 * 86400
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

SIGNER = new_private_key()
TRUSTED = trusted_keys([public_key_text(SIGNER.public_key())])


def make(**fields: object) -> str:
    values: dict[str, object] = {"customer": "Acme Calls", "expires_at": NOW + YEAR, "languages": ["en", "hi"],
                                 "deployments": ["en-pack"], "max_concurrent_streams": 4,
                                 "audio_hours_per_month": 100.0, "issued_at": NOW - 10, **fields}  # fmt: skip
    return issue(SIGNER, **values)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    lic = verify(make(), TRUSTED, now=NOW)
    assert (lic.customer, lic.languages, lic.deployments) == ("Acme Calls", ["en", "hi"], ["en-pack"])
    assert lic.limits == {"max_concurrent_streams": 4, "audio_hours_per_month": 100.0}
    assert lic.expires_at == NOW + YEAR and lic.issued_at == NOW - 10
    assert lic.allows_language("hi") and not lic.allows_language("de") and not lic.allows_deployment("de-pack")
    assert make().startswith(PREFIX + ".") and "\n" not in make() and len(make()) < 600  # copy-pasteable


def test_any_changed_character_of_payload_or_signature_is_refused_as_tampered() -> None:
    key = make()
    _, kid, _, _ = key.split(".")
    start = len(PREFIX) + 1 + len(kid) + 1  # payload and signature; the prefix and kid are tested below
    for position in range(start, len(key)):
        if key[position] == ".":
            continue
        replacement = B64URL[(B64URL.index(key[position]) + 1) % len(B64URL)]
        altered = key[:position] + replacement + key[position + 1:]
        with pytest.raises(LicenseTampered):
            verify(altered, TRUSTED, now=NOW)
    with pytest.raises(LicenseTampered):  # the version prefix is signed too
        verify("hark2" + key[len(PREFIX):], TRUSTED, now=NOW)


def test_altered_key_id_and_foreign_signer_are_unknown_keys() -> None:
    key = make()
    prefix, kid, payload, signature = key.split(".")
    other_kid = ("0" if kid[0] != "0" else "1") + kid[1:]
    with pytest.raises(LicenseUnknownKey, match="not a trusted key"):
        verify(".".join((prefix, other_kid, payload, signature)), TRUSTED, now=NOW)
    foreign = issue(new_private_key(), customer="x", expires_at=NOW + YEAR)
    with pytest.raises(LicenseUnknownKey, match="HARK_LICENSE_PUBLIC_KEYS"):
        verify(foreign, TRUSTED, now=NOW)
    with pytest.raises(LicenseUnknownKey):  # no trusted key at all
        verify(key, {}, now=NOW)


def test_expired_names_the_date_and_not_yet_valid_is_told_apart() -> None:
    key = make(expires_at=NOW - 1)
    with pytest.raises(LicenseExpired, match=r"expired on 2027-01-15T07:59:59Z"):
        verify(key, TRUSTED, now=NOW)
    future = make(not_before=NOW + 86400)
    with pytest.raises(LicenseNotYetValid, match="not valid before"):
        verify(future, TRUSTED, now=NOW)
    assert verify(future, TRUSTED, now=NOW + 86400).customer == "Acme Calls"


@pytest.mark.parametrize("text", ["", "hello", "hark1.abc.def", "hark1..x.y", "a.b.c.d.e", "x" * 9000])
def test_malformed(text: str) -> None:
    with pytest.raises(LicenseMalformed):
        verify(text, TRUSTED, now=NOW)


def test_public_key_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="32"):
        trusted_keys(["AAAA"])
    from hark.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="HARK_LICENSE_PUBLIC_KEYS"):
        load_settings(license_public_keys="not-a-key!")


def test_cli_keygen_issue_inspect(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    private = tmp_path / "vendor.pem"
    assert license_cli.main(["keygen", "--out", str(private)]) == 0
    public = capsys.readouterr().out.strip()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert license_cli.main(["keygen", "--out", str(private)]) == 2  # never overwritten silently
    capsys.readouterr()

    expires = time.strftime("%Y-%m-%d", time.gmtime(time.time() + YEAR))
    assert license_cli.main(["issue", "--private-key", str(private), "--customer", "Acme", "--expires", expires,
                             "--languages", "en,hi", "--deployments", "en-pack", "--max-streams", "3",
                             "--audio-hours", "50"]) == 0  # fmt: skip
    key = capsys.readouterr().out.strip()

    monkeypatch.setenv("HARK_LICENSE_PUBLIC_KEYS", public)
    monkeypatch.setattr("sys.stdin", io.StringIO(key + "\n"))
    assert license_cli.main(["inspect", "-"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["customer"] == "Acme" and shown["languages"] == ["en", "hi"] and shown["deployments"] == ["en-pack"]
    assert shown["limits"] == {"max_concurrent_streams": 3, "audio_hours_per_month": 50.0}
    assert shown["expires_at"] == f"{expires}T23:59:59Z"

    tampered = key[:-3] + ("A" if key[-3] != "A" else "B") + key[-2:]
    assert license_cli.main(["inspect", tampered]) == 4
    assert "REFUSED (bad_signature)" in capsys.readouterr().err
    monkeypatch.setenv("HARK_LICENSE_PUBLIC_KEYS", public_key_text(new_private_key().public_key()))
    assert license_cli.main(["inspect", key]) == 7
    assert license_cli.main(["inspect", "garbage"]) == 3
    monkeypatch.setenv("HARK_LICENSE_PUBLIC_KEYS", public)
    old = issue(license_cli.load_private_key(private.read_bytes()), customer="Acme", expires_at=int(time.time()) - 5)
    assert license_cli.main(["inspect", old]) == 5
    assert "expired on" in capsys.readouterr().err
