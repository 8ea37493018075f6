"""Client-side cross-deployment routing: send each request to the deployment serving its language.

    from hark.router import Router
    router = Router.from_file("routes.yaml", api_key=os.environ["HARK_API_KEY"])
    answer = router.transcribe(open("call.wav", "rb").read(), "de", word_timestamps=True)
    print(answer.transcription)

Each deployment is a Hark API (one URL or several replicas, see :mod:`hark.route_map`). A request goes
to ``POST <url>/waves/v1/stt/`` with the Pulse query parameters; replicas are taken round-robin, and
a replica that cannot be reached or answers 503 (nothing was accepted) is skipped for the next one,
at most once per replica. Answers are parsed with the wire schemas of :mod:`hark.schemas`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import requests
from requests.adapters import HTTPAdapter

from hark.route_map import Deployment, RouteMap, RouteMapError, UnroutedLanguage
from hark.schemas import ErrorBody, ProcessingResponse, TranscriptionResponse

__all__ = ["RouteMapError", "Router", "RouterError", "UnroutedLanguage", "UpstreamUnavailable"]

log = logging.getLogger(__name__)

STT_PATH = "/waves/v1/stt/"
#: Query options of the Pulse REST contract (../shared/pulse-wire-spec.md) besides model and language.
STT_OPTIONS = frozenset({
    "word_timestamps", "diarize", "keywords", "webhook_url", "webhook_method", "webhook_extra",
    "redact_pii", "redact_pci", "emotion_detection", "gender_detection",
})  # fmt: skip
#: Seconds to open a connection to a replica before trying the next one.
CONNECT_TIMEOUT_SECONDS = 5.0


class RouterError(Exception):
    """A deployment answered with an error; carries its status and the parsed JSON error body."""

    def __init__(self, status: int, body: ErrorBody, url: str) -> None:
        super().__init__(f"HTTP {status} from {url}: {body.error}")
        self.status = status
        self.body = body
        self.url = url


class UpstreamUnavailable(RouterError):
    """Every replica of the deployment was unreachable or answered 503."""


def _query_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "keywords" and isinstance(value, Mapping):
        return ",".join(f"{word}:{boost:g}" for word, boost in value.items())
    if name == "keywords" and isinstance(value, list | tuple):
        return ",".join(str(word) for word in value)
    return str(value)


def stt_query(language: str, model: str, options: Mapping[str, Any]) -> dict[str, str]:
    """The query string of a transcription request; None options are left out.

    Raises:
        TypeError: An option the Pulse API does not have (a typo would otherwise be ignored silently).
    """
    unknown = sorted(set(options) - STT_OPTIONS)
    if unknown:
        accepted = ", ".join(sorted(STT_OPTIONS))
        raise TypeError(f"unknown transcription option(s) {', '.join(unknown)}; accepted: {accepted}")
    query = {"model": model, "language": language}
    query.update({name: _query_value(name, value) for name, value in options.items() if value is not None})
    return query


def _error_body(answer: requests.Response) -> ErrorBody:
    try:
        payload = answer.json()
        return ErrorBody(error=str(payload.get("error") or answer.reason),
                         request_id=str(payload.get("request_id", "")),
                         details=list(payload.get("details") or []))  # fmt: skip
    except (ValueError, AttributeError, TypeError):
        return ErrorBody(error=f"HTTP {answer.status_code} {answer.reason}: {answer.text[:200]}", request_id="")


class Router:
    """Routes transcription requests to deployments by language.

    Args:
        routes: a :class:`RouteMap`, or the mapping to build one from (language -> URL or replica URLs).
        api_key: sent as ``Authorization: Bearer`` on every request (a call may override it).
        timeout: seconds to wait for an answer (keep it above the deployments' HARK_SYNC_WAIT_SECONDS).
        pool_size: keep-alive connections kept per replica.

    Raises:
        RouteMapError: The map is invalid (the entry is named).
    """

    def __init__(self, routes: RouteMap | Mapping[str, str | list[str]], *, api_key: str | None = None,
                 timeout: float = 330.0, pool_size: int = 32) -> None:  # fmt: skip
        self.map = routes if isinstance(routes, RouteMap) else RouteMap(routes)
        self.api_key = api_key
        self.timeout = timeout
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=max(4, len(self.map.deployments) * 2), pool_maxsize=pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> Router:
        """A router from a YAML or JSON map file (see :mod:`hark.route_map`)."""
        return cls(RouteMap.from_file(path), **kwargs)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def deployment_for(self, language: str) -> Deployment:
        """The deployment routed for `language` (raises :class:`UnroutedLanguage`)."""
        return self.map.deployment_for(language)

    def url_for(self, language: str) -> str:
        """The base URL of the replica to use next for `language` (advances the round-robin)."""
        return self.deployment_for(language).rotation()[0]

    def _headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream"}
        key = api_key if api_key is not None else self.api_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def transcribe(
        self, audio: bytes | IO[bytes], language: str, *, model: str = "pulse", api_key: str | None = None,
        **options: Any,
    ) -> TranscriptionResponse | ProcessingResponse:
        """Transcribe `audio` on the deployment serving `language`.

        Args:
            audio: the file's bytes, or a binary file object (seekable, so a failover can resend it).
            language: an ISO 639-1 code or a ``multi*`` group, as the API takes it.
            model: ``pulse``, ``pulse-pro`` or a checkpoint name.
            api_key: overrides the router's key for this call.
            **options: Pulse query options (``word_timestamps=True``, ``keywords={"Hark": 2}``,
                ``webhook_url=...``); booleans become ``true``/``false``.

        Returns:
            The transcript, or a :class:`ProcessingResponse` (async mode, or the sync wait ran out).

        Raises:
            UnroutedLanguage: No route for `language`; lists the routed languages.
            UpstreamUnavailable: Every replica was unreachable or answered 503.
            RouterError: The deployment answered another error (400, 401, 413, 429...).
        """
        deployment = self.deployment_for(language)
        query = stt_query(language, model, options)
        headers = self._headers(api_key)
        start = audio.tell() if hasattr(audio, "tell") else None
        last: RouterError | None = None
        for url in deployment.rotation():
            if start is not None:
                audio.seek(start)  # type: ignore[union-attr]
            try:
                answer = self.session.post(f"{url}{STT_PATH}", params=query, data=audio, headers=headers,
                                           timeout=(CONNECT_TIMEOUT_SECONDS, self.timeout))  # fmt: skip
            except requests.ConnectionError as error:
                log.warning("router: %s unreachable (%s); trying the next replica", url, type(error).__name__)
                last = UpstreamUnavailable(503, ErrorBody(error=f"{url} is unreachable: {error}", request_id=""), url)
                continue
            if answer.status_code == 503:
                log.warning("router: %s answered 503; trying the next replica", url)
                last = UpstreamUnavailable(503, _error_body(answer), url)
                continue
            if answer.status_code >= 400:
                raise RouterError(answer.status_code, _error_body(answer), url)
            payload = answer.json()
            if payload.get("status") == "processing":
                return ProcessingResponse.model_validate(payload)
            return TranscriptionResponse.model_validate(payload)
        assert last is not None
        raise UpstreamUnavailable(last.status, last.body, last.url)
