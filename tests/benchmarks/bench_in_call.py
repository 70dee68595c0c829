"""What the dispatch and maintenance queries cost while many calls are in progress.

    python -m tests.benchmarks.bench_in_call [--in-call 10000] [--due 1000] [--queued 2000] [--repeat 20]

Starts an embedded nx-27017 (or uses MONGODB_URI), loads one batch whose jobs are ``in_call`` (the calls in
progress), ``queued`` (claimed, waiting for their dial) and ``pending`` (due, split with the other claimable
states), then times each query a dispatch or a maintenance run makes: ``claim_due`` of 20 jobs, ``count_queued``,
``claim_expired`` when no lease has expired, ``batches_with_open_jobs`` and ``calling``. Prints the median
milliseconds and the round trips of each; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from shared.clock import Clock
from shared.config import load_config
from shared.domain import states
from shared.stores import mongo
from shared.stores.jobs import JobStore
from workers.dev import embedded

PHONE = "+56961234567"
BATCH = "b" * 24


def _load(store: JobStore, *, in_call: int, queued: int, due: int) -> None:
    total = in_call + queued + due
    store.create_jobs(BATCH, "acc", [{"phones": [PHONE], "external_id": f"debt-{i}"} for i in range(total)])
    ids = [d["_id"] for d in store.coll.find({}, {"_id": 1}).sort("_id", 1)]
    far = store.clock.now_ms() + 3_600_000
    store.coll.update_many({"_id": {"$in": ids[:in_call]}},
                           {"$set": {"status": states.IN_CALL, "lease_owner": "x", "lease_until": far}})
    store.coll.update_many({"_id": {"$in": ids[in_call:in_call + queued]}},
                           {"$set": {"status": states.QUEUED, "lease_owner": "y", "lease_until": far}})
    rest = ids[in_call + queued:]
    for i, state in enumerate(states.CLAIMABLE):
        store.coll.update_many({"_id": {"$in": rest[i::len(states.CLAIMABLE)]}}, {"$set": {"status": state}})


def _time(label: str, op: Callable[[], Any], repeat: int, *, undo: Callable[[Any], Any] | None = None) -> None:
    took = []
    commands = 0
    for _ in range(repeat):
        mongo.COMMANDS.reset()
        t = time.perf_counter()
        result = op()
        took.append((time.perf_counter() - t) * 1000)
        commands += mongo.COMMANDS.total
        if undo is not None:
            undo(result)
    print(f"  {label:34} {statistics.median(took):8.2f} ms median, {max(took):8.2f} max, "
          f"{commands / repeat:.1f} round trips")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in-call", type=int, default=10_000)
    parser.add_argument("--queued", type=int, default=2_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    server = embedded.mongodb(os.environ.get("MONGODB_URI") or None)
    name = f"bench_{uuid.uuid4().hex[:8]}"
    db = mongo.database(server.url, name)
    mongo.ensure_indexes(db)
    store = JobStore(db, clock=Clock(), config=load_config({}))
    try:
        _load(store, in_call=args.in_call, queued=args.queued, due=args.due)
        print(f"{args.in_call} in call, {args.queued} queued, {args.due} due ({args.repeat} runs each)")
        lease = timedelta(minutes=5)
        # each claim's jobs are given back, so that every run finds the same jobs due
        _time("claim_due (20 jobs)",
              lambda: store.claim_due(limit=20, lease=lease, batch_ids=[BATCH], account_id="acc"), args.repeat,
              undo=lambda got: store.coll.update_many({"_id": {"$in": [j["_id"] for j in got]}},
                                                      {"$set": {"status": states.PENDING}}))
        _time("count_queued (one account)", lambda: store.count_queued("acc"), args.repeat)
        _time("claim_expired (none expired)", lambda: store.claim_expired(limit=1000, lease=lease), args.repeat)
        _time("batches_with_open_jobs", lambda: store.batches_with_open_jobs([BATCH]), args.repeat)
        _time("calling (every call in progress)", lambda: sum(1 for _ in store.calling()), max(1, args.repeat // 4))
    finally:
        mongo.client(server.url).drop_database(name)
        server.stop()


if __name__ == "__main__":
    main()
