"""``outdial import-legacy`` on a large source: ``python -m tests.benchmarks.bench_import_legacy [--jobs 100000]``.

Starts an embedded nx-27017 (or uses MONGODB_URI) and a private bundled Redis (or uses REDIS_URL), writes ``--jobs``
legacy jobs across four legacy batches into one database as the original worker wrote them (ObjectId ids, datetime
instants, ``insert_many`` in chunks of 1,000; a mix of pending, in_progress, done and failed, a few with unknown
statuses or bad numbers), then runs the import command (``outdial import-legacy`` in a child process, its own
interpreter) into a second database, and a second time (nothing new). Prints jobs per second of each run and the
child's peak resident memory; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from shared.domain.phones import numbered
from shared.stores import mongo
from workers.dev import embedded

STATUSES = (("pending", 0.55), ("in_progress", 0.05), ("done", 0.25), ("failed", 0.14), ("paused", 0.01))


def write_source(db, jobs: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    batches = [ObjectId() for _ in range(4)]
    db.batches.insert_many([{"_id": b, "batch_name": f"Legacy {i}", "account_id": "bench",
                             **({"call_settings": {"max_attempts": 5, "retry_delay_hours": 2}} if i % 2 else {})}
                            for i, b in enumerate(batches)])
    phones = numbered("+56963", jobs)
    now = datetime.now(UTC).replace(tzinfo=None)
    names, weights = zip(*STATUSES, strict=True)
    chunk = []
    for n in range(jobs):
        status = rng.choices(names, weights)[0]
        doc = {"_id": ObjectId(), "batch_id": batches[n % 4] if n % 3 else str(batches[n % 4]), "status": status,
               "tries": rng.randrange(0, 4), "contact": {"name": f"c{n}", "phones": [phones[n] if n % 200 else "12"]},
               "context": {"deuda": str(1000 * (n % 97)), "rut": f"{n}-k"}}
        if status == "pending":
            doc["next_try_at"] = now + timedelta(minutes=rng.randrange(-600, 600))
        elif status == "in_progress":
            doc["reserved_until"] = now + timedelta(minutes=rng.randrange(1, 30))
        elif status == "failed":
            doc["last_error"] = "Máximo de intentos alcanzado"
        chunk.append(doc)
        if len(chunk) == 1000:
            db.jobs.insert_many(chunk)
            chunk = []
    if chunk:
        db.jobs.insert_many(chunk)


def run_import(env: dict[str, str], source_uri: str, source_db: str) -> tuple[float, str, int]:
    """``(seconds, report, peak RSS kB)`` of one ``outdial import-legacy`` child."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c",
                             "import resource, sys; from workers.cli import main; code = main(sys.argv[1:]); "
                             "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); "
                             "sys.exit(code)",
                             "import-legacy", "--from-uri", source_uri, "--from-db", source_db],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=3600)
    elapsed = time.perf_counter() - started
    progress = [line for line in err.splitlines() if line.startswith("jobs:")]
    match = re.search(r"peak_rss_kb (\d+)", out)
    report = out.split("peak_rss_kb")[0].strip()
    if progress:
        report += f"\n  (progress lines: {len(progress)}; last: {progress[-1]})"
    return elapsed, report, int(match.group(1)) if match else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    redis_server = embedded.redis(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else embedded.start_redis()
    try:
        with embedded.services(mongodb_uri=os.environ.get("MONGODB_URI"),
                               redis_url=redis_server.url) as (mongo_server, _):
            tag = uuid.uuid4().hex[:8]
            source_db, target_db = f"bench_legacy_src_{tag}", f"bench_legacy_dst_{tag}"
            client = mongo.client(mongo_server.url)
            started = time.perf_counter()
            write_source(client[source_db], args.jobs)
            print(f"wrote {args.jobs:,} legacy jobs in {time.perf_counter() - started:.1f} s "
                  f"(MongoDB {mongo_server.url}, {os.cpu_count()} CPUs)")
            env = {**os.environ, "MONGODB_URI": mongo_server.url, "MONGODB_DB": target_db,
                   "REDIS_URL": redis_server.url, "LOG_LEVEL": "WARNING", "CALL_FROM_NUMBER": "+12125550100"}
            try:
                for label in ("import", "again (nothing new)"):
                    elapsed, report, rss_kb = run_import(env, mongo_server.url, source_db)
                    print(f"{label}: {args.jobs / elapsed:,.0f} legacy jobs/s ({elapsed:.1f} s), "
                          f"peak RSS {rss_kb / 1024:.0f} MiB")
                    print(report)
            finally:
                client.drop_database(source_db)
                client.drop_database(target_db)
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()
