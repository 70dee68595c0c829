"""Results export: ``GET /batches/{id}/results.csv`` (and ``.jsonl``) of a large batch through ``outdial web``.

    python -m tests.benchmarks.bench_export [--rows 100000] [--repeat 2]

Starts an embedded nx-27017 (or uses MONGODB_URI) and a private bundled Redis (or uses REDIS_URL), seeds ``--rows``
jobs with results and analyses straight into a fresh database (``insert_many`` in chunks of 1,000, as the pipeline
would have left them: custom analysis data with 5 keys, 3 variables per contact), runs ``outdial web`` as a child
process (its own interpreter) and downloads the export over HTTP, reading the answer as it comes. Prints, for each
export: rows per second end to end (first byte of the request to last byte of the answer), the time to the first
byte (the key pass), the bytes sent, and the web process's resident memory before and its peak (``VmHWM``) after;
then the MongoDB server's own rate for the same reads (the floor under the export). Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import time
import urllib.request
import uuid

from bson import ObjectId

from shared.domain.results import stored_analysis
from shared.stores import mongo
from tests.benchmarks.bench_web import FROM_NUMBER, TOKEN, cpu_s, memory_kb, phone, start_web
from workers.dev import embedded

#: The goal: rows per second of a 100,000-row CSV export, in flat memory.
GOAL_ROWS_S = 20_000
NOW_MS = 1_773_057_600_000


def seed(db, rows: int, batch_id: str) -> None:
    """``rows`` jobs of ``batch_id`` with results, inserted 1,000 at a time."""
    chunk = []
    for n in range(rows):
        called = n % 4 != 3
        doc = {"_id": str(ObjectId()), "batch_id": batch_id, "account_id": "bench",
               "contact": {"name": f"Contact {n}", "phones": [phone(n)], "external_id": f"x-{n}",
                           "variables": {"deuda": str(n % 5000), "vence": "2026-03-31", "segmento": f"s{n % 7}"}},
               "status": "completed" if called else "failed", "tries": 1, "phone_index": 0, "dials": 1,
               "reason_code": None if called else "max_attempts", "created_at": NOW_MS, "updated_at": NOW_MS + n,
               "finished_at": NOW_MS + n}
        if called:
            doc["result"] = {
                "calls": 1 + n % 3, "talk_ms": 30_000 + n % 60_000, "charge": 500 + n % 700,
                "last_call_at": NOW_MS + n * 1000, "last_outcome": "completed", "last_attempt_id": f"a{n}",
                "recording_url": f"https://rec.example/{n}.wav",
                "analysis": stored_analysis({
                    "call_successful": n % 2 == 0, "call_summary": "The customer agreed to pay next week.",
                    "user_sentiment": "Positive", "in_voicemail": False,
                    "custom_analysis_data": {"promise": n % 2 == 0, "amount": n % 9000, "date": "2026-04-01",
                                             "channel": "phone", "notes": "-"}})}
        chunk.append(doc)
        if len(chunk) == 1000:
            db.jobs.insert_many(chunk)
            chunk = []
    if chunk:
        db.jobs.insert_many(chunk)


def download(url: str) -> tuple[float, float, int, int]:
    """(seconds to the first bytes, seconds in all, bytes, lines) of one GET, read as it arrives."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    started = time.perf_counter()
    size = lines = 0
    first = None
    with urllib.request.urlopen(request, timeout=600) as resp:
        while True:
            block = resp.read1(1 << 16)
            if not block:
                break
            if first is None:
                first = time.perf_counter() - started
            size += len(block)
            lines += block.count(b"\n")
    return first or 0.0, time.perf_counter() - started, size, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="downloads of each export")
    args = parser.parse_args()
    redis_server = embedded.redis(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else embedded.start_redis()
    try:
        with embedded.services(mongodb_uri=os.environ.get("MONGODB_URI"),
                               redis_url=redis_server.url) as (mongo_server, _):
            run(args, mongo_server, redis_server)
    finally:
        redis_server.stop()


def run(args: argparse.Namespace, mongo_server: embedded.EmbeddedServer,
        redis_server: embedded.EmbeddedServer) -> None:
    db_name = f"bench_export_{uuid.uuid4().hex[:8]}"
    db = mongo.client(mongo_server.url)[db_name]
    mongo.ensure_indexes(db)
    batch_id = str(ObjectId())
    db.batches.insert_one({"_id": batch_id, "account_id": "bench", "name": "Export bench", "status": "completed",
                           "from_number": FROM_NUMBER, "call_settings": {"timezone": "America/Santiago"},
                           "created_at": NOW_MS})
    started = time.perf_counter()
    seed(db, args.rows, batch_id)
    print(f"seeded {args.rows:,} jobs with results in {time.perf_counter() - started:.1f} s "
          f"(MongoDB {mongo_server.url}, {os.cpu_count()} CPUs)")
    port = embedded.free_port()
    env = {**os.environ, "MONGODB_URI": mongo_server.url, "MONGODB_DB": db_name, "REDIS_URL": redis_server.url,
           "ADMIN_TOKEN": TOKEN, "PORT": str(port), "LOG_LEVEL": "WARNING"}
    log_path = f"/tmp/{db_name}-web.log"
    web = start_web(env, port, log_path)
    try:
        base = f"http://127.0.0.1:{port}/batches/{batch_id}"
        print(f"outdial web pid {web.pid} (log {log_path}); resident memory at start "
              f"{memory_kb(web.pid, 'VmRSS') / 1024:.0f} MiB")
        for label, path in (("results.csv", "/results.csv"), ("results.jsonl", "/results.jsonl"),
                            ("results.csv?status=failed", "/results.csv?status=failed")):
            for _ in range(args.repeat):
                rss = memory_kb(web.pid, "VmRSS") / 1024
                cpu = cpu_s(web.pid)
                first, elapsed, size, lines = download(base + path)
                cpu = cpu_s(web.pid) - cpu
                rows = lines - (1 if label.startswith("results.csv") else 0)
                peak = memory_kb(web.pid, "VmHWM") / 1024
                print(f"  {label:<28} {rows:>8,} rows  {rows / elapsed:>8,.0f} rows/s  ({elapsed:5.1f} s; first byte "
                      f"{first:4.1f} s; {size / 2**20:5.1f} MiB)  web RSS {rss:.0f} MiB before, peak {peak:.0f} MiB; "
                      f"web CPU {cpu * 1e6 / max(rows, 1):.0f} us/row ({max(rows, 1) / max(cpu, 1e-9):,.0f} rows per "
                      "CPU second)")
        print(f"  goal: {GOAL_ROWS_S:,} rows/s for the {args.rows:,}-row CSV export in flat memory")
        floor(db, batch_id)
    finally:
        web.terminate()
        web.wait(30)
        mongo.client(mongo_server.url).drop_database(db_name)


def floor(db, batch_id: str) -> None:
    """The MongoDB server's own rate for the export's two reads, from this process (no web, no CSV)."""
    from shared.stores.results_read import ResultsRead, iter_chunks

    reader = ResultsRead(db)
    started = time.perf_counter()
    keys = reader.export_keys(batch_id)
    keys_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = sum(len(c) for c in iter_chunks(reader.export_jobs(batch_id)))
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    print(f"\nthe same reads alone (this process, no web, no CSV): key pass {rows / keys_s:,.0f} rows/s "
          f"({len(keys.custom)} custom keys, {len(keys.variables)} variables); the jobs in id order "
          f"{rows / read_s:,.0f} rows/s; both passes {rows / (keys_s + read_s):,.0f} rows/s")


if __name__ == "__main__":
    main()
