"""``outdial bench``: the pipeline benchmark, through real processes on embedded services.

Two runs, each on a fresh database:

- **throughput**: N contacts (default 2,000), every call answered, an account with a concurrency
  limit of 20, worker processes, the clock dyno and the simulator with the shared clock sped up.
  Prints completed calls per second, average simultaneous calls / limit over the steady state,
  lag from ``next_try_at`` to call creation, worker CPU per completed call, MongoDB round trips
  and provider requests per completed call, and peak RSS per worker process.
- **in flight**: one worker process, a limit of 10,000 and long calls: how many calls in
  progress one worker process holds at once (each is a MongoDB row and a delayed poll message,
  not a thread), its lag and its memory.

Figures go to stdout and, with ``--json PATH``, to a file. Nothing here asserts a duration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import mongo
from shared.clock import started_at
from shared.config import load_config
from shared.metrics import read_snapshots
from shared.phones import numbered
from workers.clock_dyno import DEFAULT_INTERVAL_S
from workers.dev import embedded
from workers.dev.simulator.process import wait_until

#: A Tuesday 10:00 in Santiago: no window closes during a run.
BENCH_START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The Redis database the benchmark empties and uses (the demo uses 15).
BENCH_REDIS_DB = 14


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _worker_pids(stack: Any) -> list[int]:
    """The dramatiq worker processes (children of each worker command), not their masters."""
    from workers.dev.stack import _descendants

    return [pid for proc in stack.workers for pid in _descendants(proc.pid)]


def _mongo_commands(redis: Any) -> float:
    """MongoDB commands counted by every worker process (their metric snapshots in Redis)."""
    total = 0.0
    for _, families in read_snapshots(redis):
        for fam in families:
            if fam["name"] == "outdial_mongo_commands":
                total += sum(v for name, _, v in fam["samples"] if name.endswith("_total"))
    return total


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _phones(count: int) -> list[str]:
    return numbered("+5696", count)


def run_once(*, contacts: int, limit: int, speed: float, duration_s: float, workers: int, processes: int,
             threads: int, mongo_uri: str, redis_url: str, label: str, webhooks: bool = True) -> dict[str, Any]:
    """One campaign of ``contacts`` answered calls of ``duration_s`` simulated seconds; returns its figures.

    :param webhooks: run the web dyno and have the simulator send it signed webhooks (production's
        path: a call is finalized when it ends); False leaves end detection to the polls alone.
    """
    import redis as redis_lib

    from workers.dev.stack import start_stack
    from workers.runtime import build_runtime

    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    config = load_config({}).with_overrides(mongodb_uri=mongo_uri, mongodb_db=db_name, redis_url=redis_url,
                                            log_level="WARNING", retell_webhooks=webhooks)
    r = redis_lib.Redis.from_url(redis_url)
    r.flushdb()
    clock = started_at(BENCH_START, speed=speed)
    phones = _phones(contacts)
    scenario = {"numbers": {p: {"outcome": "answer", "ring_s": 2, "duration_s": duration_s} for p in phones}}
    web_port = embedded.free_port()
    flags: dict[str, Any] = {"concurrency_limit": limit * 2}
    if webhooks:
        flags["webhook_url"] = f"http://127.0.0.1:{web_port}/webhooks/retell"
    stack, config = start_stack(config, clock, scenario=scenario, workers=workers, processes=processes,
                                threads=threads, simulator_flags=flags,
                                clock_interval_s=DEFAULT_INTERVAL_S)
    try:
        if webhooks:
            stack.start_web(port=web_port)
            wait_until(lambda: embedded.port_in_use(web_port), timeout_s=30)
        runtime = build_runtime(config, clock)
        mongo.ensure_indexes(runtime.db)
        runtime.billing.apply_account("bench", {"plan": {"type": "unlimited"}, "concurrency_limit": limit})
        batch = runtime.batches.create({"name": label, "account_id": "bench", "agent_id": "agent_bench",
                                        "from_number": "+12125550100", "call_settings": {"max_call_duration": 7200}})
        wait_until(lambda: len(_worker_pids(stack)) >= workers * processes, timeout_s=30)
        time.sleep(2)  # sleep ok: the benchmark lets every worker process boot and connect
        pids = _worker_pids(stack)
        cpu0 = {pid: _cpu_s(pid) for pid in pids}
        cmds0 = _mongo_commands(r)
        req0 = sum(stack.simulator.stats()["requests"].values())
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    samples.append(int(stack.simulator.stats()["active"]))
                except Exception:  # noqa: BLE001 - a missed sample is fine
                    pass
                stop.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        t0 = time.monotonic()
        runtime.jobs.create_jobs(batch["_id"], "bench",
                                 [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)])
        sampler.start()
        wait_until(lambda: runtime.jobs.counts(batch["_id"])["completed"] == contacts, timeout_s=3600,
                   interval_s=0.25)
        elapsed = time.monotonic() - t0
        stop.set()
        sampler.join()
        time.sleep(6)  # sleep ok: the benchmark waits for one more metrics snapshot from every worker
        cpu = sum(_cpu_s(pid) - cpu0.get(pid, 0.0) for pid in _worker_pids(stack))
        cmds = _mongo_commands(r) - cmds0
        stats = stack.simulator.stats()
        requests = sum(stats["requests"].values()) - req0
        attempts = list(runtime.attempts.of_batch(batch["_id"], ("created_at", "due_at", "ended_at", "updated_at")))
        lags = [(a["created_at"] - a["due_at"]) / 1000 for a in attempts if a.get("due_at") is not None]
        finalize_lags = [(a["updated_at"] - a["ended_at"]) / 1000 for a in attempts
                         if a.get("ended_at") and a.get("updated_at")]
        steady = [s for s in samples if s > 0]
        # steady state: from the first sample at the limit to the last one at the limit
        at_limit = [i for i, s in enumerate(samples) if s >= limit]
        window = samples[at_limit[0]: at_limit[-1] + 1] if at_limit else steady
        rss = {pid: _peak_rss_mb(pid) for pid in _worker_pids(stack)}
        figures = {
            "label": label, "webhooks": webhooks, "contacts": contacts, "limit": limit, "speed": speed,
            "call_s": duration_s,
            "worker_processes": len(rss), "threads": threads, "elapsed_s": round(elapsed, 1),
            "completed_calls_per_s": round(contacts / elapsed, 1),
            "avg_simultaneous_over_limit": round(statistics.fmean(window) / limit, 3) if window else None,
            "max_simultaneous": stats["max_active"],
            "lag_p50_sim_s": round(_percentile(lags, 0.5), 1), "lag_p99_sim_s": round(_percentile(lags, 0.99), 1),
            "lag_p50_real_ms": round(_percentile(lags, 0.5) / speed * 1000, 1),
            "lag_p99_real_ms": round(_percentile(lags, 0.99) / speed * 1000, 1),
            "end_to_finalized_p50_real_ms": round(_percentile(finalize_lags, 0.5) / speed * 1000, 1),
            "end_to_finalized_p99_real_ms": round(_percentile(finalize_lags, 0.99) / speed * 1000, 1),
            "worker_cpu_ms_per_call": round(cpu * 1000 / contacts, 2),
            "mongo_round_trips_per_call": round(cmds / contacts, 2),
            "provider_requests_per_call": round(requests / contacts, 2),
            "peak_rss_mb_per_worker": round(max(rss.values()), 1) if rss else None,
        }
        return figures
    finally:
        stack.stop()
        mongo.client(mongo_uri).drop_database(db_name)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="outdial bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=2000, help="contacts of the throughput run (default 2000)")
    parser.add_argument("--limit", type=int, default=20, help="the account's concurrency limit (default 20)")
    parser.add_argument("--speed", type=float, default=60.0, help="shared clock speed (default 60)")
    parser.add_argument("--call-s", type=float, default=60.0, help="simulated length of each call (default 60)")
    parser.add_argument("--workers", type=int, default=1, help="worker commands (default 1)")
    parser.add_argument("--processes", type=int, default=2, help="processes per worker command (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    parser.add_argument("--in-flight", type=int, default=6000,
                        help="contacts of the in-flight run, one worker process (default 6000; 0 skips it)")
    parser.add_argument("--no-webhooks", action="store_true",
                        help="no web dyno: end of calls detected by polls only")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = []
    with embedded.services() as (mongo_server, redis_server):
        # Each run empties its Redis database: a database of its own, never the one REDIS_URL or the local Redis
        # names (the machine's db 0 may hold another stack's queues).
        common = {"mongo_uri": mongo_server.url, "redis_url": embedded.with_db_index(redis_server.url, BENCH_REDIS_DB)}
        results.append(run_once(contacts=args.contacts, limit=args.limit, speed=args.speed, duration_s=args.call_s,
                                workers=args.workers, processes=args.processes, threads=args.threads,
                                label="throughput", webhooks=not args.no_webhooks, **common))
        _print(results[-1])
        if args.in_flight:
            results.append(run_once(contacts=args.in_flight, limit=10_000, speed=args.speed, duration_s=7000,
                                    workers=1, processes=1, threads=args.threads, label="in_flight",
                                    webhooks=not args.no_webhooks, **common))
            _print(results[-1])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _print(figures: dict[str, Any]) -> None:
    print(f"-- {figures['label']}")
    for key, value in figures.items():
        if key != "label":
            print(f"  {key:32} {value}")


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main(sys.argv[1:]))
