"""``outdial bench``: the pipeline benchmark, through real processes on embedded services.

Runs, each on a fresh database:

- **throughput**: N contacts (default 2,000), every call answered, an account with a concurrency
  limit of 20, worker processes, the clock dyno, the web dyno (the simulator's webhooks) and the
  simulator with the shared clock sped up. Measures completed calls per second, average
  simultaneous calls / limit over the steady state, lag from ``next_try_at`` to call creation,
  CPU per completed call of every process that does pipeline work (workers, web, clock), MongoDB
  round trips per completed call (in all, and per pipeline step), provider requests per completed
  call, and peak RSS per process.
- **baseline** (``--baseline``): the same campaign, simulator scenario and clock speed, on a fresh
  database, dialed by :mod:`workers.dev.baseline`, a minimal thread-per-call worker, for comparison.
- **in flight**: one worker process, a limit of 10,000 and long calls: how many calls in
  progress one worker process holds at once (each is a MongoDB row and a delayed poll message,
  not a thread), its lag and its memory.

Then one table: each figure, its goal, outdial's value, the baseline's, and their ratio. Figures go
to stdout and, with ``--json PATH``, to a file. Nothing here asserts a duration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.clock import started_at
from shared.config import load_config
from shared.domain.phones import numbered
from shared.metrics import read_snapshots
from shared.stores import mongo
from workers.clock_dyno import DEFAULT_INTERVAL_S
from workers.dev import embedded

#: A Tuesday 10:00 in Santiago: no window closes during a run.
BENCH_START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The Redis database the benchmark empties and uses (the demo uses 15).
BENCH_REDIS_DB = 14
#: The pipeline steps ``outdial_mongo_commands`` is labelled with, in the table's order.
STEPS = ("dial", "poll", "finalize", "refill", "dispatch", "maintain", "reconcile", "other")
#: Real seconds a run waits for its contacts to complete before it reports what it reached.
DEFAULT_TIME_CAP_S = 900.0


def _wait_until(predicate: Callable[[], Any], *, timeout_s: float) -> Any:
    """Poll ``predicate`` every 50 ms until it returns a truthy value (returned); ``TimeoutError`` after
    ``timeout_s`` real seconds."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not reached within {timeout_s} s")
        time.sleep(0.05)  # sleep ok: polling a process's state
    return value


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of process ``pid`` (``VmHWM``), MiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _processes(stack: Any) -> dict[int, str]:
    """The stack's processes that do pipeline work, by pid: ``workers`` (the dramatiq worker processes, not
    their masters), ``web`` and ``clock``."""
    from workers.dev.stack import _descendants

    kinds = {pid: "workers" for proc in stack.workers for pid in _descendants(proc.pid)}
    if stack.web is not None and stack.web.poll() is None:
        kinds.update({pid: "web" for pid in [stack.web.pid, *_descendants(stack.web.pid)]})
    for proc in stack.clocks:
        kinds.update({pid: "clock" for pid in [proc.pid, *_descendants(proc.pid)]})
    return kinds


def _mongo_commands(redis: Any) -> dict[tuple[int, str], float]:
    """MongoDB commands counted by every process that publishes its metrics to Redis (worker processes and the
    web dyno), by (pid, step)."""
    out: dict[tuple[int, str], float] = {}
    for process, families in read_snapshots(redis):
        pid = int(process.rsplit(":", 1)[-1]) if process.rsplit(":", 1)[-1].isdigit() else -1
        for fam in families:
            if fam["name"] == "outdial_mongo_commands":
                for name, labels, value in fam["samples"]:
                    if name.endswith("_total"):
                        key = (pid, labels.get("step", "other"))
                        out[key] = out.get(key, 0.0) + value
    return out


def _avg_over_limit(samples: list[int], limit: int) -> float | None:
    """Average simultaneous calls / limit over the steady state: from the first sample at the limit to the last."""
    at_limit = [i for i, s in enumerate(samples) if s >= limit]
    window = samples[at_limit[0]: at_limit[-1] + 1] if at_limit else [s for s in samples if s > 0]
    return round(statistics.fmean(window) / limit, 3) if window else None


class _Sampler(threading.Thread):
    """Samples the simulator's calls in progress every 100 ms until :meth:`stop`."""

    def __init__(self, simulator: Any) -> None:
        super().__init__(daemon=True)
        self.simulator = simulator
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.samples.append(int(self.simulator.stats()["active"]))
            except Exception:  # noqa: BLE001 - a missed sample is fine
                pass
            self._stop_event.wait(0.1)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join()
        return self.samples


def _phones(count: int) -> list[str]:
    return numbered("+5696", count)


def _scenario(phones: list[str], duration_s: float) -> dict[str, Any]:
    return {"numbers": {p: {"outcome": "answer", "ring_s": 2, "duration_s": duration_s} for p in phones}}


#: The ``after_call`` of ``--after-call``: every conversation waits for its analysis, which completes it.
BENCH_AFTER_CALL = {"success": "call_successful"}


def _prepare(config: Any, clock: Any, *, limit: int, label: str,
             after_call: bool = False) -> tuple[Any, dict[str, Any]]:
    """A runtime on ``config``'s (fresh) database with the bench account and batch (``after_call``: the batch's
    conversations are decided by their analysis, :data:`BENCH_AFTER_CALL`)."""
    from workers.runtime import build_runtime

    runtime = build_runtime(config, clock)
    mongo.ensure_indexes(runtime.db)
    runtime.account_changes.apply("bench", {"plan": {"type": "unlimited"}, "concurrency_limit": limit})
    batch = runtime.batches.create({"name": label, "account_id": "bench", "agent_id": "agent_bench",
                                    "from_number": "+12125550100", "call_settings": {
                                        "max_call_duration": 7200,
                                        **({"after_call": BENCH_AFTER_CALL} if after_call else {})}})
    return runtime, batch


def _per_call(value: float, completed: int, digits: int = 2) -> float | None:
    return round(value / completed, digits) if completed else None


def run_once(*, contacts: int, limit: int, speed: float, duration_s: float, workers: int, processes: int,
             threads: int, mongo_uri: str, redis_url: str, label: str, webhooks: bool = True,
             time_cap_s: float = DEFAULT_TIME_CAP_S, after_call: bool = False) -> dict[str, Any]:
    """One campaign of ``contacts`` answered calls of ``duration_s`` simulated seconds; returns its figures.

    :param webhooks: run the web dyno and have the simulator send it signed webhooks (production's
        path: a call is finalized when it ends); False leaves end detection to the polls alone.
    :param time_cap_s: real seconds after which the run stops waiting and reports what it reached
        (``completed`` below ``contacts``, ``timed_out``).
    :param after_call: the batch has ``after_call`` rules (:data:`BENCH_AFTER_CALL`): each conversation waits for
        its analysis (``analyzing``), which then completes it.
    """
    import redis as redis_lib

    from workers.dev.stack import start_stack

    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    config = load_config({}).with_overrides(mongodb_uri=mongo_uri, mongodb_db=db_name, redis_url=redis_url,
                                            log_level="WARNING", retell_webhooks=webhooks)
    r = redis_lib.Redis.from_url(redis_url)
    r.flushdb()
    clock = started_at(BENCH_START, speed=speed)
    phones = _phones(contacts)
    web_port = embedded.free_port()
    flags: dict[str, Any] = {"concurrency_limit": limit * 2}
    if webhooks:
        flags["webhook_url"] = f"http://127.0.0.1:{web_port}/webhooks/retell"
    # The production settings (Procfile): the clock's interval, and dramatiq's poll interval of its mode (1000 ms
    # with webhooks; without them a call's end is a delayed poll message, found up to that late, so 100 ms).
    stack, config = start_stack(config, clock, scenario=_scenario(phones, duration_s), workers=workers,
                                processes=processes, threads=threads, simulator_flags=flags,
                                clock_interval_s=DEFAULT_INTERVAL_S,
                                env={"dramatiq_worker_timeout": "1000" if webhooks else "100"})
    try:
        if webhooks:
            stack.start_web(port=web_port)
            _wait_until(lambda: embedded.port_in_use(web_port), timeout_s=30)
        runtime, batch = _prepare(config, clock, limit=limit, label=label, after_call=after_call)
        _wait_until(lambda: len([k for k in _processes(stack).values() if k == "workers"]) >= workers * processes,
                    timeout_s=30)
        time.sleep(3)  # sleep ok: every worker process boots, connects and publishes a first metrics snapshot
        kinds = _processes(stack)
        cpu0 = {pid: cpu_s(pid) for pid in kinds}
        cmds0 = _mongo_commands(r)
        req0 = sum(stack.simulator.stats()["requests"].values())
        sampler = _Sampler(stack.simulator)
        t0 = time.monotonic()
        runtime.jobs.create_jobs(batch["_id"], "bench",
                                 [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)])
        sampler.start()
        completed = 0
        while time.monotonic() - t0 < time_cap_s:
            completed = runtime.jobs.counts(batch["_id"])["completed"]
            if completed >= contacts:
                break
            time.sleep(0.25)  # sleep ok: the benchmark polls the job counts
        elapsed = time.monotonic() - t0
        samples = sampler.stop()
        stats = stack.simulator.stats()
        time.sleep(6)  # sleep ok: the benchmark waits for one more metrics snapshot from every process
        cpu = {kind: 0.0 for kind in ("workers", "web", "clock")}
        for pid, kind in kinds.items():
            cpu[kind] += cpu_s(pid) - cpu0.get(pid, 0.0)
        cmds1 = _mongo_commands(r)
        cmds = {key: value - cmds0.get(key, 0.0) for key, value in cmds1.items() if key[0] in kinds}
        steps = [*STEPS, *sorted({s for _, s in cmds} - set(STEPS))]
        by_step = {step: sum(v for (_, s), v in cmds.items() if s == step) for step in steps}
        by_kind = {kind: sum(v for (pid, _), v in cmds.items() if kinds.get(pid) == kind)
                   for kind in ("workers", "web")}
        by_kind_step: dict[tuple[str, str], float] = {}
        for (pid, step), value in cmds.items():
            key = (kinds[pid], step)
            by_kind_step[key] = by_kind_step.get(key, 0.0) + value
        requests = sum(stats["requests"].values()) - req0
        attempts = list(runtime.attempts.of_batch(batch["_id"], ("created_at", "due_at", "ended_at", "updated_at")))
        lags = [(a["created_at"] - a["due_at"]) / 1000 for a in attempts if a.get("due_at") is not None]
        finalize_lags = [(a["updated_at"] - a["ended_at"]) / 1000 for a in attempts
                         if a.get("ended_at") and a.get("updated_at")]
        rss: dict[str, list[float]] = {"workers": [], "web": [], "clock": []}
        for pid, kind in kinds.items():
            rss[kind].append(peak_rss_mb(pid))
        return {
            "label": label, "webhooks": webhooks, "after_call": after_call, "contacts": contacts,
            "completed": completed, "timed_out": completed < contacts, "limit": limit, "speed": speed,
            "call_s": duration_s,
            "worker_processes": len(rss["workers"]), "threads": threads, "elapsed_s": round(elapsed, 1),
            "completed_calls_per_s": round(completed / elapsed, 1),
            "avg_simultaneous_over_limit": _avg_over_limit(samples, limit),
            "max_simultaneous": stats["max_active"],
            "lag_p50_sim_s": round(percentile(lags, 0.5), 1), "lag_p99_sim_s": round(percentile(lags, 0.99), 1),
            "lag_p50_real_ms": round(percentile(lags, 0.5) / speed * 1000, 1),
            "lag_p99_real_ms": round(percentile(lags, 0.99) / speed * 1000, 1),
            "end_to_finalized_p50_real_ms": round(percentile(finalize_lags, 0.5) / speed * 1000, 1),
            "end_to_finalized_p99_real_ms": round(percentile(finalize_lags, 0.99) / speed * 1000, 1),
            "cpu_ms_per_call": _per_call(sum(cpu.values()) * 1000, completed),
            **{f"cpu_ms_per_call_{kind}": _per_call(value * 1000, completed) for kind, value in cpu.items()},
            "mongo_round_trips_per_call": _per_call(sum(cmds.values()), completed),
            **{f"mongo_round_trips_per_call_{kind}": _per_call(v, completed) for kind, v in by_kind.items()},
            "mongo_round_trips_per_call_by_step": {s: _per_call(v, completed) for s, v in by_step.items()},
            "mongo_round_trips_per_call_by_process_and_step": {
                f"{kind}.{step}": _per_call(v, completed) for (kind, step), v in sorted(by_kind_step.items()) if v},
            "provider_requests_per_call": _per_call(requests, completed),
            "provider_requests_by_endpoint": {k: v for k, v in stats["requests"].items() if v},
            "peak_rss_mb_per_worker": round(max(rss["workers"]), 1) if rss["workers"] else None,
            "peak_rss_mb_web": round(max(rss["web"]), 1) if rss["web"] else None,
            "peak_rss_mb_clock": round(max(rss["clock"]), 1) if rss["clock"] else None,
        }
    finally:
        stack.stop()
        mongo.client(mongo_uri).drop_database(db_name)


def run_baseline(*, contacts: int, limit: int, speed: float, duration_s: float, mongo_uri: str, redis_url: str,
                 time_cap_s: float = DEFAULT_TIME_CAP_S) -> dict[str, Any]:
    """The throughput run's campaign dialed by the reference worker (:mod:`workers.dev.baseline`), one child
    process, on a fresh database and a simulator started with the same scenario and clock speed."""
    from workers.dev.simulator.process import start_simulator
    from workers.dev.stack import child_env, stop_group

    db_name = f"bench_{uuid.uuid4().hex[:8]}"
    config = load_config({}).with_overrides(mongodb_uri=mongo_uri, mongodb_db=db_name, redis_url=redis_url,
                                            log_level="WARNING")
    clock = started_at(BENCH_START, speed=speed)
    phones = _phones(contacts)
    simulator = start_simulator(env=child_env(config, clock),
                                scenario=_scenario(phones, duration_s), concurrency_limit=limit * 2)
    with tempfile.TemporaryDirectory(prefix="outdial-baseline-") as tmp:
        try:
            config = config.with_overrides(retell_base_url=simulator.base_url, retell_api_key=simulator.api_key)
            _, batch = _prepare(config, clock, limit=limit, label="baseline")
            phones_file = Path(tmp, "phones.txt")
            phones_file.write_text("\n".join(phones))
            req0 = sum(simulator.stats()["requests"].values())
            sampler = _Sampler(simulator)
            sampler.start()
            with Path(tmp, "baseline.log").open("wb") as log:
                argv = [sys.executable, "-m", "workers.dev.baseline", "--batch-id", batch["_id"],
                        "--phones", str(phones_file), "--time-cap", str(time_cap_s)]
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                                        env=child_env(config, clock))
                try:
                    out, _ = proc.communicate(timeout=time_cap_s + 120)
                except subprocess.TimeoutExpired:
                    stop_group(proc)
                    out = b""
            samples = sampler.stop()
            stats = simulator.stats()
            lines = out.decode().strip().splitlines()
            if not lines:
                return {"label": "baseline", "contacts": contacts, "completed": 0, "timed_out": True,
                        "error": Path(tmp, "baseline.log").read_text()[-2000:]}
            found = json.loads(lines[-1])
        finally:
            simulator.stop()
            mongo.client(mongo_uri).drop_database(db_name)
    completed = found["completed"]
    requests = sum(stats["requests"].values()) - req0
    return {
        "label": "baseline", "contacts": contacts, "completed": completed, "failed": found["failed"],
        "errors": found["errors"], "timed_out": completed < contacts, "limit": limit, "speed": speed,
        "call_s": duration_s, "elapsed_s": found["elapsed_s"],
        "completed_calls_per_s": round(completed / found["elapsed_s"], 1) if found["elapsed_s"] else None,
        "avg_simultaneous_over_limit": _avg_over_limit(samples, limit), "max_simultaneous": stats["max_active"],
        "lag_p50_sim_s": found["lag_p50_sim_s"], "lag_p99_sim_s": found["lag_p99_sim_s"],
        "cpu_ms_per_call": _per_call(found["cpu_s"] * 1000, completed),
        "mongo_round_trips_per_call": _per_call(found["mongo_commands"], completed),
        "mongo_commands_by_name": found["mongo_commands_by_name"],
        "provider_requests_per_call": _per_call(requests, completed),
        "provider_requests_by_endpoint": {k: v for k, v in stats["requests"].items() if v},
        "peak_rss_mb": found["peak_rss_mb"],
    }


# -- the table ---------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 100 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(ours: Any, theirs: Any) -> str:
    if isinstance(ours, int | float) and isinstance(theirs, int | float) and theirs:
        return f"{ours / theirs:.2f}"
    return ""


#: The settings of the dial decision's timing (:func:`dial_decision_cost`): the original worker's "Cobranza
#: urgente" campaign, on its own, and under the calling law of its Chilean callees.
DECISION_SETTINGS = {"max_attempts": 5, "retry_delay_hours": 2, "allowed_hours": {"start": "09:00", "end": "20:00"},
                     "days_of_week": [1, 2, 3, 4, 5, 6], "timezone": "America/Santiago"}


def dial_decision_cost(*, decisions: int = 3000) -> dict[str, float]:
    """Microseconds of CPU per dial decision (:func:`shared.domain.decisions.decide_dial`, in this process: the
    window at the decision and at the dial guard, the phone pick), without a compliance profile, with
    ``cl-cobranza`` named, and with ``"auto"`` (chosen from the number), at instants 97 minutes apart (open and
    closed times, holidays)."""
    from shared.domain import states
    from shared.domain.call_settings import parse_call_settings
    from shared.domain.decisions import decide_dial

    cases = {
        "no_profile": parse_call_settings(DECISION_SETTINGS),
        "cl_cobranza": parse_call_settings({**DECISION_SETTINGS, "purpose": "collection",
                                            "compliance": ["cl-cobranza"]}),
        "auto": parse_call_settings({**DECISION_SETTINGS, "purpose": "collection", "compliance": "auto"}),
    }
    phones = _phones(64)
    batch = {"_id": "b" * 24, "status": "active"}
    jobs = [{"_id": f"{i:024x}", "status": states.QUEUED, "lease_owner": "t", "tries": 0, "phone_index": 0,
             "contact": {"phones": [p]}} for i, p in enumerate(phones)]
    instants = [BENCH_START + timedelta(minutes=97 * i) for i in range(decisions)]
    out: dict[str, float] = {}
    for name, settings in cases.items():
        decide_dial(jobs[0], lease_owner="t", batch=batch, settings=settings, settings_error=None,
                    now=instants[0])   # warm the compiled windows and the caches
        started = time.process_time()
        for i, now in enumerate(instants):
            decide_dial(jobs[i % len(jobs)], lease_owner="t", batch=batch, settings=settings, settings_error=None,
                        now=now, guard=timedelta(seconds=30))
        out[f"dial_decision_us_{name}"] = round((time.process_time() - started) / decisions * 1e6, 1)
    return out


def table(throughput: dict[str, Any], baseline: dict[str, Any] | None,
          in_flight: dict[str, Any] | None, decision: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The rows of the summary table: ``figure``, ``goal``, ``outdial``, ``baseline``, ``ratio``, ``met``
    (True/False for a figure with a checkable goal, None otherwise)."""
    t, b = throughput, baseline or {}
    rows: list[dict[str, Any]] = []

    def row(figure: str, goal: str, ours: Any, theirs: Any = None, met: bool | None = None) -> None:
        rows.append({"figure": figure, "goal": goal, "outdial": ours, "baseline": theirs,
                     "ratio": _ratio(ours, theirs), "met": met})

    def le(value: Any, bound: float) -> bool | None:
        return None if value is None else value <= bound

    def reached(run: dict[str, Any]) -> str:
        return f"{_fmt(run['completed'])} of {_fmt(run['contacts'])}" + (" (time cap)" if run["timed_out"] else "")

    row("calls completed", "all", reached(t), reached(b) if b else None)
    rate, base_rate = t["completed_calls_per_s"], b.get("completed_calls_per_s")
    row("completed calls per second", ">= baseline", rate, base_rate, None if base_rate is None else rate >= base_rate)
    avg = t["avg_simultaneous_over_limit"]
    row("average simultaneous calls / limit", ">= 0.97", avg, b.get("avg_simultaneous_over_limit"), le(0.97, avg or 0))
    cpu, base_cpu = t["cpu_ms_per_call"], b.get("cpu_ms_per_call")
    cpu_met = le(cpu, 8)
    if cpu_met is not None and base_cpu is not None:
        cpu_met = cpu_met and cpu <= base_cpu / 2
    row("CPU per completed call, ms (all processes)", "<= 8 and <= baseline / 2", cpu, base_cpu, cpu_met)
    row("  workers / web / clock", "", " / ".join(_fmt(t[f"cpu_ms_per_call_{k}"]) for k in ("workers", "web", "clock")))
    trips = t["mongo_round_trips_per_call"]
    row("MongoDB round trips per completed call", "<= 8", trips, b.get("mongo_round_trips_per_call"), le(trips, 8))
    row("  workers / web", "", " / ".join(_fmt(t[f"mongo_round_trips_per_call_{k}"]) for k in ("workers", "web")))
    for step, value in t["mongo_round_trips_per_call_by_step"].items():
        if value:
            row(f"  step {step}", "", value)
    requests = t["provider_requests_per_call"]
    row("provider requests per completed call (webhooks)" if t["webhooks"] else "provider requests per completed call",
        "<= 2", requests, b.get("provider_requests_per_call"), le(requests, 2))
    row("peak RSS per worker process (baseline: its one process), MiB", "", t["peak_rss_mb_per_worker"],
        b.get("peak_rss_mb"))
    row("peak RSS web / clock, MiB", "", f"{_fmt(t['peak_rss_mb_web'])} / {_fmt(t['peak_rss_mb_clock'])}")
    row("lag next_try_at -> call created p50 / p99, simulated s", "stated",
        f"{_fmt(t['lag_p50_sim_s'])} / {_fmt(t['lag_p99_sim_s'])}",
        f"{_fmt(b['lag_p50_sim_s'])} / {_fmt(b['lag_p99_sim_s'])}" if b.get("completed") else None)
    if decision:
        row("dial decision, CPU us: no profile / cl-cobranza / auto", "stated",
            f"{_fmt(decision['dial_decision_us_no_profile'])} / {_fmt(decision['dial_decision_us_cl_cobranza'])} / "
            f"{_fmt(decision['dial_decision_us_auto'])}")
    if in_flight:
        f = in_flight
        most = f["max_simultaneous"]
        row(f"in flight: most calls one process held ({_fmt(f['contacts'])} contacts)", "10,000", most,
            met=most >= 10_000)
        rss = f["peak_rss_mb_per_worker"]
        row("in flight: peak RSS of that process, MiB", "<= 300", rss, met=le(rss, 300))
        row("in flight: lag p50 / p99, simulated s", "stated",
            f"{_fmt(f['lag_p50_sim_s'])} / {_fmt(f['lag_p99_sim_s'])}")
        row("in flight: CPU per completed call, ms (all processes)", "", f["cpu_ms_per_call"])
        row("in flight: calls completed", "all", reached(f))
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("figure", "goal", "outdial", "baseline", "outdial / baseline")
    cells = [header] + [(r["figure"], r["goal"], _fmt(r["outdial"]), _fmt(r["baseline"]), r["ratio"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    for n, line in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    missed = [r["figure"].strip() for r in rows if r["met"] is False]
    checked = [r for r in rows if r["met"] is not None]
    print(f"goals met: {len(checked) - len(missed)} of {len(checked)}"
          + (f"; missed: {', '.join(missed)}" if missed else ""))


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
    parser.add_argument("--in-flight-speed", type=float, default=30.0,
                        help="shared clock speed of the in-flight run (default 30: a 7,000 s call lasts 233 real "
                             "seconds, longer than one process takes to place 10,000 calls here)")
    parser.add_argument("--in-flight", type=int, default=10_000,
                        help="contacts of the in-flight run, one worker process (default 10000; 0 skips it)")
    parser.add_argument("--baseline", action="store_true",
                        help="after the throughput run, dial the same campaign with the reference worker "
                             "(workers/dev/baseline.py) and compare")
    parser.add_argument("--time-cap", type=float, default=DEFAULT_TIME_CAP_S,
                        help=f"real seconds each run waits for its contacts before it reports what it reached "
                             f"(default {DEFAULT_TIME_CAP_S:.0f})")
    parser.add_argument("--no-webhooks", action="store_true",
                        help="no web dyno: end of calls detected by polls only")
    parser.add_argument("--after-call", action="store_true",
                        help='the throughput batch has after_call rules ({"success": "call_successful"}): each '
                             "conversation waits for its analysis before it completes")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    # A Redis of its own (unless REDIS_URL names one): each run empties its database, and benchmarks run at once
    # on one machine must not share queues (a worker would take another stack's messages) or metric snapshots.
    mongo_server = embedded.mongodb()
    redis_server = embedded.redis() if os.environ.get("REDIS_URL") else embedded.start_redis()
    try:
        common: dict[str, Any] = {"mongo_uri": mongo_server.url,
                                  "redis_url": embedded.with_db_index(redis_server.url, BENCH_REDIS_DB)}
        results["throughput"] = run_once(
            contacts=args.contacts, limit=args.limit, speed=args.speed, duration_s=args.call_s, workers=args.workers,
            processes=args.processes, threads=args.threads, label="throughput", webhooks=not args.no_webhooks,
            time_cap_s=args.time_cap, after_call=args.after_call, **common)
        _print(results["throughput"])
        if args.baseline:
            results["baseline"] = run_baseline(contacts=args.contacts, limit=args.limit, speed=args.speed,
                                               duration_s=args.call_s, time_cap_s=args.time_cap, **common)
            _print(results["baseline"])
        if args.in_flight:
            results["in_flight"] = run_once(
                contacts=args.in_flight, limit=10_000, speed=args.in_flight_speed, duration_s=7000, workers=1,
                processes=1,
                threads=args.threads, label="in_flight", webhooks=not args.no_webhooks, time_cap_s=args.time_cap,
                **common)
            _print(results["in_flight"])
    finally:
        redis_server.stop()
        mongo_server.stop()
    results["dial_decision"] = {"label": "dial_decision", **dial_decision_cost()}
    _print(results["dial_decision"])
    rows = table(results["throughput"], results.get("baseline"), results.get("in_flight"), results["dial_decision"])
    print()
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([*results.values(), {"label": "table", "rows": rows}], indent=2))
    return 0


def _print(figures: dict[str, Any]) -> None:
    print(f"-- {figures['label']}", flush=True)
    for key, value in figures.items():
        if key != "label":
            print(f"  {key:32} {value}", flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
