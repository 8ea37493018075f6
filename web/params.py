"""Query parameters of the REST transcription endpoints: one table, pure parsing functions.

:data:`STT_PARAMS` is the single source of truth: :func:`parse_stt_params` validates against it and
``web.openapi`` documents it. Booleans are the strings ``true``/``false`` (any case); options the
platform does not implement yet are refused when ``true`` rather than silently ignored. Unknown
parameters are ignored, as the Pulse clients send extra ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hark.routing import PUBLIC_MODELS
from hark.schemas import Keyword, WebhookTarget

ParamKind = Literal["string", "boolean", "keywords", "enum"]

#: Largest accepted keyword boost (``word:boost``); boosts must be > 0.
MAX_KEYWORD_BOOST = 10.0
MAX_KEYWORDS = 100
MAX_KEYWORD_LENGTH = 100
MAX_WEBHOOK_URL_LENGTH = 2048
MAX_WEBHOOK_EXTRA_LENGTH = 4096


@dataclass(frozen=True)
class ParamSpec:
    """One query parameter: its name, kind and documentation."""

    name: str
    kind: ParamKind
    description: str
    required: bool = False
    """Required on ``/waves/v1/stt/`` (the legacy path makes `model` optional)."""
    enum: tuple[str, ...] = ()
    default: Any = None
    unsupported: bool = False
    """A boolean option not implemented yet: ``true`` is refused with 400."""
    example: str | None = None


STT_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model", "string", "`pulse`, `pulse-pro`, or the name of a checkpoint of this deployment to pin it. "
              "Required on /waves/v1/stt/, defaults to `pulse` on the legacy path.", required=True, example="pulse"),
    ParamSpec("language", "string", "ISO 639-1 code (`en`, `hi`, `de`...) or `multi`, `multi-eu`, `multi-asian`, "
              "`multi-indic` for language detection.", required=True, example="en"),
    ParamSpec("word_timestamps", "boolean", "Add `words[]` with start/end times and confidence.", default=False),
    ParamSpec("keywords", "keywords", "Comma-separated words to boost, optionally `word:boost` with "
              f"0 < boost <= {MAX_KEYWORD_BOOST:g} (default boost 1).", example="Hark:2,Kubernetes:1.5"),
    ParamSpec("webhook_url", "string", "Asynchronous mode: answer `{status: processing, request_id}` at once and "
              "deliver the full response to this URL (hosts must be allowed by HARK_WEBHOOK_ALLOWED_HOSTS)."),
    ParamSpec("webhook_method", "enum", "HTTP method of the webhook call.", enum=("POST", "GET"), default="POST"),
    ParamSpec("webhook_extra", "string", "Opaque string sent back with the webhook call as `webhook_extra`."),
    ParamSpec("diarize", "boolean", "Speaker labels (not supported yet: `true` is refused).", default=False,
              unsupported=True),
    ParamSpec("redact_pii", "boolean", "PII redaction (not supported yet: `true` is refused).", default=False,
              unsupported=True),
    ParamSpec("redact_pci", "boolean", "PCI redaction (not supported yet: `true` is refused).", default=False,
              unsupported=True),
    ParamSpec("emotion_detection", "boolean", "Emotion detection (not supported yet: `true` is refused).",
              default=False, unsupported=True),
    ParamSpec("gender_detection", "boolean", "Gender detection (not supported yet: `true` is refused).",
              default=False, unsupported=True),
)  # fmt: skip

PARAMS_BY_NAME: dict[str, ParamSpec] = {spec.name: spec for spec in STT_PARAMS}
DEFAULT_MODEL = PUBLIC_MODELS[0]


class ParamError(ValueError):
    """A query parameter is missing or malformed; the message names it."""

    def __init__(self, name: str, message: str, value: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.details: list[dict[str, Any]] = [{"field": name, **({"value": value} if value is not None else {}),
                                               **extra}]  # fmt: skip


@dataclass(frozen=True)
class SttParams:
    """The validated query of one transcription request."""

    model: str
    language: str
    word_timestamps: bool = False
    keywords: list[Keyword] = field(default_factory=list)
    webhook: WebhookTarget | None = None

    @property
    def is_async(self) -> bool:
        return self.webhook is not None


def parse_bool(name: str, raw: str | None, default: bool = False) -> bool:
    """``true``/``false`` (any case) -> bool; absent -> `default`; anything else -> ParamError."""
    if raw is None:
        return default
    value = raw.strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    raise ParamError(name, f"query parameter {name!r} must be 'true' or 'false', not {raw!r}", raw)


def parse_keywords(raw: str | None) -> list[Keyword]:
    """``Hark:2,Kubernetes:1.5,pod`` -> keywords with boosts (default 1); ParamError when malformed."""
    if raw is None or not raw.strip():
        return []
    keywords: list[Keyword] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        word, sep, boost_text = item.rpartition(":")
        if not sep:
            word, boost = item, 1.0
        else:
            word = word.strip()
            try:
                boost = float(boost_text)
            except ValueError:
                raise ParamError("keywords", f"keywords: {item!r} has a boost {boost_text!r} that is not a number",
                                 raw) from None  # fmt: skip
            if not math.isfinite(boost) or not 0 < boost <= MAX_KEYWORD_BOOST:
                raise ParamError(
                    "keywords", f"keywords: the boost of {item!r} must be > 0 and <= {MAX_KEYWORD_BOOST:g}", raw
                )
        if not word:
            raise ParamError("keywords", f"keywords: {item!r} has no word before the boost", raw)
        if len(word) > MAX_KEYWORD_LENGTH:
            raise ParamError("keywords", f"keywords: {word[:20]!r}... is longer than {MAX_KEYWORD_LENGTH} characters")
        keywords.append(Keyword(word=word, boost=boost))
    if len(keywords) > MAX_KEYWORDS:
        raise ParamError("keywords", f"keywords: at most {MAX_KEYWORDS} are accepted, got {len(keywords)}")
    return keywords


def _required(args: Mapping[str, str], name: str) -> str:
    raw = args.get(name)
    if raw is None or not raw.strip():
        raise ParamError(name, f"query parameter {name!r} is required", raw)
    return raw.strip()


def parse_webhook(args: Mapping[str, str]) -> WebhookTarget | None:
    """The webhook target when `webhook_url` is given (method and extra checked), else None.

    The URL's host is not checked here (see ``hark.webhook_policy``), only its presence and size.
    """
    method_raw = args.get("webhook_method")
    method = "POST"
    if method_raw is not None and method_raw.strip():
        method = method_raw.strip().upper()
        if method not in PARAMS_BY_NAME["webhook_method"].enum:
            raise ParamError("webhook_method", f"query parameter 'webhook_method' must be POST or GET, not "
                             f"{method_raw!r}", method_raw)  # fmt: skip
    url = (args.get("webhook_url") or "").strip()
    extra = args.get("webhook_extra")
    if not url:
        return None
    if len(url) > MAX_WEBHOOK_URL_LENGTH:
        raise ParamError("webhook_url", f"webhook_url is longer than {MAX_WEBHOOK_URL_LENGTH} characters")
    if extra is not None and len(extra) > MAX_WEBHOOK_EXTRA_LENGTH:
        raise ParamError("webhook_extra", f"webhook_extra is longer than {MAX_WEBHOOK_EXTRA_LENGTH} characters")
    return WebhookTarget(url=url, method=method, extra=extra)  # type: ignore[arg-type]


def parse_stt_params(args: Mapping[str, str], *, model_required: bool = True) -> SttParams:
    """Validate the query of a transcription request.

    Args:
        args: the query parameters (first value of each).
        model_required: True on ``/waves/v1/stt/``; the legacy path defaults `model` to ``pulse``.

    Returns:
        The validated parameters. Whether `model` and `language` are served is decided later by
        routing, which knows the deployment's checkpoints.

    Raises:
        ParamError: naming the first offending parameter.
    """
    model = _required(args, "model") if model_required else (args.get("model") or "").strip() or DEFAULT_MODEL
    language = _required(args, "language").lower()
    for spec in STT_PARAMS:
        if spec.kind == "boolean" and spec.unsupported and parse_bool(spec.name, args.get(spec.name)):
            raise ParamError(spec.name, f"option {spec.name} is not supported yet; send {spec.name}=false or "
                             "leave it out", args.get(spec.name), supported=False)  # fmt: skip
    return SttParams(
        model=model,
        language=language,
        word_timestamps=parse_bool("word_timestamps", args.get("word_timestamps")),
        keywords=parse_keywords(args.get("keywords")),
        webhook=parse_webhook(args),
    )
