"""Per-process wiring: configuration, clock, MongoDB, Redis and the stores, built once."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import redis as redis_lib
from pymongo.database import Database

from shared import mongo
from shared.accounts import AccountStore
from shared.batches import BatchStore
from shared.clock import Clock, get_clock
from shared.config import Config, get_config
from shared.embedded import LOCAL_REDIS_URL
from shared.errors import ConfigError
from shared.jobs import JobStore


@dataclass
class Runtime:
    """What a process needs to talk to MongoDB and Redis. Build it with :func:`get_runtime`."""

    config: Config
    clock: Clock
    db: Database
    redis: redis_lib.Redis

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.db, clock=self.clock, config=self.config)

    @cached_property
    def batches(self) -> BatchStore:
        return BatchStore(self.db, clock=self.clock, config=self.config, on_change=self.publish_invalidation)

    @cached_property
    def accounts(self) -> AccountStore:
        return AccountStore(self.db, clock=self.clock, config=self.config)

    def publish_invalidation(self, batch_id: str) -> None:
        try:
            from shared.invalidation import publish_invalidation
        except ImportError:  # pragma: no cover - before the cache module exists
            return
        publish_invalidation(self.redis, batch_id)


def build_runtime(config: Config | None = None, clock: Clock | None = None) -> Runtime:
    """Connect to the services ``config`` names. MongoDB must be named: processes share it."""
    config = config or get_config()
    if not config.mongodb_uri:
        raise ConfigError(
            "MONGODB_URI is not set: worker, clock and web processes must share one MongoDB "
            "(`outdial services` starts an embedded one and prints its URI)"
        )
    redis_url = config.redis_url or LOCAL_REDIS_URL
    db = mongo.database(config.mongodb_uri, config.mongodb_db)
    client = redis_lib.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5,
                                      health_check_interval=30)
    return Runtime(config=config, clock=clock or get_clock(), db=db, redis=client)


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime()
            mongo.ensure_indexes(_runtime.db)
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _lock:
        _runtime = runtime
