"""Result webhooks against the embedded MongoDB, Redis and a real receiver process (tests/fixtures/receiver.py).

The sweep and the deliveries run in-process on a clock the test moves (so the 24 hours of retries take no time), the
account's setting goes through ``PUT /accounts`` over HTTP, and the last test runs everything through the real
actors: a stack's workers and clock dyno deliver to the receiver while it is stopped and started again.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import Clock, to_ms
from shared.domain import result_hooks as hooks
from shared.pipeline.result_events import ResultEvents
from shared.stores.account_changes import AccountChanges
from shared.stores.billing import Billing
from shared.stores.jobs import JobStore
from shared.stores.mongo import new_id
from shared.stores.result_events import ResultEventStore
from tests.fixtures.receiver import Receiver
from workers.dev.embedded import free_port

T0 = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
SECRET = "whsec_test_0123456789abcdef"


class MovableClock:
    """A shared clock whose real time the test sets: ``advance(seconds)``."""

    def __init__(self) -> None:
        self.real = 1_000_000.0
        self.clock = Clock(start=T0, speed=1.0, anchor=self.real, source=lambda: self.real)

    def advance(self, seconds: float) -> None:
        self.real += seconds


class Collect:
    """The sweep's sender: keeps every (event id, token) it is handed."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def deliver_result(self, event_id: str, token: str) -> None:
        self.sent.append((event_id, token))

    def take(self) -> list[tuple[str, str]]:
        out, self.sent = self.sent, []
        return out


@pytest.fixture
def moving() -> MovableClock:
    return MovableClock()


@pytest.fixture
def private_config(config):
    return config.with_overrides(result_webhooks_allow_private=True)


@pytest.fixture
def receiver(tmp_path):
    rec = Receiver(free_port("127.0.0.1"), SECRET, tmp_path / "received.jsonl").start()
    yield rec
    rec.stop()


def _events(db, moving, config, sender=None, **kw: Any) -> ResultEvents:
    return ResultEvents(store=ResultEventStore(db, clock=moving.clock),
                        jobs=JobStore(db, clock=moving.clock, config=config), sender=sender or Collect(),
                        clock=moving.clock, config=config, jitter=None, **kw)


def _account(db, moving, config, account_id="acme", **webhook: Any) -> dict[str, Any]:
    changes = AccountChanges(Billing(db, clock=moving.clock, config=config))
    body: dict[str, Any] = {"plan": {"type": "unlimited"}}
    if webhook:
        body["result_webhook"] = {"secret": SECRET, **webhook}
    view, _ = changes.apply(account_id, body)
    return view


def _job(db, moving, account_id="acme", *, pending: str | None = None, **fields: Any) -> str:
    job_id = new_id()
    now = moving.clock.now_ms()
    doc = {"_id": job_id, "batch_id": "65f1c0ffee0000000000b000", "account_id": account_id,
           "contact": {"name": "Ana", "phones": ["+56961234567"], "variables": {}, "external_id": f"x-{job_id[-4:]}"},
           "status": "completed", "tries": 1, "finished_at": now, "updated_at": now, "notify_final": True,
           "result": {"calls": 1, "talk_ms": 30_000, "charge": 30, "last_call_at": now, "last_outcome": "success",
                      "last_attempt_id": f"{job_id}:r1:p0:d0", "analysis_attempt_id": f"{job_id}:r1:p0:d0",
                      "analysis": None if pending else {"call_successful": True}, "analysis_pending": pending},
           **fields}
    db.jobs.insert_one(doc)
    return job_id


def _attempt(db, moving, account_id="acme", **flags: Any) -> str:
    job_id = new_id()
    attempt_id = f"{job_id}:r1:p0:d0"
    now = moving.clock.now_ms()
    db.attempts.insert_one({"_id": attempt_id, "job_id": job_id, "batch_id": "65f1c0ffee0000000000b000",
                            "account_id": account_id, "to_number": "+56961234567", "round": 1, "phone_index": 0,
                            "created_at": now - 60_000, "state": "ended", "call_id": f"call_{job_id[-6:]}",
                            "outcome": "success", "started_at": now - 50_000, "ended_at": now,
                            "duration_ms": 50_000, "charge": 50, "analysis": {"call_successful": True},
                            "recording_url": "https://rec.example/a.wav", "call_cost": 7.5, **flags})
    return attempt_id


def _deliver_all(events: ResultEvents, sender: Collect) -> list[str]:
    return [events.deliver(event_id, token) for event_id, token in sender.take()]


# -- the sweep ---------------------------------------------------------------------------------------------------------


def test_the_sweep_creates_each_event_once(db, moving, private_config):
    _account(db, moving, private_config, url="http://127.0.0.1:9/hook")
    jobs = [_job(db, moving) for _ in range(3)]
    ended = [_attempt(db, moving, notify_ended=True) for _ in range(2)]
    analyzed = _attempt(db, moving, notify_analyzed=True)
    sender = Collect()
    events = _events(db, moving, private_config, sender, chunk=2)   # chunks of 2: every page is read
    report = events.sweep()
    assert report.created == {"contact.final": 3, "call.ended": 2, "call.analyzed": 1}
    assert report.cleared == 6 and report.claimed == 6 and len(sender.take()) == 6
    assert db.jobs.count_documents({"notify_final": True}) == 0
    assert db.attempts.count_documents({"notify_ended": True}) == 0
    assert db.attempts.count_documents({"notify_analyzed": True}) == 0
    ids = {d["_id"] for d in db.result_events.find({})}
    assert ids == {hooks.event_id("contact.final", j) for j in jobs} | {
        hooks.event_id("call.ended", a) for a in ended} | {hooks.event_id("call.analyzed", analyzed)}
    assert events.sweep().created == dict.fromkeys(hooks.EVENT_TYPES, 0)
    # a sweep that died between the insert and the unset: the flags are found again, nothing new is written
    db.jobs.update_many({}, {"$set": {"notify_final": True}})
    db.attempts.update_many({"_id": {"$in": ended}}, {"$set": {"notify_ended": True}})
    db.attempts.update_one({"_id": analyzed}, {"$set": {"notify_analyzed": True}})
    again = events.sweep()
    assert again.created == dict.fromkeys(hooks.EVENT_TYPES, 0) and again.cleared == 6
    assert db.result_events.count_documents({}) == 6
    body = json.loads(db.result_events.find_one({"_id": hooks.event_id("contact.final", jobs[0])})["body"])
    assert body["type"] == "contact.final" and body["data"]["job_id"] == jobs[0]
    assert body["data"]["analysis"] == {"call_successful": True} and body["created_at"].endswith("Z")


def test_the_sweep_honours_the_events_asked_for(db, moving, private_config):
    _account(db, moving, private_config, url="http://127.0.0.1:9/hook", events=["call.ended"])
    _account(db, moving, private_config, account_id="quiet")
    job = _job(db, moving)
    attempt = _attempt(db, moving, notify_ended=True, notify_analyzed=True)
    quiet_job = _job(db, moving, account_id="quiet")
    events = _events(db, moving, private_config)
    report = events.sweep()
    assert report.created == {"contact.final": 0, "call.ended": 1, "call.analyzed": 0}
    assert [d["_id"] for d in db.result_events.find({})] == [hooks.event_id("call.ended", attempt)]
    # flags of events nobody asked for are cleared all the same
    assert db.jobs.count_documents({"notify_final": True}) == 0 and db.jobs.count_documents({"_id": quiet_job}) == 1
    assert db.attempts.count_documents({"notify_analyzed": True}) == 0
    assert job


def test_contact_final_waits_for_the_analysis_then_gives_up(db, moving, private_config):
    _account(db, moving, private_config, url="http://127.0.0.1:9/hook", events=["contact.final"])
    comes = _job(db, moving, pending="a1")
    never = _job(db, moving, pending="a2")
    events = _events(db, moving, private_config.with_overrides(pipeline_analysis_wait_s=600))
    report = events.sweep()
    assert report.waiting == 2 and report.created["contact.final"] == 0
    assert db.jobs.count_documents({"notify_final": True}) == 2
    # the analysis of one comes in: its event is written with it
    db.jobs.update_one({"_id": comes}, {"$set": {"result.analysis": {"call_successful": False}},
                                       "$unset": {"result.analysis_pending": ""}})
    moving.advance(300)
    report = events.sweep()
    assert report.waiting == 1 and report.created["contact.final"] == 1
    data = json.loads(db.result_events.find_one({"_id": hooks.event_id("contact.final", comes)})["body"])["data"]
    assert data["analysis"] == {"call_successful": False} and data["analysis_pending"] is False
    # the other's wait ends: its event is written without the analysis
    moving.advance(301)
    report = events.sweep()
    assert report.waiting == 0 and report.created["contact.final"] == 1
    data = json.loads(db.result_events.find_one({"_id": hooks.event_id("contact.final", never)})["body"])["data"]
    assert data["analysis"] is None and data["analysis_pending"] is True
    assert db.jobs.count_documents({"notify_final": True}) == 0


def test_the_analysis_wait_is_real_time_on_a_sped_up_clock(db, private_config):
    fast = MovableClock()
    fast.clock = Clock(start=T0, speed=60.0, anchor=fast.real, source=lambda: fast.real)
    _account(db, fast, private_config, url="http://127.0.0.1:9/hook", events=["contact.final"])
    _job(db, fast, pending="a1")
    events = _events(db, fast, private_config.with_overrides(pipeline_analysis_wait_s=10))
    assert events.sweep().waiting == 1
    fast.advance(9)                       # nine real seconds: nine simulated minutes, still within the wait
    assert events.sweep().waiting == 1
    fast.advance(2)
    assert events.sweep().created["contact.final"] == 1


# -- deliveries --------------------------------------------------------------------------------------------------------


def test_a_delivery_is_signed_and_recorded(db, moving, private_config, receiver):
    _account(db, moving, private_config, url=receiver.url)
    job = _job(db, moving)
    sender = Collect()
    events = _events(db, moving, private_config, sender)
    events.sweep()
    [(event_id, token)] = sender.sent
    assert _deliver_all(events, sender) == ["delivered"]
    [got] = receiver.received()
    assert got["verified"] and got["id"] == got["body_id"] == event_id == hooks.event_id("contact.final", job)
    assert got["type"] == "contact.final" and got["data"]["job_id"] == job
    assert got["path"] == "/hooks/outdial?src=test" and got["host"] == f"127.0.0.1:{receiver.port}"
    assert got["user_agent"] == "outdial" and got["content_type"] == "application/json"
    doc = db.result_events.find_one({"_id": event_id})
    assert doc["state"] == "delivered" and doc["attempts"] == 1 and doc["last_status"] == 200
    assert doc["delivered_at"] == moving.clock.now_ms() and "lease_token" not in doc
    assert events.deliver(event_id, token) == "skipped"    # the same message again sends nothing
    assert len(receiver.received()) == 1


def test_a_failed_delivery_is_tried_again_with_the_same_id_and_body(db, moving, private_config, receiver):
    _account(db, moving, private_config, url=receiver.url)
    _job(db, moving)
    sender = Collect()
    events = _events(db, moving, private_config, sender)
    receiver.answer_with(500)
    events.sweep()
    assert _deliver_all(events, sender) == ["failed"]
    doc = db.result_events.find_one({})
    assert doc["state"] == "pending" and doc["attempts"] == 1 and doc["last_status"] == 500
    assert doc["last_error"] == "HTTP 500" and doc["next_at"] == moving.clock.now_ms() + 10_000
    moving.advance(9)
    events.sweep()
    assert sender.take() == []              # not due yet
    moving.advance(1)
    receiver.answer_with(200)
    events.sweep()
    assert _deliver_all(events, sender) == ["delivered"]
    first, second = receiver.received()
    assert first["id"] == second["id"] == doc["_id"] and first["data"] == second["data"]
    assert first["verified"] and second["verified"] and (first["status"], second["status"]) == (500, 200)
    assert db.result_events.find_one({})["attempts"] == 2


def test_an_unreachable_receiver_is_tried_for_24_hours_then_the_event_is_dead(db, moving, private_config, tmp_path):
    port = free_port("127.0.0.1")
    _account(db, moving, private_config, url=f"http://127.0.0.1:{port}/hook")   # nothing listens there
    _job(db, moving)
    sender = Collect()
    events = _events(db, moving, private_config, sender)
    created = moving.clock.now_ms()
    outcomes: list[str] = []
    for _ in range(100):
        events.sweep()
        outcomes += _deliver_all(events, sender)
        doc = db.result_events.find_one({})
        if doc["state"] != "pending":
            break
        moving.advance((doc["next_at"] - moving.clock.now_ms()) / 1000)
    assert doc["state"] == "dead" and outcomes[-1] == "dead" and set(outcomes[:-1]) == {"failed"}
    assert doc["attempts"] == len(outcomes) and 30 <= len(outcomes) <= 40
    assert doc["last_attempt_at"] == created + hooks.DELIVERY_WINDOW_MS
    assert "ConnectionRefused" in doc["last_error"] or "NewConnectionError" in doc["last_error"]
    # a redelivery asked by hand: pending, due now, counted from 0, 24 fresh hours
    store = ResultEventStore(db, clock=moving.clock)
    again = store.redeliver("acme", doc["_id"], now_ms=moving.clock.now_ms())
    assert again["state"] == "pending" and again["attempts"] == 0 and again["next_at"] == moving.clock.now_ms()
    assert again["expires_at"] == moving.clock.now_ms() + hooks.DELIVERY_WINDOW_MS
    receiver = Receiver(port, SECRET, tmp_path / "late.jsonl").start()
    try:
        events.sweep()
        assert _deliver_all(events, sender) == ["delivered"]
        assert [r["id"] for r in receiver.received()] == [doc["_id"]]
    finally:
        receiver.stop()
    assert store.redeliver("acme", "evt_000000000000000000000000", now_ms=0) is None
    assert store.redeliver("other", doc["_id"], now_ms=0) is None


def test_a_claimed_event_is_one_delivery_until_its_lease_ends(db, moving, private_config, receiver):
    _account(db, moving, private_config, url=receiver.url)
    _job(db, moving)
    first, second = Collect(), Collect()
    one, two = _events(db, moving, private_config, first), _events(db, moving, private_config, second)
    one.sweep()
    two.sweep()
    assert len(first.sent) == 1 and second.sent == []      # the other sweep did not claim it again
    [(event_id, stale)] = first.take()
    moving.advance(61)                                      # the worker holding it died: its lease ends
    two.sweep()
    [(_, fresh)] = second.take()
    assert fresh != stale
    assert one.deliver(event_id, stale) == "skipped"       # the dead worker's message, delivered late
    assert two.deliver(event_id, fresh) == "delivered"
    assert [r["id"] for r in receiver.received()] == [event_id]


def test_a_message_with_too_little_lease_left_sends_nothing(db, moving, private_config, receiver):
    _account(db, moving, private_config, url=receiver.url)
    _job(db, moving)
    sender = Collect()
    events = _events(db, moving, private_config, sender)
    events.sweep()
    [(event_id, token)] = sender.take()
    moving.advance(50)                                      # 10 s of lease left: less than a request may take
    assert events.deliver(event_id, token) == "skipped" and receiver.received() == []


def test_a_private_target_is_refused_at_delivery_once_the_setting_changes(db, moving, private_config, config,
                                                                           receiver):
    _account(db, moving, private_config, url=receiver.url)   # accepted while private targets were allowed
    _job(db, moving)
    sender = Collect()
    events = _events(db, moving, config, sender)              # the same stores, RESULT_WEBHOOKS_ALLOW_PRIVATE off
    events.sweep()
    assert _deliver_all(events, sender) == ["failed"]
    doc = db.result_events.find_one({})
    assert doc["last_error"].startswith("target refused:") and "https" in doc["last_error"]
    assert receiver.received() == []


def test_a_name_that_resolves_inside_is_refused_at_delivery(db, moving, private_config, config, receiver):
    answers = {"hooks.example.com": ["93.184.216.34"]}
    changes = AccountChanges(Billing(db, clock=moving.clock, config=config),
                             resolve=lambda host, port: answers[host])
    changes.apply("acme", {"plan": {"type": "unlimited"},
                           "result_webhook": {"url": "https://hooks.example.com/in", "secret": SECRET}})
    _job(db, moving)
    answers["hooks.example.com"] = ["127.0.0.1"]             # the DNS answer changed since the PUT
    posted: list[Any] = []
    sender = Collect()
    events = _events(db, moving, config, sender, resolve=lambda host, port: answers[host],
                     post=lambda *args: posted.append(args) or 200)
    events.sweep()
    assert _deliver_all(events, sender) == ["failed"] and posted == []
    assert "127.0.0.1" in db.result_events.find_one({})["last_error"]
    answers["hooks.example.com"] = ["93.184.216.34"]
    moving.advance(11)
    events.sweep()
    assert _deliver_all(events, sender) == ["delivered"]
    [(target, body, headers, timeout)] = posted
    assert target.address == "93.184.216.34" and target.host == "hooks.example.com" and timeout == 10
    assert hooks.verify_signature(SECRET, headers["Outdial-Signature"], body)
    assert headers["Outdial-Event-Id"] == json.loads(body)["id"]


def test_a_removed_webhook_ends_its_pending_events(db, moving, private_config, receiver):
    changes = AccountChanges(Billing(db, clock=moving.clock, config=private_config))
    _account(db, moving, private_config, url=receiver.url)
    _job(db, moving)
    sender = Collect()
    events = _events(db, moving, private_config, sender)
    events.sweep()
    changes.apply("acme", {"result_webhook": None})
    assert _deliver_all(events, sender) == ["dead"] and receiver.received() == []


# -- the API -----------------------------------------------------------------------------------------------------------


def test_put_account_validates_the_webhook_and_never_shows_the_secret(api):
    base = {"plan": {"type": "unlimited"}}
    bad = api.put("/accounts/acme", {**base, "result_webhook": {"url": "ftp://x", "secret": "short",
                                                                "events": ["call.ended", "call.started"]}})
    assert bad.status == 422
    fields = {e["field"]: e["message"] for e in bad.json()["errors"]}
    assert set(fields) == {"result_webhook.url", "result_webhook.secret", "result_webhook.events"}
    assert "call.started" in fields["result_webhook.events"] and "16" in fields["result_webhook.secret"]
    for url, why in (("http://93.184.216.34/hook", "https"), ("https://127.0.0.1/hook", "loopback"),
                     ("https://10.0.0.8/hook", "private"), ("https://[::ffff:192.168.1.1]/", "private"),
                     ("https://localhost:8443/hook", "loopback")):
        answer = api.put("/accounts/acme", {**base, "result_webhook": {"url": url, "secret": SECRET}})
        assert answer.status == 422, url
        [error] = answer.json()["errors"]
        assert error["field"] == "result_webhook.url" and why in error["message"], (url, error)
    missing = api.put("/accounts/acme", {**base, "result_webhook": {"url": "https://93.184.216.34/hook"}})
    assert missing.status == 422 and missing.json()["errors"][0]["field"] == "result_webhook.secret"
    made = api.put("/accounts/acme", {**base, "result_webhook": {"url": "https://93.184.216.34/hook",
                                                                 "secret": SECRET}})
    assert made.status == 201 and SECRET not in made.text
    assert made.json()["result_webhook"] == {"url": "https://93.184.216.34/hook", "events": list(hooks.EVENT_TYPES),
                                             "secret_set": True}
    # a change without the secret keeps it
    changed = api.put("/accounts/acme", {"result_webhook": {"url": "https://93.184.216.35/in",
                                                            "events": ["contact.final"]}})
    assert changed.status == 200 and SECRET not in changed.text
    shown = api.get("/accounts/acme")
    assert SECRET not in shown.text
    assert shown.json()["result_webhook"] == {"url": "https://93.184.216.35/in", "events": ["contact.final"],
                                              "secret_set": True}
    removed = api.put("/accounts/acme", {"result_webhook": None})
    assert removed.status == 200 and removed.json()["result_webhook"] is None
    again = api.put("/accounts/acme", {"result_webhook": {"url": "https://93.184.216.34/hook"}})
    assert again.status == 422 and again.json()["errors"][0]["field"] == "result_webhook.secret"


def test_put_account_accepts_a_loopback_target_where_private_targets_are_allowed(web_factory, web_config, clock):
    from workers.runtime import build_runtime

    runtime = build_runtime(web_config.with_overrides(result_webhooks_allow_private=True), clock)
    try:
        client = web_factory(runtime=runtime).client()
        answer = client.put("/accounts/acme", {"plan": {"type": "unlimited"}, "result_webhook": {
            "url": "http://127.0.0.1:8080/hook", "secret": SECRET}})
        assert answer.status == 201 and answer.json()["result_webhook"]["url"] == "http://127.0.0.1:8080/hook"
    finally:
        runtime.redis.close()


def test_the_deliveries_are_listed_and_redelivered(api, web_runtime):
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    store = web_runtime.result_event_store
    now = web_runtime.clock.now_ms()
    ids = []
    for n in range(5):
        evt = hooks.event_id("call.ended", f"a{n}")
        store.insert(evt_id=evt, account_id="acme", kind="call.ended", subject_id=f"a{n}", created_at=now + n,
                     body="{}")
        ids.append(evt)
    store.insert(evt_id=hooks.event_id("call.ended", "x"), account_id="other", kind="call.ended", subject_id="x",
                 created_at=now, body="{}")
    web_runtime.db.result_events.update_one({"_id": ids[0]}, {"$set": {"state": "dead", "attempts": 31,
                                                                       "last_error": "HTTP 500", "last_status": 500}})
    page = api.get("/accounts/acme/webhook-deliveries?limit=2").json()
    assert [d["id"] for d in page["deliveries"]] == ids[::-1][:2] and page["next_before"] == ids[3]
    rest = api.get(f"/accounts/acme/webhook-deliveries?limit=10&before={page['next_before']}").json()
    assert [d["id"] for d in rest["deliveries"]] == ids[::-1][2:] and rest["next_before"] is None
    dead = api.get("/accounts/acme/webhook-deliveries?state=dead").json()["deliveries"]
    assert [(d["id"], d["state"], d["attempts"], d["last_status"], d["next_at"]) for d in dead] == \
        [(ids[0], "dead", 31, 500, None)]
    assert set(dead[0]) == {"id", "type", "state", "attempts", "created_at", "next_at", "delivered_at",
                            "last_status", "last_error"}
    again = api.post(f"/accounts/acme/webhook-deliveries/{ids[0]}/redeliver")
    assert again.status == 200
    assert again.json()["state"] == "pending" and again.json()["attempts"] == 0 and again.json()["next_at"]
    assert api.post(f"/accounts/other/webhook-deliveries/{ids[0]}/redeliver").status == 404
    assert api.post("/accounts/acme/webhook-deliveries/evt_000000000000000000000000/redeliver").status == 404
    assert api.post("/accounts/acme/webhook-deliveries/nonsense/redeliver").status == 404
    assert api.get("/accounts/nobody/webhook-deliveries").status == 404
    bad = api.get("/accounts/acme/webhook-deliveries?state=lost")
    assert bad.status == 422 and bad.json()["errors"][0]["field"] == "state"
    assert api.get("/accounts/acme/webhook-deliveries?before=evt_000000000000000000000000").status == 422


# -- through the real actors -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_actors_deliver_every_event_through_an_outage(stack_factory, config, receiver):
    from shared.clock import started_at

    stack, runtime = stack_factory(clock=started_at(T0, speed=1.0), simulator=False,
                                   env={"RESULT_WEBHOOKS_ALLOW_PRIVATE": "1"})
    private = runtime.config.with_overrides(result_webhooks_allow_private=True)
    AccountChanges(Billing(runtime.db, clock=runtime.clock, config=private)).apply(
        "acme", {"plan": {"type": "unlimited"}, "result_webhook": {"url": receiver.url, "secret": SECRET}})
    moving = MovableClock()
    moving.clock = runtime.clock
    first = [_job(runtime.db, moving) for _ in range(5)] + [_attempt(runtime.db, moving, notify_ended=True)]
    expected = {hooks.event_id("contact.final", j) for j in first[:5]} | {hooks.event_id("call.ended", first[5])}
    receiver.wait_for(lambda rs: {r["id"] for r in rs} >= expected, timeout_s=60)
    # the receiver goes away for a while: the events written meanwhile fail, then arrive once it is back
    receiver.stop()
    later = [_job(runtime.db, moving) for _ in range(5)]
    expected |= {hooks.event_id("contact.final", j) for j in later}
    deadline = time.monotonic() + 30
    while runtime.db.result_events.count_documents({"attempts": {"$gte": 1}, "state": "pending"}) < 5:
        assert time.monotonic() < deadline, "no delivery failed while the receiver was down"
        time.sleep(0.2)
    receiver.start()
    records = receiver.wait_for(lambda rs: {r["id"] for r in rs} >= expected, timeout_s=60)
    assert {r["id"] for r in records} == expected           # duplicates, if any, only under the same ids
    assert all(r["verified"] and r["id"] == r["body_id"] for r in records)
    deadline = time.monotonic() + 20
    while runtime.db.result_events.count_documents({"state": "delivered"}) < len(expected):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert to_ms(T0) <= min(d["created_at"] for d in runtime.db.result_events.find({}))
    stack.stop()   # as on a dyno restart: the workers finish what they hold and exit


# -- the pinned connection ---------------------------------------------------------------------------------------------


def _tls_server(tmp_path, name: str) -> tuple[Any, list[dict[str, Any]]]:
    """An https server on 127.0.0.1 whose certificate names ``name`` (self-signed), recording what it receives."""
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True)
    seen: list[dict[str, Any]] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, server_name, ctx: seen.append({"sni": server_name}) and None

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append({"host": self.headers["Host"], "path": self.path, "body": body})
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    # a 20 ms poll: shutdown() returns within it instead of the default half second
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, seen


def test_an_https_delivery_connects_to_the_checked_address_and_verifies_the_host_name(tmp_path, monkeypatch):
    from shared.pipeline.result_events import post_pinned

    server, seen = _tls_server(tmp_path, "hooks.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "hooks.test.pem"))   # trust the test's certificate
    port = server.server_address[1]
    try:
        target = hooks.Target("https", "hooks.test", port, "/in?k=1", address="127.0.0.1")   # no DNS for hooks.test
        assert post_pinned(target, b'{"id":"evt_1"}', {"Content-Type": "application/json"}, 10) == 204
        assert {"sni": "hooks.test"} in seen
        assert {"host": f"hooks.test:{port}", "path": "/in?k=1", "body": b'{"id":"evt_1"}'} in seen
        # a certificate for another name is refused: the connection is to the address, the check is on the name
        other = hooks.Target("https", "elsewhere.test", port, "/in", address="127.0.0.1")
        with pytest.raises(Exception, match=r"(?i)certificate|hostname|doesn't match"):
            post_pinned(other, b"{}", {}, 10)
    finally:
        server.shutdown()
