"""``hark license``: make signing keys, issue licenses, inspect them (vendor and operator tool).

    hark license keygen [--out FILE] [--force]
    hark license issue --private-key FILE --customer NAME --expires 2027-12-31 [--languages en,hi]
                       [--deployments en-pack,...] [--max-streams N] [--audio-hours N] [--not-before DATE]
    hark license inspect KEY|-

``inspect`` checks the key against HARK_LICENSE_PUBLIC_KEYS (or ``--public-key``) and exits with
0 valid, 3 malformed, 4 bad signature (tampered), 5 expired, 6 not yet valid, 7 unknown key id.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path

from hark.license import (
    LicenseError,
    iso,
    issue,
    key_id_of,
    load_private_key,
    new_private_key,
    parse_expiry,
    parse_start,
    private_key_pem,
    public_key_text,
    trusted_keys,
    verify,
)
from hark.settings import ConfigError, load_settings

EXIT_CODES = {"malformed": 3, "bad_signature": 4, "expired": 5, "not_yet_valid": 6, "unknown_key": 7}


def _names(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()] or ["*"]


def keygen(args: argparse.Namespace) -> int:
    path = Path(args.out)
    if path.exists() and not args.force:
        print(f"{path} exists; pass --force to replace it (licenses signed with the old key stop verifying "
              "once its public key is removed)", file=sys.stderr)  # fmt: skip
        return 2
    key = new_private_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_key_pem(key))
    os.chmod(path, 0o600)
    public = public_key_text(key.public_key())
    print(f"private key written to {path} (mode 0600): keep it secret, it signs licenses", file=sys.stderr)
    print(f"key id: {key_id_of(key.public_key())}", file=sys.stderr)
    print(f"trust it with HARK_LICENSE_PUBLIC_KEYS={public}", file=sys.stderr)
    print(public)
    return 0


def issue_command(args: argparse.Namespace) -> int:
    try:
        private = load_private_key(Path(args.private_key).read_bytes())
        expires_at = parse_expiry(args.expires)
        not_before = parse_start(args.not_before) if args.not_before else None
    except (OSError, ValueError) as error:
        print(f"cannot issue: {error}", file=sys.stderr)
        return 2
    key = issue(private, customer=args.customer, expires_at=expires_at, languages=_names(args.languages),
                deployments=_names(args.deployments), max_concurrent_streams=args.max_streams,
                audio_hours_per_month=args.audio_hours, not_before=not_before)  # fmt: skip
    print(f"license for {args.customer!r} valid until {iso(expires_at)}", file=sys.stderr)
    print(key)
    return 0


def inspect_command(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.key == "-" else args.key
    try:
        keys = args.public_key or load_settings().license_public_key_list
        public_keys = trusted_keys(keys)
    except (ConfigError, ValueError) as error:
        print(f"cannot read the trusted public keys: {error}", file=sys.stderr)
        return 2
    fields = _unverified_fields(text)
    try:
        lic = verify(text, public_keys)
    except LicenseError as error:
        if fields:
            print(json.dumps(fields, indent=2))
        print(f"REFUSED ({error.code}): {error.message}", file=sys.stderr)
        return EXIT_CODES.get(error.code, 1)
    print(json.dumps(lic.describe(), indent=2))
    print(f"VALID: signature checks out against key {lic.key_id}; expires {iso(lic.expires_at)}", file=sys.stderr)
    return 0


def _unverified_fields(text: str) -> dict[str, object] | None:
    """What the key claims, before any check (shown next to a refusal, marked unverified)."""
    parts = text.strip().split(".")
    if len(parts) != 4:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return {"unverified": True, "key_id": parts[1], **payload}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hark license", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="action", required=True)
    gen = sub.add_parser("keygen", help="make an Ed25519 signing key (private file 0600, public key printed)")
    gen.add_argument("--out", default="hark-license-signing.pem", help="private key file to write")
    gen.add_argument("--force", action="store_true", help="replace an existing file")
    gen.set_defaults(run=keygen)
    iss = sub.add_parser("issue", help="sign a license and print its key")
    iss.add_argument("--private-key", required=True, help="the signing key file from `hark license keygen`")
    iss.add_argument("--customer", required=True)
    iss.add_argument("--expires", required=True, help="last valid day (2027-12-31, UTC) or an ISO date-time")
    iss.add_argument("--languages", default="*", help="comma-separated ISO 639-1 codes, or * (default)")
    iss.add_argument("--deployments", default="*", help="comma-separated deployment names, or * (default)")
    iss.add_argument("--max-streams", type=int, help="max_concurrent_streams across all deployments")
    iss.add_argument("--audio-hours", type=float, help="audio_hours_per_month across all deployments")
    iss.add_argument("--not-before", help="first valid day or date-time (default: now)")
    iss.set_defaults(run=issue_command)
    ins = sub.add_parser("inspect", help="print a license's fields and check it (exit status says the outcome)")
    ins.add_argument("key", help="the license key, or - to read it from stdin")
    ins.add_argument("--public-key", action="append", help="trust this base64 key (default HARK_LICENSE_PUBLIC_KEYS)")
    ins.set_defaults(run=inspect_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return int(args.run(args))
