"""GET /metrics: this process, other processes' snapshots from Redis, and gauges read at scrape time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.domain import states
from shared.metrics import process_label
from shared.provider.webhooks import SIGNATURE_HEADER
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import service_env
from workers.dev.embedded import free_port
from workers.runtime import build_runtime
from workers.web.http import read_token_for

PHONES = [f"+5696123{n:04d}" for n in range(4600, 4620)]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value. Fails on a malformed exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]


def value(found, name, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def test_metrics_need_the_admin_or_the_read_only_token(web):
    assert web.client(token=None).get("/metrics").status == 401
    assert web.client(token="nope").get("/metrics").status == 401
    for token in (ADMIN_TOKEN, read_token_for(ADMIN_TOKEN)):
        reply = web.client(token=token).get("/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"].startswith("text/plain")


def test_job_and_batch_gauges_are_read_from_mongodb_at_scrape_time(api, web, web_runtime):
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 7})
    live = api.post("/batches", {"name": "live", "account_id": "acme"}).json()["id"]
    done = api.post("/batches", {"name": "done", "account_id": "acme"}).json()["id"]
    api.post(f"/batches/{live}/contacts", {"contacts": [{"phones": [p]} for p in PHONES[:6]]})
    api.post(f"/batches/{done}/contacts", {"contacts": [{"phones": [p]} for p in PHONES[6:9]]})
    jobs = web_runtime.jobs.find({"batch_id": live}, sort=[("_id", 1)])
    for job, state in zip(jobs, [states.WAITING_SCHEDULE, states.RETRY_WAIT, states.IN_CALL], strict=False):
        web_runtime.jobs.coll.update_one({"_id": job["_id"]}, {"$set": {"status": state}})
    web_runtime.jobs.coll.update_many({"batch_id": done}, {"$set": {"status": states.COMPLETED}})
    web_runtime.batches.set_status(done, states.BATCH_COMPLETED, expected=(states.BATCH_ACTIVE,))
    web_runtime.slots.rebuild({})   # slot sets known (as after the scheduler's first run)
    web_runtime.slots.acquire("acme", "attempt-1", limit=7, now_ms=web_runtime.clock.now_ms(), lease_ms=60_000)
    web_runtime.slots.acquire("acme", "attempt-2", limit=7, now_ms=web_runtime.clock.now_ms(), lease_ms=60_000)

    text = api.get("/metrics").text
    assert len(families(text)) == len(set(families(text)))   # one family per name
    found = samples(text)
    assert value(found, "outdial_jobs", state="pending") == 3
    assert value(found, "outdial_jobs", state="completed") == 3
    assert value(found, "outdial_jobs", state="waiting_schedule") == 1
    assert value(found, "outdial_batch_jobs", batch_id=live, state="retry_wait") == 1
    assert value(found, "outdial_batch_jobs", batch_id=live, state="in_call") == 1
    assert value(found, "outdial_batch_jobs", batch_id=done, state="completed") is None   # finished: no series
    assert value(found, "outdial_batches", status="active") == 1
    assert value(found, "outdial_batches", status="completed") == 1
    assert value(found, "outdial_slots_in_use", account_id="acme") == 2
    assert value(found, "outdial_slots_limit", account_id="acme") == 7
    assert value(found, "outdial_scrape_source_up", source="mongodb") == 1
    assert value(found, "outdial_scrape_source_up", source="redis") == 1


WORKER = textwrap.dedent("""
    import redis
    from shared import metrics
    metrics.CALLS.labels("answered").inc(3)
    metrics.CALLS.labels("busy").inc()
    metrics.POSTPONED_BY_SCHEDULE.inc(2)
    metrics.RETRY_DELAY.observe(7200)
    metrics.CACHE_HITS.inc(40)
    metrics.CACHE_MISSES.inc(2)
    metrics.BATCH_LOAD.labels("cache").observe(0.00002)
    metrics.BATCH_LOAD.labels("mongodb").observe(0.004)
    metrics.PROVIDER_ERRORS.labels("rate_limited").inc()
    metrics.publish_snapshot(redis.Redis.from_url({url!r}), process="worker-host:4242")
""")


@pytest.mark.slow
def test_worker_processes_metrics_reach_metrics_through_redis(api, web, web_config, redis_url):
    subprocess.run([sys.executable, "-c", WORKER.format(url=redis_url)], check=True, timeout=60,
                   env=service_env(web_config))
    text = api.get("/metrics").text
    found = samples(text)
    worker = {"process": "worker-host:4242"}
    assert value(found, "outdial_calls_total", outcome="answered", **worker) == 3
    assert value(found, "outdial_calls_total", outcome="busy", **worker) == 1
    assert value(found, "outdial_postponed_by_schedule_total", **worker) == 2
    assert value(found, "outdial_retry_delay_seconds_bucket", le="7200.0", **worker) == 1
    assert value(found, "outdial_retry_delay_seconds_bucket", le="3600.0", **worker) == 0
    assert value(found, "outdial_batch_cache_hits_total", **worker) == 40
    assert value(found, "outdial_batch_cache_misses_total", **worker) == 2
    assert value(found, "outdial_batch_load_seconds_count", source="cache", **worker) == 1
    assert value(found, "outdial_batch_load_seconds_count", source="mongodb", **worker) == 1
    assert value(found, "outdial_provider_errors_total", kind="rate_limited", **worker) == 1
    # the web process's own samples are served live, labelled with its process
    web.client(token=None).request("POST", "/webhooks/retell", data=b"{}",
                                   headers={SIGNATURE_HEADER: "v=1,d=" + "0" * 64})
    found = samples(api.get("/metrics").text)
    assert value(found, "outdial_webhooks_total", result="rejected_signature", process=process_label()) >= 1
    assert value(found, "outdial_http_requests_total", route="/webhooks/retell", method="POST", status="401",
                 process=process_label()) >= 1


def test_a_scrape_with_mongodb_down_still_answers(web_factory, web_config, clock):
    dead = web_config.with_overrides(mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500")
    server = web_factory(runtime=build_runtime(dead, clock), start_cache_listener=False, metrics_timeout_s=3)
    reply = server.client().get("/metrics")
    assert reply.status == 200
    found = samples(reply.text)
    assert value(found, "outdial_scrape_source_up", source="mongodb") == 0
    assert value(found, "outdial_jobs", state="pending") is None
