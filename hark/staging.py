"""A byte budget for the audio a deployment holds in Redis while it waits for workers.

Uploads are staged in Redis (``hark:<dep>:audio:<rid>``) until a worker takes them. Without a
bound, a burst of large uploads or stalled workers can fill Redis, and with ``noeviction`` a full
Redis refuses every write, the queues and job states included. So each staged body is accounted
per deployment and a new one is refused (503 + Retry-After at the API) when it would pass
HARK_STAGED_AUDIO_BUDGET_BYTES.

Keys (per deployment):

- ``hark:<dep>:staged:size``    hash  audio key -> bytes
- ``hark:<dep>:staged:expires`` zset  audio key -> when its audio expires (Redis server time)
- ``hark:<dep>:staged:total``   int   sum of the hash

A reservation runs as one Lua script (purge what expired, check, account), so concurrent API
processes never over-commit. A release is a MULTI/EXEC that removes the entry and gives its bytes
back only if it was the one to remove it (HDEL answered 1), so a release racing another release or
a purge never gives bytes back twice; it needs no Lua, so workers and their fakeredis tests can
drop audio without scripting. Entries whose audio expired without being dropped (no worker came)
are purged by the next reservation, so their bytes come back on their own.
"""

from __future__ import annotations

import redis

from hark.queues import redis_key

#: Expired entries purged per call (bounded work per script run; the rest go at the next call).
PURGE_BATCH = 500

_PURGE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(expired) do
  total = total - tonumber(redis.call('HGET', KEYS[1], member) or '0')
  redis.call('HDEL', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
end
if total < 0 then total = 0 end
"""

#: KEYS: size hash, expiry zset, total. ARGV: purge batch, member, bytes, ttl seconds, budget.
#: Returns {1, total after} when reserved, {0, total now} when refused.
_RESERVE = _PURGE + """
local member, size, ttl, budget = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local previous = tonumber(redis.call('HGET', KEYS[1], member) or '0')
total = total - previous
if budget > 0 and total + size > budget then
  if previous > 0 then total = total + previous end
  redis.call('SET', KEYS[3], total)
  return {0, total}
end
redis.call('HSET', KEYS[1], member, size)
redis.call('ZADD', KEYS[2], now + ttl, member)
total = total + size
redis.call('SET', KEYS[3], total)
for i = 1, 3 do  -- the accounting outlives every entry, and vanishes with an idle deployment
  if redis.call('TTL', KEYS[i]) < ttl + 60 then redis.call('EXPIRE', KEYS[i], ttl + 60) end
end
return {1, total}
"""

class StagingFull(Exception):
    """Staging this body would pass the deployment's budget; retry when workers caught up."""

    def __init__(self, size: int, staged: int, budget: int) -> None:
        super().__init__(f"staging {size} bytes would pass the staged-audio budget ({staged} of {budget} in use)")
        self.size = size
        self.staged = staged
        self.budget = budget


class StagingBudget:
    """Accounts the staged audio bytes of one deployment against `budget`."""

    def __init__(self, client: redis.Redis, deployment: str, budget: int) -> None:
        self.client = client
        self.deployment = deployment
        self.budget = budget
        self.keys = [redis_key(deployment, "staged", "size"), redis_key(deployment, "staged", "expires"),
                     redis_key(deployment, "staged", "total")]  # fmt: skip
        # EVALSHA with a transparent reload when Redis restarted and forgot the script.
        self._reserve = client.register_script(_RESERVE)

    def reserve(self, audio_key: str, size: int, ttl: int) -> int:
        """Account `size` bytes for `audio_key` until it is released or `ttl` seconds pass.

        Returns:
            The deployment's staged bytes, this body included.

        Raises:
            StagingFull: the budget would be passed; nothing was accounted.
        """
        ok, total = self._reserve(keys=self.keys, args=[PURGE_BATCH, audio_key, size, ttl, self.budget])
        if not int(ok):
            raise StagingFull(size, int(total), self.budget)
        return int(total)

    def release(self, audio_key: str) -> None:
        """Give back the bytes of `audio_key`; nothing if it was never accounted or already released."""
        release(self.client, self.deployment, audio_key)

    def staged_bytes(self) -> int:
        """Bytes accounted right now (expired entries included until the next reservation purges them)."""
        return int(self.client.get(self.keys[2]) or 0)


def release(client: redis.Redis, deployment: str, audio_key: str) -> None:
    """Give back the staged bytes of `audio_key` in `deployment` (see the module docstring).

    Args:
        client: the deployment's Redis.
        deployment: HARK_DEPLOYMENT.
        audio_key: the key the audio was staged under.
    """
    sizes, expires, total = (redis_key(deployment, "staged", kind) for kind in ("size", "expires", "total"))
    pipe = client.pipeline(transaction=True)
    pipe.hget(sizes, audio_key)
    pipe.hdel(sizes, audio_key)
    pipe.zrem(expires, audio_key)
    size, removed, _ = pipe.execute()
    if removed and size and int(size) > 0:
        client.decrby(total, int(size))
