"""hark checkpoints: build, fetch, list and verify checkpoints.

    hark checkpoints bundle                      build the bundled defaults, print their MODEL_URL
    hark checkpoints pack DIR -o FILE --name N --version V --languages en,hi
    hark checkpoints pull [URL...]               fetch into the cache (pre-warm); default: MODEL_URL
    hark checkpoints ls                          list the cache (sizes, last use, in use by live workers)
    hark checkpoints verify [NAME[@VERSION]|DIR] [--full]
    hark checkpoints evict NAME[@VERSION] [--force]

The cache is MODEL_CACHE_DIR (default ~/.cache/hark/checkpoints); --cache-dir overrides it. Downloads
follow MODEL_DOWNLOAD_WORKERS / _RESUME / _RETRIES / _TIMEOUT and MODEL_CACHE_MAX_SIZE / _EVICTION.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from checkpoints import leases, space
from checkpoints.bundled import build_bundled, bundled_model_urls
from checkpoints.cache import CachedCheckpoint, find_cached, list_cached
from checkpoints.entries import Entry, normalize_checksum
from checkpoints.errors import CheckpointError
from checkpoints.manifest import load_manifest
from checkpoints.options import FetchOptions
from checkpoints.pack import pack
from checkpoints.progress import human_size
from checkpoints.resolve import configured_entries, per_entry, resolve_entries
from checkpoints.verify import source_checksum, verify_checkpoint
from hark.settings import ConfigError, Settings, get_settings, split_per_checkpoint

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=argparse.SUPPRESS,
                        help="checkpoint cache directory (default: MODEL_CACHE_DIR)")  # fmt: skip
    parser = argparse.ArgumentParser(prog="hark checkpoints", description=__doc__, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bundle = sub.add_parser("bundle", parents=[common], help="build the bundled default checkpoints")
    bundle.add_argument("--force", action="store_true", help="rebuild even when a verified copy exists")

    pk = sub.add_parser("pack", parents=[common], help="build a checkpoint from a model directory")
    pk.add_argument("model_dir", type=Path, metavar="DIR", help="faster-whisper model directory")
    pk.add_argument("-o", "--output", type=Path, required=True,
                    help="FILE.tar, FILE.tar.gz / .tgz, or a new directory")  # fmt: skip
    pk.add_argument("--name", help="checkpoint name (lowercase letters, digits, . _ -)")
    pk.add_argument("--version", help="checkpoint version, e.g. 1.0.0")
    pk.add_argument("--languages", help="comma-separated ISO 639-1 codes, e.g. en,hi")
    pk.add_argument("--multilingual", action=argparse.BooleanOptionalAction, default=None,
                    help="the model detects languages (default: more than one language listed)")  # fmt: skip
    pk.add_argument("--compute-type", help="default CTranslate2 compute type (default int8)")

    pull = sub.add_parser("pull", parents=[common], help="fetch checkpoints into the cache (pre-warm)")
    pull.add_argument("urls", nargs="*", metavar="URL",
                      help="path, file://, http(s)://, s3:// (commas allowed); default: MODEL_URL with "
                           "MODEL_CHECKSUM and MODEL_VERSION")  # fmt: skip
    pull.add_argument("--checksum", default="", help="sha256:<hex> per URL, comma-separated (as MODEL_CHECKSUM)")
    pull.add_argument("--expect-version", default="", help="version per URL, comma-separated (as MODEL_VERSION)")
    pull.add_argument("--full", action="store_true", help="re-hash cached files even if verified before")
    pull.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="bar with bytes, rate and ETA (default: on a terminal; log lines otherwise)")

    evict = sub.add_parser("evict", parents=[common], help="delete cached checkpoints no live worker uses")
    evict.add_argument("target", metavar="NAME[@VERSION]", help="a checkpoint name, or one version of it")
    evict.add_argument("--force", action="store_true", help="delete even if a live process holds it")

    sub.add_parser("ls", parents=[common], help="list cached checkpoints")

    verify = sub.add_parser("verify", parents=[common], help="check cached checkpoints against their manifests")
    verify.add_argument("target", nargs="?", metavar="NAME[@VERSION]|DIR", help="default: every cached one")
    verify.add_argument("--full", action="store_true", help="hash every file even if verified before")
    return parser


def _settings() -> Settings | None:
    try:
        return get_settings()
    except ConfigError as error:
        err.print(f"[yellow]warning:[/] {error}", markup=True)
        return None


def _cache_dir(args: argparse.Namespace, settings: Settings | None) -> Path:
    if getattr(args, "cache_dir", None) is not None:
        return Path(args.cache_dir).expanduser()
    if settings is None:
        raise CheckpointError("cannot read MODEL_CACHE_DIR from the settings above; fix them or pass --cache-dir")
    return settings.model_cache_dir.expanduser()


def _configure_logging(settings: Settings | None) -> None:
    from hark.logs import configure

    configure("checkpoints", settings.deployment if settings else "-", settings.log_level if settings else "INFO",
              settings.log_format if settings else "text")  # fmt: skip


def _cmd_bundle(args: argparse.Namespace, cache_dir: Path) -> int:
    for checkpoint in build_bundled(cache_dir, force=args.force):
        out.print(f"{checkpoint.label:<24} {checkpoint.path}")
    out.print(f"\nMODEL_URL={bundled_model_urls(cache_dir)}")
    return 0


def _cmd_pack(args: argparse.Namespace, cache_dir: Path) -> int:
    path = pack(args.model_dir, args.output, name=args.name, version=args.version, languages=args.languages,
                multilingual=args.multilingual, compute_type=args.compute_type)  # fmt: skip
    manifest = load_manifest(path) if path.is_dir() else None
    label = f" ({manifest.label})" if manifest else ""
    out.print(f"wrote {path}{label}")
    out.print(f"MODEL_CHECKSUM={source_checksum(path)}")
    return 0


def _cmd_pull(args: argparse.Namespace, cache_dir: Path) -> int:
    settings: Settings | None = args.settings
    options = FetchOptions.from_settings(settings) if settings is not None else FetchOptions()
    urls = list(dict.fromkeys(part.strip() for arg in args.urls for part in arg.split(",") if part.strip()))
    if urls:  # any number of them: a pre-warm job may fill the cache for several deployments
        sums = per_entry(split_per_checkpoint(args.checksum), len(urls), "--checksum", "the URL list")
        versions = per_entry(split_per_checkpoint(args.expect_version), len(urls), "--expect-version",
                             "the URL list")  # fmt: skip
        entries = [Entry(url=url, checksum=normalize_checksum(checksum), version=version)
                   for url, checksum, version in zip(urls, sums, versions, strict=True)]  # fmt: skip
    elif settings is None:
        raise CheckpointError("no URL given and the settings cannot be read; pass URLs or fix the settings above")
    else:
        entries, _ = configured_entries(settings)
    failures = 0
    for entry in entries:
        try:
            (checkpoint,) = resolve_entries([entry], cache_dir, full_verify=args.full, progress=args.progress,
                                            options=options, context=False)  # fmt: skip
        except CheckpointError as error:
            failures += 1
            err.print(f"error: {error}", markup=False)
            continue
        out.print(f"{checkpoint.label:<24} {checkpoint.path}")
    return 1 if failures else 0


def _languages(checkpoint: CachedCheckpoint) -> str:
    if checkpoint.manifest is None:
        return "?"
    langs = checkpoint.manifest.languages
    return ", ".join(langs) if len(langs) <= 6 else f"{len(langs)} languages"


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    seconds = (datetime.now(UTC) - moment).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def _in_use(cache_dir: Path, checkpoint: CachedCheckpoint) -> str:
    holders = leases.leases_of(cache_dir, checkpoint.name, checkpoint.version)
    if not holders:
        return "no"
    shown = ", ".join(lease.holder for lease in holders[:3])
    return f"yes ({shown}{', ...' if len(holders) > 3 else ''})"


def _cmd_ls(args: argparse.Namespace, cache_dir: Path) -> int:
    cached = list_cached(cache_dir)
    partials = space.list_partials(cache_dir)
    if not cached and not partials:
        out.print(f"no checkpoints in {cache_dir} (build the defaults with `hark checkpoints bundle`)")
        return 0
    table = Table(title=str(cache_dir), title_justify="left")
    for column in ("Name", "Version", "Size", "Languages", "Multilingual", "Last used", "In use"):
        table.add_column(column, justify="right" if column == "Size" else "left",
                         no_wrap=column not in ("Languages", "In use"))  # fmt: skip
    for checkpoint in cached:
        multilingual = "?" if checkpoint.manifest is None else ("yes" if checkpoint.manifest.multilingual else "no")
        used = datetime.fromtimestamp(space.last_use(cache_dir, checkpoint), UTC) if checkpoint.last_used else None
        table.add_row(checkpoint.name, checkpoint.version, human_size(checkpoint.size), _languages(checkpoint),
                      multilingual, _ago(used), _in_use(cache_dir, checkpoint))  # fmt: skip
    out.print(table)
    total = sum(c.size for c in cached)
    for partial in partials:
        state = "downloading now" if partial.busy(cache_dir) else "interrupted; resumes on the next pull or start"
        out.print(f"partial download of {partial.label} ({human_size(partial.size)}): {state}")
    out.print(f"{len(cached)} checkpoint(s), {human_size(total)}; {human_size(space.free_bytes(cache_dir))} free "
              "on the volume")  # fmt: skip
    return 0


def _cmd_evict(args: argparse.Namespace, cache_dir: Path) -> int:
    name, _, version = args.target.partition("@")
    evicted, refused = space.evict(cache_dir, name, version or None, force=args.force)
    for label in evicted:
        out.print(f"evicted {label}")
    for label, holders in refused.items():
        err.print(f"error: {label} is in use by {', '.join(holders)}; stop those workers first (or pass --force, "
                  "and they may fail when they next read it)", markup=False)  # fmt: skip
    return 1 if refused else 0


def _verify_targets(target: str | None, cache_dir: Path) -> list[Path]:
    if target is None:
        targets = [c.path for c in list_cached(cache_dir)]
        if not targets:
            raise CheckpointError(f"no checkpoints in {cache_dir} to verify")
        return targets
    if "/" in target or Path(target).is_dir():
        return [Path(target).expanduser()]
    name, _, version = target.partition("@")
    targets = [c.path for c in find_cached(cache_dir, name, version or None)]
    if not targets:
        raise CheckpointError(f"{target} is not in the cache {cache_dir} (see `hark checkpoints ls`)")
    return targets


def _cmd_verify(args: argparse.Namespace, cache_dir: Path) -> int:
    failures = 0
    for path in _verify_targets(args.target, cache_dir):
        try:
            manifest = load_manifest(path)
            result = verify_checkpoint(path, manifest, full=args.full)
        except CheckpointError as error:
            failures += 1
            err.print(f"FAILED {path}: {error}", markup=False)
            continue
        how = "hashed" if result.hashed else "unchanged since last full check; --full re-hashes"
        out.print(f"ok     {manifest.label:<24} {result.files} files, {human_size(result.bytes)} ({how})")
    return 1 if failures else 0


COMMANDS = {"bundle": _cmd_bundle, "pack": _cmd_pack, "pull": _cmd_pull, "ls": _cmd_ls, "verify": _cmd_verify,
            "evict": _cmd_evict}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run ``hark checkpoints``; returns the exit code (0 ok, 1 failure, 2 usage)."""
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = _settings()
    args.settings = settings
    _configure_logging(settings)
    try:
        return COMMANDS[args.command](args, _cache_dir(args, settings))
    except CheckpointError as error:
        err.print(f"error: {error}", markup=False)
        return 1
    except OSError as error:
        err.print(f"error: {error}", markup=False)
        return 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
