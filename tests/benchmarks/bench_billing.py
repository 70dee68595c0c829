"""Reservation + settlement throughput and MongoDB round trips per call.

    python -m tests.benchmarks.bench_billing [--calls 2000] [--threads 8]

Starts an embedded nx-27017 (or uses MONGODB_URI). For each scenario: reserve then settle one call
(a new attempt id each time) and print calls/s and commands (round trips) per call, by command,
counted with ``shared.stores.mongo.COMMANDS``. Scenarios: a metered account from one thread; one metered
account shared by N threads (every write on the same document); N threads on N accounts; an
unlimited account; a refused reservation; a top-up; the ledger check of a busy account.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable

from shared.clock import Clock
from shared.config import load_config
from shared.stores import mongo
from shared.stores.account_changes import AccountChanges
from shared.stores.billing import Billing
from workers.dev import embedded


def _per_call(total_calls: int) -> str:
    counts = dict(mongo.COMMANDS.counts)
    detail = ", ".join(f"{name} {n / total_calls:.2f}" for name, n in sorted(counts.items()))
    return f"{mongo.COMMANDS.total / total_calls:.2f} round trips per call ({detail})"


def _run(label: str, calls: int, threads: int, one_call: Callable[[int, int], None]) -> None:
    mongo.COMMANDS.reset()
    per_thread = calls // threads

    def work(t: int) -> None:
        for i in range(per_thread):
            one_call(t, i)

    started = time.perf_counter()
    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    elapsed = time.perf_counter() - started
    done = per_thread * threads
    print(f"{label}: {done / elapsed:,.0f} calls/s ({done} calls, {threads} threads), {_per_call(done)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    server = embedded.mongodb()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    db = mongo.database(server.url, name)
    mongo.ensure_indexes(db)
    billing = Billing(db, clock=Clock(), config=load_config({}))
    big = {"type": "minutes", "balance": 10**8}
    changes = AccountChanges(billing)
    try:
        changes.apply("solo", {"plan": big})
        changes.apply("shared", {"plan": {"type": "credits", "balance": 10**9, "price_per_minute": 0.5}})
        for t in range(args.threads):
            changes.apply(f"own{t}", {"plan": big})
        changes.apply("free", {"plan": {"type": "unlimited"}})
        changes.apply("empty", {"plan": {"type": "minutes", "balance": 0}})

        def call(account: Callable[[int], str], prefix: str) -> Callable[[int, int], None]:
            def one(t: int, i: int) -> None:
                aid = f"{prefix}-{t}-{i}"
                billing.reserve(account(t), attempt_id=aid, job_id="j", max_call_duration_s=600)
                billing.settle(aid, duration_ms=45_000 + i)
            return one

        _run("metered, 1 thread, reserve+settle", args.calls, 1, call(lambda t: "solo", "solo"))
        _run("metered, one shared account", args.calls, args.threads, call(lambda t: "shared", "shared"))
        _run("metered, one account per thread", args.calls, args.threads, call(lambda t: f"own{t}", "own"))
        _run("unlimited, reserve+settle", args.calls, args.threads, call(lambda t: "free", "free"))

        def refused(t: int, i: int) -> None:
            billing.reserve("empty", attempt_id=f"e-{t}-{i}", job_id="j", max_call_duration_s=600)

        _run("refused reservation (insufficient balance)", args.calls, args.threads, refused)

        def top_up(t: int, i: int) -> None:
            billing.top_up("solo", 1)

        _run("top_up", max(args.calls // 10, 1), 1, top_up)
        leftover = billing.flush()
        print(f"journal entries still to drop after the run: {leftover} (one update per account at flush)")

        entries = db.ledger.count_documents({"account_id": "shared"})
        started = time.perf_counter()
        check = billing.check("shared")
        print(f"check_account over {entries:,} ledger entries: {time.perf_counter() - started:.3f} s, "
              f"posted={check.posted}")
        started = time.perf_counter()
        report = billing.repair(min_age_ms=0)
        print(f"repair with nothing to repair ({report.accounts_swept} accounts swept): "
              f"{time.perf_counter() - started:.3f} s")
    finally:
        mongo.client(server.url).drop_database(name)
        server.stop()


if __name__ == "__main__":
    main()
