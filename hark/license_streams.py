"""The license's ``max_concurrent_streams``, counted across every deployment sharing the Redis.

One sorted set of leases (:mod:`hark.lease_set`), ``hark:license:streams``: a member per open live
session (``<deployment>:<session id>``), so concurrent upgrades on any API process never over-admit. The
API renews its sessions' leases while their sockets are open and removes them when they close; a session
of an API process that died (SIGKILL, OOM) frees its place when its lease runs out.
"""

from __future__ import annotations

import redis

from hark.lease_set import LeaseSet

STREAMS_KEY = "hark:license:streams"


class StreamQuota:
    """Leases of open live sessions, shared by every API process of every deployment."""

    def __init__(self, client: redis.Redis, lease_seconds: float) -> None:
        self.redis = client
        self.lease_seconds = lease_seconds
        self.leases = LeaseSet(client)

    def acquire(self, member: str, limit: int) -> int:
        """Admit `member` if fewer than `limit` sessions are open; the count after, or 0 when refused."""
        return self.leases.acquire(STREAMS_KEY, member, limit, self.lease_seconds)

    def renew(self, member: str) -> None:
        self.leases.renew(STREAMS_KEY, self.lease_seconds, member)

    def release(self, member: str) -> None:
        self.leases.release(STREAMS_KEY, member)

    def open_count(self) -> int:
        """Sessions holding a current lease (expired ones are not counted)."""
        return self.leases.live_count(STREAMS_KEY)
