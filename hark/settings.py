"""One typed place for every environment variable Hark reads.

Every other module receives values from a :class:`Settings` instance; nothing else
reads ``os.environ`` for configuration. Names are the flat ones operators already use
(``MODEL_URL``, ``REDIS_URL``, ``HARK_DEPLOYMENT``...).
"""

from __future__ import annotations

import ipaddress
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hark.api_keys import KeyRing, env_entries, parse_env_keys, read_keys_file

MAX_CHECKPOINTS_PER_WORKER = 3

#: In-flight requests each checkpoint may hold, by how many checkpoints a worker serves.
SLOTS_BY_CHECKPOINT_COUNT: dict[int, int] = {1: 128, 2: 64, 3: 48}

_DEPLOYMENT_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")

Device = Literal["auto", "cpu", "cuda"]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hark" / "checkpoints"


#: ``MODEL_CACHE_MAX_SIZE`` units: decimal (``GB`` = 10**9, as disks are sold) and binary (``GiB``/``Gi``).
_SIZE_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_CHECKSUM_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def parse_size(value: str | int) -> int:
    """``"50GB"`` -> 50_000_000_000, ``"500MiB"`` -> 524_288_000, ``"1024"`` -> 1024 (bytes).

    Raises:
        ValueError: Not a number followed by an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
    """
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(
            f"must be a size such as 50GB, 500MB or 1.5TiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB; "
            f"got {value!r})"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def split_per_checkpoint(value: str) -> list[str]:
    """Split a per-``MODEL_URL``-entry list (``MODEL_CHECKSUM``, ``MODEL_VERSION``); empty items are kept."""
    return [item.strip() for item in value.split(",")] if value.strip() else []


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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

    # --- checkpoint storage: download, cache, integrity -----------------------------
    model_path: str = Field("", validation_alias="MODEL_PATH")
    """Comma-separated unpacked checkpoint directories baked into the image; when set, used instead of
    MODEL_URL and nothing is downloaded."""

    model_version: str = Field("", validation_alias="MODEL_VERSION")
    """Expected checkpoint version, one per MODEL_URL entry (comma-separated, empty = any); part of the
    cache key, so bumping it re-fetches a moving URL (``.../latest.tar.gz``)."""

    model_checksum: str = Field("", validation_alias="MODEL_CHECKSUM")
    """``sha256:<64 hex>`` per MODEL_URL entry (comma-separated, empty = none): the sha256 of the archive
    the URL names, or of ``manifest.json`` for an unpacked checkpoint directory."""

    model_validation: Literal["true", "false", "full"] = Field("true", validation_alias="MODEL_VALIDATE")
    """Start-up check of cached checkpoints: true = sizes + sha256 (trusting the verified marker while
    sizes and mtimes match), full = re-hash every file, false = sizes only. Downloads are always hashed."""

    model_download_workers: int = Field(4, ge=1, le=64, validation_alias="MODEL_DOWNLOAD_WORKERS")
    """Parallel range requests per large file (and files in parallel for unpacked checkpoints)."""

    model_download_resume: bool = Field(True, validation_alias="MODEL_DOWNLOAD_RESUME")
    """Resume a partial download left by a crash or kill instead of starting over."""

    model_download_retries: int = Field(3, ge=0, le=20, validation_alias="MODEL_DOWNLOAD_RETRIES")
    """Retries per request after a transient failure (exponential backoff with jitter)."""

    model_download_timeout: float = Field(3600.0, gt=0, validation_alias="MODEL_DOWNLOAD_TIMEOUT")
    """Seconds for a whole download; a stalled connection is detected and retried long before."""

    model_cache_max_size: int | None = Field(None, ge=1, validation_alias="MODEL_CACHE_MAX_SIZE")
    """Cache size limit in bytes (``50GB``, ``500MB``, ``1.5TiB``); unset = no limit but the disk."""

    model_cache_eviction: Literal["lru", "none"] = Field("lru", validation_alias="MODEL_CACHE_EVICTION")
    """lru: evict least-recently-used checkpoints no live worker holds to make room; none: never delete."""

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

    # --- scheduler (docs/scheduler.md) ------------------------------------------------
    scheduler: Literal["batch", "lanes"] = Field("batch", validation_alias="HARK_SCHEDULER")
    """batch: waiting requests with the same options may run as one batched engine call (``HARK_MAX_BATCH``);
    lanes: every request alone (the comparison point). Both take work first-come-first-served from one queue
    shared with live sessions, on ``HARK_ENGINE_WORKERS`` lanes of ``HARK_CPU_THREADS`` threads."""

    max_batch: int = Field(0, ge=0, le=64, validation_alias="HARK_MAX_BATCH")
    """Requests run as one batched engine call at most (scheduler=batch). 0 = by device: 1 on CPU (a batched
    encoder was measured slower per item there), on CUDA sized from free GPU memory and a measured per-item cost."""

    batch_wait_ms: float | None = Field(None, ge=0, le=200, validation_alias="HARK_BATCH_WAIT_MS")
    """How long a lane collects same-options requests for a batch before running what it has (only when
    a batch can form: HARK_MAX_BATCH above 1). Unset: 5 ms, or 25 ms with HARK_PACKING=on, where a lane
    stops collecting as soon as it holds its share of the outstanding work (a lone request never waits)
    and a fuller window answers more requests per pass (measured: docs/scheduler.md)."""

    @property
    def batch_wait_seconds(self) -> float:
        """``HARK_BATCH_WAIT_MS`` in seconds, or its default for the scheduler in use."""
        if self.batch_wait_ms is not None:
            return self.batch_wait_ms / 1000
        return 0.025 if self.packing == "on" else 0.005

    solo_replica: bool = Field(True, validation_alias="HARK_SOLO_REPLICA")
    """CPU with several lanes: load one more replica with all the checkpoint's cores and run a request on it
    when nothing else is running or waiting (a lone request gets every core; costs one more copy of the
    weights in memory). Off: a lone request runs on its lane's share of the cores."""

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
    api_threads: int = Field(224, ge=1, validation_alias="HARK_API_THREADS")
    """Threads per API process. Every waiting REST request and every open live session holds one, so
    workers x threads should be at least 3x the deployment's slots (a stream per slot plus 2x slots of
    waiting REST requests): 2 x 224 = 448 covers one worker's 144 slots with three checkpoints."""
    api_keys: str = Field("", validation_alias=AliasChoices("HARK_API_KEYS", "HARK_API_KEY"), repr=False)
    """Comma-separated bearer keys, ``name=key`` or bare (named ``key-1``, ``key-2``...); with
    HARK_API_KEYS_FILE both sets are accepted. Empty (and no file) disables auth on loopback only."""

    api_keys_file: Path | None = Field(None, validation_alias="HARK_API_KEYS_FILE")
    """File of named keys hashed at rest (``NAME:sha256:<hex>[:created]``, written by ``hark keys``); re-read
    when it changes (checked at most once a second), so keys rotate without a restart."""

    metrics_auth: Literal["open", "key"] = Field("key", validation_alias="HARK_METRICS_AUTH")
    """``/metrics`` on the API port: ``key`` needs an API key whenever keys are required (the default: the
    port faces clients); ``open`` lets a scraper in without one (a private network or a NetworkPolicy)."""

    max_upload_bytes: int = Field(250 * 1024 * 1024, ge=1024, validation_alias="HARK_MAX_UPLOAD_BYTES")
    max_audio_seconds: float = Field(4 * 3600, gt=0, validation_alias="HARK_MAX_AUDIO_SECONDS")

    webhook_allowed_hosts: str = Field("", validation_alias="HARK_WEBHOOK_ALLOWED_HOSTS")
    """Comma-separated hosts, `*.domain` wildcards or CIDRs webhooks may target; empty refuses all."""

    webhook_retries: int = Field(5, ge=0, le=20, validation_alias="HARK_WEBHOOK_RETRIES")
    webhook_timeout_seconds: float = Field(10.0, gt=0, validation_alias="HARK_WEBHOOK_TIMEOUT_SECONDS")
    """Total deadline of one delivery attempt (connect, send, read the answer), however the receiver trickles."""

    webhook_secret: str = Field("", validation_alias="HARK_WEBHOOK_SECRET", repr=False)
    """HMAC-SHA256 key for the ``X-Hark-Signature`` header of webhook calls; empty = unsigned (warned at start)."""

    # --- hardening: limits on clients -----------------------------------------------
    auth: Literal["auto", "on", "off"] = Field("auto", validation_alias="HARK_AUTH")
    """auto: keys required when the API listens beyond loopback (refuses to start without HARK_API_KEYS);
    on: keys always required; off: no authentication, explicitly (logged at start)."""

    upload_timeout_seconds: float = Field(30.0, gt=0, validation_alias="HARK_UPLOAD_TIMEOUT_SECONDS")
    """Base time allowed to receive a request body (and the longest pause between two reads); 408 past it."""

    upload_min_bytes_per_second: int = Field(32768, ge=1, validation_alias="HARK_UPLOAD_MIN_BYTES_PER_SECOND")
    """A body gets HARK_UPLOAD_TIMEOUT_SECONDS plus its size at this rate; slower uploads answer 408."""

    max_concurrent_per_client: int = Field(64, ge=1, validation_alias="HARK_MAX_CONCURRENT_PER_CLIENT")
    """Requests one API key (or one client address when auth is off) may have in flight; 429 past it."""

    staged_audio_budget_bytes: int = Field(
        1_000_000_000, ge=1024, validation_alias="HARK_STAGED_AUDIO_BUDGET_BYTES"
    )
    """Bytes of uploaded audio the deployment may hold in Redis awaiting workers; 503 + Retry-After past it."""

    # --- hardening: jobs and shutdown -----------------------------------------------
    shutdown_grace_seconds: float = Field(30.0, gt=0, validation_alias="HARK_SHUTDOWN_GRACE_SECONDS")
    """On SIGTERM a worker stops consuming; jobs not finished within this are requeued at once."""

    job_deadline_seconds: int | None = Field(None, ge=10, validation_alias="HARK_JOB_DEADLINE_SECONDS")
    """A job not ended this long after it was accepted is failed by the reaper (``job_lost``, with its
    webhook); default: audio TTL + visibility timeout + 60 s (time to wait, run once, crash and rerun)."""

    store_retry_seconds: float = Field(60.0, gt=0, le=3600, validation_alias="HARK_STORE_RETRY_SECONDS")
    """How long a worker retries recording a job's state in Redis (a failover) before handing the job back
    to the queue instead of acknowledging it."""

    reaper_interval_seconds: float = Field(15.0, gt=0, validation_alias="HARK_REAPER_INTERVAL_SECONDS")
    """How often a worker looks for jobs past their deadline."""

    # --- live streaming (WebSocket) --------------------------------------------------
    stream_start_timeout_seconds: float = Field(
        10.0, gt=0, le=300, validation_alias="HARK_STREAM_START_TIMEOUT_SECONDS"
    )
    """How long an upgrade waits for a worker of the checkpoint to take the session (a free slot) before it
    is refused with 503 and Retry-After; the session is never queued beyond it."""

    stream_idle_timeout_seconds: float = Field(
        60.0, gt=0, le=86400, validation_alias="HARK_STREAM_IDLE_TIMEOUT_SECONDS"
    )
    """A session that receives no audio for this long is ended with an ``idle_timeout`` error (keepalives
    keep the socket alive but do not count as audio)."""

    stream_max_seconds: float = Field(4 * 3600, gt=0, validation_alias="HARK_STREAM_MAX_SECONDS")
    """Longest a single live session may last (audio time); past it the session ends with an error."""

    stream_lease_seconds: float = Field(5.0, ge=1, le=120, validation_alias="HARK_STREAM_LEASE_SECONDS")
    """Expiry of the session's owner and client leases: a worker or API server that dies is noticed
    by the other side within this (renewed every third of it)."""

    stream_max_backlog_seconds: float = Field(
        30.0, gt=0, le=3600, validation_alias="HARK_STREAM_MAX_BACKLOG_SECONDS"
    )
    """Audio a session may have waiting in Redis for its worker; past it the session ends with a
    ``backlog`` error instead of growing without bound."""

    stream_partial_interval_ms: int = Field(
        400, ge=50, le=10000, validation_alias="HARK_STREAM_PARTIAL_INTERVAL_MS"
    )
    """Cadence of partial updates while speech goes on (new speech needed since the last one); under load
    the cadence stretches by itself, as a session has at most one decode in flight."""

    stream_max_utterance_seconds: float = Field(
        20.0, ge=2, le=29, validation_alias="HARK_STREAM_MAX_UTTERANCE_SECONDS"
    )
    """An utterance longer than this is cut with a final (Whisper sees at most 30 s at a time), so the
    cost of each update stays bounded."""

    stream_max_batch: int = Field(0, ge=0, le=64, validation_alias="HARK_STREAM_MAX_BATCH")
    """Live sessions' decodes run together in one batched engine call, at most this many (0 = by device:
    8 on CUDA, where a batch costs little more than one decode; 1 on CPU, where it was measured to save
    nothing — 293 ms per item alone, 346 ms per item in fours — and only makes each result later)."""

    stream_max_frame_bytes: int = Field(1 << 20, ge=1024, le=16 << 20, validation_alias="HARK_STREAM_MAX_FRAME_BYTES")
    """Largest WebSocket message accepted (1 MiB, as the SDK); bigger ones end the session (close 1009)."""

    # --- licensing (license proxy, the API's license gate; docs/licensing.md) ----------
    license_public_keys: str = Field("", validation_alias="HARK_LICENSE_PUBLIC_KEYS")
    """Trusted vendor public keys (base64 raw Ed25519 keys, comma-separated) that licenses must be signed
    with; empty = the keys built into this release (``hark.license.VENDOR_PUBLIC_KEYS``)."""

    license_key: str = Field("", validation_alias="LICENSE_KEY", repr=False)
    """The license (``hark1....``) the license proxy serves; read by ``hark license-proxy`` only."""

    license_proxy_host: str = Field("0.0.0.0", validation_alias="HARK_LICENSE_PROXY_HOST")
    license_proxy_port: int = Field(6699, ge=1, le=65535, validation_alias="HARK_LICENSE_PROXY_PORT")
    license_proxy_token: str = Field("", validation_alias="HARK_LICENSE_PROXY_TOKEN", repr=False)
    """When set, the proxy's ``/usage`` needs ``Authorization: Bearer <token>`` (compared in constant time)."""

    api_base_url: str = Field("", validation_alias="API_BASE_URL")
    """The license proxy the API checks its license with (http://license-proxy:6699); empty = licensing off."""

    license_check_seconds: float = Field(300.0, ge=1, le=86400, validation_alias="HARK_LICENSE_CHECK_SECONDS")
    """How often the API asks the license proxy (in a background thread, never on a request)."""

    license_grace_seconds: float = Field(86400.0, ge=0, validation_alias="HARK_LICENSE_GRACE_SECONDS")
    """How long the API keeps serving on its last confirmed license while the proxy cannot be reached."""

    @field_validator("license_public_keys")
    @classmethod
    def _check_license_keys(cls, value: str) -> str:
        from hark.license import trusted_keys

        trusted_keys(value.split(","))  # ValueError names the bad key
        return value

    @field_validator("api_base_url")
    @classmethod
    def _check_api_base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be the license proxy's http(s) URL, e.g. http://license-proxy:6699 (got {value!r})")
        return value

    @property
    def license_public_key_list(self) -> list[str]:
        from hark.license import VENDOR_PUBLIC_KEYS

        keys = [k.strip() for k in self.license_public_keys.split(",") if k.strip()]
        return keys or list(VENDOR_PUBLIC_KEYS)

    # --- observability (worker host) --------------------------------------------------
    worker_metrics_port: int = Field(9101, ge=0, le=65535, validation_alias="HARK_WORKER_METRICS_PORT")
    """Port of the worker supervisor's ``/metrics`` (Prometheus) and ``/health`` (liveness); 0 = off."""

    worker_metrics_host: str = Field("0.0.0.0", validation_alias="HARK_WORKER_METRICS_HOST")
    """Address the worker's metrics/health server binds (0.0.0.0: reachable by Prometheus and kubelet)."""

    worker_task_events: bool = Field(False, validation_alias="HARK_WORKER_TASK_EVENTS")
    """Workers send Celery task events and worker heartbeats (what Flower's Workers and Tasks pages show);
    off by default: each task then costs a few more broker messages."""

    # --- cross-deployment routing (router map, dispatcher, API start-up check) -------
    routes_file: Path | None = Field(None, validation_alias="HARK_ROUTES")
    """Router map file (YAML or JSON: language -> deployment URL or list of replica URLs) read by
    `hark route` and `hark dispatcher`."""

    dispatcher_host: str = Field("0.0.0.0", validation_alias="HARK_DISPATCHER_HOST")
    dispatcher_port: int = Field(7000, ge=1, le=65535, validation_alias="HARK_DISPATCHER_PORT")
    dispatcher_threads: int = Field(256, ge=1, le=4096, validation_alias="HARK_DISPATCHER_THREADS")
    """Threads of the dispatcher: every forwarded request (a sync one waits for its transcript) and every
    tunnelled WebSocket holds one."""
    dispatcher_upstream_timeout_seconds: float = Field(
        330.0, gt=0, validation_alias="HARK_DISPATCHER_UPSTREAM_TIMEOUT_SECONDS"
    )
    """Longest the dispatcher waits for a deployment's answer; keep it above HARK_SYNC_WAIT_SECONDS."""

    expect_languages: str = Field("", validation_alias="HARK_EXPECT_LANGUAGES")
    """Comma list of languages this API's workers must serve; checked at `hark api` start (exit 2 if not)."""

    expect_workers_seconds: float | None = Field(None, ge=0, le=3600, validation_alias="HARK_EXPECT_WORKERS_SECONDS")
    """How long `hark api` waits at start for its deployment's workers; default 60 s when
    HARK_EXPECT_LANGUAGES is set. Unset and no expected languages: one look at the registry that only warns."""

    @field_validator("expect_languages")
    @classmethod
    def _check_expected_languages(cls, value: str) -> str:
        items = [lang.strip().lower() for lang in value.split(",") if lang.strip()]
        bad = [lang for lang in items if not re.match(r"^[a-z]{2,3}$", lang)]
        if bad:
            raise ValueError(f"must be a comma list of ISO 639-1 codes such as en,de,hi (got {bad[0]!r})")
        return value

    @property
    def expect_language_list(self) -> list[str]:
        return [lang.strip().lower() for lang in self.expect_languages.split(",") if lang.strip()]

    # --- in-host autoscaling per pack (docs/scaling.md) -------------------------------
    autoscale: Literal["on", "off"] = Field("off", validation_alias="HARK_AUTOSCALE")
    """on: each checkpoint's capacity (messages its child holds, and admissions) moves between
    HARK_AUTOSCALE_MIN and its slot budget with the pack's own queue depth; off: always the full budget."""

    autoscale_min: int = Field(4, ge=1, le=1024, validation_alias="HARK_AUTOSCALE_MIN")
    """Capacity floor per checkpoint when autoscaling (capped at the checkpoint's slot budget)."""

    autoscale_idle_seconds: float = Field(30.0, gt=0, le=3600, validation_alias="HARK_AUTOSCALE_IDLE_SECONDS")
    """Quiet time (empty queue, capacity not all used, no change) before capacity steps down."""

    autoscale_interval_seconds: float = Field(
        0.5, ge=0.05, le=60, validation_alias="HARK_AUTOSCALE_INTERVAL_SECONDS"
    )
    """How often the scaler reads the queue depth and in-flight count and adjusts capacity."""

    @field_validator("autoscale", mode="before")
    @classmethod
    def _parse_autoscale(cls, value: object) -> object:
        text = str(value).strip().lower()
        return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(text, text)

    # --- window packing of short requests (docs/scheduler.md "Window packing") -----------
    packing: Literal["on", "off"] = Field("off", validation_alias="HARK_PACKING")
    """on: the scheduler lays several short requests' speech into one 30 s window and decodes it once
    (``workers/packing.py``); off: every request is decoded alone."""

    packing_max_seconds: float = Field(10.0, gt=0, le=29, validation_alias="HARK_PACKING_MAX_SECONDS")
    """Only requests with at most this much speech (after VAD trimming) are packed; longer ones go solo."""

    @field_validator("packing", mode="before")
    @classmethod
    def _parse_packing(cls, value: object) -> object:
        text = str(value).strip().lower()
        return {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}.get(text, text)

    @field_validator("deployment")
    @classmethod
    def _check_deployment(cls, value: str) -> str:
        if not _DEPLOYMENT_RE.match(value):
            raise ValueError(
                "must be 1-40 characters of lowercase letters, digits and '-', starting with a "
                f"letter or digit (got {value!r})"
            )
        return value

    @field_validator("api_keys_file", mode="before")
    @classmethod
    def _empty_keys_file(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        parse_env_keys(value)  # names used twice: a ValueError naming the name, never a key
        return value

    @field_validator("staged_audio_budget_bytes", mode="before")
    @classmethod
    def _parse_budget(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"must start with redis://, rediss:// or unix:// (got {value!r})")
        return value

    @field_validator("model_cache_max_size", mode="before")
    @classmethod
    def _parse_cache_size(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_size(value) if value.strip() else None
        return value

    @field_validator("model_validation", mode="before")
    @classmethod
    def _parse_validation(cls, value: object) -> object:
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return "true"
        if text in ("0", "false", "no", "off"):
            return "false"
        return text

    @field_validator("model_checksum")
    @classmethod
    def _check_checksums(cls, value: str) -> str:
        items = split_per_checkpoint(value.lower())
        if len(items) > MAX_CHECKPOINTS_PER_WORKER:
            raise ValueError(f"lists {len(items)} checksums; give at most one per MODEL_URL entry")
        bad = [item for item in items if item and not _CHECKSUM_RE.match(item)]
        if bad:
            raise ValueError(
                "each entry must be sha256:<64 hexadecimal characters> (empty to skip an entry), e.g. "
                f"MODEL_CHECKSUM=sha256:9f86...,,sha256:2c26...; got {bad[0]!r}"
            )
        return ",".join(items)

    @field_validator("model_version")
    @classmethod
    def _check_versions(cls, value: str) -> str:
        items = split_per_checkpoint(value)
        if len(items) > MAX_CHECKPOINTS_PER_WORKER:
            raise ValueError(f"lists {len(items)} versions; give at most one per MODEL_URL entry")
        bad = [item for item in items if item and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", item)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a checkpoint version (letters, digits, '.', '_', '+', '-')")
        return ",".join(items)

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
    def model_paths(self) -> list[str]:
        return [part.strip() for part in self.model_path.split(",") if part.strip()]

    @property
    def model_checksums(self) -> list[str]:
        """MODEL_CHECKSUM per entry (``""`` where none), as written (``sha256:<hex>``)."""
        return split_per_checkpoint(self.model_checksum)

    @property
    def model_versions(self) -> list[str]:
        """MODEL_VERSION per entry (``""`` where any version is accepted)."""
        return split_per_checkpoint(self.model_version)

    @property
    def api_key_pairs(self) -> list[tuple[str, str]]:
        """HARK_API_KEYS as ``(name, key)`` pairs."""
        return parse_env_keys(self.api_keys)

    @property
    def api_key_list(self) -> list[str]:
        """The keys of HARK_API_KEYS without their names (what a client sends)."""
        return [key for _, key in self.api_key_pairs]

    @property
    def webhook_allowed_list(self) -> list[str]:
        return [h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip()]

    @property
    def broker_visibility_timeout(self) -> int:
        if self.visibility_timeout_seconds is not None:
            return self.visibility_timeout_seconds
        return int(self.job_timeout_seconds * 1.1) + 60

    @property
    def job_deadline(self) -> int:
        """Seconds after acceptance past which an unfinished job is declared lost."""
        if self.job_deadline_seconds is not None:
            return self.job_deadline_seconds
        return self.audio_ttl_seconds + self.broker_visibility_timeout + 60

    @property
    def api_on_loopback(self) -> bool:
        """The API binds only a loopback address (``127.x``, ``::1``, ``localhost``)."""
        return is_loopback_host(self.api_host)

    @property
    def auth_required(self) -> bool:
        """Requests must carry a key: ``HARK_AUTH=on``, or ``auto`` with keys configured."""
        return self.auth == "on" or (self.auth == "auto" and self.keys_configured)

    @property
    def keys_configured(self) -> bool:
        """HARK_API_KEYS has a key or HARK_API_KEYS_FILE is set (an empty file then refuses everyone)."""
        return bool(self.api_key_list) or self.api_keys_file is not None

    def check_api_auth(self) -> None:
        """Refuse an API that would listen beyond loopback with no keys unless auth is off explicitly.

        Raises:
            ConfigError: Says which variables to set.
        """
        if self.auth == "off":
            return
        if not self.keys_configured and (self.auth == "on" or not self.api_on_loopback):
            where = "HARK_AUTH=on" if self.auth == "on" else f"HARK_API_HOST={self.api_host} is not loopback"
            raise ConfigError(
                f"refusing to start the API without keys ({where}): set HARK_API_KEYS=key1,key2 or "
                "HARK_API_KEYS_FILE (see `hark keys add`), bind HARK_API_HOST=127.0.0.1, or switch "
                "authentication off explicitly with HARK_AUTH=off"
            )
        self.api_key_ring()

    def api_key_ring(self) -> KeyRing:
        """Every accepted key (HARK_API_KEYS and the file as it is now), hashed and named.

        Raises:
            ConfigError: The keys file is unreadable or malformed (every bad line by number), or a name or a
                key is used in both places.
        """
        entries = env_entries(self.api_key_pairs)
        try:
            if self.api_keys_file is not None:
                entries += read_keys_file(self.api_keys_file)[0]
            return KeyRing(entries)
        except ValueError as error:  # KeysFileError included
            raise ConfigError(f"API keys: {error}") from None

    def stream_batch_for(self, device: str) -> int:
        """HARK_STREAM_MAX_BATCH, or its default for `device` (``cpu`` / ``cuda``)."""
        if self.stream_max_batch:
            return self.stream_max_batch
        return 8 if device == "cuda" else 1

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
