"""Provider concurrency slots per account, shared by every process through Redis.

A slot is a member of the sorted set ``outdial:slots:<account_id>`` (member: the attempt id,
score: when its lease ends, in milliseconds on the shared clock). Acquiring is one Lua call:
drop expired leases, then add the member if fewer than ``limit`` remain. A process that dies
holding a slot loses it when the lease ends (the lease covers ring time, the longest call and a
grace period), so slots never leak.

Redis is not the source of truth: if it loses the sets (restart without persistence) the
marker key ``outdial:slots:epoch`` is gone too, :meth:`Slots.acquire` answers "unknown" and the
scheduler rebuilds the sets from the calls MongoDB shows in progress (:meth:`Slots.rebuild`)
before anyone dials again, so the limit holds across a Redis restart.

dramatiq's ``ConcurrentRateLimiter`` is not used: it is a counter held for the duration of one
``with`` block in one thread, while a call holds its slot across several messages (dial, polls,
finalize) and possibly several processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any

from shared.redis_keys import PREFIX, slots_key

#: Marker whose absence means Redis lost the slot sets.
EPOCH_KEY = f"{PREFIX}:slots:epoch"

_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  return 1
end
return 0
"""

_IN_USE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[1])
"""


class Acquired(IntEnum):
    UNKNOWN = -1  #: Redis lost the slot sets; wait for the scheduler to rebuild them
    NO = 0
    YES = 1


class Slots:
    """Leased slots in Redis.

    :param redis: a ``redis.Redis`` client.
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._acquire = redis.register_script(_ACQUIRE)
        self._in_use = redis.register_script(_IN_USE)

    def acquire(self, account_id: str, holder: str, *, limit: int, now_ms: int, lease_ms: int) -> Acquired:
        """Take (or renew) a slot for ``holder`` (an attempt id) if fewer than ``limit`` are held."""
        result = self._acquire(keys=[slots_key(account_id), EPOCH_KEY],
                               args=[now_ms, limit, holder, now_ms + lease_ms])
        return Acquired(int(result))

    def renew(self, account_id: str, holder: str, *, until_ms: int) -> None:
        """Extend (or re-register) ``holder``'s lease; used while a call goes on."""
        self.redis.zadd(slots_key(account_id), {holder: until_ms})

    def release(self, account_id: str, holder: str) -> bool:
        """Give the slot back; True when it was held. Idempotent."""
        return bool(self.redis.zrem(slots_key(account_id), holder))

    def in_use(self, account_id: str, *, now_ms: int) -> int:
        """Slots held by unexpired leases."""
        return int(self._in_use(keys=[slots_key(account_id)], args=[now_ms]))

    def in_use_many(self, account_ids: Iterable[str], *, now_ms: int) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        ids = list(account_ids)
        for account_id in ids:
            self._in_use(keys=[slots_key(account_id)], args=[now_ms], client=pipe)
        return {a: int(n) for a, n in zip(ids, pipe.execute(), strict=True)}

    def holders(self, account_id: str) -> dict[str, int]:
        return {(k.decode() if isinstance(k, bytes) else k): int(v)
                for k, v in self.redis.zrange(slots_key(account_id), 0, -1, withscores=True)}

    def known(self) -> bool:
        """False when Redis lost the slot sets and they must be rebuilt."""
        return bool(self.redis.exists(EPOCH_KEY))

    def rebuild(self, held: Mapping[str, Mapping[str, int]]) -> None:
        """Replace every account's set with ``held`` (account -> {attempt id: lease end ms}), then mark them known."""
        pipe = self.redis.pipeline(transaction=True)
        for key in self.redis.scan_iter(match=slots_key("*"), count=500):
            pipe.delete(key)
        for account_id, members in held.items():
            if members:
                pipe.zadd(slots_key(account_id), dict(members))
        pipe.set(EPOCH_KEY, "1")
        pipe.execute()
