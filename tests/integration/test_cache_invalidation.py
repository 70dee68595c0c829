"""Batch cache invalidation end to end: real Redis, the embedded MongoDB server, real separate processes."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime

import dramatiq
import pytest
import redis as redis_lib
from dramatiq.brokers.stub import StubBroker

from shared.cache.batch_cache import BatchCache, CacheGroup
from shared.cache.invalidation import (
    Invalidation,
    InvalidationListener,
    process_listener,
    publish_invalidate_all,
    publish_invalidation,
)
from shared.config import DEFAULT_BATCH_CACHE_TTL
from shared.domain import states
from shared.metrics import REGISTRY
from shared.stores.batches import BatchStore
from tests.fixtures.cache import PATIENCE_S
from tests.helpers import frozen_clock, wait_until
from workers.dev import embedded
from workers.middleware import CacheInvalidationMiddleware, cache_listener_ctx

#: A clock that barely moves: the TTL cannot be why a process sees a change.
FROZEN = frozen_clock(datetime(2026, 3, 4, 15, 0, tzinfo=UTC))


@pytest.fixture
def owned_config(config, owned_redis):
    return config.with_overrides(redis_url=owned_redis.url)


class Writer:
    """Another process's batch writes, published after the MongoDB write as ``workers.runtime`` wires them."""

    def __init__(self, config, db) -> None:
        self.redis = redis_lib.Redis.from_url(config.redis_url)
        self.batches = BatchStore(db, clock=FROZEN, config=config,
                                  on_change=lambda batch_id: publish_invalidation(self.redis, batch_id))


@pytest.fixture
def writer(owned_config, db):
    found = Writer(owned_config, db)
    yield found
    found.redis.close()


def settings_of(answer: dict) -> dict:
    assert answer["found"], answer
    return answer["call_settings"]


def test_another_process_reads_the_new_settings_right_after_the_change(writer, owned_config, cache_peer,
                                                                       record_property):
    doc = writer.batches.create({"name": "cobranza", "account_id": "acc", "call_settings": {"max_attempts": 2}})
    peer = cache_peer(owned_config, FROZEN)
    first = peer.get(doc["_id"])
    assert (first["source"], first["max_attempts"]) == ("mongodb", 2)
    assert peer.get(doc["_id"])["source"] == "cache"

    changed_at = time.monotonic()
    writer.batches.update(doc["_id"], {"call_settings": {"max_attempts": 5, "ring_timeout": 20}})
    after = peer.read_when_invalidated(doc["_id"], after=changed_at)
    assert after["at"] is not None, "the other process never applied the invalidation"
    assert after["source"] == "mongodb" and after["max_attempts"] == 5
    assert settings_of(after) == {"max_attempts": 5, "ring_timeout": 20}
    assert peer.get(doc["_id"])["source"] == "cache"  # and it is cached again

    latency_s = after["at"] - changed_at  # MongoDB write + publish + eviction + the other process's read
    record_property("change_to_new_read_ms", round(latency_s * 1000, 2))
    # The peer's clock is frozen, so only the message can have made it re-read; the bound is
    # "long before the TTL" (the 100 ms figure is measured by tests/benchmarks/bench_cache.py).
    assert latency_s < DEFAULT_BATCH_CACHE_TTL
    stats = peer.call("stats")
    assert stats["connected"] and not stats["suspended"]


def test_a_paused_batch_is_seen_paused_by_the_other_process(writer, owned_config, cache_peer):
    doc = writer.batches.create({"name": "recordatorios", "account_id": "acc"})
    peer = cache_peer(owned_config, FROZEN)
    assert peer.get(doc["_id"])["status"] == states.BATCH_ACTIVE
    published_at = time.monotonic()
    writer.batches.set_status(doc["_id"], states.BATCH_PAUSED)
    assert peer.wait_invalidated(doc["_id"], after=published_at) is not None
    assert peer.get(doc["_id"])["status"] == states.BATCH_PAUSED


def test_every_process_receives_and_the_all_channel_clears_them(writer, owned_config, cache_peer):
    one = writer.batches.create({"name": "a", "account_id": "acc"})
    two = writer.batches.create({"name": "b", "account_id": "acc"})
    peers = [cache_peer(owned_config, FROZEN), cache_peer(owned_config, FROZEN)]
    for peer in peers:
        peer.get(one["_id"])
        peer.get(two["_id"])
        assert peer.call("stats")["size"] == 2
    published_at = time.monotonic()
    assert publish_invalidate_all(writer.redis) == 2
    for peer in peers:
        assert peer.wait_invalidated(None, after=published_at) is not None
        assert peer.call("stats")["size"] == 0
        assert peer.get(one["_id"])["source"] == "mongodb"


def test_a_batch_created_after_a_miss_is_found_once_invalidated(writer, owned_config, cache_peer, db):
    peer = cache_peer(owned_config, FROZEN)
    batch_id = "65f1c0ffee00000000000777"
    assert peer.get(batch_id) == {"found": False, "source": "mongodb"}
    assert peer.get(batch_id) == {"found": False, "source": "cache"}  # remembered: no query per job
    db.batches.insert_one({"_id": batch_id, "name": "late", "account_id": "acc", "status": "active"})
    published_at = time.monotonic()
    assert publish_invalidation(writer.redis, batch_id) == 1
    assert peer.wait_invalidated(batch_id, after=published_at) is not None
    assert peer.get(batch_id)["found"]


# -- the listener against a Redis the test restarts ----------------------------------------------------


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_listener_survives_a_redis_restart(owned_redis, owned_config, db):
    store = BatchStore(db, clock=FROZEN, config=owned_config)
    doc = store.create({"name": "b", "account_id": "acc", "call_settings": {"max_attempts": 2}})
    group = CacheGroup()
    cache = BatchCache.for_store(store, config=owned_config, clock=FROZEN, group=group)
    applied = threading.Event()
    listener = InvalidationListener(redis_url=owned_redis.url, cache=group, poll_s=0.05,
                                    backoff_max_s=0.5, on_message=lambda _: applied.set())
    listener.start()
    try:
        assert listener.wait_connected(PATIENCE_S)
        assert gauge("outdial_batch_cache_listener_connected") == 1
        cache.get(doc["_id"])
        cache.get(doc["_id"])
        assert cache.stats().loads == 1

        owned_redis.stop()
        assert wait_until(lambda: not listener.connected), "the listener did not notice the lost connection"
        assert cache.suspended and len(cache) == 0
        assert gauge("outdial_batch_cache_listener_connected") == 0
        loads = cache.stats().loads
        for _ in range(3):  # still serving, from MongoDB
            found = cache.get(doc["_id"])
            assert found is not None and found.settings is not None and found.settings.max_attempts == 2
        assert cache.stats().loads == loads + 3

        owned_redis.start()
        assert listener.wait_connected(PATIENCE_S), "the listener did not resubscribe"
        assert (listener.connects, listener.disconnects) == (2, 1)
        assert not cache.suspended and len(cache) == 0
        cache.get(doc["_id"])
        cache.get(doc["_id"])
        assert len(cache) == 1

        client = redis_lib.Redis.from_url(owned_redis.url)
        store.on_change = lambda batch_id: publish_invalidation(client, batch_id)
        store.update(doc["_id"], {"call_settings": {"max_attempts": 7}})
        assert applied.wait(PATIENCE_S), "invalidations do not arrive after the restart"
        found = cache.get(doc["_id"])
        assert found is not None and found.settings is not None and found.settings.max_attempts == 7
        client.close()
    finally:
        assert listener.stop()
    assert not listener.running


def test_listener_waits_for_a_redis_that_is_not_there_yet(db, config):
    port = embedded.free_port()
    group = CacheGroup()
    cache = BatchCache(loader=lambda _: None, clock=FROZEN, config=config, group=group)
    listener = InvalidationListener(redis_url=f"redis://127.0.0.1:{port}/0", cache=group, poll_s=0.05,
                                    backoff_initial_s=0.01, backoff_max_s=0.2).start()
    server = None
    try:
        assert wait_until(lambda: listener._failures >= 3), "the listener should keep retrying"
        assert cache.suspended and not listener.connected
        server = embedded.start_redis(port=port)
        assert listener.wait_connected(PATIENCE_S)
        assert not cache.suspended
    finally:
        assert listener.stop()
        if server is not None:
            server.stop()


def test_a_silent_redis_counts_as_a_lost_connection(owned_redis, config):
    """A frozen server (SIGSTOP: the socket stays open, nothing answers) is detected by the keepalive."""
    import signal

    group = CacheGroup()
    cache = BatchCache(loader=lambda b: {"_id": b}, clock=FROZEN, config=config, group=group)
    listener = InvalidationListener(redis_url=owned_redis.url, cache=group, poll_s=0.02, ping_interval_s=0.2,
                                    backoff_max_s=0.2, connect_timeout_s=0.5).start()
    proc = owned_redis._server.proc
    assert proc is not None
    try:
        assert listener.wait_connected(PATIENCE_S)
        threading.Event().wait(1.0)  # five ping intervals of silence: only answered pings keep it connected
        assert listener.connected and (listener.connects, listener.disconnects) == (1, 0)
        cache.get("65f1c0ffee00000000000001")
        proc.send_signal(signal.SIGSTOP)
        assert wait_until(lambda: not listener.connected), "a silent Redis went unnoticed"
        assert cache.suspended and len(cache) == 0 and listener.disconnects == 1
        proc.send_signal(signal.SIGCONT)
        assert listener.wait_connected(PATIENCE_S)
        assert not cache.suspended
    finally:
        proc.send_signal(signal.SIGCONT)
        assert listener.stop()


def test_malformed_channels_on_real_redis_are_ignored(owned_redis, config):
    docs = {f"65f1c0ffee00000000000{i:03x}": {"_id": f"65f1c0ffee00000000000{i:03x}"} for i in range(3)}
    group = CacheGroup()
    cache = BatchCache(loader=lambda b: docs.get(b), clock=FROZEN, config=config, group=group)
    seen: list[Invalidation] = []
    listener = InvalidationListener(redis_url=owned_redis.url, cache=group, on_message=seen.append,
                                    poll_s=0.05).start()
    client = redis_lib.Redis.from_url(owned_redis.url)
    try:
        assert listener.wait_connected(PATIENCE_S)
        for batch_id in docs:
            cache.get(batch_id)
        for channel in (b"cache:invalidate:nope", b"cache:invalidate:" + b"f" * 100_000,
                        b"cache:invalidate:\xff\xfe" + b"0" * 22, b"cache:invalidate:*all*", b"cache:invalidate:"):
            assert client.publish(channel, b"1") == 1
        last = next(reversed(docs))
        assert client.publish(f"cache:invalidate:{last.upper()}", b"payload ignored") == 1
        assert wait_until(lambda: seen), "the valid message after the bad ones never arrived"
        assert seen == [Invalidation(batch_id=last)]
        assert listener.ignored == 5 and listener.connected
        assert len(cache) == 2 and last not in cache
    finally:
        client.close()
        assert listener.stop()


def test_listeners_start_and_stop_cleanly_many_times(owned_redis):
    for _ in range(10):
        listener = InvalidationListener(redis_url=owned_redis.url, cache=CacheGroup(), poll_s=0.05).start()
        assert listener.wait_connected(PATIENCE_S)
        assert listener.stop()
        assert not listener.running and not listener.connected
    alive = [t for t in threading.enumerate() if t.name == "outdial-cache-invalidation"]
    assert alive == []


# -- wiring: the dramatiq middleware and the web lifecycle ---------------------------------------------


def test_middleware_runs_the_listener_for_a_worker(config, redis_client):
    broker = StubBroker()
    broker.add_middleware(CacheInvalidationMiddleware())
    cache = BatchCache(loader=lambda b: {"_id": b}, clock=FROZEN, config=config)  # the process group
    batch_id = "65f1c0ffee00000000000abc"
    broker.emit_after("process_boot")  # what the dramatiq command does in each worker process
    worker = dramatiq.Worker(broker, worker_timeout=100)
    worker.start()  # after_worker_boot: the same listener, not a second one
    try:
        listener = process_listener()
        assert listener is not None and listener.wait_connected(PATIENCE_S)
        assert len([t for t in threading.enumerate() if t.name == "outdial-cache-invalidation"]) == 1
        cache.get(batch_id)
        assert publish_invalidation(redis_client, batch_id) >= 1
        assert wait_until(lambda: batch_id not in cache)
    finally:
        worker.stop()
        broker.close()
    assert process_listener() is None and not listener.running


def test_web_lifecycle_runs_the_listener_while_the_app_runs(config):
    async def lifecycle() -> None:
        ctx = cache_listener_ctx(app={})
        await ctx.__anext__()
        listener = process_listener()
        assert listener is not None
        assert await asyncio.get_running_loop().run_in_executor(None, listener.wait_connected, PATIENCE_S)
        with pytest.raises(StopAsyncIteration):
            await ctx.__anext__()
        assert process_listener() is None and not listener.running

    asyncio.run(lifecycle())
