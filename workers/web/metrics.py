"""``GET /metrics``: this process's metrics, every other process's snapshot, and gauges read at scrape time.

Three sources, merged into one Prometheus text exposition (one family per metric name, as the
format requires):

1. this web process's :data:`shared.metrics.REGISTRY` (webhooks, HTTP, and whatever the pipeline
   recorded while finalizing webhooks), labelled ``process="<host>:<pid>"``;
2. :class:`shared.metrics.RedisSnapshotCollector`: the samples every worker, clock and other web
   process published to Redis in the last few seconds, each labelled with its ``process``
   (this process's own snapshot is skipped: its live samples are served instead);
3. gauges computed from MongoDB and Redis when scraped (:class:`ScrapeGauges`): jobs by state,
   jobs by state of each active or paused batch (finished batches are left out to keep the
   number of series bounded), batches by status, numbers on each do-not-call list, provider slots
   in use and their limit per account with an active or paused batch, and
   ``outdial_scrape_source_up{source}``.

The scrape-time gauges are cached for a few seconds, so several scrapers (or a dashboard
refreshing) cost one set of queries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from shared.domain import states
from shared.logs import event, get_logger
from shared.metrics import REGISTRY, SCRAPE_GAUGES, RedisSnapshotCollector, process_label
from shared.stores.dnc import GLOBAL_SCOPE, list_name

log = get_logger(__name__)

#: Seconds the scrape-time gauges are reused before being computed again.
DEFAULT_SCRAPE_CACHE_S = 5.0
#: Longest a scrape waits for MongoDB or Redis before answering without their gauges, seconds.
DEFAULT_SCRAPE_TIMEOUT_S = 10.0
#: Batch statuses whose jobs get per-batch series.
LIVE_BATCH_STATUSES = (states.BATCH_ACTIVE, states.BATCH_PAUSED, states.BATCH_HELD)


def _gauge(name: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, SCRAPE_GAUGES[name], labels=list(labels))


class ScrapeGauges:
    """Reads the gauges of :data:`shared.metrics.SCRAPE_GAUGES` (blocking; run it in a thread).

    :param runtime: the process's :class:`workers.runtime.Runtime` (jobs, batches, accounts, slots, clock).
    """

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime

    def collect(self) -> list[Metric]:
        up = _gauge("outdial_scrape_source_up", ["source"])
        families: list[Metric] = []
        live: list[dict[str, Any]] = []
        try:
            families += self._mongodb(live)
            up.add_metric(["mongodb"], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape reports a failed source, it does not fail
            event(log, "metrics_source_failed", level=logging.WARNING, source="mongodb", error=type(exc).__name__)
            up.add_metric(["mongodb"], 0)
        try:
            families += self._slots(live)
            up.add_metric(["redis"], 1)
        except Exception as exc:  # noqa: BLE001
            event(log, "metrics_source_failed", level=logging.WARNING, source="redis", error=type(exc).__name__)
            up.add_metric(["redis"], 0)
        return [*families, up]

    def _mongodb(self, live: list[dict[str, Any]]) -> list[Metric]:
        rt = self.runtime
        jobs = _gauge("outdial_jobs", ["state"])
        for state, n in rt.jobs.counts().items():
            jobs.add_metric([state], n)
        batches = _gauge("outdial_batches", ["status"])
        for status, n in rt.batches.counts_by_status().items():
            batches.add_metric([status], n)
        live += rt.batches.with_status(LIVE_BATCH_STATUSES)
        per_batch = _gauge("outdial_batch_jobs", ["batch_id", "state"])
        for batch_id, counts in rt.jobs.counts_by_batch([b["_id"] for b in live]).items():
            for state, n in counts.items():
                per_batch.add_metric([batch_id, state], n)
        dnc = _gauge("outdial_dnc_numbers", ["list"])
        sizes = rt.dnc.sizes()
        dnc.add_metric([list_name(GLOBAL_SCOPE)], sizes.pop(GLOBAL_SCOPE, 0))
        for scope, n in sorted(sizes.items()):
            dnc.add_metric([list_name(scope)], n)
        return [jobs, batches, per_batch, dnc]

    def _slots(self, live: Iterable[dict[str, Any]]) -> list[Metric]:
        rt = self.runtime
        accounts = sorted({str(b.get("account_id")) for b in live if b.get("account_id")})
        in_use = _gauge("outdial_slots_in_use", ["account_id"])
        limit = _gauge("outdial_slots_limit", ["account_id"])
        if accounts:
            for account_id, n in rt.slots.in_use_many(accounts, now_ms=rt.clock.now_ms()).items():
                in_use.add_metric([account_id], n)
            for account_id, n in rt.accounts.concurrency_limits(accounts).items():
                limit.add_metric([account_id], n)
        return [in_use, limit]


def with_process(families: Iterable[Metric], process: str) -> list[Metric]:
    """``families`` with a ``process`` label added to every sample."""
    out = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        copy.samples = [s._replace(labels={**s.labels, "process": process}) for s in family.samples]
        out.append(copy)
    return out


def merge(*sources: Iterable[Metric]) -> list[Metric]:
    """One family per name: samples of families with the same name (and type) are concatenated."""
    merged: dict[str, Metric] = {}
    for source in sources:
        for family in source:
            found = merged.get(family.name)
            if found is None:
                found = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = found
            elif found.type != family.type:
                continue
            found.samples.extend(family.samples)
    return list(merged.values())


class _Families:
    """What :func:`generate_latest` needs: an object whose ``collect()`` yields the families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class MetricsEndpoint:
    """Builds the ``/metrics`` answer; one per application.

    :param runtime: the process's runtime.
    :param cache_s: seconds scrape-time gauges are reused; default :data:`DEFAULT_SCRAPE_CACHE_S`.
    :param timeout_s: longest wait for MongoDB/Redis, seconds; default :data:`DEFAULT_SCRAPE_TIMEOUT_S`.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, runtime: Any, *, cache_s: float = DEFAULT_SCRAPE_CACHE_S,
                 timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S) -> None:
        self.runtime = runtime
        self.gauges = ScrapeGauges(runtime)
        self.snapshots = RedisSnapshotCollector(runtime.redis, skip_process=process_label())
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._lock = asyncio.Lock()
        self._gauges: list[Metric] = []
        self._at = -1e18

    async def _scrape_gauges(self, run: Any) -> list[Metric]:
        async with self._lock:
            if time.monotonic() - self._at < self.cache_s:
                return self._gauges
            try:
                self._gauges = await asyncio.wait_for(run(self.gauges.collect), self.timeout_s)
            except TimeoutError:
                up = _gauge("outdial_scrape_source_up", ["source"])
                up.add_metric(["mongodb"], 0)
                up.add_metric(["redis"], 0)
                self._gauges = [up]
            self._at = time.monotonic()
            return self._gauges

    async def _snapshot_families(self, run: Any) -> list[Metric]:
        try:
            return await asyncio.wait_for(run(lambda: list(self.snapshots.collect())), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - the process's own metrics are still served
            event(log, "metrics_snapshots_failed", level=logging.WARNING, error=type(exc).__name__)
            return []

    async def render(self, run: Any) -> bytes:
        """The exposition text. ``run(fn)`` runs a blocking function in a thread and awaits it."""
        gauges, others = await asyncio.gather(self._scrape_gauges(run), self._snapshot_families(run))
        own = with_process(REGISTRY.collect(), process_label())
        return generate_latest(_Families(merge(own, others, gauges)))
