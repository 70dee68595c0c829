"""Every Prometheus metric outdial exports, defined once, and how worker metrics reach /metrics.

Each process records into its own :data:`REGISTRY` (prometheus-client). Worker and clock
processes cannot be scraped on a Heroku-style platform, so a :class:`SnapshotPublisher` thread
writes the process's samples to Redis every few seconds (a key per process, with a TTL); the
web dyno's ``/metrics`` serves its own samples plus every live process's snapshot, each series
labelled with the process that produced it (``process``), so counters stay monotonic per
series and ``sum by (...)`` aggregates across processes. A process that dies drops out after
the TTL.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared.logs import get_logger
from shared.redis_keys import METRICS_SNAPSHOT_PATTERN, METRICS_SNAPSHOT_PREFIX, metrics_snapshot_key

log = get_logger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
disable_created_metrics()

#: This process's registry (not prometheus-client's global one, so tests can read it cleanly).
REGISTRY = CollectorRegistry(auto_describe=True)
#: Seconds between snapshots; a snapshot lives three periods.
DEFAULT_SNAPSHOT_PERIOD = 5.0

# -- pipeline -----------------------------------------------------------------------------------
POSTPONED_BY_SCHEDULE = Counter(
    "outdial_postponed_by_schedule", "Dials postponed because the calling window was closed", registry=REGISTRY)
POSTPONED_BY_POLICY = Counter(
    "outdial_postponed_by_policy", "Dials postponed because the account's contact policy capped the callee",
    registry=REGISTRY)
CALLS = Counter("outdial_calls", "Calls finished, by outcome", ["outcome"], registry=REGISTRY)
ANALYSES = Counter("outdial_call_analyses", "Post-call analyses kept after the finalize, or given up on",
                   ["result"], registry=REGISTRY)
AFTER_CALL_ACTIONS = Counter("outdial_after_call_actions", "What conversations' analyses decided for their contacts "
                             "(call_settings.after_call), by action", ["action"], registry=REGISTRY)
DIALS = Counter("outdial_dials", "Calls created at the provider", registry=REGISTRY)
DIAL_DECISIONS = Counter("outdial_dial_decisions", "What the dial step decided", ["decision"], registry=REGISTRY)
RETRY_DELAY = Histogram(
    "outdial_retry_delay_seconds", "Delays applied after a failed round (simulated seconds)",
    buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 604800), registry=REGISTRY)
DIAL_LAG = Histogram(
    "outdial_dial_lag_seconds", "From next_try_at to call creation (simulated seconds)",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600), registry=REGISTRY)
RECOVERED = Counter("outdial_recovered_leases", "Expired leases recovered, by job state", ["state"],
                    registry=REGISTRY)
FREE_RETRIES = Counter(
    "outdial_free_retries", "Provider faults retried without spending an attempt (retried), and rounds failed "
    "because PIPELINE_MAX_FREE_RETRIES of them came in a row (budget_spent)", ["result"], registry=REGISTRY)
FORCED_ENDS = Counter("outdial_forced_ends", "Calls still going (or unknown) a stop grace after their attempt's "
                      "deadline, ended by outdial as timeouts", registry=REGISTRY)
BATCHES_HELD = Counter("outdial_batches_held", "Batches held because the provider refused their calls for a reason "
                       "no contact can fix (API key, payment, caller id, agent)", registry=REGISTRY)
DIAL_ABORTS = Counter(
    "outdial_dial_aborts", "Dials stopped right before the create, nothing sent: fence (the lease would end), "
    "clock (shared time unknown), window (the calling window closes), dnc (the number is on a do-not-call list)",
    ["kind"], registry=REGISTRY)
DNC_BLOCKED = Counter(
    "outdial_dnc_blocked", "Dials kept from numbers on a do-not-call list: where=decision (numbers passed over or "
    "contacts failed when the dial was decided), where=send (a create aborted right before it was sent)",
    ["where"], registry=REGISTRY)
RECONCILES = Counter(
    "outdial_reconciles", "Creates whose outcome was unknown, by how they were settled (replayed with the same "
    "idempotency key, found by lookup, not_placed, retry)", ["result"], registry=REGISTRY)

SAFETY_POLLS = Counter("outdial_safety_polls", "Calls in progress polled because no webhook ended them by their "
                       "safety-net instant (RETELL_WEBHOOKS)", registry=REGISTRY)
MONGO_COMMANDS = Counter("outdial_mongo_commands", "MongoDB commands (round trips) sent by this process, by the "
                         "pipeline step that sent them (other: outside any step)", ["step"], registry=REGISTRY)
#: The pipeline step this thread is running (dial, poll, finalize, refill, dispatch, maintain, reconcile,
#: webhook...), for the per-step counters; set with :func:`in_step`.
CURRENT_STEP: contextvars.ContextVar[str] = contextvars.ContextVar("outdial_step", default="other")


@contextlib.contextmanager
def in_step(name: str) -> Iterator[None]:
    """Count what the block sends (MongoDB commands, provider requests) under the step ``name``; the enclosing
    step resumes after it."""
    token = CURRENT_STEP.set(name)
    try:
        yield
    finally:
        CURRENT_STEP.reset(token)


def step(name: str) -> Callable[[F], F]:
    """Decorate a pipeline step's entry method: what it sends is counted under ``name`` (:func:`in_step`)."""
    def wrap(func: F) -> F:
        @functools.wraps(func)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with in_step(name):
                return func(*args, **kwargs)
        return cast(F, counted)
    return wrap

# -- provider -----------------------------------------------------------------------------------
PROVIDER_REQUESTS = Counter("outdial_provider_requests", "Requests sent to the provider", ["endpoint"],
                            registry=REGISTRY)
PROVIDER_ERRORS = Counter("outdial_provider_errors", "Provider errors, by class", ["kind"], registry=REGISTRY)
WEBHOOKS = Counter("outdial_webhooks", "Provider webhooks received, by result", ["result"], registry=REGISTRY)
RESULT_WEBHOOKS = Counter("outdial_result_webhooks", "Result webhook deliveries to operators, by result (delivered, "
                          "failed, dead)", ["result"], registry=REGISTRY)

# -- shared time --------------------------------------------------------------------------------
CLOCK_OFFSET = Gauge("outdial_clock_offset_seconds",
                     "Server (Redis) time minus this machine's clock, as last measured", registry=REGISTRY)
CLOCK_UNCERTAINTY = Gauge("outdial_clock_uncertainty_seconds",
                          "Half the round trip of the last server time reading", registry=REGISTRY)
CLOCK_AGE = Gauge("outdial_clock_sync_age_seconds", "Real seconds since the server's time was last read",
                  registry=REGISTRY)

# -- batch cache --------------------------------------------------------------------------------
CACHE_HITS = Counter("outdial_batch_cache_hits", "Batch cache hits", registry=REGISTRY)
CACHE_MISSES = Counter("outdial_batch_cache_misses", "Batch cache misses", registry=REGISTRY)
CACHE_EVICTIONS = Counter("outdial_batch_cache_evictions", "Batch cache evictions, by cause", ["cause"],
                          registry=REGISTRY)
CACHE_LISTENER_CONNECTED = Gauge("outdial_batch_cache_listener_connected",
                                 "1 while the invalidation listener is subscribed", registry=REGISTRY)
CACHE_SECONDS_SINCE_MESSAGE = Gauge("outdial_batch_cache_seconds_since_message",
                                    "Seconds since the listener's last message", registry=REGISTRY)
CACHE_INVALIDATIONS = Counter(
    "outdial_batch_cache_invalidations",
    "Invalidation messages: published, publish_failed (Redis refused), received, ignored (malformed channel)",
    ["event"], registry=REGISTRY)
BATCH_LOAD = Histogram(
    "outdial_batch_load_seconds", "Time to get a batch, by source (cache or mongodb)", ["source"],
    buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5), registry=REGISTRY)

# -- billing ------------------------------------------------------------------------------------
RESERVATIONS = Counter("outdial_balance_reservations", "Balance reservations, by result", ["result"],
                       registry=REGISTRY)
SETTLEMENTS = Counter("outdial_balance_settlements", "Reservations settled, by kind (charge or release)", ["kind"],
                      registry=REGISTRY)
BILLED = Counter("outdial_billed_units", "Amount charged to accounts, by storage unit (second, millicredit)", ["unit"],
                 registry=REGISTRY)
TOP_UPS = Counter("outdial_balance_top_ups", "Account top-ups applied", registry=REGISTRY)
LEDGER_REPAIRS = Counter("outdial_ledger_repairs", "Ledger entries posted or holds given back after a process died, "
                         "by what", ["what"], registry=REGISTRY)

# -- web ------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("outdial_http_requests", "HTTP requests served by the web dyno, by route, method and status",
                        ["route", "method", "status"], registry=REGISTRY)
HTTP_LATENCY = Histogram(
    "outdial_http_request_seconds", "Time to answer an HTTP request, by route", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
WEBHOOK_FINALIZE = Histogram(
    "outdial_webhook_finalize_seconds", "Time to apply a call_ended/call_analyzed webhook to its job",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
#: Gauges the web dyno computes from MongoDB and Redis when /metrics is scraped (workers/web/metrics.py).
SCRAPE_GAUGES = {
    "outdial_jobs": "Jobs by state, all batches",
    "outdial_batch_jobs": "Jobs by state of each active or paused batch",
    "outdial_batches": "Batches by status",
    "outdial_slots_in_use": "Provider concurrency slots held, per account with an active or paused batch",
    "outdial_slots_limit": "Provider concurrency limit, per account with an active or paused batch",
    "outdial_dnc_numbers": "Numbers on each do-not-call list (list=global or the account id)",
    "outdial_scrape_source_up": "1 when the source (mongodb, redis) answered during this scrape",
}


def process_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def snapshot(registry: CollectorRegistry = REGISTRY) -> list[dict[str, Any]]:
    """The registry's metric families as JSON-able dicts."""
    out = []
    for family in registry.collect():
        out.append({
            "name": family.name, "documentation": family.documentation, "type": family.type,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        })
    return out


def publish_snapshot(redis: Any, *, process: str | None = None, ttl: float = 3 * DEFAULT_SNAPSHOT_PERIOD,
                     registry: CollectorRegistry = REGISTRY) -> None:
    """Write this process's samples to Redis for the web dyno's /metrics."""
    redis.set(metrics_snapshot_key(process or process_label()), json.dumps(snapshot(registry)),
              px=int(ttl * 1000))


def read_snapshots(redis: Any, *, skip_process: str | None = None) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Every live process's snapshot in Redis (but ``skip_process``'s), by process label: ``(process, families)``."""
    keys = sorted(k.decode() if isinstance(k, bytes) else k
                  for k in redis.scan_iter(match=METRICS_SNAPSHOT_PATTERN, count=500))
    for key in keys:
        process = key[len(METRICS_SNAPSHOT_PREFIX):]
        if process == skip_process:
            continue
        raw = redis.get(key)
        if raw:
            try:
                yield process, json.loads(raw)
            except ValueError:
                continue


class RedisSnapshotCollector(Collector):
    """Collects every live process snapshot from Redis, labelled with its ``process``."""

    def __init__(self, redis: Any, *, skip_process: str | None = None) -> None:
        self.redis = redis
        self.skip_process = skip_process

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for process, fams in read_snapshots(self.redis, skip_process=self.skip_process):
            for fam in fams:
                metric = families.get(fam["name"])
                if metric is None:
                    metric = Metric(fam["name"], fam["documentation"], fam["type"])
                    families[fam["name"]] = metric
                for name, labels, value in fam["samples"]:
                    metric.add_sample(name, {**labels, "process": process}, value)
        yield from families.values()


class SnapshotPublisher(threading.Thread):
    """Daemon thread: ``publish_snapshot`` every ``period`` seconds until :meth:`stop`."""

    def __init__(self, redis: Any, *, period: float = DEFAULT_SNAPSHOT_PERIOD) -> None:
        super().__init__(name="outdial-metrics", daemon=True)
        self.redis = redis
        self.period = period
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                publish_snapshot(self.redis, ttl=3 * self.period)
            except Exception as exc:  # noqa: BLE001 - metrics must never stop a worker
                log.warning("metrics_snapshot_failed", extra={"error": str(exc)})
            self._stop_event.wait(self.period)

    def stop(self) -> None:
        self._stop_event.set()
        try:
            publish_snapshot(self.redis, ttl=3 * self.period)
        except Exception:  # noqa: BLE001
            pass
