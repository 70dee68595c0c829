"""Batch cache: hit ratio over a simulated campaign, read cost, cross-process invalidation latency.

    python -m tests.benchmarks.bench_cache [--dials 10000] [--batches 50] [--messages 1000] [--hits 200000]

Starts an embedded nx-27017 (or uses MONGODB_URI) and uses the local Redis (or REDIS_URL, else
a bundled one). Prints:

1. read cost: a cache hit (µs, with its metrics, one thread and 8 threads) vs a MongoDB read
   of the same batch (``BatchStore.get``), a cache miss (ms), and a bulk load (the batch with
   every active one, ``BatchStore.get_with_active``) and a cold miss that makes one;
2. hit ratio of ``BatchCache.get`` over simulated campaigns of N dials spread over B batches
   (batch sizes skewed, dials in random order), time on a stepped shared clock, for several dial
   rates, process counts, TTLs and operator edits, with the default bulk load on a cold miss and
   without it (one batch per read); every miss is a real MongoDB read, the reads column counts
   queries;
3. invalidation latency: ``publish_invalidation`` in this process -> eviction applied by the
   listener of another process (``tests.fixtures.cache_peer``), p50/p99/max over M messages,
   measured on the system-wide monotonic clock;
4. a settings change end to end: from the start of ``BatchStore.update`` here (MongoDB write,
   then publish) to the moment the other process's next read has returned the new settings.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass

import redis as redis_lib

from shared.cache.batch_cache import CAUSE_MESSAGE, BatchCache
from shared.cache.invalidation import publish_invalidation
from shared.clock import Clock
from shared.config import DEFAULT_BATCH_CACHE_TTL, load_config
from shared.stores import mongo
from shared.stores.batches import BatchStore
from tests.fixtures.cache import ManualClock, spawn_peer
from workers.dev import embedded


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- 1. read cost -------------------------------------------------------------------------------------


def bench_read_cost(store: BatchStore, ids: list[str], hits: int) -> None:
    cache = BatchCache.for_store(store, clock=Clock(), group=None)
    for batch_id in ids:
        cache.get(batch_id)
    n = len(ids)
    t = time.perf_counter()
    for i in range(hits):
        cache.get(ids[i % n])
    hit_us = (time.perf_counter() - t) / hits * 1e6

    threads, per_thread = 8, max(1, hits // 8)

    def reader() -> None:
        for i in range(per_thread):
            cache.get(ids[i % n])

    workers = [threading.Thread(target=reader) for _ in range(threads)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    contended_us = (time.perf_counter() - t) / (threads * per_thread) * 1e6

    reads = 2000
    t = time.perf_counter()
    for i in range(reads):
        store.get(ids[i % n])
    mongo_ms = (time.perf_counter() - t) / reads * 1e3

    t = time.perf_counter()
    for i in range(reads):
        cache.evict(ids[i % n])
        cache.get(ids[i % n])
    miss_ms = (time.perf_counter() - t) / reads * 1e3
    print("read cost")
    print(f"  cache hit:               {hit_us:8.2f} µs  (1 thread, {hits:,} reads, metrics included)")
    print(f"  cache hit, 8 threads:    {contended_us:8.2f} µs  per read (wall time / reads, one lock, GIL)")
    print(f"  MongoDB read (find_one): {mongo_ms * 1000:8.0f} µs  = {mongo_ms:.3f} ms  ({reads:,} reads, nx-27017)")
    print(f"  cache miss (read+parse): {miss_ms * 1000:8.0f} µs  = {miss_ms:.3f} ms")

    bulk_reads = 200
    t = time.perf_counter()
    for i in range(bulk_reads):
        docs = store.get_with_active(ids[i % n], 200)
    bulk_ms = (time.perf_counter() - t) / bulk_reads * 1e3
    t = time.perf_counter()
    for i in range(bulk_reads):
        cache.clear()
        cache.get(ids[i % n])
    cold_ms = (time.perf_counter() - t) / bulk_reads * 1e3
    print(f"  bulk load ({len(docs)} batches):   {bulk_ms:8.3f} ms  ({bulk_reads} queries)")
    print(f"  cold miss (bulk+parse):  {cold_ms:8.3f} ms  = {cold_ms / n * 1000:.0f} µs per batch loaded")
    print(f"  a hit costs 1/{mongo_ms * 1000 / hit_us:,.0f} of a MongoDB read")


# -- 2. hit ratio -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    label: str
    rate: float        # dials per simulated second, all processes together
    processes: int     # worker processes, one cache each; dials go round-robin
    ttl_s: float = DEFAULT_BATCH_CACHE_TTL
    edits: int = 0     # operator changes during the campaign (each evicts its batch everywhere)
    bulk: bool = True  # a cold miss loads every active batch in one query (the default)
    goal: str = ""


def campaign_order(dials: int, ids: list[str], rng: random.Random) -> list[str]:
    """Batch sizes skewed (weight 1/(rank+1)^0.8, at least 1 dial each), dials in random order."""
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(ids))]
    total = sum(weights)
    sizes = [max(1, int(dials * w / total)) for w in weights]
    sizes[0] += dials - sum(sizes)
    order = [batch_id for batch_id, size in zip(ids, sizes, strict=True) for _ in range(size)]
    rng.shuffle(order)
    return order


def run_campaign(store: BatchStore, order: list[str], scenario: Scenario,
                 rng: random.Random) -> tuple[int, int, int]:
    clock = ManualClock()
    options = {} if scenario.bulk else {"bulk_limit": 0}
    caches = [BatchCache.for_store(store, clock=clock, ttl_s=scenario.ttl_s, group=None, **options)
              for _ in range(scenario.processes)]
    edit_at = set(rng.sample(range(len(order)), scenario.edits))
    step = 1 / scenario.rate
    for i, batch_id in enumerate(order):
        if i in edit_at:
            edited = rng.choice(order)
            for cache in caches:
                cache.evict(edited, cause=CAUSE_MESSAGE)
        caches[i % scenario.processes].get(batch_id)
        clock.advance(step)
    hits = sum(c.stats().hits for c in caches)
    misses = sum(c.stats().misses for c in caches)
    return hits, misses, sum(c.stats().loads for c in caches)


def bench_hit_ratio(store: BatchStore, ids: list[str], dials: int) -> None:
    rng = random.Random(7)
    order = campaign_order(dials, ids, rng)
    single = "one batch per read"
    scenarios = [
        Scenario("4 processes, 20 dials/s, default settings", 20, 4, goal=">= 99%"),
        Scenario(f"same, {single} (before)", 20, 4, bulk=False),
        Scenario("same, 50 settings edits during the run", 20, 4, edits=50),
        Scenario(f"same, 50 edits, {single}", 20, 4, edits=50, bulk=False),
        Scenario("1 process, 20 dials/s", 20, 1),
        Scenario(f"1 process, 20 dials/s, {single}", 20, 1, bulk=False),
        Scenario("1 process, 2 dials/s (83 min)", 2, 1),
        Scenario(f"1 process, 2 dials/s, {single}", 2, 1, bulk=False),
        Scenario("4 processes, 2 dials/s (83 min)", 2, 4),
        Scenario(f"4 processes, 2 dials/s, {single}", 2, 4, bulk=False),
        Scenario(f"4 processes, 2 dials/s, {single}, TTL 3600", 2, 4, ttl_s=3600, bulk=False),
    ]
    print(f"hit ratio: {dials:,} dials over {len(ids)} batches (skewed sizes, random order), TTL on a stepped clock")
    for scenario in scenarios:
        hits, misses, reads = run_campaign(store, order, scenario, random.Random(11))
        minutes = dials / scenario.rate / 60
        goal = f"  goal {scenario.goal}" if scenario.goal else ""
        print(f"  {scenario.label:<50} TTL {scenario.ttl_s:>5.0f} s, {minutes:5.1f} min: "
              f"{hits / (hits + misses):7.2%}  ({misses} misses, {reads} MongoDB reads){goal}")


# -- 3. invalidation latency --------------------------------------------------------------------------


def bench_latency(config, messages: int, gap_s: float) -> None:
    peer = spawn_peer(config)
    client = redis_lib.Redis.from_url(config.redis_url)
    try:
        ids = [uuid.uuid4().hex[:24] for _ in range(messages)]
        sent: dict[str, float] = {}
        pause = threading.Event()
        for batch_id in ids:
            sent[batch_id] = time.monotonic()
            receivers = publish_invalidation(client, batch_id)
            if receivers is None or receivers < 1:
                raise SystemExit(f"nobody received {batch_id}: is the peer subscribed to {config.redis_url}?")
            pause.wait(gap_s)
        deadline = time.monotonic() + 30
        while True:
            entries = peer.call("timestamps")["entries"]
            if len(entries) >= messages or time.monotonic() > deadline:
                break
            pause.wait(0.05)
        applied = {bid: at for bid, at in entries if bid in sent}
        latencies = [(applied[bid] - sent[bid]) * 1000 for bid in ids if bid in applied]
    finally:
        client.close()
        peer.close()
    lost = messages - len(latencies)
    print(f"invalidation latency, publish -> eviction in another process ({len(latencies):,} messages, "
          f"one every {gap_s * 1000:.0f} ms, loopback)")
    print(f"  p50 {percentile(latencies, 0.50):6.2f} ms   p99 {percentile(latencies, 0.99):6.2f} ms   "
          f"max {max(latencies):6.2f} ms   mean {statistics.fmean(latencies):6.2f} ms   lost {lost}")


def bench_change_to_read(config, store: BatchStore, batch_id: str, edits: int) -> None:
    peer = spawn_peer(config)
    client = redis_lib.Redis.from_url(config.redis_url)
    store.on_change = lambda changed: publish_invalidation(client, changed)
    latencies: list[float] = []
    try:
        peer.get(batch_id)
        for i in range(edits):
            attempts = 2 + i % 50
            changed_at = time.monotonic()
            store.update(batch_id, {"call_settings": {"max_attempts": attempts}})
            answer = peer.read_when_invalidated(batch_id, after=changed_at)
            if answer["at"] is None or answer["max_attempts"] != attempts or answer["source"] != "mongodb":
                raise SystemExit(f"edit {i}: the other process read {answer}")
            latencies.append((answer["at"] - changed_at) * 1000)
    finally:
        store.on_change = None
        client.close()
        peer.close()
    print(f"settings change -> the other process's next read returns them ({edits} edits: MongoDB write, "
          "publish, eviction, MongoDB read)")
    print(f"  p50 {percentile(latencies, 0.50):6.2f} ms   p99 {percentile(latencies, 0.99):6.2f} ms   "
          f"max {max(latencies):6.2f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dials", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1_000)
    parser.add_argument("--gap-ms", type=float, default=2.0, help="pause between published messages")
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--edits", type=int, default=200)
    args = parser.parse_args(argv)
    mongo_server = embedded.mongodb()
    redis_server = embedded.redis()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    config = load_config({}).with_overrides(mongodb_uri=mongo_server.url, mongodb_db=name, redis_url=redis_server.url)
    db = mongo.database(mongo_server.url, name)
    mongo.ensure_indexes(db)
    store = BatchStore(db, clock=Clock(), config=config)
    try:
        ids = [store.create({"name": f"campaign {i}", "account_id": f"acc{i % 5}", "from_number": "+12125550100",
                             "call_settings": {"max_attempts": 3, "ring_timeout": 25, "timezone": "America/Santiago"}}
                            )["_id"] for i in range(args.batches)]
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, MongoDB {mongo_server.url.split('/?')[0]}, "
              f"Redis {redis_server.url}")
        bench_read_cost(store, ids, args.hits)
        bench_hit_ratio(store, ids, args.dials)
        bench_latency(config, args.messages, args.gap_ms / 1000)
        bench_change_to_read(config, store, ids[0], args.edits)
    finally:
        mongo.client(mongo_server.url).drop_database(name)
        redis_server.stop()
        mongo_server.stop()


if __name__ == "__main__":
    main()
