"""Prometheus metrics of a worker host, written by the supervisor and every child (multiprocess mode).

The supervisor prepares the directory before it starts its children (:mod:`hark.multiproc_metrics`)
and serves the merged view on ``HARK_WORKER_METRICS_PORT`` (:mod:`workers.health_server`). Labels:
``checkpoint`` is the checkpoint's name (as in its queue ``hark.<deployment>.<checkpoint>``; the version
is in ``/ready``), ``none`` for webhook deliveries. ``language`` is the language the engine used
(detected or forced), ``unknown`` when nothing was decoded.

- ``hark_worker_active_requests`` (livesum): jobs and live sessions holding an executor slot; the
  autoscaling signal. ``hark_worker_slots`` (livesum): the slots they may hold.
- ``hark_worker_tasks_total{kind,outcome}``: batch (success, failed, skipped, requeued, rejected),
  stream (served, dropped, rejected) and webhook (delivered, retrying, failed, skipped) task outcomes.
- ``hark_audio_seconds_total``: audio transcribed (batch jobs and live sessions).
- ``hark_realtime_factor``: processing seconds / audio seconds of each batch job (below 1 is faster
  than real time; live sessions run at the speaker's pace and are not observed).
- ``hark_model_load_seconds`` (livemax): load plus warm-up of the checkpoint in its child.
- ``hark_checkpoint_cache_events_total{event}``, ``hark_checkpoint_download_bytes_total``: the
  checkpoint cache as the supervisor resolved ``MODEL_URL`` (:mod:`checkpoints.events`).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from checkpoints import events

NONE = "none"
UNKNOWN_LANGUAGE = "unknown"
#: Processing seconds per audio second: GPU jobs sit around 0.01-0.05, CPU ones 0.1-1.
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)

ACTIVE = Gauge("hark_worker_active_requests", "Jobs and live sessions holding one of the checkpoint's slots",
               ["deployment", "checkpoint"], multiprocess_mode="livesum")  # fmt: skip
SLOTS = Gauge("hark_worker_slots", "Slots (concurrent jobs and live sessions) of the checkpoint on this host",
              ["deployment", "checkpoint"], multiprocess_mode="livesum")  # fmt: skip
TASKS = Counter("hark_worker_tasks_total", "Tasks this host ran, by kind (batch, stream, webhook) and outcome",
                ["deployment", "checkpoint", "kind", "outcome"])  # fmt: skip
AUDIO_SECONDS = Counter("hark_audio_seconds_total", "Seconds of audio transcribed (batch jobs and live sessions)",
                        ["deployment", "checkpoint", "language"])  # fmt: skip
REALTIME_FACTOR = Histogram("hark_realtime_factor", "Processing seconds per audio second of each batch job",
                            ["deployment", "checkpoint"], buckets=RTF_BUCKETS)  # fmt: skip
MODEL_LOAD_SECONDS = Gauge("hark_model_load_seconds", "Seconds the child took to load and warm up the checkpoint",
                           ["deployment", "checkpoint"], multiprocess_mode="livemax")  # fmt: skip
CACHE_EVENTS = Counter("hark_checkpoint_cache_events_total", "Checkpoint cache lookups (hit, miss) and evictions",
                       ["event"])  # fmt: skip
DOWNLOAD_BYTES = Counter("hark_checkpoint_download_bytes_total", "Bytes of checkpoint data downloaded")


def task_done(deployment: str, checkpoint: str | None, kind: str, outcome: str) -> None:
    """Count one task of `kind` that ended with `outcome`."""
    TASKS.labels(deployment, checkpoint or NONE, kind, outcome).inc()


def audio_done(deployment: str, checkpoint: str, language: str | None, seconds: float,
               processing_seconds: float | None = None) -> None:  # fmt: skip
    """Count `seconds` of transcribed audio; with `processing_seconds`, observe the job's real-time factor."""
    if seconds <= 0:
        return
    AUDIO_SECONDS.labels(deployment, checkpoint, language or UNKNOWN_LANGUAGE).inc(seconds)
    if processing_seconds is not None:
        REALTIME_FACTOR.labels(deployment, checkpoint).observe(processing_seconds / seconds)


def slot_tracker(deployment: str, checkpoint: str, slots: int) -> Gauge:
    """Publish the checkpoint's slots; returns the in-flight gauge child the executor keeps current."""
    SLOTS.labels(deployment, checkpoint).set(slots)
    active = ACTIVE.labels(deployment, checkpoint)
    active.set(0)
    return active


def model_loaded(deployment: str, checkpoint: str, seconds: float) -> None:
    MODEL_LOAD_SECONDS.labels(deployment, checkpoint).set(seconds)


def watch_checkpoint_cache() -> None:
    """Count the checkpoint cache's hits, misses, evictions and downloaded bytes (the supervisor calls it once)."""
    for event in ("hit", "miss", "eviction"):
        CACHE_EVENTS.labels(event)  # present at 0 before the first event
    events.on_cache_event(lambda event: CACHE_EVENTS.labels(event).inc())
    events.on_download_bytes(DOWNLOAD_BYTES.inc)
