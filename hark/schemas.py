"""Wire formats in one place: the Pulse response, the task payload and the registry record.

The Pulse client SDK parses responses against a union of classes, so types are strict:
strings stay strings, numbers stay numbers, and absent keys are omitted rather than null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def wire(self) -> dict[str, Any]:
        """JSON-ready dict without None values (the SDK mis-parses typed nulls)."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)


# --- what the worker is asked to do ------------------------------------------------------


class Keyword(_Wire):
    word: str
    boost: float = 1.0


class TranscriptionOptions(_Wire):
    """Engine options, decided by the API and carried to the worker in the task payload."""

    language: str | None = None
    """Forced language; None means detect."""
    detect_among: list[str] | None = None
    """When detecting: restrict to these languages (the `multi-eu` style groups)."""
    word_timestamps: bool = False
    keywords: list[Keyword] = Field(default_factory=list)


class WebhookTarget(_Wire):
    url: str
    method: Literal["POST", "GET"] = "POST"
    extra: str | None = None


class TranscribeTask(_Wire):
    """The payload of a ``hark.transcribe`` task: references, never the audio itself."""

    request_id: str
    deployment: str
    checkpoint: str
    audio_key: str
    file_size: int
    options: TranscriptionOptions
    webhook: WebhookTarget | None = None
    submitted_at: float


# --- what the API answers ----------------------------------------------------------------


class Word(_Wire):
    word: str
    start: float
    end: float
    confidence: float
    speaker: str | None = None


class Utterance(_Wire):
    text: str
    start: float
    end: float
    speaker: str | None = None


class Metadata(_Wire):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    duration: float
    file_size: float = Field(alias="fileSize")
    processing_time_ms: float
    rtfx: float
    deployment: str
    checkpoint: str
    """name@version of the checkpoint that answered."""


class TranscriptionResponse(_Wire):
    status: Literal["success"] = "success"
    transcription: str
    language: str
    request_id: str
    words: list[Word] | None = None
    utterances: list[Utterance] | None = None
    metadata: Metadata


class ErrorBody(_Wire):
    error: str
    request_id: str
    details: list[dict[str, Any]] = Field(default_factory=list)


# --- the live worker registry ------------------------------------------------------------


class CheckpointInfo(_Wire):
    name: str
    version: str
    languages: list[str]
    multilingual: bool
    engine: str = "faster-whisper"
    compute_type: str = "default"
    device: str = "cpu"

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class InstanceRecord(_Wire):
    """One checkpoint served by one worker, as announced in the registry."""

    deployment: str
    worker_id: str
    host: str
    pid: int
    queue: str
    checkpoint: CheckpointInfo
    slots: int
    """The checkpoint's slot budget (128/64/48 or HARK_CONCURRENCY_PER_CHECKPOINT)."""
    capacity: int | None = None
    """What the worker holds at most right now when autoscaling (HARK_AUTOSCALE=on); None = `slots`."""
    in_flight: int = 0
    started_at: float
    heartbeat_at: float


JobStatus = Literal["queued", "processing", "success", "failed"]


class JobFailure(_Wire):
    """Why a job ended without a transcript; `http_status` is what a waiting client gets."""

    code: str
    message: str
    http_status: int = 500
    details: list[dict[str, Any]] = Field(default_factory=list)


class ProcessingResponse(_Wire):
    """An accepted job without its transcript yet (async mode, or a sync wait that ran out): poll its id."""

    status: Literal["processing"] = "processing"
    request_id: str
    state: str | None = None
