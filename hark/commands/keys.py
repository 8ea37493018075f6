"""``hark keys``: manage the API keys file (HARK_API_KEYS_FILE), whose keys are stored hashed.

    hark keys add NAME [--file F]      generate a key, store its SHA-256 under NAME, print the key once
    hark keys list [--file F]          names, created dates, a digest prefix (never a key or a whole hash)
    hark keys remove NAME [--file F]   delete the entry; running APIs stop accepting it within a second or two

``--file`` defaults to HARK_API_KEYS_FILE. The file is rewritten atomically (a 0600 temporary file renamed
over it, under a lock file beside it), so an API re-reading it sees the old or the new version, never half.
Comments and blank lines are kept. A malformed file is not rewritten: fix the lines named in the message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from filelock import FileLock

from hark.api_keys import (
    DIGEST_SHOWN,
    KeyEntry,
    KeysFileError,
    check_name,
    generate_key,
    hash_key,
    now_stamp,
    parse_keys_file,
    write_atomically,
)
from hark.settings import ConfigError, load_settings

#: Longest wait for another ``hark keys`` writing the same file.
LOCK_TIMEOUT_SECONDS = 10
HEADER = "# Hark API keys: NAME:sha256:<hex of SHA-256(key)>:CREATED (written by `hark keys`)\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hark keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("add", "generate a key and store it hashed under NAME"), ("list", "list the keys"),
                       ("remove", "delete the key called NAME")):  # fmt: skip
        sub = commands.add_parser(name, help=text)
        if name != "list":
            sub.add_argument("name", metavar="NAME")
        sub.add_argument("--file", type=Path, help="keys file (default HARK_API_KEYS_FILE)")
    return parser


def _keys_file(given: Path | None) -> Path:
    if given is not None:
        return given
    path = load_settings().api_keys_file
    if path is None:
        raise ConfigError("no keys file: pass --file FILE or set HARK_API_KEYS_FILE")
    return path


def _read(path: Path) -> tuple[str, list[KeyEntry]]:
    """The file's text and entries ("" and none when it does not exist yet)."""
    if not path.exists():
        return "", []
    text = path.read_text(encoding="utf-8")
    return text, parse_keys_file(text, path)


def add(path: Path, name: str) -> str:
    """Append a new key called `name` to `path`; returns the key (the only time it is ever shown).

    Raises:
        ValueError: A bad or already used name (KeysFileError: the file is malformed).
    """
    if problem := check_name(name):
        raise ValueError(problem)
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_SECONDS):
        text, entries = _read(path)
        if any(entry.name == name for entry in entries):
            raise ValueError(f"a key called {name!r} exists already; remove it first to replace it")
        key = generate_key()
        line = KeyEntry(name=name, digest=hash_key(key), created=now_stamp()).line()
        prefix = text if text else HEADER
        if prefix and not prefix.endswith("\n"):
            prefix += "\n"
        write_atomically(path, prefix + line + "\n")
    return key


def remove(path: Path, name: str) -> bool:
    """Delete the entry called `name` from `path`, keeping every other line; False when there is none.

    Raises:
        KeysFileError: The file is malformed.
    """
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_SECONDS):
        text, entries = _read(path)
        if not any(entry.name == name for entry in entries):
            return False
        kept = [line for line in text.splitlines(keepends=True)
                if line.strip().startswith("#") or line.split(":", 1)[0].strip() != name]  # fmt: skip
        write_atomically(path, "".join(kept))
    return True


def listing(path: Path) -> list[str]:
    """One line per key: name, created date, the first characters of its digest."""
    _, entries = _read(path)
    rows = [(entry.name, entry.created or "-", f"sha256:{entry.digest.hex()[:DIGEST_SHOWN]}...") for entry in entries]
    width = max([len("NAME")] + [len(row[0]) for row in rows])
    return [f"{'NAME':<{width}}  {'CREATED':<20}  DIGEST"] + [f"{n:<{width}}  {c:<20}  {d}" for n, c, d in rows]


def main(argv: list[str] | None = None) -> int:
    """Run ``hark keys``; 0 done, 1 refused (bad name, unknown key, malformed file), 2 configuration."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        path = _keys_file(args.file)
        if args.command == "add":
            key = add(path, args.name)
            print(f"added key {args.name!r} to {path}. It is shown this once; store it now:", file=sys.stderr)
            print(key)
        elif args.command == "remove":
            if not remove(path, args.name):
                print(f"no key called {args.name!r} in {path}", file=sys.stderr)
                return 1
            print(f"removed key {args.name!r} from {path}", file=sys.stderr)
        else:
            print("\n".join(listing(path)))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    except (KeysFileError, ValueError, OSError) as error:
        print(f"hark keys: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
