"""The batch cache and the listener's message handling, as pure logic (loaders are plain functions)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as redis_lib
from hypothesis import given
from hypothesis import strategies as st

from shared.cache.batch_cache import (
    CAUSE_ALL,
    CAUSE_MESSAGE,
    CAUSE_SIZE,
    PROCESS_CACHES,
    BatchCache,
    CacheGroup,
)
from shared.cache.invalidation import (
    MAX_CHANNEL_LENGTH,
    Invalidation,
    InvalidationListener,
    parse_channel,
    publish_invalidate_all,
    publish_invalidation,
)
from shared.clock import started_at
from shared.config import load_config
from shared.domain.call_settings import parse_call_settings
from shared.errors import ServiceError, ValidationError
from shared.metrics import REGISTRY
from shared.redis_keys import INVALIDATE_CHANNEL_PREFIX, invalidate_all_channel, invalidate_channel
from tests.fixtures.cache import ManualClock
from tests.helpers import wait_until

CONFIG = load_config({})
A = "65f1c0ffee0000000000000a"
B = "65f1c0ffee0000000000000b"
HEX = "0123456789abcdef"


class Docs:
    """A loader over a dict of documents that counts its calls and can be held on a gate."""

    def __init__(self, docs: Mapping[str, dict[str, Any]] | None = None) -> None:
        self.docs = dict(docs or {})
        self.calls: list[str] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.error: Exception | None = None

    def __call__(self, batch_id: str) -> dict[str, Any] | None:
        self.calls.append(batch_id)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test never opened the gate"
        if self.error is not None:
            raise self.error
        doc = self.docs.get(batch_id)
        return None if doc is None else dict(doc)


def batch(batch_id: str, **fields: Any) -> dict[str, Any]:
    return {"_id": batch_id, "status": "active", "account_id": "acc", **fields}


def make_cache(docs: Docs, clock: ManualClock | None = None, **options: Any) -> BatchCache:
    return BatchCache(loader=docs, clock=clock or ManualClock(), config=CONFIG, group=None, **options)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels or None) or 0.0


# -- reads ----------------------------------------------------------------------------------------


def test_second_read_is_a_hit_and_settings_are_parsed_once():
    docs = Docs({A: batch(A, call_settings={"max_attempts": 4, "ring_timeout": 20})})
    parsed: list[Any] = []

    def parse(raw: Any):
        parsed.append(raw)
        return parse_call_settings(raw, config=CONFIG)

    cache = make_cache(docs, parse_settings=parse)
    hits_before = sample("outdial_batch_cache_hits_total")
    first = cache.get(A)
    assert first is not None and first.settings is not None
    assert first.settings.max_attempts == 4 and first.settings.ring_timeout == 20
    assert first.settings.retry_delay_hours == CONFIG.retry_delay_minutes / 60  # defaults filled in
    for _ in range(50):
        assert cache.get(A) is first
    assert docs.calls == [A] and len(parsed) == 1
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (50, 1, 1)
    assert sample("outdial_batch_cache_hits_total") - hits_before == 50


def test_batch_without_settings_gets_the_global_defaults():
    cache = make_cache(Docs({A: batch(A)}))
    found = cache.get(A)
    assert found is not None and found.settings is not None and found.settings_error is None
    assert found.settings.max_attempts == CONFIG.max_tries


def test_stored_settings_that_no_longer_validate_are_reported_not_raised():
    cache = make_cache(Docs({A: batch(A, call_settings={"max_attempts": 0, "colour": "red"})}))
    found = cache.get(A)
    assert found is not None and found.settings is None
    assert "max_attempts" in (found.settings_error or "") and "colour" in (found.settings_error or "")
    assert cache.get(A) is found  # cached like any other batch


def test_cached_document_is_read_only():
    cache = make_cache(Docs({A: batch(A)}))
    found = cache.get(A)
    assert found is not None and found.batch_id == A and found.status == "active" and found.account_id == "acc"
    with pytest.raises(TypeError):
        found.doc["status"] = "paused"  # type: ignore[index]


def test_single_flight_16_threads_one_read():
    docs = Docs({A: batch(A)})
    docs.gate = threading.Event()
    cache = make_cache(docs)
    results: list[Any] = []
    barrier = threading.Barrier(16)

    def reader() -> None:
        barrier.wait()
        results.append(cache.get(A))

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    assert wait_until(lambda: cache.stats().misses == 16), "every thread should be waiting on the one read"
    docs.gate.set()
    for t in threads:
        t.join(30)
    assert docs.calls == [A]
    assert len(results) == 16 and all(r is results[0] for r in results) and results[0] is not None
    assert cache.get(A) is results[0]


def test_single_flight_shares_a_failure_and_caches_nothing():
    docs = Docs({A: batch(A)})
    docs.gate = threading.Event()
    docs.error = ServiceError("mongodb down")
    cache = make_cache(docs)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            cache.get(A)
        except ServiceError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    assert wait_until(lambda: cache.stats().misses == 8)
    docs.gate.set()
    for t in threads:
        t.join(30)
    assert len(errors) == 8 and docs.calls == [A]
    docs.error, docs.gate = None, None
    assert cache.get(A) is not None and docs.calls == [A, A]
    assert cache.stats().load_errors == 1


def test_a_stuck_reader_does_not_block_the_others_forever():
    docs = Docs({A: batch(A)})
    docs.gate = threading.Event()
    cache = make_cache(docs, load_wait_s=0.05)
    leader = threading.Thread(target=cache.get, args=(A,))
    leader.start()
    assert docs.entered.wait(30)
    docs.gate.set()  # later callers pass straight through the gate
    docs.gate = None
    assert cache.get(A) is not None  # waited 0.05 s for the leader, then read itself
    leader.join(30)


# -- time -----------------------------------------------------------------------------------------


def test_ttl_runs_on_the_shared_clock():
    clock = ManualClock()
    docs = Docs({A: batch(A)})
    cache = make_cache(docs, clock, ttl_s=300)
    first = cache.get(A)
    clock.advance(299)
    assert cache.get(A) is first and len(docs.calls) == 1
    clock.advance(2)
    second = cache.get(A)
    assert second is not first and len(docs.calls) == 2
    assert second is not None and second.loaded_at_ms == clock.now_ms()
    assert cache.stats().evictions["expired"] == 1  # the expired entry, dropped when the new one was stored


def test_a_sped_up_clock_expires_entries_in_less_real_time():
    clock = started_at(datetime(2026, 3, 2, 12, tzinfo=UTC), speed=3600)  # 300 s pass in 83 ms
    docs = Docs({A: batch(A)})
    cache = BatchCache(loader=docs, clock=clock, ttl_s=300, config=CONFIG, group=None)
    first = cache.get(A)
    assert first is not None
    loaded = first.loaded_at_ms
    assert wait_until(lambda: clock.now_ms() > loaded + 301_000)
    assert cache.get(A) is not first and len(docs.calls) == 2


def test_ttl_zero_disables_caching_but_not_single_flight():
    docs = Docs({A: batch(A)})
    cache = make_cache(docs, ttl_s=0)
    cache.get(A)
    cache.get(A)
    assert len(docs.calls) == 2 and len(cache) == 0


def test_missing_batch_is_remembered_briefly():
    clock = ManualClock()
    docs = Docs()
    cache = make_cache(docs, clock, negative_ttl_s=30)
    for _ in range(100):
        assert cache.get(A) is None
    assert docs.calls == [A] and cache.stats().negative_size == 1
    docs.docs[A] = batch(A)  # created meanwhile
    clock.advance(29)
    assert cache.get(A) is None
    clock.advance(2)
    assert cache.get(A) is not None and docs.calls == [A, A]


def test_negative_ttl_is_capped_by_the_ttl():
    cache = make_cache(Docs(), ttl_s=10, negative_ttl_s=30)
    assert cache.negative_ttl_s == 10


def test_eviction_drops_a_negative_entry_too():
    docs = Docs()
    cache = make_cache(docs)
    assert cache.get(A) is None
    docs.docs[A] = batch(A)
    assert cache.evict(A, cause=CAUSE_MESSAGE) == 1
    assert cache.get(A) is not None


def test_require_raises_not_found():
    from shared.errors import NotFound

    cache = make_cache(Docs())
    with pytest.raises(NotFound, match=A):
        cache.require(A)


# -- eviction -------------------------------------------------------------------------------------


def test_evict_forces_the_next_read_to_mongodb_and_counts_the_cause():
    docs = Docs({A: batch(A, call_settings={"max_attempts": 2}), B: batch(B)})
    cache = make_cache(docs)
    before = sample("outdial_batch_cache_evictions_total", cause="message")
    cache.get(A)
    cache.get(B)
    docs.docs[A] = batch(A, call_settings={"max_attempts": 5})
    assert cache.evict(A, cause=CAUSE_MESSAGE) == 1
    assert cache.evict(A, cause=CAUSE_MESSAGE) == 0  # already gone
    found = cache.get(A)
    assert found is not None and found.settings is not None and found.settings.max_attempts == 5
    assert A in cache and B in cache and docs.calls == [A, B, A]
    assert cache.stats().evictions["message"] == 1
    assert sample("outdial_batch_cache_evictions_total", cause="message") - before == 1


def test_clear_drops_everything():
    docs = Docs({A: batch(A), B: batch(B)})
    cache = make_cache(docs)
    cache.get(A)
    cache.get(B)
    cache.get("65f1c0ffee000000000000ff")  # negative
    assert cache.clear(cause=CAUSE_ALL) == 3
    assert len(cache) == 0 and cache.stats().evictions["all"] == 3


def test_a_read_in_progress_during_an_eviction_is_not_stored():
    docs = Docs({A: batch(A, call_settings={"max_attempts": 2})})
    docs.gate = threading.Event()
    cache = make_cache(docs)
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(cache.get(A)))
    reader.start()
    assert docs.entered.wait(30)
    docs.docs[A] = batch(A, call_settings={"max_attempts": 5})  # the write lands during the read...
    cache.evict(A, cause=CAUSE_MESSAGE)  # ...and its invalidation arrives before the read ends
    docs.gate.set()
    reader.join(30)
    assert got and got[0] is not None  # the reader that started before the write gets an answer
    docs.gate = None
    fresh = cache.get(A)  # but it was not stored: the next read sees the write
    assert fresh is not None and fresh.settings is not None and fresh.settings.max_attempts == 5


def test_a_reader_arriving_after_an_eviction_does_not_join_the_older_read():
    docs = Docs({A: batch(A, call_settings={"max_attempts": 2})})
    docs.gate = threading.Event()
    cache = make_cache(docs)
    first = threading.Thread(target=cache.get, args=(A,))
    first.start()
    assert docs.entered.wait(30)
    docs.docs[A] = batch(A, call_settings={"max_attempts": 5})
    cache.evict(A)
    late: list[Any] = []
    second = threading.Thread(target=lambda: late.append(cache.get(A)))
    second.start()
    assert wait_until(lambda: len(docs.calls) == 2), "the late reader must start its own read"
    docs.gate.set()
    first.join(30)
    second.join(30)
    assert late[0].settings.max_attempts == 5


def test_size_is_bounded_least_recently_used_first():
    ids = [f"65f1c0ffee00000000000{i:03x}" for i in range(5)]
    docs = Docs({i: batch(i) for i in ids})
    cache = make_cache(docs, maxsize=3)
    before = sample("outdial_batch_cache_evictions_total", cause=CAUSE_SIZE)
    for i in ids:
        cache.get(i)
    assert len(cache) == 3 and ids[0] not in cache and ids[4] in cache
    assert sample("outdial_batch_cache_evictions_total", cause=CAUSE_SIZE) - before == 2


def test_suspended_cache_reads_mongodb_every_time_and_resume_trusts_it_again():
    docs = Docs({A: batch(A)})
    cache = make_cache(docs)
    cache.get(A)
    cache.suspend()
    assert len(cache) == 0 and cache.suspended
    cache.get(A)
    cache.get(A)
    assert len(docs.calls) == 3 and len(cache) == 0
    cache.resume()
    cache.get(A)
    cache.get(A)
    assert len(docs.calls) == 4 and len(cache) == 1


class Bulk:
    """A bulk loader over a :class:`Docs`: the asked batch and the active ones, at most ``limit``; counts its calls."""

    def __init__(self, docs: Docs) -> None:
        self.docs = docs
        self.calls: list[str] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.error: Exception | None = None

    def __call__(self, batch_id: str, limit: int) -> list[dict[str, Any]]:
        self.calls.append(batch_id)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30), "test never opened the gate"
        if self.error is not None:
            raise self.error
        found = [d for k, d in self.docs.docs.items() if k == batch_id or d.get("status") == "active"]
        return [dict(d) for d in found[:limit]]


IDS = [f"65f1c0ffee00000000000{i:03x}" for i in range(8)]


def test_threads_missing_other_batches_wait_for_the_bulk_load_in_progress():
    docs = Docs({i: batch(i) for i in IDS})
    bulk = Bulk(docs)
    bulk.gate = threading.Event()
    cache = make_cache(docs, bulk_loader=bulk)
    results: dict[str, Any] = {}
    threads = [threading.Thread(target=lambda i=i: results.update({i: cache.get(i)})) for i in IDS]
    threads[0].start()
    assert bulk.entered.wait(30)
    for t in threads[1:]:
        t.start()
    assert wait_until(lambda: cache.stats().misses == len(IDS)), "every thread should wait on the one bulk load"
    bulk.gate.set()
    for t in threads:
        t.join(30)
    assert bulk.calls == [IDS[0]] and docs.calls == []
    assert all(results[i] is not None and results[i].batch_id == i for i in IDS)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads, stats.bulk_loads, stats.bulk_stored) == (0, 8, 1, 1, 7)


def test_a_failed_bulk_load_fails_its_batch_and_the_waiting_threads_read_alone():
    docs = Docs({i: batch(i) for i in IDS[:2]})
    bulk = Bulk(docs)
    bulk.gate = threading.Event()
    bulk.error = ServiceError("mongodb down")
    cache = make_cache(docs, bulk_loader=bulk)
    errors: list[BaseException] = []
    results: list[Any] = []

    def leader() -> None:
        try:
            cache.get(IDS[0])
        except ServiceError as exc:
            errors.append(exc)

    first = threading.Thread(target=leader)
    first.start()
    assert bulk.entered.wait(30)
    other = threading.Thread(target=lambda: results.append(cache.get(IDS[1])))
    other.start()
    assert wait_until(lambda: cache.stats().misses == 2)
    bulk.gate.set()
    first.join(30)
    other.join(30)
    assert len(errors) == 1 and results[0] is not None and docs.calls == [IDS[1]]
    bulk.error = None
    assert cache.get(IDS[0]) is not None and bulk.calls == [IDS[0], IDS[0]]  # the failure allows another bulk load
    assert cache.stats().load_errors == 1


def test_bulk_loads_are_spaced_and_never_made_while_suspended():
    clock = ManualClock()
    docs = Docs({i: batch(i) for i in IDS[:3]})
    docs.docs[IDS[2]]["status"] = "paused"
    bulk = Bulk(docs)
    cache = make_cache(docs, clock, bulk_loader=bulk, ttl_s=300, bulk_interval_s=60)
    assert cache.get(IDS[0]) is not None and IDS[1] in cache and IDS[2] not in cache
    assert cache.get(IDS[2]) is not None and (bulk.calls, docs.calls) == ([IDS[0]], [IDS[2]])
    clock.advance(61)
    cache.evict(IDS[2])
    cache.get(IDS[2])
    assert bulk.calls == [IDS[0], IDS[2]]  # a minute later a miss loads in bulk again
    cache.suspend()
    cache.get(IDS[0])
    cache.get(IDS[1])
    assert bulk.calls == [IDS[0], IDS[2]] and docs.calls == [IDS[2], IDS[0], IDS[1]] and len(cache) == 0
    cache.resume()
    cache.get(IDS[1])
    assert bulk.calls == [IDS[0], IDS[2], IDS[1]] and len(cache) == 2  # a cleared cache refills at once


def test_a_full_bulk_answer_without_the_batch_reads_it_alone_and_the_limit_fits_the_size():
    docs = Docs({i: batch(i) for i in IDS})
    bulk = Bulk(docs)
    cache = make_cache(docs, bulk_loader=bulk, maxsize=4, bulk_limit=200)
    assert cache.bulk_limit == 4
    assert cache.get(IDS[0]) is not None
    assert bulk.calls == [IDS[0]] and docs.calls == [] and len(cache) == 4
    cache.clear()
    assert cache.get(IDS[7]) is not None  # the 4 documents of the answer are other batches
    assert bulk.calls == [IDS[0], IDS[7]] and docs.calls == [IDS[7]]
    assert IDS[7] in cache and len(cache) == 4  # stored last: the most recently used
    assert cache.stats().loads == 3


def test_group_reaches_every_cache_and_suspends_late_comers():
    group = CacheGroup()
    docs = Docs({A: batch(A)})
    one = BatchCache(loader=docs, clock=ManualClock(), config=CONFIG, group=group)
    two = BatchCache(loader=docs, clock=ManualClock(), config=CONFIG, group=group)
    one.get(A)
    two.get(A)
    assert group.evict(A, cause=CAUSE_MESSAGE) == 2
    group.suspend()
    late = BatchCache(loader=docs, clock=ManualClock(), config=CONFIG, group=group)
    assert late.suspended and len(group) == 3
    group.resume()
    assert not late.suspended and not one.suspended


def test_caches_join_the_process_group_by_default_and_leave_when_dropped():
    import gc
    import weakref

    cache = BatchCache(loader=Docs(), clock=ManualClock(), config=CONFIG)
    assert cache in list(PROCESS_CACHES)
    ref = weakref.ref(cache)
    del cache
    gc.collect()
    assert ref() is None  # the group held it weakly


# -- channels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "expected"), [
    (invalidate_channel(A).encode(), Invalidation(batch_id=A)),
    (invalidate_channel(A.upper()).encode(), Invalidation(batch_id=A)),
    (invalidate_channel(A), Invalidation(batch_id=A)),
    (invalidate_all_channel().encode(), Invalidation(batch_id=None)),
    (b"cache:invalidate:*all*", None),
    (b"cache:invalidate:", None),
    (b"cache:invalidate:*", None),
    (invalidate_channel(A[:-1]).encode(), None),
    (invalidate_channel(A + "0").encode(), None),
    (invalidate_channel("zz" + A[2:]).encode(), None),
    (("cache:invalidate:" + A + " " * 500).encode(), None),
    (b"cache:invalidate:" + b"\xff" * 24, None),
    (b"cache:invalidat:" + A.encode(), None),
    (b"other:" + A.encode(), None),
    (None, None),
    (12, None),
])
def test_channel_names(channel, expected):
    assert parse_channel(channel) == expected


@given(st.binary(max_size=4 * MAX_CHANNEL_LENGTH))
def test_no_channel_name_raises_and_only_ids_or_all_pass(raw):
    found = parse_channel(INVALIDATE_CHANNEL_PREFIX.encode() + raw)
    if found is not None:
        suffix = raw.decode("ascii").strip().lower()
        assert suffix == "all" if found.is_all else (len(suffix) == 24 and set(suffix) <= set(HEX))
    assert parse_channel(raw) is None or raw.startswith(INVALIDATE_CHANNEL_PREFIX.encode())


@given(st.text(alphabet=HEX + HEX.upper(), min_size=24, max_size=24))
def test_every_24_hex_suffix_names_that_batch(suffix):
    assert parse_channel(invalidate_channel(suffix).encode()) == Invalidation(batch_id=suffix.lower())


# -- the listener's message handling (no Redis) ---------------------------------------------------


def pmessage(channel: bytes, data: bytes = b"1") -> dict[str, Any]:
    return {"type": "pmessage", "pattern": b"cache:invalidate:*", "channel": channel, "data": data}


def test_listener_evicts_the_named_batch_whatever_the_payload():
    docs = Docs({A: batch(A), B: batch(B)})
    cache = make_cache(docs)
    seen: list[Invalidation] = []
    listener = InvalidationListener(redis_url="redis://127.0.0.1:1/0", cache=cache, on_message=seen.append)
    for payload in (b"1", b"", b"\x00" * 1000, b"{not json"):
        cache.get(A)
        cache.get(B)
        assert listener.handle(pmessage(invalidate_channel(A).encode(), payload)) == Invalidation(batch_id=A)
        assert A not in cache and B in cache
    assert len(seen) == 4 and listener.messages == 4 and listener.ignored == 0


def test_listener_clears_everything_on_the_all_channel():
    docs = Docs({A: batch(A), B: batch(B)})
    cache = make_cache(docs)
    listener = InvalidationListener(redis_url="redis://127.0.0.1:1/0", cache=cache)
    cache.get(A)
    cache.get(B)
    listener.handle(pmessage(invalidate_all_channel().encode()))
    assert len(cache) == 0 and cache.stats().evictions["all"] == 2


def test_listener_ignores_malformed_channels_and_non_messages():
    docs = Docs({A: batch(A)})
    cache = make_cache(docs)
    listener = InvalidationListener(redis_url="redis://127.0.0.1:1/0", cache=cache)
    cache.get(A)
    before = sample("outdial_batch_cache_invalidations_total", event="ignored")
    for channel in (b"cache:invalidate:nope", b"cache:invalidate:" + b"a" * 10_000, b"cache:invalidate:\xc3\x28",
                    b"cache:invalidate:*all*"):
        assert listener.handle(pmessage(channel)) is None
    assert listener.handle({"type": "psubscribe", "pattern": None, "channel": b"cache:invalidate:*", "data": 1}) is None
    assert listener.handle({"type": "pong", "pattern": None, "channel": None, "data": b""}) is None
    assert A in cache and listener.ignored == 4
    assert sample("outdial_batch_cache_invalidations_total", event="ignored") - before == 4


def test_a_failing_hook_does_not_stop_the_eviction():
    docs = Docs({A: batch(A)})
    cache = make_cache(docs)

    def boom(_: Invalidation) -> None:
        raise RuntimeError("hook broke")

    listener = InvalidationListener(redis_url="redis://127.0.0.1:1/0", cache=cache, on_message=boom)
    cache.get(A)
    assert listener.handle(pmessage(invalidate_channel(A).encode())) == Invalidation(batch_id=A)
    assert A not in cache


# -- publishing (a stand-in client: what is published, and failure handling) --------------------------


class StubPublisher:
    def __init__(self, receivers: int = 2, error: Exception | None = None) -> None:
        self.published: list[tuple[str, str]] = []
        self.receivers = receivers
        self.error = error

    def publish(self, channel: str, payload: str) -> int:
        if self.error is not None:
            raise self.error
        self.published.append((channel, payload))
        return self.receivers


def test_publish_names_the_channel_and_returns_the_receivers():
    fake = StubPublisher(receivers=3)
    assert publish_invalidation(fake, A.upper()) == 3
    assert publish_invalidate_all(fake) == 3
    assert fake.published == [(f"cache:invalidate:{A}", "1"), ("cache:invalidate:all", "1")]


def test_publish_rejects_a_malformed_id_naming_the_field():
    fake = StubPublisher()
    with pytest.raises(ValidationError) as info:
        publish_invalidation(fake, "not-an-id")
    assert info.value.errors[0][0] == "batch_id" and "24 hex" in info.value.errors[0][1]
    assert fake.published == []


def test_publish_failure_is_logged_unless_strict():
    fake = StubPublisher(error=redis_lib.ConnectionError("refused"))
    before = sample("outdial_batch_cache_invalidations_total", event="publish_failed")
    assert publish_invalidation(fake, A) is None
    with pytest.raises(ServiceError, match="cache:invalidate:"):
        publish_invalidation(fake, A, strict=True)
    assert sample("outdial_batch_cache_invalidations_total", event="publish_failed") - before == 2


def test_async_publish():
    import asyncio

    class AsyncStubPublisher(StubPublisher):
        async def publish(self, channel: str, payload: str) -> int:  # type: ignore[override]
            return StubPublisher.publish(self, channel, payload)

    from shared.cache.invalidation import publish_invalidation_async

    fake = AsyncStubPublisher(receivers=1)
    assert asyncio.run(publish_invalidation_async(fake, A)) == 1
    assert asyncio.run(publish_invalidation_async(fake, None)) == 1
    assert [c for c, _ in fake.published] == [invalidate_channel(A), invalidate_all_channel()]


def test_loaded_at_is_on_the_shared_clock():
    clock = ManualClock()
    clock.advance(timedelta(days=3).total_seconds())
    cache = make_cache(Docs({A: batch(A)}), clock)
    found = cache.get(A)
    assert found is not None and found.loaded_at_ms == clock.now_ms()
