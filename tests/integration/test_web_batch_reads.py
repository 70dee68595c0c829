"""GET /batches/{id} over real HTTP: what it shows from the batch's jobs is kept a moment by the web process
and recounted by one request at a time, exact once the interval has passed; the batch itself is always current."""

from __future__ import annotations

import threading
import time

from shared.domain import states
from shared.stores.batch_controls import pause_batch
from shared.stores.mongo import COMMANDS
from tests.helpers import wait_until
from workers.runtime import build_runtime

PHONES = [f"+5696125{n:04d}" for n in range(100)]
WEEKDAYS = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"},
            "timezone": "America/Santiago"}


def new_batch(api, contacts: int) -> str:
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status in (200, 201)
    reply = api.post("/batches", {"name": "campaign", "account_id": "acme"})
    assert reply.status == 201, reply.text
    batch_id = reply.json()["id"]
    added = api.post(f"/batches/{batch_id}/contacts", {"contacts": [{"phones": [p]} for p in PHONES[:contacts]]})
    assert added.json()["imported"] == contacts
    return batch_id


def move(runtime, batch_id: str, *moved: str) -> list[str]:
    """Put the batch's first jobs in the states ``moved`` (as the pipeline would); their ids."""
    jobs = runtime.jobs.find({"batch_id": batch_id}, sort=[("_id", 1)])
    now = runtime.clock.now_ms()
    for job, state in zip(jobs, moved, strict=False):
        runtime.jobs.coll.update_one({"_id": job["_id"]}, {"$set": {
            "status": state, "last_error": "busy", "dialed_at": now - 5_000, "updated_at": now}})
    return [j["_id"] for j in jobs[:len(moved)]]


def test_the_counts_are_exact_once_the_interval_has_passed(web_factory, web_runtime):
    api = web_factory(batch_counts_max_age_s=0.5).client()
    batch_id = new_batch(api, 10)
    assert api.get(f"/batches/{batch_id}").json()["counts"][states.PENDING] == 10

    ids = move(web_runtime, batch_id, states.COMPLETED, states.COMPLETED, states.FAILED, states.IN_CALL)
    time.sleep(0.5)   # the interval: a read after it shows a count made after the change
    body = api.get(f"/batches/{batch_id}").json()
    assert body["counts"] == {**dict.fromkeys(states.JOB_STATES, 0), states.PENDING: 6, states.COMPLETED: 2,
                              states.FAILED: 1, states.IN_CALL: 1}
    assert body["progress"]["done"] == 3 and body["progress"]["calls_in_progress"] == 1
    assert body["failures"] == [{"reason": "busy", "reason_code": None, "count": 1}]
    assert body["oldest_in_progress"]["job_id"] == ids[3] and body["oldest_in_progress"]["status"] == states.IN_CALL

    move(web_runtime, batch_id, states.COMPLETED, states.COMPLETED, states.FAILED, states.COMPLETED)
    time.sleep(0.5)
    body = api.get(f"/batches/{batch_id}").json()
    assert body["counts"][states.COMPLETED] == 3 and body["counts"][states.IN_CALL] == 0
    assert body["oldest_in_progress"] is None


def test_a_burst_of_reads_counts_the_jobs_once(web_factory, web_runtime, monkeypatch):
    server = web_factory(batch_counts_max_age_s=60)
    api = server.client()
    batch_id = new_batch(api, 10)
    move(web_runtime, batch_id, states.FAILED, states.IN_CALL)
    ctx = server.context
    # Hold the first count until the 32 requests have reached the handler, so they come while it runs.
    arrived, everyone = [0], threading.Event()
    changed_at = ctx.changed_at

    def count_arrivals(bid: str):
        arrived[0] += 1
        if arrived[0] >= 32:
            everyone.set()
        return changed_at(bid)

    counts = web_runtime.jobs.counts

    def held_counts(bid: str):
        everyone.wait(10)
        return counts(bid)

    monkeypatch.setattr(ctx, "changed_at", count_arrivals)
    monkeypatch.setattr(web_runtime.jobs, "counts", held_counts)
    computations, aggregates = ctx.batch_jobs.computations, COMMANDS.counts.get("aggregate", 0)
    replies: list = []
    threads = [threading.Thread(target=lambda: replies.append(api.get(f"/batches/{batch_id}"))) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert [r.status for r in replies] == [200] * 32
    assert {str(r.json()["counts"]) for r in replies} == {str(replies[0].json()["counts"])}
    assert replies[0].json()["counts"][states.FAILED] == 1 and replies[0].json()["counts"][states.IN_CALL] == 1
    assert ctx.batch_jobs.computations - computations == 1
    assert COMMANDS.counts.get("aggregate", 0) - aggregates == 1


def test_a_batch_changed_through_the_api_is_shown_at_once(web_factory, web_runtime):
    api = web_factory(batch_counts_max_age_s=60).client()
    batch_id = new_batch(api, 4)
    path = f"/batches/{batch_id}"
    assert api.get(path).json()["status"] == "active"

    assert api.post(f"{path}/pause").status == 200
    assert api.get(path).json()["status"] == "paused"
    assert api.post(f"{path}/resume").status == 200
    assert api.get(path).json()["status"] == "active"

    assert api.patch(path, {"name": "renamed", "call_settings": WEEKDAYS}).status == 200
    body = api.get(path).json()
    assert body["name"] == "renamed" and body["call_settings"] == WEEKDAYS
    assert "09:00-18:00" in body["window"]["description"]

    assert api.post(f"{path}/cancel").json()["cancelled_jobs"] == 4
    body = api.get(path).json()
    assert body["status"] == "cancelled" and body["counts"][states.CANCELLED] == 4

    other = new_batch(api, 2)
    assert api.get(f"/batches/{other}").json()["progress"]["total"] == 2
    more = api.post(f"/batches/{other}/contacts", {"contacts": [{"phones": [p]} for p in PHONES[50:53]]})
    assert more.json()["imported"] == 3
    assert api.get(f"/batches/{other}").json()["progress"]["total"] == 5


def test_a_batch_changed_by_another_process_is_shown_when_its_invalidation_arrives(web_factory, web_config, clock):
    api = web_factory(batch_counts_max_age_s=60).client()
    batch_id = new_batch(api, 2)
    assert api.get(f"/batches/{batch_id}").json()["status"] == "active"   # the web's batch cache holds it
    elsewhere = build_runtime(web_config, clock)
    try:
        assert pause_batch(elsewhere.batches, batch_id).changed
        wait_until(lambda: api.get(f"/batches/{batch_id}").json()["status"] == "paused", timeout_s=10)
    finally:
        elsewhere.close()


def test_an_unknown_batch_is_404_and_nothing_is_kept_for_it(web_factory):
    server = web_factory(batch_counts_max_age_s=60)
    reply = server.client().get(f"/batches/{'f' * 24}")
    assert reply.status == 404 and reply.json()["error"] == "not_found"
    assert len(server.context.batch_jobs) == 0


def test_a_batch_shown_completed_shows_its_final_counts(web_factory, web_runtime):
    # Counts kept for a minute; the batch completes elsewhere (maintenance in a worker) once its jobs are final.
    api = web_factory(batch_counts_max_age_s=60).client()
    batch_id = new_batch(api, 3)
    assert api.get(f"/batches/{batch_id}").json()["counts"][states.PENDING] == 3
    move(web_runtime, batch_id, states.COMPLETED, states.FAILED, states.COMPLETED)
    assert web_runtime.batches.set_status(batch_id, states.BATCH_COMPLETED, expected=(states.BATCH_ACTIVE,))

    def shown() -> dict | None:
        body = api.get(f"/batches/{batch_id}").json()
        return body if body["status"] == states.BATCH_COMPLETED else None

    body = wait_until(shown, timeout_s=10, interval_s=0.05)   # once the invalidation has reached the web process
    assert body["counts"][states.PENDING] == 0
    assert body["counts"][states.COMPLETED] == 2 and body["counts"][states.FAILED] == 1
