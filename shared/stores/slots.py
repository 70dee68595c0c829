"""Provider concurrency slots, shared by every process through Redis: per account, and per workspace.

A slot is a member of the sorted set ``outdial:slots:<account_id>`` (member: the attempt id,
score: when its lease ends, in milliseconds on the shared clock) and of the workspace's pool
``outdial:pool:<workspace>``. Every account dials through one Retell API key, so one
workspace and its one concurrency limit: the pool caps the calls in flight across all accounts,
and each account's own limit is its share within it. Acquiring is one Lua call over both sets:
drop expired leases, then add the member to both if fewer than the account's limit and fewer
than the pool's limit are held. A process that dies holding a slot loses it when the lease ends (the
lease covers the dialing lease, ring time, the longest call and a grace period), so slots never leak.

Redis is not the source of truth: if it loses the sets (restart without persistence) the
marker key ``outdial:slots-epoch`` is gone too, :meth:`Slots.acquire` answers "unknown" and the
scheduler rebuilds the sets from the calls MongoDB shows in progress (:meth:`Slots.rebuild`)
before anyone dials again, so both limits hold across a Redis restart.

dramatiq's ``ConcurrentRateLimiter`` is not used: it is a counter held for the duration of one
``with`` block in one thread, while a call holds its slot across several messages (dial, polls,
finalize) and possibly several processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import IntEnum
from typing import Any

from shared.redis_keys import EPOCH_KEY, pool_key, slots_key, workspace_limit_key

__all__ = ["EPOCH_KEY", "UNLIMITED_POOL", "Acquired", "Slots"]

_ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
  return 1
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) and redis.call('ZCARD', KEYS[3]) < tonumber(ARGV[5]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
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


#: Pool limit used when neither the provider nor ``RETELL_CONCURRENCY_LIMIT`` has said anything (no cap).
UNLIMITED_POOL = 1_000_000


class Slots:
    """Leased slots in Redis.

    :param redis: a ``redis.Redis`` client.
    :param workspace: the provider workspace every account dials through (a digest of the API key,
        :func:`shared.redis_keys.workspace_id`); its pool caps the calls in flight across accounts.
    """

    def __init__(self, redis: Any, *, workspace: str = "default") -> None:
        self.redis = redis
        self.workspace = workspace
        self.pool_key = pool_key(workspace)
        self._acquire = redis.register_script(_ACQUIRE)
        self._in_use = redis.register_script(_IN_USE)

    def acquire(self, account_id: str, holder: str, *, limit: int, now_ms: int, lease_ms: int,
                pool_limit: int = UNLIMITED_POOL) -> Acquired:
        """Take (or renew) a slot for ``holder`` (an attempt id) if fewer than ``limit`` are held by the
        account and fewer than ``pool_limit`` by the whole workspace."""
        result = self._acquire(keys=[slots_key(account_id), EPOCH_KEY, self.pool_key],
                               args=[now_ms, limit, holder, now_ms + lease_ms, pool_limit])
        return Acquired(int(result))

    def release(self, account_id: str, holder: str) -> bool:
        """Give the slot back (to the account and the pool); True when it was held. Idempotent."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(slots_key(account_id), holder)
        pipe.zrem(self.pool_key, holder)
        held, _ = pipe.execute()
        return bool(held)

    def pool_in_use(self, *, now_ms: int) -> int:
        """Slots held across every account of the workspace, by unexpired leases."""
        return int(self._in_use(keys=[self.pool_key], args=[now_ms]))

    def pool_limit(self) -> int | None:
        """The workspace's concurrency limit as last read from the provider (:meth:`set_pool_limit`), or None."""
        raw = self.redis.get(workspace_limit_key(self.workspace))
        return int(raw) if raw else None

    def set_pool_limit(self, limit: int, *, ttl_ms: int) -> None:
        """Remember the workspace's concurrency limit read from the provider, for ``ttl_ms``."""
        self.redis.set(workspace_limit_key(self.workspace), limit, px=ttl_ms)

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

    def forget_account(self, account_id: str) -> None:
        """Drop the account's slot set (what a killed run left; the pool's members expire with their leases)."""
        self.redis.delete(slots_key(account_id))

    def known(self) -> bool:
        """False when Redis lost the slot sets and they must be rebuilt."""
        return bool(self.redis.exists(EPOCH_KEY))

    def rebuild(self, held: Mapping[str, Mapping[str, int]]) -> None:
        """Replace every account's set, and the pool, with ``held`` (account -> {attempt id: lease end ms}),
        then mark them known."""
        pipe = self.redis.pipeline(transaction=True)
        for key in self.redis.scan_iter(match=slots_key("*"), count=500):
            pipe.delete(key)
        pipe.delete(self.pool_key)
        pooled: dict[str, int] = {}
        for account_id, members in held.items():
            if members:
                pipe.zadd(slots_key(account_id), dict(members))
                pooled.update(members)
        if pooled:
            pipe.zadd(self.pool_key, pooled)
        pipe.set(EPOCH_KEY, "1")
        pipe.execute()
