"""The `hark` command: one entry point for every part of the platform.

    hark run                  the whole platform of one deployment (Redis check, worker, API)
    hark api                  the API tier (gunicorn)
    hark worker               a worker of this deployment (reads MODEL_URL)
    hark transcribe FILE      send a file to a running API and print the transcript
    hark stream FILE | --mic  live transcription of a file or the microphone over the WebSocket
    hark checkpoints ...      build, fetch, list and verify checkpoints
    hark license ...          keygen | issue | inspect license keys
    hark license-proxy        serve the license proxy the APIs check their license with
    hark keys add|list|remove API keys file (hashed, named; rotation without restart)
    hark route                print and check the cross-deployment route map (HARK_ROUTES)
    hark dispatcher           forward requests to the deployment serving their language (port 7000)
    hark scale-sim TRACE.csv  replay a trace through the packs' autoscaling rules (--out PNG)
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand -> (module, help). Each module has ``main(argv: list[str]) -> int``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("hark.runner", "start Redis (if needed), a worker and the API of one deployment"),
    "api": ("web.server", "serve the HTTP API with gunicorn"),
    "worker": ("workers.supervisor", "start a worker serving the checkpoints in MODEL_URL"),
    "transcribe": ("hark.client", "transcribe a file through a running API"),
    "stream": ("hark.stream_client", "stream a file or the microphone to a running API, printing live transcripts"),
    "checkpoints": ("checkpoints.cli", "pack, bundle, pull, list and verify checkpoints"),
    "license": ("hark.commands.license", "make signing keys, issue and inspect licenses"),
    "license-proxy": ("license_proxy.server", "serve the license proxy (LICENSE_KEY; port 6699)"),
    "keys": ("hark.commands.keys", "add, list and remove API keys in HARK_API_KEYS_FILE (stored hashed)"),
    "route": ("hark.commands.route", "print the cross-deployment route map (HARK_ROUTES) and check it against /ready"),
    "dispatcher": ("dispatcher.server", "serve the language dispatcher: forwards requests to the routed deployment"),
    "scale-sim": ("hark.scale_sim", "replay an arrival trace through the packs' autoscaling rules and plot it"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="hark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=sorted(SUBCOMMANDS), help="what to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the command")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    parsed = parser.parse_args(argv[:1])
    module = importlib.import_module(SUBCOMMANDS[parsed.command][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
