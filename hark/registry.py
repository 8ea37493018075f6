"""The live worker registry: which checkpoints a deployment's workers serve right now.

Each (worker, checkpoint) pair is one key ``hark:<dep>:instance:<worker_id>:<checkpoint>``
holding an :class:`InstanceRecord` as JSON with a short expiry that the worker's heartbeat
renews, plus a member in the set ``hark:<dep>:instances`` so readers need no SCAN.
A worker that dies stops renewing and disappears within ``worker_ttl`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable

import redis

from hark.queues import redis_key
from hark.schemas import CheckpointInfo, InstanceRecord


def _index_key(deployment: str) -> str:
    return redis_key(deployment, "instances")


def _instance_key(deployment: str, worker_id: str, checkpoint: str) -> str:
    return redis_key(deployment, "instance", worker_id, checkpoint)


def _catalog_key(deployment: str) -> str:
    return redis_key(deployment, "catalog")


#: How long a checkpoint stays in the catalog after its last worker was seen.
CATALOG_TTL_SECONDS = 24 * 3600


def announce(client: redis.Redis, record: InstanceRecord, ttl_seconds: float) -> None:
    """Publish (or renew) one instance; call it every heartbeat.

    Besides the short-lived instance key, the checkpoint is recorded in the deployment's
    catalog (what it serves, alive or not), so the API can tell "not served here" (400)
    from "served, but no worker is up right now" (503).
    """
    key = _instance_key(record.deployment, record.worker_id, record.checkpoint.name)
    pipe = client.pipeline()
    pipe.set(key, record.model_dump_json(), px=int(ttl_seconds * 1000))
    pipe.sadd(_index_key(record.deployment), key)
    pipe.hset(_catalog_key(record.deployment), record.checkpoint.name, record.checkpoint.model_dump_json())
    pipe.expire(_catalog_key(record.deployment), CATALOG_TTL_SECONDS)
    pipe.execute()


def catalog(client: redis.Redis, deployment: str) -> list[CheckpointInfo]:
    """Checkpoints the deployment's workers announced within the last day, live or not."""
    raw = client.hgetall(_catalog_key(deployment))
    return [CheckpointInfo.model_validate_json(value) for _, value in sorted(raw.items())]


def withdraw(client: redis.Redis, deployment: str, worker_id: str, checkpoint: str) -> None:
    """Remove an instance at once (clean shutdown)."""
    key = _instance_key(deployment, worker_id, checkpoint)
    pipe = client.pipeline()
    pipe.delete(key)
    pipe.srem(_index_key(deployment), key)
    pipe.execute()


def live_instances(client: redis.Redis, deployment: str) -> list[InstanceRecord]:
    """Every instance of `deployment` whose heartbeat has not expired."""
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in client.smembers(_index_key(deployment)))
    if not keys:
        return []
    values = client.mget(keys)
    expired = [key for key, value in zip(keys, values, strict=True) if value is None]
    if expired:
        client.srem(_index_key(deployment), *expired)
    return [InstanceRecord.model_validate_json(value) for value in values if value is not None]


def group_by_worker(instances: Iterable[InstanceRecord]) -> dict[str, list[InstanceRecord]]:
    """Instances keyed by worker id, for `/ready` and the CLI."""
    workers: dict[str, list[InstanceRecord]] = {}
    for instance in instances:
        workers.setdefault(instance.worker_id, []).append(instance)
    return workers


def live_deployments(client: redis.Redis) -> dict[str, list[InstanceRecord]]:
    """Every deployment on this Redis with at least one live instance (a SCAN of the index sets).

    For start-up checks and tools, not request paths: it walks every deployment's index.
    """
    found: dict[str, list[InstanceRecord]] = {}
    for raw in client.scan_iter(match=_index_key("*"), count=5000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        deployment = key.split(":")[1]
        instances = live_instances(client, deployment)
        if instances:
            found[deployment] = instances
    return dict(sorted(found.items()))
