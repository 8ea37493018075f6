"""The license's ``max_concurrent_streams``, counted across every deployment sharing the Redis.

One sorted set, ``hark:license:streams``: a member per open live session (``<deployment>:<session id>``)
scored by when its lease ends. Admitting is one Lua script (drop expired leases, count, add), so
concurrent upgrades on any API process never over-admit. The API renews its sessions' leases while their
sockets are open and removes them when they close; a session of an API process that died (SIGKILL, OOM)
frees its place when its lease runs out.
"""

from __future__ import annotations

import redis

STREAMS_KEY = "hark:license:streams"

#: KEYS: the set. ARGV: limit, lease seconds, member. Returns the count after admitting, or 0 if refused.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
return count + 1
"""

#: KEYS: the set. ARGV: lease seconds, member. Extends the member's lease if it is still there.
_RENEW = """
local t = redis.call('TIME')
return redis.call('ZADD', KEYS[1], 'XX', 'CH', tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1]), ARGV[2])
"""


class StreamQuota:
    """Leases of open live sessions, shared by every API process of every deployment."""

    def __init__(self, client: redis.Redis, lease_seconds: float) -> None:
        self.redis = client
        self.lease_seconds = lease_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    def acquire(self, member: str, limit: int) -> int:
        """Admit `member` if fewer than `limit` sessions are open; the count after, or 0 when refused."""
        return int(self._acquire(keys=[STREAMS_KEY], args=[limit, self.lease_seconds, member]))

    def renew(self, member: str) -> None:
        self._renew(keys=[STREAMS_KEY], args=[self.lease_seconds, member])

    def release(self, member: str) -> None:
        self.redis.zrem(STREAMS_KEY, member)

    def open_count(self) -> int:
        """Sessions holding a current lease (expired ones are not counted)."""
        now = self.redis.time()
        return int(self.redis.zcount(STREAMS_KEY, now[0] + now[1] / 1e6, "+inf"))
