"""The batch cache's bulk load against real services: nx-27017 for the batches, real Redis for invalidations.

A cold miss reads the batch with the other active batches in one query; these tests check that the
batches loaded that way obey the same rules as the others: an invalidation reaches them at once, one
that arrives while the load is in flight keeps its stale answer out of the cache, a resubscription
clears them, and hits and misses are counted per read.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
import redis as redis_lib

from shared.cache.batch_cache import CAUSE_DISCONNECT, BatchCache, CacheGroup
from shared.cache.invalidation import Invalidation, InvalidationListener, publish_invalidation
from shared.domain import states
from shared.metrics import REGISTRY
from shared.stores.batches import BatchStore
from tests.fixtures.cache import PATIENCE_S, ManualClock
from tests.helpers import frozen_clock, wait_until

#: A clock that barely moves: the TTL cannot be why a cache reads again.
FROZEN = frozen_clock(datetime(2026, 3, 4, 15, 0, tzinfo=UTC))


def settings(max_attempts: int) -> dict:
    return {"call_settings": {"max_attempts": max_attempts}}


def create(store: BatchStore, n: int, *, account: str = "acc") -> list[str]:
    return [store.create({"name": f"campaign {i}", "account_id": account, **settings(2)})["_id"] for i in range(n)]


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def owned_config(config, owned_redis):
    return config.with_overrides(redis_url=owned_redis.url)


class Published:
    """A ``BatchStore`` whose writes publish on ``redis_url``, as ``workers.runtime`` wires it."""

    def __init__(self, db, config) -> None:
        self.redis = redis_lib.Redis.from_url(config.redis_url)
        self.store = BatchStore(db, clock=FROZEN, config=config,
                                on_change=lambda batch_id: publish_invalidation(self.redis, batch_id))


@pytest.fixture
def published(db, owned_config):
    found = Published(db, owned_config)
    yield found
    found.redis.close()


class Listening:
    """A cache kept fresh by a listener on the test's own Redis; ``applied`` records every invalidation."""

    def __init__(self, cache: BatchCache, group: CacheGroup, redis_url: str) -> None:
        self.cache = cache
        self.applied: list[Invalidation] = []
        self.listener = InvalidationListener(redis_url=redis_url, cache=group, poll_s=0.05, backoff_max_s=0.5,
                                             on_message=self.applied.append).start()
        assert self.listener.wait_connected(PATIENCE_S)

    def wait_applied(self, batch_id: str) -> bool:
        return bool(wait_until(lambda: Invalidation(batch_id=batch_id) in self.applied))


@pytest.fixture
def listening(owned_config):
    started: list[Listening] = []

    def start(cache: BatchCache, group: CacheGroup) -> Listening:
        found = Listening(cache, group, owned_config.redis_url)
        started.append(found)
        return found

    yield start
    for found in started:
        assert found.listener.stop()


class GatedBulk:
    """``BatchStore.get_with_active``, held after MongoDB answered until the test opens ``gate``."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.answered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self, batch_id: str, limit: int) -> list[dict]:
        self.calls += 1
        docs = self.store.get_with_active(batch_id, limit)
        self.answered.set()
        assert self.gate.wait(PATIENCE_S), "the test never opened the gate"
        return docs


def in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


# -- one query for every active batch; hits and misses ----------------------------------------------


def test_a_cold_miss_loads_every_active_batch_in_one_query_and_counts_per_read(db, config):
    store = BatchStore(db, clock=FROZEN, config=config)
    ids = create(store, 5)
    paused = create(store, 1)[0]
    store.set_status(paused, states.BATCH_PAUSED)
    clock = ManualClock()
    cache = BatchCache.for_store(store, config=config, clock=clock, group=None)
    hits, misses = counter("outdial_batch_cache_hits_total"), counter("outdial_batch_cache_misses_total")

    first = cache.get(ids[0])
    assert first is not None and first.settings is not None and first.settings.max_attempts == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.bulk_loads, stats.bulk_stored) == (0, 1, 1, 1, 4)
    assert paused not in cache  # only active batches come along
    for batch_id in ids[1:]:
        found = cache.get(batch_id)
        assert found is not None and found.batch_id == batch_id and found.settings is not None
    assert cache.get(paused).status == states.BATCH_PAUSED  # a miss read alone: a bulk load was made just now
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.bulk_loads, stats.size) == (4, 2, 2, 1, 6)
    assert counter("outdial_batch_cache_hits_total") - hits == 4
    assert counter("outdial_batch_cache_misses_total") - misses == 2

    cache.evict(ids[3])  # an edit: that batch alone is read again
    assert cache.get(ids[3]) is not None
    assert (cache.stats().loads, cache.stats().bulk_loads) == (3, 1)

    clock.advance(cache.ttl_s + 1)  # everything expired: the next miss refills the cache in one query
    assert cache.get(ids[4]) is not None
    stats = cache.stats()
    assert (stats.loads, stats.bulk_loads) == (4, 2)
    assert all(cache.get(batch_id) is not None for batch_id in ids) and cache.stats().loads == 4


def test_the_bulk_load_is_bounded_and_still_answers_for_any_batch(db, config):
    store = BatchStore(db, clock=FROZEN, config=config)
    ids = create(store, 5)
    assert [d["_id"] for d in store.get_with_active(ids[0], 3)] == sorted(ids, reverse=True)[:3]
    cache = BatchCache.for_store(store, config=config, clock=ManualClock(), group=None, bulk_limit=3)
    oldest = min(ids)  # not among the 3 newest: the full answer lacks it, so it is read alone as well
    found = cache.get(oldest)
    assert found is not None and found.batch_id == oldest
    stats = cache.stats()
    assert (stats.loads, stats.bulk_loads, stats.bulk_stored, stats.size) == (2, 1, 3, 4)

    roomy = BatchCache.for_store(store, config=config, clock=ManualClock(), group=None)
    unknown = "65f1c0ffee00000000000777"
    assert roomy.get(unknown) is None  # the answer was not full: the batch does not exist, one query
    stats = roomy.stats()
    assert (stats.loads, stats.bulk_loads, stats.size, stats.negative_size) == (1, 1, 5, 1)
    assert roomy.get(unknown) is None and roomy.stats().loads == 1  # remembered (negative entry)
    assert roomy.get("not an id") is None


# -- invalidation -----------------------------------------------------------------------------------


def test_a_batch_that_came_with_a_bulk_load_is_fresh_in_another_process_right_after_a_change(
        published, owned_config, cache_peer):
    one, two = create(published.store, 2)
    peer = cache_peer(owned_config, FROZEN)
    assert peer.get(one)["source"] == "mongodb"
    second = peer.get(two)
    assert (second["source"], second["max_attempts"]) == ("cache", 2)  # it came with the first read

    changed_at = time.monotonic()
    published.store.update(two, settings(6))
    after = peer.read_when_invalidated(two, after=changed_at)
    assert after["at"] is not None, "the other process never applied the invalidation"
    assert (after["source"], after["max_attempts"]) == ("mongodb", 6)
    assert peer.get(two)["source"] == "cache"
    assert peer.get(one)["source"] == "cache"  # the other batch was not evicted
    stats = peer.call("stats")
    assert (stats["hits"], stats["misses"], stats["loads"]) == (3, 2, 2)


def test_an_invalidation_during_a_bulk_load_keeps_the_stale_answer_out(published, db, owned_config, listening):
    asked, other, untouched = create(published.store, 3)
    gated = GatedBulk(BatchStore(db, clock=FROZEN, config=owned_config))
    group = CacheGroup()
    cache = BatchCache.for_store(gated.store, config=owned_config, clock=FROZEN, group=group, bulk_loader=gated)
    watched = listening(cache, group)

    thread, out = in_thread(lambda: cache.get(asked))
    assert gated.answered.wait(PATIENCE_S)  # MongoDB answered with the old settings; not stored yet
    published.store.update(other, settings(7))
    published.store.update(asked, settings(8))
    assert watched.wait_applied(other) and watched.wait_applied(asked)
    gated.gate.set()
    thread.join(PATIENCE_S)
    assert out[0].settings.max_attempts == 2  # asked before the change: it gets the read it waited for
    assert other not in cache and asked not in cache and untouched in cache
    assert cache.get(other).settings.max_attempts == 7
    assert cache.get(asked).settings.max_attempts == 8
    assert cache.get(untouched).settings.max_attempts == 2
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.bulk_loads, stats.bulk_stored) == (1, 3, 3, 1, 1)


def test_a_resubscription_during_a_bulk_load_stores_nothing(published, db, owned_config, listening):
    ids = create(published.store, 3)
    gated = GatedBulk(BatchStore(db, clock=FROZEN, config=owned_config))
    group = CacheGroup()
    cache = BatchCache.for_store(gated.store, config=owned_config, clock=FROZEN, group=group, bulk_loader=gated)
    watched = listening(cache, group)

    thread, out = in_thread(lambda: cache.get(ids[0]))
    assert gated.answered.wait(PATIENCE_S)
    # Lost messages are modelled by a direct MongoDB edit (never published) plus a dropped subscription.
    db.batches.update_one({"_id": ids[1]}, {"$set": {"call_settings.max_attempts": 9}})
    published.redis.client_kill_filter(_type="pubsub")
    assert wait_until(lambda: watched.listener.connects == 2 and watched.listener.connected)
    gated.gate.set()
    thread.join(PATIENCE_S)
    assert out[0] is not None and len(cache) == 0 and not cache.suspended
    assert cache.get(ids[1]).settings.max_attempts == 9
    assert gated.calls == 2  # the cleared cache refills in one query
    assert all(batch_id in cache for batch_id in ids)


def test_a_lost_subscription_clears_and_the_new_one_clears_again_before_storing(published, db, owned_config,
                                                                             listening):
    ids = create(published.store, 2)
    group = CacheGroup()
    cache = BatchCache.for_store(published.store, config=owned_config, clock=FROZEN, group=group)
    watched = listening(cache, group)
    cache.get(ids[0])
    assert len(cache) == 2 and cache.stats().evictions[CAUSE_DISCONNECT] == 0

    db.batches.update_one({"_id": ids[1]}, {"$set": {"call_settings.max_attempts": 5}})  # never published
    published.redis.client_kill_filter(_type="pubsub")
    assert wait_until(lambda: watched.listener.connects == 2 and watched.listener.connected)
    assert watched.listener.disconnects == 1
    assert len(cache) == 0 and not cache.suspended
    assert cache.stats().evictions[CAUSE_DISCONNECT] == 2  # dropped when the subscription was lost
    assert cache.get(ids[1]).settings.max_attempts == 5
    assert cache.get(ids[0]) is not None
    stats = cache.stats()
    assert (stats.loads, stats.bulk_loads, stats.size) == (2, 2, 2)
