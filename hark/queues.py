"""Queue and task names shared by the API tier and the workers.

A glance at Redis or Flower shows which deployment and checkpoint a queue belongs to:
``hark.<deployment>.<checkpoint>``.
"""

from __future__ import annotations

TASK_TRANSCRIBE = "hark.transcribe"
TASK_DELIVER_WEBHOOK = "hark.deliver_webhook"

#: Prefix of every Redis key Hark writes, so an operator can find and clear them.
KEY_PREFIX = "hark"


def transcribe_queue(deployment: str, checkpoint: str) -> str:
    """The queue on which `deployment`'s workers serving `checkpoint` take jobs."""
    return f"{KEY_PREFIX}.{deployment}.{checkpoint}"


def webhook_queue(deployment: str) -> str:
    """The queue of webhook deliveries of one deployment."""
    return f"{KEY_PREFIX}.{deployment}.webhooks"


def redis_key(deployment: str, kind: str, *parts: str) -> str:
    """A namespaced Redis key: ``hark:<deployment>:<kind>:<parts...>``."""
    return ":".join((KEY_PREFIX, deployment, kind, *parts))
