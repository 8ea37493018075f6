"""``GET /health`` (the process is alive) and ``GET /ready`` (this deployment can transcribe now).

Neither needs an API key (see :data:`web.auth.PUBLIC_ENDPOINTS`): load balancers probe them.
``/health`` touches nothing outside the process. ``/ready`` answers 200 only when Redis answers and
at least one worker of the deployment has a current heartbeat; otherwise 503 and ``Retry-After``
with the reason (and the checkpoints last seen). A 200 lists the languages and checkpoints the live
workers serve, and ``checkpoints_down``: checkpoints seen within a day that no live worker serves now.
When keys are required, only a request with a valid key sees the details (worker ids, hosts, pids,
queues, checkpoints, the Redis error); anyone else gets the status and the deployment name, which
is all a probe needs and tells an attacker nothing about the machines behind the API.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Response, jsonify

from hark import registry
from hark.routing import served_languages
from hark.schemas import CheckpointInfo, InstanceRecord
from web.auth import presented_key_is_valid
from web.errors import error_response
from web.services import services

bp = Blueprint("health", __name__)


@bp.get("/health")
def health() -> Response:
    """Liveness: the API process answers."""
    return jsonify({"status": "ok"})


def _checkpoint_entry(instance: InstanceRecord) -> dict[str, Any]:
    ckpt = instance.checkpoint
    return {
        "checkpoint": ckpt.label,
        "name": ckpt.name,
        "languages": ckpt.languages,
        "language_count": len(ckpt.languages),
        "multilingual": ckpt.multilingual,
        "device": ckpt.device,
        "compute_type": ckpt.compute_type,
        "queue": instance.queue,
        "slots": instance.slots,
        "in_flight": instance.in_flight,
    }


def readiness(instances: list[InstanceRecord], deployment: str,
              known: list[CheckpointInfo] | None = None) -> dict[str, Any]:  # fmt: skip
    """The body of a 200 ``/ready``: workers with their checkpoints, languages and slots.

    Args:
        instances: The live instances of the deployment.
        deployment: Its name.
        known: Its catalog (checkpoints seen within a day); those without a live instance are listed
            as ``checkpoints_down``, so a partial outage is visible while the deployment is still ready.
    """
    workers = [
        {
            "worker_id": worker_id,
            "host": records[0].host,
            "pid": records[0].pid,
            "checkpoints": [_checkpoint_entry(r) for r in sorted(records, key=lambda r: r.checkpoint.name)],
        }
        for worker_id, records in sorted(registry.group_by_worker(instances).items())
    ]
    per_checkpoint: dict[str, dict[str, Any]] = {}
    for instance in instances:
        entry = per_checkpoint.setdefault(instance.checkpoint.label, {
            "checkpoint": instance.checkpoint.label,
            "languages": instance.checkpoint.languages,
            "multilingual": instance.checkpoint.multilingual,
            "workers": 0, "slots": 0, "in_flight": 0,
        })  # fmt: skip
        entry["workers"] += 1
        entry["slots"] += instance.slots
        entry["in_flight"] += instance.in_flight
    unique = {i.checkpoint.label: i.checkpoint for i in instances}
    live_names = {i.checkpoint.name for i in instances}
    return {
        "status": "ready",
        "deployment": deployment,
        "languages": served_languages(list(unique.values())),
        "checkpoints_down": sorted(c.label for c in known or [] if c.name not in live_names),
        "total_slots": sum(i.slots for i in instances),
        "in_flight": sum(i.in_flight for i in instances),
        "checkpoints": [per_checkpoint[label] for label in sorted(per_checkpoint)],
        "workers": workers,
    }


def _may_see_details() -> bool:
    return not services().settings.auth_required or presented_key_is_valid()


@bp.get("/ready")
def ready() -> Response:
    """Readiness: Redis answers and at least one worker of this deployment is live."""
    svc = services()
    deployment = svc.settings.deployment
    details = _may_see_details()
    try:
        svc.redis.ping()
        instances = registry.live_instances(svc.redis, deployment)
        catalog = registry.catalog(svc.redis, deployment) if details else []
        known = [c.label for c in catalog]
    except redis.RedisError as error:
        reason = f"Redis is unreachable: {error}" if details else "Redis is unreachable"
        return error_response(503, reason, [{"code": "redis_unavailable", "deployment": deployment}])
    if not instances:
        if not details:
            return error_response(503, f"no live worker in deployment {deployment!r}",
                                  [{"code": "no_live_worker", "deployment": deployment}])  # fmt: skip
        reason = (f"no live worker in deployment {deployment!r}; last seen serving {', '.join(known)}" if known
                  else f"no worker of deployment {deployment!r} has registered yet")  # fmt: skip
        return error_response(503, reason, [{"code": "no_live_worker", "deployment": deployment, "catalog": known}])
    if not details:
        return jsonify({"status": "ready", "deployment": deployment})
    return jsonify(readiness(instances, deployment, catalog))
