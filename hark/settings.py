"""One typed place for every environment variable Hark reads.

Every other module receives values from a :class:`Settings` instance; nothing else
reads ``os.environ`` for configuration. Names are the flat ones operators already use
(``MODEL_URL``, ``REDIS_URL``, ``HARK_DEPLOYMENT``...).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_CHECKPOINTS_PER_WORKER = 3

#: In-flight requests each checkpoint may hold, by how many checkpoints a worker serves.
SLOTS_BY_CHECKPOINT_COUNT: dict[int, int] = {1: 128, 2: 64, 3: 48}

_DEPLOYMENT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

Device = Literal["auto", "cpu", "cuda"]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hark" / "checkpoints"


class ConfigError(ValueError):
    """Configuration is unusable; the message says what to fix."""


class Settings(BaseSettings):
    """Hark configuration, read from the environment once per process."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    # --- shared ---------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    """Broker, result store, worker registry and audio staging all live here."""

    deployment: str = Field("default", validation_alias="HARK_DEPLOYMENT")
    """Name of this deployment (language pack); queues and registry keys carry it."""

    log_level: str = Field("INFO", validation_alias="HARK_LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", validation_alias="HARK_LOG_FORMAT")

    # --- checkpoints ----------------------------------------------------------------
    model_url: str = Field("", validation_alias="MODEL_URL")
    """Comma-separated checkpoint locations (path, file://, http(s)://); read at worker start only."""

    model_cache_dir: Path = Field(default_factory=_default_cache_dir, validation_alias="MODEL_CACHE_DIR")
    """Where fetched and bundled checkpoints are kept (a shared volume in clusters)."""

    # --- worker engine --------------------------------------------------------------
    device: Device = Field("auto", validation_alias="HARK_DEVICE")
    """`auto` picks CUDA when a GPU is visible, else CPU."""

    compute_type: str | None = Field(None, validation_alias="HARK_COMPUTE_TYPE")
    """Overrides each manifest's `default_compute_type` (int8, int8_float16, float16...)."""

    cpu_threads: int = Field(0, ge=0, validation_alias="HARK_CPU_THREADS")
    """CTranslate2 threads per inference lane; 0 lets the engine decide."""

    engine_workers: int = Field(0, ge=0, validation_alias="HARK_ENGINE_WORKERS")
    """Parallel inference lanes per checkpoint; 0 = 2 on CPU, 1 per GPU."""

    beam_size: int = Field(1, ge=1, le=10, validation_alias="HARK_BEAM_SIZE")

    concurrency_per_checkpoint: int | None = Field(
        None, ge=1, le=1024, validation_alias="HARK_CONCURRENCY_PER_CHECKPOINT"
    )
    """Overrides the 128/64/48 slot table (small machines, tests)."""

    cuda_alloc_conf: str = Field("expandable_segments:True", validation_alias="PYTORCH_CUDA_ALLOC_CONF")

    gpu_memory_fraction: float = Field(0.9, gt=0, le=1, validation_alias="HARK_GPU_MEMORY_FRACTION")
    """Share of GPU memory the worker may plan to use when budgeting checkpoints."""

    heartbeat_seconds: float = Field(1.5, gt=0, validation_alias="HARK_HEARTBEAT_SECONDS")
    worker_ttl_seconds: float = Field(6.0, gt=0, validation_alias="HARK_WORKER_TTL_SECONDS")
    """A worker that has not heartbeaten for this long is gone from the registry."""

    # --- jobs -----------------------------------------------------------------------
    job_timeout_seconds: int = Field(3600, ge=10, validation_alias="HARK_JOB_TIMEOUT_SECONDS")
    """Longest a single job may run; the broker's visibility timeout is set above it."""

    visibility_timeout_seconds: int | None = Field(
        None, ge=1, validation_alias="HARK_VISIBILITY_TIMEOUT_SECONDS"
    )
    """Redelivery delay for jobs of a crashed worker; default job timeout + 10 %."""

    sync_wait_seconds: float = Field(300.0, gt=0, validation_alias="HARK_SYNC_WAIT_SECONDS")
    """Submit-and-wait: past this the API answers 202 with the request_id."""

    result_ttl_seconds: int = Field(86400, ge=60, validation_alias="HARK_RESULT_TTL_SECONDS")
    audio_ttl_seconds: int = Field(7200, ge=60, validation_alias="HARK_AUDIO_TTL_SECONDS")

    # --- API ------------------------------------------------------------------------
    api_host: str = Field("0.0.0.0", validation_alias="HARK_API_HOST")
    api_port: int = Field(7100, ge=1, le=65535, validation_alias="HARK_API_PORT")
    api_workers: int = Field(2, ge=1, validation_alias="HARK_API_WORKERS")
    api_threads: int = Field(160, ge=1, validation_alias="HARK_API_THREADS")
    api_keys: str = Field("", validation_alias=AliasChoices("HARK_API_KEYS", "HARK_API_KEY"))
    """Comma-separated bearer keys; empty disables auth (logged loudly at start)."""

    max_upload_bytes: int = Field(250 * 1024 * 1024, ge=1024, validation_alias="HARK_MAX_UPLOAD_BYTES")
    max_audio_seconds: float = Field(4 * 3600, gt=0, validation_alias="HARK_MAX_AUDIO_SECONDS")

    webhook_allowed_hosts: str = Field("", validation_alias="HARK_WEBHOOK_ALLOWED_HOSTS")
    """Comma-separated hosts, `*.domain` wildcards or CIDRs webhooks may target; empty refuses all."""

    webhook_retries: int = Field(5, ge=0, le=20, validation_alias="HARK_WEBHOOK_RETRIES")
    webhook_timeout_seconds: float = Field(10.0, gt=0, validation_alias="HARK_WEBHOOK_TIMEOUT_SECONDS")

    @field_validator("deployment")
    @classmethod
    def _check_deployment(cls, value: str) -> str:
        if not _DEPLOYMENT_RE.match(value):
            raise ValueError(
                "must be 1-40 characters of lowercase letters, digits and '-', starting with a "
                f"letter or digit (got {value!r})"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix:// (got {value!r})")
        return value

    @model_validator(mode="after")
    def _check_timeouts(self) -> Settings:
        if (
            self.visibility_timeout_seconds is not None
            and self.visibility_timeout_seconds <= self.job_timeout_seconds
        ):
            raise ValueError(
                "HARK_VISIBILITY_TIMEOUT_SECONDS must be longer than HARK_JOB_TIMEOUT_SECONDS, "
                "or jobs still running are handed to a second worker"
            )
        return self

    # --- derived values -------------------------------------------------------------
    @property
    def model_urls(self) -> list[str]:
        return [part.strip() for part in self.model_url.split(",") if part.strip()]

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def webhook_allowed_list(self) -> list[str]:
        return [h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip()]

    @property
    def broker_visibility_timeout(self) -> int:
        if self.visibility_timeout_seconds is not None:
            return self.visibility_timeout_seconds
        return int(self.job_timeout_seconds * 1.1) + 60

    def slots_per_checkpoint(self, checkpoint_count: int) -> int:
        """Admission slots each checkpoint gets when a worker serves `checkpoint_count`."""
        if not 1 <= checkpoint_count <= MAX_CHECKPOINTS_PER_WORKER:
            raise ConfigError(
                f"a worker serves 1 to {MAX_CHECKPOINTS_PER_WORKER} checkpoints, not {checkpoint_count}"
            )
        if self.concurrency_per_checkpoint is not None:
            return self.concurrency_per_checkpoint
        return SLOTS_BY_CHECKPOINT_COUNT[checkpoint_count]


def describe_validation_error(error: ValidationError) -> str:
    """Turn pydantic's error into lines naming the environment variable to fix."""
    lines = ["Hark configuration is invalid:"]
    for item in error.errors():
        name = ".".join(str(part) for part in item.get("loc", ())) or "settings"
        field = Settings.model_fields.get(name)
        alias = field.validation_alias if field is not None else None
        if isinstance(alias, AliasChoices):
            alias = alias.choices[0]
        label = str(alias) if alias else name
        lines.append(f"  {label}: {item.get('msg')}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (plus overrides), raising ConfigError with a clear text."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
