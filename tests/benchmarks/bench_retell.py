"""Retell client request rate against the simulator, and how many simultaneous calls one simulator holds.

    python -m tests.benchmarks.bench_retell [--requests 20000] [--calls 10000] [--speed 60] [--inflight 64]

Part 1 (real-time clock): get-call and create-phone-call rates of the client from ``--threads``
threads (8, as a dramatiq worker process has); latency p50/p99 and the client's CPU per request.

Part 2 (clock sped up ``--speed`` times): creates ``--calls`` calls that each last 10-15
simulated minutes, with every webhook (call_started, call_ended, call_analyzed) delivered to a
sink in this process, polls every call once while they are all in progress (``--inflight``
threads), and prints the
peak of simultaneous calls, request rates and latency under that load, webhook throughput and
lag, and the simulator's CPU use (it is one process: one core) and memory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from shared.clock import started_at
from shared.config import load_config
from shared.provider.retell import RetellClient
from tests.helpers import wait_until
from workers.dev.simulator.process import SimulatorProcess, start_simulator

FROM = "+14155550100"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_self_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run_many(n: int, threads: int, make: Callable[[int], Any]) -> tuple[float, list[float], float]:
    """Run ``make(i)`` for i < n from ``threads`` threads; returns (elapsed s, latencies ms, this process's CPU s)."""
    latencies: list[float] = []
    counter = iter(range(n))
    lock = threading.Lock()

    def worker() -> None:
        mine = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            t = time.perf_counter()
            make(i)
            mine.append((time.perf_counter() - t) * 1000)
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    cpu0, start = _cpu_self_s(), time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start, latencies, _cpu_self_s() - cpu0


def _report(label: str, n: int, elapsed: float, latencies: list[float], cpu_s: float | None = None) -> None:
    cpu = f", client CPU {1e6 * cpu_s / n:.0f} us/request" if cpu_s is not None else ""
    print(f"  {label}: {n / elapsed:,.0f} req/s ({n} requests), latency p50 {_pct(latencies, 0.5):.1f} ms, "
          f"p99 {_pct(latencies, 0.99):.1f} ms{cpu}")


def client_rates(args: argparse.Namespace) -> None:
    print("Part 1: client request rate (real-time clock, one simulator process)")
    sim = start_simulator(env={**os.environ, "LOG_LEVEL": "WARNING"}, concurrency_limit=10**6,
                          scenario={"mix": {"stuck": 1}})
    config = load_config({}).with_overrides(retell_base_url=sim.base_url, retell_api_key=sim.api_key)
    try:
        with RetellClient(config) as client:
            first = client.create_phone_call(from_number=FROM, to_number="+14155551000")
            n, threads = args.requests, args.threads
            elapsed, lat, cpu = _run_many(n, threads, lambda i: client.get_call(first.call_id))
            _report(f"get_call, {threads} threads", n, elapsed, lat, cpu)
            m = max(1, n // 4)
            elapsed, lat, cpu = _run_many(m, threads, lambda i: client.create_phone_call(
                from_number=FROM, to_number=f"+1415{i % 10_000_000:07d}", metadata={"job_id": f"j{i}"},
                ring_timeout_s=30, max_call_duration_s=600))
            _report(f"create_phone_call, {threads} threads", m, elapsed, lat, cpu)
    finally:
        sim.stop()


class _Sink:
    def __init__(self) -> None:
        self.count = 0
        self.by_event: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.count += 1
        self.by_event[payload["event"]] = self.by_event.get(payload["event"], 0) + 1
        return web.Response(status=204)


def simultaneous_calls(args: argparse.Namespace) -> None:
    print(f"Part 2: simultaneous calls (clock x{args.speed:g}, {args.calls} calls of 10-15 simulated minutes)")

    async def go() -> None:
        sink = _Sink()
        app = web.Application()
        app.router.add_post("/hooks", sink.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        clock = started_at(datetime(2026, 3, 9, 14, 0, tzinfo=UTC), speed=args.speed)
        sim: SimulatorProcess = await asyncio.to_thread(
            start_simulator, env={**os.environ, **clock.env(), "LOG_LEVEL": "WARNING"},
            concurrency_limit=10**6, webhook_url=f"http://127.0.0.1:{port}/hooks",
            scenario={"mix": {"answer": 1}, "defaults": {"answer": {"ring_s": [2, 12], "duration_s": [600, 900]}}})
        config = load_config({}).with_overrides(retell_base_url=sim.base_url, retell_api_key=sim.api_key)
        cpu0, wall0 = _cpu_seconds(sim.pid), time.perf_counter()
        try:
            with RetellClient(config, max_connections=args.inflight) as client:
                ids: list[str] = []

                def make(i: int) -> None:
                    call = client.create_phone_call(from_number=FROM, to_number=f"+1212{i:07d}",
                                                    metadata={"job_id": f"job{i}", "attempt": 1})
                    ids.append(call.call_id)

                elapsed, lat, _ = await asyncio.to_thread(_run_many, args.calls, args.inflight, make)
                _report("create_phone_call while filling", args.calls, elapsed, lat)
                elapsed, lat, _ = await asyncio.to_thread(_run_many, len(ids), args.inflight,
                                                          lambda i: client.get_call(ids[i]))
                _report(f"get_call with all {len(ids)} calls in progress", len(ids), elapsed, lat)
                conc = await asyncio.to_thread(client.get_concurrency)
                stats = await asyncio.to_thread(sim.stats)
                print(f"  simultaneous calls: current {conc.current:,}, peak {stats['max_active']:,} "
                      f"(goal >= 5,000); simulator RSS {_rss_mib(sim.pid):.0f} MiB")
                await asyncio.to_thread(wait_until, lambda: sim.stats()["webhooks"]["delivered"] >= 3 * len(ids),
                                        timeout_s=900, interval_s=0.5, message="every webhook delivered")
            cpu, wall = _cpu_seconds(sim.pid) - cpu0, time.perf_counter() - wall0
            stats = await asyncio.to_thread(sim.stats)
            deliveries = await asyncio.to_thread(sim.webhooks)
            lags = [d["lag_ms"] for d in deliveries if "lag_ms" in d]
            wh = stats["webhooks"]
            print(f"  webhooks: {wh['delivered']:,} delivered ({sink.by_event}), {wh['gave_up']} given up, "
                  f"lag behind schedule p50 {_pct(lags, 0.5):.0f} ms, p99 {_pct(lags, 0.99):.0f} ms, "
                  f"max {max(lags, default=float('nan')):.0f} ms")
            print(f"  simulator CPU: {cpu:.1f} s over {wall:.1f} s wall ({100 * cpu / wall:.0f}% of one core); "
                  f"{stats['requests']}")
        finally:
            await asyncio.to_thread(sim.stop)
            await runner.cleanup()

    asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000, help="get-call requests in part 1")
    parser.add_argument("--calls", type=int, default=10_000, help="calls held at once in part 2")
    parser.add_argument("--speed", type=float, default=60.0, help="clock speed in part 2")
    parser.add_argument("--threads", type=int, default=8, help="client threads in part 1")
    parser.add_argument("--inflight", type=int, default=64, help="requests in flight (threads) in part 2")
    parser.add_argument("--skip-rates", action="store_true", help="only part 2")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    if not args.skip_rates:
        client_rates(args)
    simultaneous_calls(args)


if __name__ == "__main__":
    main()
