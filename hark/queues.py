"""Queue and task names shared by the API tier and the workers.

A glance at Redis or Flower shows which deployment and checkpoint a queue belongs to:
``hark.<deployment>.<checkpoint>``.
"""

from __future__ import annotations

TASK_TRANSCRIBE = "hark.transcribe"
TASK_DELIVER_WEBHOOK = "hark.deliver_webhook"

#: Prefix of every Redis key Hark writes, so an operator can find and clear them.
KEY_PREFIX = "hark"

WEBHOOK_SUFFIX = "webhooks"
DEFAULT_SUFFIX = "default"
#: Queue suffixes a checkpoint may not take (``hark.<deployment>.<checkpoint>`` would collide).
RESERVED_QUEUE_SUFFIXES: frozenset[str] = frozenset({WEBHOOK_SUFFIX, DEFAULT_SUFFIX})


def transcribe_queue(deployment: str, checkpoint: str) -> str:
    """The queue on which `deployment`'s workers serving `checkpoint` take jobs."""
    return f"{KEY_PREFIX}.{deployment}.{checkpoint}"


def webhook_queue(deployment: str) -> str:
    """The queue of webhook deliveries of one deployment."""
    return f"{KEY_PREFIX}.{deployment}.{WEBHOOK_SUFFIX}"


def default_queue(deployment: str) -> str:
    """Celery's default queue of one deployment (tasks sent without a queue; none should be)."""
    return f"{KEY_PREFIX}.{deployment}.{DEFAULT_SUFFIX}"


def reserved_name_problem(checkpoint: str) -> str | None:
    """Why `checkpoint` cannot name a checkpoint queue, or None when it can.

    A checkpoint named like one of the deployment's own queues would share it: the webhook child
    would take (and acknowledge) its transcription jobs, or it would take webhook deliveries.
    """
    if checkpoint.lower() in RESERVED_QUEUE_SUFFIXES:
        reserved = ", ".join(sorted(RESERVED_QUEUE_SUFFIXES))
        return (f"checkpoint name {checkpoint!r} is reserved (queue {KEY_PREFIX}.<deployment>.{checkpoint} is "
                f"Hark's own; reserved names: {reserved}); rename the checkpoint, e.g. "
                f"`hark checkpoints pack DIR --name {checkpoint}-model ...`")  # fmt: skip
    return None


def redis_key(deployment: str, kind: str, *parts: str) -> str:
    """A namespaced Redis key: ``hark:<deployment>:<kind>:<parts...>``."""
    return ":".join((KEY_PREFIX, deployment, kind, *parts))
