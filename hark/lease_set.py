"""Counted leases in a Redis sorted set: at most N live members, each gone when its lease runs out.

A member is scored by the Unix time its lease ends (Redis's clock, so API hosts' clocks do not matter).
Admitting is one Lua script (drop expired leases, count, add), so concurrent callers on any process never
over-admit; a holder that dies without releasing frees its place when its lease ends. The key itself
expires a minute after the last renewal, so an idle set does not linger. Used for the per-client
concurrency limit (``web.limits``) and the license's live-session limit (``hark.license_streams``).
"""

from __future__ import annotations

import redis

#: KEYS: the set. ARGV: limit, lease seconds, member. Returns the count after admitting, or 0 if refused.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 60)
return count + 1
"""

#: KEYS: the set. ARGV: lease seconds, members... Extends the leases of the members still present.
_RENEW = """
local t = redis.call('TIME')
local until_ = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
return 1
"""


class LeaseSet:
    """Leased members of sorted sets on one Redis (the key is passed to each call)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)

    def acquire(self, key: str, member: str, limit: int, lease_seconds: float) -> int:
        """Admit `member` if fewer than `limit` leases are live: the count after, or 0 when refused."""
        return int(self._acquire(keys=[key], args=[limit, lease_seconds, member]))

    def renew(self, key: str, lease_seconds: float, *members: str) -> None:
        """Extend the leases of `members` that are still held (a released or expired one stays out)."""
        if members:
            self._renew(keys=[key], args=[lease_seconds, *members])

    def release(self, key: str, member: str) -> None:
        self.redis.zrem(key, member)

    def live_count(self, key: str) -> int:
        """Members holding a current lease (expired ones are not counted)."""
        seconds, micros = self.redis.time()
        return int(self.redis.zcount(key, seconds + micros / 1e6, "+inf"))
