"""Query parameters of the live (WebSocket) endpoint: checked before the upgrade, defaults for a bare connection.

A bad value of a known parameter is a 400 JSON answer before the handshake (the SDK shows it);
unknown parameters are ignored, as the Pulse clients send extra ones. Options Hark does not implement
(``diarize``, ``redact_pii``, ``redact_pci``) are refused when asked for rather than silently ignored;
formatting options Whisper covers by itself (``format``, ``numerals``, ``itn_normalize``,
``finalize_on_words``) are accepted and validated, and have no further effect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from hark.sessions import ENCODINGS, SAMPLE_RATES, StreamParams
from web.params import ParamError, parse_bool, parse_keywords

#: Parameters accepted as booleans that change nothing (Whisper's output is already formatted).
ACCEPTED_FLAGS = ("format", "numerals", "itn_normalize", "finalize_on_words")
#: Options that are refused when asked for (not implemented).
UNSUPPORTED = ("diarize", "redact_pii", "redact_pci")
MAX_EOU_TIMEOUT_MS = 10_000
MIN_EOU_TIMEOUT_MS = 100
MAX_WORDS_LIMIT = 1000


def _int(args: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = args.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ParamError(name, f"query parameter {name!r} must be an integer, not {raw!r}", raw) from None
    if not low <= value <= high:
        raise ParamError(name, f"query parameter {name!r} must be between {low} and {high}, not {value}", raw)
    return value


def _float(args: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = args.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ParamError(name, f"query parameter {name!r} must be a number, not {raw!r}", raw) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ParamError(name, f"query parameter {name!r} must be between {low:g} and {high:g}, not {raw}", raw)
    return value


def _unsupported(args: Mapping[str, str], name: str) -> None:
    """`diarize` is a boolean; the redaction options may be ``true`` or a list of entity names."""
    raw = args.get(name)
    if raw is None or raw.strip().lower() in ("", "false"):
        return
    raise ParamError(name, f"option {name} is not supported yet; send {name}=false or leave it out", raw,
                     supported=False)  # fmt: skip


def _endpointing(args: Mapping[str, str]) -> tuple[bool, int | None]:
    """``endpointing``: true/false, or a silence in ms (Deepgram's form), which then sets the timeout."""
    raw = args.get("endpointing")
    if raw is None or not raw.strip():
        return True, None
    value = raw.strip().lower()
    if value in ("true", "false"):
        return value == "true", None
    ms = _int(args, "endpointing", None, MIN_EOU_TIMEOUT_MS, MAX_EOU_TIMEOUT_MS)
    return True, ms


def parse_stream_params(args: Mapping[str, str]) -> StreamParams:
    """Validate the query of a live session.

    Raises:
        ParamError: naming the first offending parameter (answered 400 before the upgrade).
    """
    model = (args.get("model") or "").strip() or "pulse"
    if model == "pulse-pro":
        raise ParamError("model", "model 'pulse-pro' has no streaming worker; use model=pulse for live audio, or "
                         "POST /waves/v1/stt/?model=pulse-pro for files", model)  # fmt: skip
    language = (args.get("language") or "").strip().lower() or "en"
    sample_rate = _int(args, "sample_rate", 16000, 1, 1_000_000)
    if sample_rate not in SAMPLE_RATES:
        raise ParamError("sample_rate", f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}, not "
                         f"{sample_rate}", str(sample_rate), allowed=list(SAMPLE_RATES))  # fmt: skip
    encoding = (args.get("encoding") or "").strip().lower() or "linear16"
    if encoding not in ENCODINGS:
        raise ParamError("encoding", f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}", encoding,
                         allowed=list(ENCODINGS))  # fmt: skip
    for name in UNSUPPORTED:
        _unsupported(args, name)
    for name in ACCEPTED_FLAGS:
        parse_bool(name, args.get(name))
    endpointing, endpointing_ms = _endpointing(args)
    eou = _int(args, "eou_timeout_ms", None, MIN_EOU_TIMEOUT_MS, MAX_EOU_TIMEOUT_MS)
    timeout = _int(args, "endpointing_timeout", None, MIN_EOU_TIMEOUT_MS, MAX_EOU_TIMEOUT_MS)
    return StreamParams(
        model=model,
        language=language,
        sample_rate=sample_rate,  # type: ignore[arg-type]
        encoding=encoding,  # type: ignore[arg-type]
        word_timestamps=parse_bool("word_timestamps", args.get("word_timestamps")),
        sentence_timestamps=parse_bool("sentence_timestamps", args.get("sentence_timestamps")),
        full_transcript=parse_bool("full_transcript", args.get("full_transcript")),
        punctuate=parse_bool("punctuate", args.get("punctuate"), default=True),
        capitalize=parse_bool("capitalize", args.get("capitalize"), default=True),
        max_words=_int(args, "max_words", None, 1, MAX_WORDS_LIMIT),
        eou_timeout_ms=eou or timeout or endpointing_ms or 800,
        endpointing=endpointing,
        vad=parse_bool("vad", args.get("vad"), default=True),
        vad_events=parse_bool("vad_events", args.get("vad_events")),
        vad_threshold=_float(args, "vad_threshold", 0.5, 0.05, 0.95),
        vad_min_speech_ms=_int(args, "vad_min_speech_ms", 250, 0, 5000) or 0,
        keywords=parse_keywords(args.get("keywords")),
    )
