"""The cross-deployment route map: which deployment (one URL or replica URLs) serves each language.

One flat mapping, written in Python, YAML or JSON, shared by the client router (:mod:`hark.router`),
``hark route`` and the dispatcher::

    en: http://hark-en:7100
    de: [http://hark-eu-1:7100, http://hark-eu-2:7100]
    multi: http://hark-multi:7100
    "*": http://hark-multi:7100          # optional fallback (also spelt `default`)

Every entry is validated at load (a known language code or ``multi*`` group, http(s) URLs without
query or fragment, no empty replica list); a bad one raises :class:`RouteMapError` naming it.
Replicas of one deployment are taken round-robin (thread-safe); the same URL list under several
languages is one deployment with one rotation.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hark.languages import MULTI_GROUPS, WHISPER_LANGUAGES

#: Keys of the fallback entry, used for languages nothing else routes.
FALLBACK_KEYS = ("*", "default")

#: Every language a route may name: Whisper's, the members of the detection groups, and the groups.
KNOWN_LANGUAGES: frozenset[str] = frozenset(WHISPER_LANGUAGES).union(
    *(group for group in MULTI_GROUPS.values() if group), MULTI_GROUPS
)


class RouteMapError(ValueError):
    """The route map is unusable; the message names the entry and what to fix."""


class UnroutedLanguage(LookupError):
    """No route (and no fallback) for a language; lists the languages that are routed."""

    def __init__(self, language: str, routed: list[str]) -> None:
        self.language = language
        self.routed = routed
        super().__init__(f"language {language!r} is not routed to any deployment; "
                         f"routed languages: {', '.join(routed) or 'none'}")  # fmt: skip


@dataclass
class Deployment:
    """One deployment: its replica base URLs (no trailing slash) and its round-robin position."""

    urls: tuple[str, ...]
    _turn: itertools.count = field(default_factory=itertools.count, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def name(self) -> str:
        """A label for tables and logs: the first replica's URL (``+N`` when there are more)."""
        return self.urls[0] + (f" (+{len(self.urls) - 1})" if len(self.urls) > 1 else "")

    def rotation(self) -> list[str]:
        """The replicas in the order to try them: the next in turn first, then the others."""
        if len(self.urls) == 1:
            return list(self.urls)
        with self._lock:
            start = next(self._turn) % len(self.urls)
        return [*self.urls[start:], *self.urls[:start]]


def _check_url(entry: str, url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise RouteMapError(f"route {entry!r}: {url!r} is not a URL; give http(s)://host:port of a Hark API")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RouteMapError(f"route {entry!r}: {url!r} is not an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise RouteMapError(f"route {entry!r}: {url!r} must be a bare base URL (no query, fragment or user:password; "
                            "API keys are passed separately)")  # fmt: skip
    try:
        _ = parts.port  # raises on a bad port
    except ValueError:
        raise RouteMapError(f"route {entry!r}: {url!r} has an invalid port") from None
    return url.strip().rstrip("/")


class RouteMap:
    """Language -> :class:`Deployment`, validated at construction.

    Args:
        routes: language code (or ``multi*`` group, or ``*``/``default``) -> a base URL or a list of
            replica base URLs.

    Raises:
        RouteMapError: An unknown language, a bad URL or an empty replica list, naming the entry.
    """

    def __init__(self, routes: Mapping[str, str | list[str] | tuple[str, ...]]) -> None:
        if not isinstance(routes, Mapping) or not routes:
            raise RouteMapError("the route map is empty: map at least one language to a deployment URL")
        by_urls: dict[tuple[str, ...], Deployment] = {}
        self.routes: dict[str, Deployment] = {}
        self.fallback: Deployment | None = None
        for raw_key, target in routes.items():
            key = str(raw_key).strip().lower()
            if key not in KNOWN_LANGUAGES and key not in FALLBACK_KEYS:
                raise RouteMapError(f"route {raw_key!r}: not a known language code (ISO 639-1 such as en, de, hi; "
                                    f"or {', '.join(MULTI_GROUPS)}; or '*' for the fallback)")  # fmt: skip
            targets = [target] if isinstance(target, str) else target
            if not isinstance(targets, list | tuple) or not targets:
                raise RouteMapError(f"route {raw_key!r}: give a URL or a non-empty list of replica URLs")
            urls = tuple(_check_url(str(raw_key), url) for url in targets)
            if len(set(urls)) != len(urls):
                raise RouteMapError(f"route {raw_key!r}: a replica URL is listed twice")
            deployment = by_urls.setdefault(urls, Deployment(urls))
            if key in FALLBACK_KEYS:
                if self.fallback is not None:
                    raise RouteMapError("the fallback is given twice ('*' and 'default'); keep one")
                self.fallback = deployment
            elif key in self.routes:
                raise RouteMapError(f"route {raw_key!r}: the language is mapped twice")
            else:
                self.routes[key] = deployment
        self.deployments: list[Deployment] = list(by_urls.values())

    @classmethod
    def from_file(cls, path: str | Path) -> RouteMap:
        """Load a YAML (``.yaml``/``.yml``) or JSON map file.

        Raises:
            RouteMapError: Unreadable or unparsable file, or an invalid entry.
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise RouteMapError(f"cannot read the route map {path}: {error.strerror or error}") from None
        try:
            if path.suffix.lower() == ".json":
                data: Any = json.loads(text)
            else:
                import yaml  # only map files need it

                data = yaml.safe_load(text)
        except Exception as error:  # json.JSONDecodeError or yaml.YAMLError
            raise RouteMapError(f"the route map {path} is not valid {path.suffix.lstrip('.').upper() or 'YAML'}: "
                                f"{error}") from None  # fmt: skip
        if not isinstance(data, dict):
            raise RouteMapError(f"the route map {path} must be a mapping of language -> URL or list of URLs")
        try:
            return cls(data)
        except RouteMapError as error:
            raise RouteMapError(f"{path}: {error}") from None

    @property
    def routed_languages(self) -> list[str]:
        """The languages with a route of their own (sorted), plus ``*`` when there is a fallback."""
        return sorted(self.routes) + (["*"] if self.fallback else [])

    def deployment_for(self, language: str) -> Deployment:
        """The deployment serving `language` (its own route, else the fallback).

        Raises:
            UnroutedLanguage: Neither a route nor a fallback.
        """
        deployment = self.routes.get(language) or self.routes.get(language.strip().lower()) or self.fallback
        if deployment is None:
            raise UnroutedLanguage(language, self.routed_languages)
        return deployment

    def languages_of(self, deployment: Deployment) -> list[str]:
        """The languages routed to `deployment` by their own entries (sorted)."""
        return sorted(lang for lang, dep in self.routes.items() if dep is deployment)
