"""Web dyno throughput: CSV import, batch reads and webhooks against a running ``outdial web``.

    python -m tests.benchmarks.bench_web [--rows 100000] [--reads 2000] [--webhooks 2000] [--concurrency 32]
                                         [--only import|reads|webhooks]

Starts an embedded nx-27017 (or uses MONGODB_URI) and a private bundled Redis (or uses REDIS_URL:
the web dyno enqueues scheduler messages there), runs ``outdial web`` as a child process (so it has
its own interpreter and GIL), and drives it over HTTP with aiohttp from this process. Prints:

1. CSV import: ``--rows`` contacts in one ``text/csv`` upload, generated on the fly and sent with
   chunked transfer encoding (never held whole by either side): rows per second, and the web
   process's resident memory before and its peak after (``VmHWM``). Then the same contacts again
   (every external id a duplicate), and the JSON form for comparison.
2. Batch reads: ``GET /batches/{id}`` (counts per state, progress, window, failures) of the big
   batch and of a 100-contact batch: requests per second, p50 and p99 at ``--concurrency``, next to
   the goal (p99 <= 20 ms at 32 in flight), and the web process's CPU time per request (less noisy than
   latency on a shared machine), then one at a time; first, as the floor of any request on this
   machine at this moment, ``GET /healthz`` (no store, no thread pool) at ``--concurrency``.
3. Webhooks: ``--webhooks`` signed ``call_ended`` for jobs in a call, each applied through
   ``Pipeline.finalize`` (attempt ended, job completed, slot freed, scheduler kicked); then the
   same deliveries again (all duplicates); then signed events of calls outdial does not know; and
   forged signatures (401). Requests per second, p50, p99, max.

``--only reads`` imports the big batch once (no duplicate or JSON upload) and skips the webhooks;
``--only import`` and ``--only webhooks`` run that part alone.

Latency is measured in this process from sending the request to reading the whole answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp

from shared.clock import Clock
from shared.config import load_config
from shared.domain import states
from shared.provider.webhooks import SIGNATURE_HEADER, sign_webhook
from shared.stores import mongo
from shared.stores.jobs import JobStore
from workers.dev import embedded

TOKEN = "bench-admin-token-0123456789abcdef"
#: The goal of ``GET /batches/{id}``: p99 at most this many ms with this many requests in flight.
READ_GOAL_P99_MS = 20.0
READ_GOAL_IN_FLIGHT = 32
API_KEY = "key_bench_webhooks"
#: The caller id of the benchmark's batches (a batch must name one when CALL_FROM_NUMBER is unset).
FROM_NUMBER = "+12125550100"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def memory_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """CPU time (user + system) the process has used, seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def phone(n: int) -> str:
    return f"+5696{n:07d}"   # every one is a valid Chilean mobile number


async def drive(session: aiohttp.ClientSession, requests: list[Callable[[], Awaitable[int]]],
                concurrency: int) -> tuple[float, list[float], dict[int, int]]:
    """Send every request with ``concurrency`` in flight: (elapsed s, latencies ms, count per status)."""
    queue: asyncio.Queue[Callable[[], Awaitable[int]]] = asyncio.Queue()
    for request in requests:
        queue.put_nowait(request)
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        while not queue.empty():
            request = queue.get_nowait()
            t = time.perf_counter()
            status = await request()
            latencies.append((time.perf_counter() - t) * 1000)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, statuses


def report(label: str, elapsed: float, latencies: list[float], statuses: dict[int, int]) -> None:
    print(f"  {label:<44} {len(latencies) / elapsed:>8.0f} req/s   p50 {statistics.median(latencies):6.1f} ms"
          f"   p99 {percentile(latencies, 0.99):6.1f} ms   max {max(latencies):6.1f} ms   status {statuses}")


class Bench:
    def __init__(self, base: str, session: aiohttp.ClientSession, web_pid: int, jobs: JobStore) -> None:
        self.base = base
        self.session = session
        self.web_pid = web_pid
        self.jobs = jobs
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        async with self.session.request(method, self.base + path, headers=headers, **kwargs) as resp:
            body = await resp.read()
            return resp.status, (json.loads(body) if body and resp.content_type == "application/json" else body)

    # -- 1. import --------------------------------------------------------------------------------------

    async def csv_rows(self, rows: int, prefix: str) -> AsyncIterator[bytes]:
        yield b"phone,name,external_id,deuda,vence\n"
        chunk: list[str] = []
        for n in range(rows):
            chunk.append(f"{phone(n)},Contact {n},{prefix}-{n},{n % 5000},2026-03-31\n")
            if len(chunk) == 2000:
                yield "".join(chunk).encode()
                chunk = []
                await asyncio.sleep(0)
        if chunk:
            yield "".join(chunk).encode()

    async def import_csv(self, batch_id: str, rows: int, *, full: bool = True) -> None:
        print(f"\n1. CSV import of {rows:,} contacts (one streamed text/csv upload)")
        rss_before = memory_kb(self.web_pid, "VmRSS")
        for label in ("new contacts", "same again (all duplicates)")[:2 if full else 1]:
            t = time.perf_counter()
            status, body = await self.call("POST", f"/batches/{batch_id}/contacts", data=self.csv_rows(rows, "x"),
                                           headers={"Content-Type": "text/csv"})
            elapsed = time.perf_counter() - t
            assert status == 200, body
            print(f"  {label:<30} {rows / elapsed:>9,.0f} rows/s  ({elapsed:.1f} s; imported {body['imported']:,}, "
                  f"duplicates {body['duplicates']:,}, errors {body['errors_total']})")
        peak = memory_kb(self.web_pid, "VmHWM") / 1024
        print(f"  web process memory: {rss_before / 1024:.0f} MiB before, peak {peak:.0f} MiB after the uploads")
        if not full:
            return
        status, created = await self.call("POST", "/batches", json={"name": "json import", "account_id": "bench",
                                                                 "from_number": FROM_NUMBER})
        contacts = [{"name": f"J {n}", "phones": [phone(n)], "external_id": f"j-{n}",
                     "variables": {"deuda": str(n % 5000)}} for n in range(rows)]
        raw = json.dumps({"contacts": contacts}).encode()
        t = time.perf_counter()
        status, body = await self.call("POST", f"/batches/{created['id']}/contacts", data=raw,
                                       headers={"Content-Type": "application/json"})
        elapsed = time.perf_counter() - t
        assert status == 200, body
        peak = memory_kb(self.web_pid, "VmHWM") / 1024
        print(f"  {'JSON, one request':<30} {rows / elapsed:>9,.0f} rows/s  ({elapsed:.1f} s, "
              f"{len(raw) / 2**20:.1f} MiB; peak memory now {peak:.0f} MiB)")

    # -- 2. reads ---------------------------------------------------------------------------------------

    async def reads(self, batch_ids: dict[str, str], count: int, concurrency: int) -> None:
        print(f"\n2. GET /batches/{{id}} ({count:,} requests, {concurrency} in flight; then one at a time; "
              "each row after one untimed read of its batch)")
        async def health() -> int:
            async with self.session.get(f"{self.base}/healthz") as resp:
                await resp.read()
                return resp.status
        cpu = cpu_s(self.web_pid)
        elapsed, latencies, statuses = await drive(self.session, [health] * count, concurrency)
        cpu = cpu_s(self.web_pid) - cpu
        report(f"(floor: GET /healthz, {concurrency} in flight)", elapsed, latencies, statuses)
        print(f"  {'':<44} web process CPU {cpu * 1e6 / count:,.0f} us per request")
        for in_flight, n in ((concurrency, count), (1, max(1, count // 10))):
            for label, batch_id in batch_ids.items():
                async def read(batch_id: str = batch_id) -> int:
                    async with self.session.get(f"{self.base}/batches/{batch_id}", headers=self.auth) as resp:
                        await resp.read()
                        return resp.status
                await read()  # the web process's first read of a batch counts its jobs; measure the steady state
                cpu = cpu_s(self.web_pid)
                elapsed, latencies, statuses = await drive(self.session, [read] * n, in_flight)
                cpu = cpu_s(self.web_pid) - cpu
                report(f"{label}, {in_flight} in flight", elapsed, latencies, statuses)
                print(f"  {'':<44} web process CPU {cpu * 1e6 / n:,.0f} us per request")
                if in_flight == READ_GOAL_IN_FLIGHT:
                    p99 = percentile(latencies, 0.99)
                    print(f"  {'':<44} goal: p99 <= {READ_GOAL_P99_MS:.0f} ms at {READ_GOAL_IN_FLIGHT} in flight"
                          f" -> {'met' if p99 <= READ_GOAL_P99_MS else 'not met'}")

    # -- 3. webhooks ------------------------------------------------------------------------------------

    def calls_in_progress(self, batch_id: str, count: int) -> list[dict[str, Any]]:
        result = self.jobs.create_jobs(batch_id, "bench", [{"name": f"w{n}", "phones": [phone(n)]}
                                                           for n in range(count)])
        now = int(time.time() * 1000)
        calls, attempts = [], []
        for n, job_id in enumerate(result.job_ids):
            aid = f"{job_id}:r1:p0:d1"
            call_id = f"call_bench_{uuid.uuid4().hex}"
            self.jobs.coll.update_one({"_id": job_id}, {"$set": {
                "status": states.IN_CALL, "call_id": call_id, "attempt_id": aid, "dials": 1,
                "lease_owner": "bench", "lease_until": now + 3_600_000}})
            attempts.append({"_id": aid, "job_id": job_id, "batch_id": batch_id, "account_id": "bench", "round": 1,
                             "phone_index": 0, "dial": 1, "to_number": phone(n), "state": "in_call",
                             "call_id": call_id, "created_at": now})
            calls.append({"call_id": call_id, "call_status": "ended", "disconnection_reason": "user_hangup",
                          "start_timestamp": now, "end_timestamp": now + 30_000, "duration_ms": 30_000,
                          "to_number": phone(n), "metadata": {"job_id": job_id, "attempt_id": aid}})
        self.jobs.db["attempts"].insert_many(attempts)
        return calls

    def webhook(self, call: dict[str, Any], *, forged: bool = False) -> Callable[[], Awaitable[int]]:
        raw = json.dumps({"event": "call_ended", "call": call}, separators=(",", ":")).encode()

        async def send() -> int:
            signature = sign_webhook(raw, "key_forged" if forged else API_KEY)
            headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
            async with self.session.post(f"{self.base}/webhooks/retell", data=raw, headers=headers) as resp:
                await resp.read()
                return resp.status

        return send

    async def webhooks(self, batch_id: str, count: int, concurrency: int) -> None:
        print(f"\n3. POST /webhooks/retell ({count:,} signed deliveries, {concurrency} in flight)")
        calls = self.calls_in_progress(batch_id, count)
        unknown = [{**c, "call_id": f"call_other_{i}", "metadata": {}} for i, c in enumerate(calls)]
        for label, requests in (
            ("call_ended -> Pipeline.finalize", [self.webhook(c) for c in calls]),
            ("the same again (duplicates)", [self.webhook(c) for c in calls]),
            ("calls outdial does not know", [self.webhook(c) for c in unknown]),
            ("forged signatures (401)", [self.webhook(c, forged=True) for c in calls]),
        ):
            elapsed, latencies, statuses = await drive(self.session, requests, concurrency)
            report(label, elapsed, latencies, statuses)
        counts = self.jobs.counts(batch_id)
        print(f"  jobs of the webhook batch afterwards: completed {counts['completed']:,}, "
              f"in_call {counts['in_call']:,}")


async def run(args: argparse.Namespace, base: str, web_pid: int, jobs: JobStore) -> None:
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=args.concurrency + 4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        bench = Bench(base, session, web_pid, jobs)
        status, _ = await bench.call("PUT", "/accounts/bench", json={"plan": {"type": "unlimited"}})
        assert status in (200, 201)
        ids = {}
        for name in ("big", "small", "webhooks"):
            status, body = await bench.call("POST", "/batches", json={"name": name, "account_id": "bench",
                                                                    "from_number": FROM_NUMBER})
            ids[name] = body["id"]
        if args.only in (None, "import", "reads"):
            await bench.import_csv(ids["big"], args.rows, full=args.only != "reads")
        if args.only in (None, "reads"):
            status, body = await bench.call("POST", f"/batches/{ids['small']}/contacts", json={
                "contacts": [{"phones": [phone(n)]} for n in range(100)]})
            await bench.reads({f"batch of {args.rows:,} contacts": ids["big"],
                               "batch of 100 contacts": ids["small"]}, args.reads, args.concurrency)
        if args.only in (None, "webhooks"):
            await bench.webhooks(ids["webhooks"], args.webhooks, args.concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--webhooks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--only", choices=("import", "reads", "webhooks"), default=None,
                        help="run one part (reads: one CSV import for the big batch, then the reads)")
    args = parser.parse_args()
    redis_server = embedded.redis(os.environ["REDIS_URL"]) if os.environ.get("REDIS_URL") else embedded.start_redis()
    try:
        bench_with(args, redis_server)
    finally:
        redis_server.stop()


def start_web(env: dict[str, str], port: int, log_path: str) -> subprocess.Popen[bytes]:
    """``outdial web`` as a child process with ``env``, once its ``/readyz`` on ``port`` answers (its stderr to
    ``log_path``)."""
    web = subprocess.Popen([sys.executable, "-m", "workers.cli", "web"], env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read()
            return web
        except OSError:
            if time.monotonic() > deadline or web.poll() is not None:
                web.kill()
                raise SystemExit("outdial web did not start") from None
            time.sleep(0.1)  # sleep ok: a benchmark's start-up wait


def bench_with(args: argparse.Namespace, redis_server: embedded.EmbeddedServer) -> None:
    """Run the benchmark on ``redis_server`` (a private one unless REDIS_URL is set: the web enqueues messages)."""
    with embedded.services(mongodb_uri=os.environ.get("MONGODB_URI"),
                           redis_url=redis_server.url) as (mongo_server, _):
        db_name = f"bench_web_{uuid.uuid4().hex[:8]}"
        port = embedded.free_port()
        env = {**os.environ, "MONGODB_URI": mongo_server.url, "MONGODB_DB": db_name, "REDIS_URL": redis_server.url,
               "ADMIN_TOKEN": TOKEN, "RETELL_API_KEY": API_KEY, "PORT": str(port), "LOG_LEVEL": "WARNING"}
        log_path = f"/tmp/{db_name}-web.log"
        web = start_web(env, port, log_path)
        try:
            db = mongo.client(mongo_server.url)[db_name]
            jobs = JobStore(db, clock=Clock(), config=load_config({}))
            print(f"outdial web pid {web.pid} on port {port} (log {log_path}); MongoDB {mongo_server.url}; "
                  f"Redis {redis_server.url}; {os.cpu_count()} CPUs")
            asyncio.run(run(args, f"http://127.0.0.1:{port}", web.pid, jobs))
        finally:
            web.terminate()
            web.wait(30)
            mongo.client(mongo_server.url).drop_database(db_name)


if __name__ == "__main__":
    main()
