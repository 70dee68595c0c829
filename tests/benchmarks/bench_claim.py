"""Claim throughput and MongoDB round trips per job transition.

    python -m tests.benchmarks.bench_claim [--jobs 20000] [--batch 100] [--threads 4]

Starts an embedded nx-27017 (or uses MONGODB_URI), loads N pending jobs, claims them all with
``claim_due`` from several threads, then runs each other transition and prints jobs/s and
commands (round trips) per operation.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from datetime import timedelta

from shared.clock import Clock
from shared.config import load_config
from shared.domain import states
from shared.domain.call_settings import default_call_settings
from shared.domain.outcomes import Outcome, call_reason
from shared.pipeline.rounds import fail_round, next_phone
from shared.stores import mongo
from shared.stores.jobs import JobStore
from workers.dev import embedded

PHONE = "+56961234567"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    server = embedded.mongodb()
    name = f"bench_{uuid.uuid4().hex[:8]}"
    db = mongo.database(server.url, name)
    mongo.ensure_indexes(db)
    config = load_config({})
    store = JobStore(db, clock=Clock(), config=config)
    try:
        t = time.perf_counter()
        store.create_jobs("b" * 24, "acc", [{"phones": [PHONE], "name": f"c{i}", "external_id": f"debt-{i}"}
                                          for i in range(args.jobs)])
        print(f"import: {args.jobs / (time.perf_counter() - t):,.0f} jobs/s ({args.jobs} jobs)")

        claimed = 0
        lock = threading.Lock()
        mongo.COMMANDS.reset()

        def worker() -> None:
            nonlocal claimed
            while True:
                got = store.claim_due(limit=args.batch, lease=timedelta(minutes=5))
                if not got:
                    return
                with lock:
                    claimed += len(got)

        t = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(args.threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        print(f"claim_due: {claimed / elapsed:,.0f} jobs/s with {args.threads} threads, batch {args.batch} "
              f"({claimed} claimed, {mongo.COMMANDS.total / max(claimed, 1):.3f} round trips per job)")

        owners = {j["_id"]: j["lease_owner"] for j in store.find({"status": states.QUEUED}, limit=2000)}
        sample = list(owners)
        ops = {
            "transition queued->dialing": lambda j: store.start_dial(j, owners[j], set_={}),
            "transition dialing->failed": lambda j: store.fail(j, call_reason(Outcome.BUSY)),
        }
        for label, op in ops.items():
            mongo.COMMANDS.reset()
            t = time.perf_counter()
            for job_id in sample:
                op(job_id)
            elapsed = time.perf_counter() - t
            print(f"{label}: {len(sample) / elapsed:,.0f}/s, {mongo.COMMANDS.total / len(sample):.2f} round trips each")
        rest = [j["_id"] for j in store.find({"status": states.QUEUED}, limit=2000)]
        defaults = default_call_settings(store.config)
        for label, op in {"fail_round": lambda j: fail_round(store, j, call_reason(Outcome.BUSY), defaults),
                          "next_phone": lambda j: next_phone(store, j, call_reason(Outcome.NO_ANSWER), defaults)
                          }.items():
            half = rest[: len(rest) // 2] if label.startswith("fail") else rest[len(rest) // 2:]
            mongo.COMMANDS.reset()
            t = time.perf_counter()
            for job_id in half:
                op(job_id)
            elapsed = time.perf_counter() - t
            print(f"{label}: {len(half) / elapsed:,.0f}/s, {mongo.COMMANDS.total / len(half):.2f} round trips each")
    finally:
        mongo.client(server.url).drop_database(name)
        server.stop()


if __name__ == "__main__":
    main()
