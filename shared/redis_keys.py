"""Every Redis key and channel name outdial uses, in one place.

Only the modules that own these keys use them: :mod:`shared.stores.slots` (slot sets, the pool and its limit),
:mod:`shared.stores.coordination` (locks, turns, once-per-interval gates, kicks), :mod:`shared.metrics` (process
snapshots), :mod:`shared.cache.invalidation` (the cache channels) and :mod:`shared.stores.admin_sessions` (the
dashboard's admin sessions).
"""

from __future__ import annotations

#: Prefix of every key outdial owns (the broker uses its own ``dramatiq`` namespace).
PREFIX = "outdial"

#: Pub/sub channel prefix for batch cache invalidation; the suffix is the batch id.
INVALIDATE_CHANNEL_PREFIX = "cache:invalidate:"
#: Pattern the listener subscribes to.
INVALIDATE_PATTERN = INVALIDATE_CHANNEL_PREFIX + "*"
#: Channel suffix meaning "every batch" (a batch id is 24 hex characters, so it cannot collide).
INVALIDATE_ALL = "all"


def invalidate_channel(batch_id: str) -> str:
    """Channel that evicts one batch from every process's cache."""
    return INVALIDATE_CHANNEL_PREFIX + batch_id


def invalidate_all_channel() -> str:
    """Channel that clears every process's batch cache."""
    return INVALIDATE_CHANNEL_PREFIX + INVALIDATE_ALL


def workspace_id(api_key: str, base_url: str | None = None) -> str:
    """A provider workspace's name in Redis keys: a digest of its API key and address (the key itself is
    never written)."""
    import hashlib

    return hashlib.sha256(f"{base_url or ''}|{api_key}".encode()).hexdigest()[:16]


def pool_key(workspace: str) -> str:
    """Sorted set of the slots held across every account of one provider workspace (same members as the
    accounts' sets); outside the accounts' namespace, so that no account id can name it."""
    return f"{PREFIX}:pool:{workspace}"


def workspace_limit_key(workspace: str) -> str:
    """The workspace's concurrency limit as last read from the provider (with a TTL)."""
    return f"{PREFIX}:ws-limit:{workspace}"


def pool_refresh_key(workspace: str) -> str:
    """Marker spacing two readings of the workspace's concurrency limit from the provider."""
    return f"{PREFIX}:ws-refresh:{workspace}"


def dispatch_turn_key(workspace: str) -> str:
    """Counter of dispatch runs: whose turn it is to be served first from the workspace's pool."""
    return f"{PREFIX}:dispatch-turn:{workspace}"


#: Marker whose absence means Redis lost the slot sets (outside the accounts' namespace: an account may be
#: called "epoch").
EPOCH_KEY = f"{PREFIX}:slots-epoch"


def slots_key(account_id: str) -> str:
    """Sorted set of the provider concurrency slots held by an account (member: attempt id, score: lease end)."""
    return f"{PREFIX}:slots:{account_id}"


#: Prefix of the keys holding each process's metric samples (the suffix is the process label).
METRICS_SNAPSHOT_PREFIX = f"{PREFIX}:metrics:proc:"
#: Pattern matching every process's metric snapshot.
METRICS_SNAPSHOT_PATTERN = METRICS_SNAPSHOT_PREFIX + "*"


def metrics_snapshot_key(process: str) -> str:
    """A process's metric samples, for the web dyno's /metrics (with a TTL: a stopped process drops out)."""
    return METRICS_SNAPSHOT_PREFIX + process


def admin_session_key(session_id: str) -> str:
    """Marker of an open admin session of the dashboard (with the session's lifetime as TTL; deleted at sign-out)."""
    return f"{PREFIX}:admin-session:{session_id}"


def dispatch_lock_key(account_id: str) -> str:
    """Lock held while one process dispatches an account's due jobs."""
    return f"{PREFIX}:lock:schedule:{account_id}"


def kick_key(account_id: str) -> str:
    """Debounce marker of a "fill the freed slot" message for an account."""
    return f"{PREFIX}:kick:{account_id}"


#: Lock held while one process rebuilds the slot sets after Redis lost them.
SLOTS_REBUILD_LOCK = f"{PREFIX}:lock:slots-rebuild"
#: Marker that spaces two ledger repairs.
BILLING_REPAIR_LOCK = f"{PREFIX}:lock:billing-repair"
#: Marker that spaces two runs of the contact log's retention (the deletion of old attempts).
CONTACT_LOG_RETENTION_LOCK = f"{PREFIX}:lock:contact-log-retention"
#: Marker that spaces two results sweeps (``RESULTS_SWEEP_S``).
RESULTS_SWEEP_LOCK = f"{PREFIX}:lock:results-sweep"

#: The broker's heartbeats, one per broker: worker processes and every process that sends messages (dramatiq's
#: own namespace; outdial only reads it).
BROKER_HEARTBEATS_KEY = "dramatiq:__heartbeats__"
