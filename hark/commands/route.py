"""``hark route [--routes FILE] [--key KEY]``: print the cross-deployment route map and check it live.

Reads the map (``--routes``, default ``HARK_ROUTES``), prints it as a table, then asks every replica of
every deployment for ``GET /ready`` (with the API key when one is given: without it, an API that
requires keys does not list its languages) and flags:

- ERROR: a language routed to a deployment that does not serve it (``multi*``: that has no
  multilingual checkpoint);
- ERROR: a replica that is down (unreachable, or ``/ready`` not 200);
- info: languages a deployment serves that no route names.

Exit status: 0 all good, 1 an error was flagged, 2 no usable map.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from rich.console import Console
from rich.table import Table

from hark.languages import is_multi
from hark.route_map import Deployment, RouteMap, RouteMapError
from hark.settings import ConfigError, load_settings

PROBE_TIMEOUT_SECONDS = 5.0


@dataclass
class Probe:
    """What one replica's ``/ready`` said."""

    url: str
    up: bool
    reason: str = ""
    deployment: str = ""
    languages: list[str] | None = None
    """None when the answer did not list them (no key, or a key that was refused)."""
    multilingual: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def probe(url: str, key: str | None, session: requests.Session) -> Probe:
    """``GET <url>/ready`` once, within :data:`PROBE_TIMEOUT_SECONDS`."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        answer = session.get(f"{url}/ready", headers=headers, timeout=PROBE_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        return Probe(url, False, f"unreachable ({type(error).__name__})")
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if answer.status_code != 200:
        return Probe(url, False, f"/ready answered {answer.status_code}: {str(body.get('error', ''))[:120]}",
                     str(body.get("deployment", "")))  # fmt: skip
    languages = body.get("languages")
    checkpoints = body.get("checkpoints") or []
    return Probe(url, True, "", str(body.get("deployment", "")),
                 [str(lang) for lang in languages] if isinstance(languages, list) else None,
                 any(isinstance(c, dict) and c.get("multilingual") for c in checkpoints))  # fmt: skip


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def assess(routes: RouteMap, probes: dict[str, Probe]) -> Findings:
    """Compare the map with what each replica reported."""
    found = Findings()
    for deployment in routes.deployments:
        routed = routes.languages_of(deployment)
        for url in deployment.urls:
            result = probes[url]
            if not result.up:
                found.errors.append(f"{url} is down: {result.reason} (routes {', '.join(routed) or '*'})")
                continue
            if result.languages is None:
                found.warnings.append(f"{url} did not list its languages (it requires a key: pass --key); "
                                      "its routes are not checked")  # fmt: skip
                continue
            served = set(result.languages)
            for language in routed:
                if is_multi(language):
                    if not result.multilingual:
                        found.errors.append(f"{language} is routed to {url}, which has no multilingual checkpoint")
                elif language not in served:
                    serves = ", ".join(sorted(served)) or "nothing"
                    found.errors.append(f"{language} is routed to {url} (deployment {result.deployment!r}), which "
                                        f"does not serve it; it serves {serves}")  # fmt: skip
            if routes.fallback is not deployment:
                unrouted = sorted(served - set(routes.routes))
                if unrouted:
                    found.infos.append(f"{url} (deployment {result.deployment!r}) also serves {', '.join(unrouted)}, "
                                       "which no route names")  # fmt: skip
    return found


def _table(routes: RouteMap, probes: dict[str, Probe]) -> Table:
    table = Table(title="Hark routes", show_lines=False)
    for column in ("language", "deployment", "replicas", "status"):
        table.add_column(column)

    def status(deployment: Deployment) -> str:
        results = [probes[url] for url in deployment.urls]
        up = sum(r.up for r in results)
        label = next((r.deployment for r in results if r.deployment), "?")
        color = "green" if up == len(results) else ("yellow" if up else "red")
        return f"[{color}]{up}/{len(results)} up[/{color}] ({label})"

    rows = [(lang, dep) for lang, dep in sorted(routes.routes.items())]
    if routes.fallback is not None:
        rows.append(("* (fallback)", routes.fallback))
    for language, deployment in rows:
        table.add_row(language, deployment.urls[0], "\n".join(deployment.urls), status(deployment))
    return table


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hark route", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--routes", type=Path, help="route map file, YAML or JSON (default HARK_ROUTES)")
    parser.add_argument("--key", help="API key for /ready (default: the first of HARK_API_KEYS)")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    path = args.routes or settings.routes_file
    if path is None:
        print("no route map: pass --routes FILE or set HARK_ROUTES", file=sys.stderr)
        return 2
    try:
        routes = RouteMap.from_file(path)
    except RouteMapError as error:
        print(f"invalid route map: {error}", file=sys.stderr)
        return 2
    key = args.key or (settings.api_key_list[0] if settings.api_key_list else None)
    urls = [url for deployment in routes.deployments for url in deployment.urls]
    with requests.Session() as session, ThreadPoolExecutor(max_workers=min(16, len(urls))) as pool:
        probes = dict(zip(urls, pool.map(lambda url: probe(url, key, session), urls), strict=True))
    console.print(_table(routes, probes))
    found = assess(routes, probes)
    for line in found.errors:
        console.print(f"[red]ERROR[/red] {line}", soft_wrap=True)
    for line in found.warnings:
        console.print(f"[yellow]WARN[/yellow]  {line}", soft_wrap=True)
    for line in found.infos:
        console.print(f"[cyan]info[/cyan]  {line}", soft_wrap=True)
    if not found.errors:
        console.print(f"[green]OK[/green] {len(routes.routes)} route(s) to {len(routes.deployments)} deployment(s)")
    return 1 if found.errors else 0
