"""Coordination between processes through Redis: who dispatches an account now, whose turn it is first in
the workspace's pool, the periodic tasks one process of all runs, and the debounce of "fill the freed slot".

Nothing here is the source of truth: a lost key only means one more dispatch attempt, one more periodic run
or one more message, all of which are safe to repeat.
"""

from __future__ import annotations

from typing import cast

from redis import Redis
from redis.lock import Lock

from shared.redis_keys import (
    BILLING_REPAIR_LOCK,
    BROKER_HEARTBEATS_KEY,
    CONTACT_LOG_RETENTION_LOCK,
    RESULTS_SWEEP_LOCK,
    SLOTS_REBUILD_LOCK,
    dispatch_lock_key,
    dispatch_turn_key,
    kick_key,
    pool_refresh_key,
)

#: Gate of the ledger repair (one process a period, every workspace).
BILLING_REPAIR = "billing-repair"
#: Gate of the reading of the workspace's concurrency limit from the provider.
POOL_REFRESH = "pool-refresh"
#: Gate of the results sweep (one process a period runs it).
RESULTS_SWEEP = "results-sweep"
#: Gate of the contact log's retention (one process an hour deletes old attempts).
CONTACT_LOG_RETENTION = "contact-log-retention"


class Coordination:
    """Locks, turns, gates and kicks shared by every process.

    :param redis: a ``redis.Redis`` client.
    :param workspace: the provider workspace (:func:`shared.redis_keys.workspace_id`) whose pool the turns
        and the concurrency-limit gate belong to.
    """

    def __init__(self, redis: Redis, *, workspace: str = "default") -> None:
        self.redis = redis
        self.workspace = workspace

    def dispatch_lock(self, account_id: str, *, timeout_s: float) -> Lock:
        """The non-blocking lock held while one process dispatches the account's due jobs."""
        lock: Lock = self.redis.lock(dispatch_lock_key(account_id), timeout=timeout_s, blocking=False)
        return lock

    def rebuild_lock(self, *, timeout_s: float) -> Lock:
        """The non-blocking lock held while one process rebuilds the slot sets."""
        lock: Lock = self.redis.lock(SLOTS_REBUILD_LOCK, timeout=timeout_s, blocking=False)
        return lock

    def next_turn(self) -> int:
        """The number of this dispatch run in the workspace (1, 2, ...): whose turn it is to be served first."""
        return int(self.redis.incr(dispatch_turn_key(self.workspace)))

    def once_per(self, gate: str, interval_ms: int) -> bool:
        """True for the one caller of all that may run ``gate``'s task now; the others get False until
        ``interval_ms`` have passed (or :meth:`reopen`)."""
        return bool(self.redis.set(self._gate_key(gate), "1", nx=True, px=interval_ms))

    def reopen(self, gate: str) -> None:
        """Let the next caller of :meth:`once_per` run ``gate``'s task (this run failed)."""
        self.redis.delete(self._gate_key(gate))

    def kick(self, account_id: str, *, debounce_ms: int) -> bool:
        """True when no "dispatch this account" message was asked for within ``debounce_ms``: send one."""
        return bool(self.redis.set(kick_key(account_id), "1", nx=True, px=debounce_ms))

    def forget_account(self, account_id: str) -> None:
        """Drop the account's dispatch lock and kick marker (what a killed run left)."""
        self.redis.delete(dispatch_lock_key(account_id), kick_key(account_id))

    def broker_heartbeats(self, *, since_ms: int) -> dict[bytes, float]:
        """The broker's workers that beat since ``since_ms`` (epoch ms): worker id -> last beat (ms)."""
        # With scores, the reply is (member, score) pairs; the client's annotation covers every shape of reply.
        rows = cast("list[tuple[bytes, float]]",
                    self.redis.zrangebyscore(BROKER_HEARTBEATS_KEY, since_ms, "+inf", withscores=True))
        return dict(rows)

    def _gate_key(self, gate: str) -> str:
        if gate == BILLING_REPAIR:
            return BILLING_REPAIR_LOCK
        if gate == POOL_REFRESH:
            return pool_refresh_key(self.workspace)
        if gate == CONTACT_LOG_RETENTION:
            return CONTACT_LOG_RETENTION_LOCK
        if gate == RESULTS_SWEEP:
            return RESULTS_SWEEP_LOCK
        raise ValueError(f"unknown gate {gate!r}")
