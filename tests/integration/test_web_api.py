"""The admin API over real HTTP: accounts, batches, contacts, jobs, controls, auth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis as redis_lib

from shared.cache.invalidation import PAYLOAD
from shared.domain import states
from shared.stores import attempts as attempt_states
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import frozen_clock, wait_until
from workers.runtime import build_runtime
from workers.web.http import read_token_for

PHONES = [f"+5696123{n:04d}" for n in range(4500, 4600)]
SATURDAY = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)  # 12:00 in Santiago (UTC-3 in March)
WEEKDAYS = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"},
            "timezone": "America/Santiago"}


def make_account(api, account_id="acme", **plan):
    reply = api.put(f"/accounts/{account_id}", {"plan": plan or {"type": "unlimited"}})
    assert reply.status in (200, 201), reply.text
    return reply.json()


def make_batch(api, **fields):
    reply = api.post("/batches", {"name": "campaign", "account_id": "acme", **fields})
    assert reply.status == 201, reply.text
    return reply.json()


# -- auth -------------------------------------------------------------------------------------------------


def test_admin_routes_need_the_admin_token(api, web):
    make_account(api)
    anonymous = web.client(token=None)
    for method, path in (("GET", "/batches"), ("POST", "/batches"), ("GET", "/accounts/acme"),
                         ("PUT", "/accounts/acme"), ("GET", "/jobs/" + "0" * 24)):
        for client in (anonymous, web.client(token="wrong-token"), web.client(token=read_token_for(ADMIN_TOKEN))):
            reply = client.request(method, path, json_body={} if method != "GET" else None)
            assert reply.status == 401, (method, path, reply.text)
            assert reply.json()["error"] == "unauthorized"
            assert reply.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.get("/batches", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}).status == 401
    assert anonymous.get("/batches", headers={"Cookie": f"outdial_session={read_token_for(ADMIN_TOKEN)}"}).status == 401
    assert api.get("/batches").status == 200


def test_without_admin_token_every_admin_request_is_refused(web_factory, web_runtime):
    server = web_factory(admin_token=None)
    for token in (None, "", ADMIN_TOKEN, "anything"):
        reply = server.client(token=token).get("/batches")
        assert reply.status == 401
        assert "ADMIN_TOKEN is not set" in reply.json()["message"]
    assert server.client(token=None).get("/metrics").status == 401
    assert server.client(token=None).get("/healthz").status == 200


# -- accounts ---------------------------------------------------------------------------------------------


def test_account_put_get_and_top_up(api):
    created = api.put("/accounts/acme", {"plan": {"type": "minutes", "balance": 10}, "concurrency_limit": 5})
    assert created.status == 201 and created.headers["location"] == "/accounts/acme"
    body = created.json()
    assert body["account_id"] == "acme" and body["plan"]["type"] == "minutes"
    assert body["balance"] == 10 and body["concurrency_limit"] == 5
    assert body["created_at"].endswith("Z") and "T" in body["created_at"]
    changed = api.put("/accounts/acme", {"plan": {"type": "minutes", "balance": 12.5}})
    assert changed.status == 200 and changed.json()["balance"] == 12.5
    topped = api.post("/accounts/acme/top-up", {"amount": 2.5})
    assert topped.status == 200 and topped.json()["balance"] == 15.0
    got = api.get("/accounts/acme").json()
    assert got["units"] == {"unit": "second", "balance": 900, "reserved": 0, "available": 900}
    credits = api.put("/accounts/bigco", {"plan": {"type": "credits", "balance": 100, "price_per_minute": 1.5}})
    assert credits.status == 201 and credits.json()["plan"]["price_per_minute"] == 1.5


def test_account_validation_names_each_field(api):
    reply = api.put("/accounts/acme", {"plan": {"type": "credits", "balance": -1, "colour": "red"},
                                       "concurrency_limit": 0, "extra": 1})
    assert reply.status == 422
    fields = sorted(e["field"] for e in reply.json()["errors"])
    assert fields == ["concurrency_limit", "extra", "plan.balance", "plan.colour", "plan.price_per_minute"]
    assert api.get("/accounts/acme").status == 404
    assert api.post("/accounts/acme/top-up", {"amount": 1}).status == 404
    make_account(api, type="minutes", balance=1)
    assert api.post("/accounts/acme/top-up", {}).json()["errors"][0]["field"] == "amount"
    assert api.post("/accounts/acme/top-up", {"amount": 0}).status == 422
    assert api.post("/accounts/acme/top-up", {"amount": 1, "note": "x"}).json()["errors"][0]["field"] == "note"
    assert api.get("/accounts/acme").json()["balance"] == 1


def test_account_contact_policy_is_validated_shown_and_removed(api):
    reply = api.put("/accounts/acme", {"plan": {"type": "unlimited"},
                                       "contact_policy": {"max_calls": {"count": 0}, "max_calls_per_day": "2"}})
    assert reply.status == 422
    assert sorted(e["field"] for e in reply.json()["errors"]) == [
        "contact_policy.max_calls.count", "contact_policy.max_calls.days", "contact_policy.max_calls_per_day"]
    assert api.get("/accounts/acme").status == 404   # nothing written
    policy = {"max_calls": {"count": 7, "days": 7}, "max_calls_per_day": 2, "quiet_days_after_answer": 7}
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}, "contact_policy": policy}).status == 201
    assert api.get("/accounts/acme").json()["contact_policy"] == policy
    assert api.put("/accounts/acme", {"concurrency_limit": 4}).json()["contact_policy"] == policy   # kept
    changed = api.put("/accounts/acme", {"contact_policy": {"max_calls_per_day": 1}}).json()
    assert changed["contact_policy"] == {"max_calls_per_day": 1} and changed["concurrency_limit"] == 4
    assert api.put("/accounts/acme", {"contact_policy": None}).json()["contact_policy"] is None


# -- batches ----------------------------------------------------------------------------------------------


def test_create_batch_returns_201_with_its_id(api, web_runtime):
    make_account(api)
    reply = api.post("/batches", {"name": "Cobranza marzo", "account_id": "acme", "agent_id": "agent_x",
                                  "from_number": "+12125550100",
                                  "call_settings": {"max_attempts": 5,
                                                    "retry_delay_by_outcome": {"voicemail": 24, "busy": 0.25}}})
    assert reply.status == 201, reply.text
    body = reply.json()
    assert reply.headers["location"] == f"/batches/{body['id']}"
    stored = web_runtime.batches.get(body["id"])
    assert stored["name"] == "Cobranza marzo"
    assert stored["call_settings"] == {"max_attempts": 5, "retry_delay_by_outcome": {"voicemail": 24, "busy": 0.25}}
    assert body["status"] == "active" and body["counts"] == dict.fromkeys(states.JOB_STATES, 0)


def test_invalid_batch_gets_422_with_one_error_per_bad_field(api, web_runtime):
    make_account(api)
    reply = api.post("/batches", {"name": "", "account_id": "acme", "from_number": "12",
                                  "call_settings": {"max_attempts": 0, "ring_timeout": "long",
                                                    "allowed_hours": {"start": "25:00", "end": "18:00"},
                                                    "timezone": "Mars/Olympus", "speed": 3,
                                                    "retry_delay_by_outcome": {"busy": "soon", "answered": 1,
                                                                               "voicemail": 24}}})
    assert reply.status == 422
    errors = reply.json()["errors"]
    assert sorted(e["field"] for e in errors) == sorted([
        "name", "from_number", "call_settings.max_attempts", "call_settings.ring_timeout",
        "call_settings.allowed_hours.start", "call_settings.timezone", "call_settings.speed",
        "call_settings.retry_delay_by_outcome.busy", "call_settings.retry_delay_by_outcome.answered"])
    assert all(e["message"] for e in errors)
    unknown_account = api.post("/batches", {"name": "x", "account_id": "nobody"})
    assert unknown_account.status == 422 and unknown_account.json()["errors"][0]["field"] == "account_id"
    assert web_runtime.batches.coll.count_documents({}) == 0


def test_a_batch_without_a_caller_id_is_refused_when_there_is_no_default(web_factory, web_config, clock, db):
    runtime = build_runtime(web_config.with_overrides(call_from_number=None), clock)
    api = web_factory(runtime=runtime).client()
    make_account(api)
    for body in ({"name": "x", "account_id": "acme"}, {"name": "x", "account_id": "acme", "from_number": ""}):
        reply = api.post("/batches", body)
        assert reply.status == 422, reply.text
        errors = reply.json()["errors"]
        assert {e["field"] for e in errors} == {"from_number"}
        assert any("CALL_FROM_NUMBER" in e["message"] for e in errors)
    assert runtime.batches.coll.count_documents({}) == 0
    bid = api.post("/batches", {"name": "x", "account_id": "acme", "from_number": "+12125550100"}).json()["id"]
    unset = api.request("PATCH", f"/batches/{bid}", json_body={"from_number": None})
    assert unset.status == 422 and unset.json()["errors"][0]["field"] == "from_number"
    assert runtime.batches.get(bid)["from_number"] == "+12125550100"


def test_get_batch_shows_every_state_the_window_and_progress(web_factory, web_config, db):
    runtime = build_runtime(web_config, frozen_clock(SATURDAY))
    api = web_factory(runtime=runtime).client()
    make_account(api)
    batch = make_batch(api, call_settings=WEEKDAYS)
    contacts = [{"name": f"c{i}", "phones": [PHONES[i]]} for i in range(10)]
    assert api.post(f"/batches/{batch['id']}/contacts", {"contacts": contacts}).json()["imported"] == 10
    jobs = runtime.jobs.find({"batch_id": batch["id"]})
    moved = [states.WAITING_SCHEDULE, states.WAITING_SCHEDULE, states.RETRY_WAIT, states.WAITING_BALANCE,
             states.COMPLETED, states.FAILED, states.IN_CALL, states.CANCELLED]
    for job, state in zip(jobs, moved, strict=False):
        runtime.jobs.coll.update_one({"_id": job["_id"]}, {"$set": {"status": state, "last_error": "busy"}})
    body = api.get(f"/batches/{batch['id']}").json()
    assert body["status"] == "active"
    assert body["counts"] == {"pending": 2, "queued": 0, "dialing": 0, "in_call": 1, "analyzing": 0, "completed": 1,
                              "waiting_schedule": 2, "retry_wait": 1, "waiting_balance": 1, "failed": 1,
                              "cancelled": 1}
    assert body["progress"]["total"] == 10 and body["progress"]["done"] == 3 and body["progress"]["percent"] == 30.0
    assert body["progress"]["calls_in_progress"] == 1
    window = body["window"]
    assert window["open_now"] is False
    assert window["next_open_at"] == "2026-03-09T12:00:00.000Z"   # Monday 09:00 in Santiago
    assert "09:00-18:00" in window["description"]
    assert body["failures"] == [{"reason": "busy", "reason_code": None, "count": 1}]  # written before reason codes


def test_list_batches_filters_and_pages(api):
    make_account(api)
    make_account(api, "other")
    ids = [make_batch(api, name=f"b{i}")["id"] for i in range(5)]
    other = make_batch(api, name="theirs", account_id="other")["id"]
    api.post(f"/batches/{ids[0]}/pause")
    page = api.get("/batches?limit=2").json()
    assert page["count"] == 2 and page["next_offset"] == 2
    seen = []
    offset = 0
    while offset is not None:
        reply = api.get(f"/batches?limit=2&offset={offset}").json()
        seen += [b["id"] for b in reply["batches"]]
        offset = reply["next_offset"]
    assert sorted(seen) == sorted([*ids, other])
    assert [b["id"] for b in api.get("/batches?status=paused").json()["batches"]] == [ids[0]]
    assert [b["id"] for b in api.get("/batches?account_id=other").json()["batches"]] == [other]
    assert all("counts" in b for b in page["batches"])
    assert api.get("/batches?status=sleeping").status == 422
    assert api.get("/batches?limit=0").status == 422
    assert api.get("/batches?limit=abc").status == 422


def test_update_batch_validates_and_publishes_the_invalidation_after_the_write(api, web_runtime, redis_client):
    make_account(api)
    batch = make_batch(api)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(f"cache:invalidate:{batch['id']}")
    wait_until(lambda: pubsub.get_message(timeout=0.1), timeout_s=5)   # the subscription confirmation
    seen_in_mongodb = []

    def listen() -> bool:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            seen_in_mongodb.append(web_runtime.batches.get(batch["id"])["name"])
            return True
        return False

    reply = api.patch(f"/batches/{batch['id']}", {"name": "renamed", "call_settings": {"max_attempts": 7}})
    assert reply.status == 200, reply.text
    assert reply.json()["name"] == "renamed" and reply.json()["call_settings"] == {"max_attempts": 7}
    wait_until(listen, timeout_s=5)
    assert seen_in_mongodb == ["renamed"]   # the message came after the write

    bad = api.patch(f"/batches/{batch['id']}", {"call_settings": {"max_attempts": 1000}, "status": "paused"})
    assert bad.status == 422
    assert sorted(e["field"] for e in bad.json()["errors"]) == ["call_settings.max_attempts", "status"]
    assert api.patch(f"/batches/{batch['id']}", {"name": None}).status == 422
    assert web_runtime.batches.get(batch["id"])["call_settings"] == {"max_attempts": 7}
    cleared = api.patch(f"/batches/{batch['id']}", {"call_settings": None})
    assert cleared.status == 200 and cleared.json()["call_settings"] is None
    pubsub.close()


def test_invalidate_cache_publishes_on_the_batch_channel(api, redis_url):
    make_account(api)
    batch = make_batch(api)
    client = redis_lib.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.psubscribe("cache:invalidate:*")
    wait_until(lambda: pubsub.get_message(timeout=0.1), timeout_s=5)
    reply = api.post(f"/batches/{batch['id']}/invalidate-cache")
    assert reply.status == 202
    assert reply.json()["channel"] == f"cache:invalidate:{batch['id']}"
    assert reply.json()["receivers"] >= 1   # this test's subscriber (and the app's own listener)
    message = wait_until(lambda: (m := pubsub.get_message(timeout=0.2)) and m["type"] == "pmessage" and m,
                         timeout_s=5)
    assert message["channel"] == f"cache:invalidate:{batch['id']}".encode()
    assert message["data"] == PAYLOAD.encode()
    pubsub.close()
    client.close()


# -- controls ---------------------------------------------------------------------------------------------


def test_pause_resume_cancel(api, web_runtime):
    make_account(api)
    batch = make_batch(api)
    bid = batch["id"]
    api.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": [p]} for p in PHONES[:4]]})
    jobs = web_runtime.jobs.find({"batch_id": bid}, sort=[("_id", 1)])
    web_runtime.jobs.coll.update_one({"_id": jobs[0]["_id"]}, {"$set": {"status": states.IN_CALL}})
    web_runtime.jobs.coll.update_one({"_id": jobs[1]["_id"]}, {"$set": {"status": states.RETRY_WAIT}})

    assert api.post(f"/batches/{bid}/pause").json() == {"id": bid, "status": "paused", "changed": True}
    assert api.post(f"/batches/{bid}/pause").json()["changed"] is False
    assert web_runtime.batches.get(bid)["status"] == "paused"
    assert api.post(f"/batches/{bid}/resume").json() == {"id": bid, "status": "active", "changed": True}
    assert api.post(f"/batches/{bid}/resume").json()["changed"] is False

    cancelled = api.post(f"/batches/{bid}/cancel")
    assert cancelled.status == 200
    assert cancelled.json() == {"id": bid, "status": "cancelled", "changed": True, "cancelled_jobs": 3}
    after = {j["_id"]: j["status"] for j in web_runtime.jobs.find({"batch_id": bid})}
    assert after[jobs[0]["_id"]] == states.IN_CALL          # the call in progress ends normally
    assert sorted(after.values()).count(states.CANCELLED) == 3
    assert api.post(f"/batches/{bid}/cancel").json()["changed"] is False
    for action in ("pause", "resume"):
        refused = api.post(f"/batches/{bid}/{action}")
        assert refused.status == 409 and refused.json()["error"] == "conflict"
    assert api.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": [PHONES[9]]}]}).status == 409
    assert api.post(f"/batches/{'f' * 24}/pause").status == 404


# -- contacts ---------------------------------------------------------------------------------------------


def test_json_contacts_good_rows_imported_bad_rows_reported(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    contacts = [
        {"name": "Ana", "phones": [PHONES[0]], "variables": {"debt": 1200, "due": "2026-03-31"}, "external_id": "a"},
        {"name": "Bad", "phones": ["123"]},
        {"name": "NoPhone"},
        {"name": "Two", "phones": [PHONES[1], "+12015550123"], "timezone": "America/New_York"},
        "not an object",
        {"name": "Zone", "phones": [PHONES[2]], "timezone": "Nowhere/Land"},
    ]
    reply = api.post(f"/batches/{bid}/contacts", {"contacts": contacts})
    assert reply.status == 200
    body = reply.json()
    assert body["imported"] == 2 and body["rows"] == 6 and body["duplicates"] == 0
    assert [(e["index"], e.get("field")) for e in body["errors"]] == [
        (1, "phones[0]"), (2, "phones"), (4, "contact"), (5, "timezone")]
    stored = {j["contact"]["name"]: j["contact"] for j in web_runtime.jobs.find({"batch_id": bid})}
    assert stored["Ana"]["variables"] == {"debt": "1200", "due": "2026-03-31"}
    assert stored["Two"]["phones"] == [PHONES[1], "+12015550123"]


def test_resending_the_same_external_ids_does_not_duplicate(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    contacts = [{"name": f"c{i}", "phones": [PHONES[i]], "external_id": f"ext-{i}"} for i in range(5)]
    assert api.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == 5
    again = api.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()
    assert again["imported"] == 0 and again["duplicates"] == 5
    csv = "external_id,name,phone\n" + "".join(f"ext-{i},c{i},{PHONES[i]}\n" for i in range(3, 8))
    mixed = api.request("POST", f"/batches/{bid}/contacts", data=csv, headers={"Content-Type": "text/csv"}).json()
    assert mixed["imported"] == 3 and mixed["duplicates"] == 2
    assert web_runtime.jobs.coll.count_documents({"batch_id": bid}) == 8


def test_duplicate_contacts_are_reported_not_imported_twice(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    csv = ("name,phone,phone_2,external_id\n"
           f"Ana,{PHONES[0]},{PHONES[1]},\n"
           f"Ana twice,{PHONES[1]},{PHONES[0]},\n"          # the same numbers in another order: line 3
           f"Ben,{PHONES[2]},,\n"
           f"Ben again,{PHONES[2][3:]},,\n"                 # the same number in national format: line 5
           f"loan,{PHONES[3]},,loan-1\n"
           f"card,{PHONES[3]},,card-7\n")                   # the same number, another debt: imported
    upload = {"data": csv, "headers": {"Content-Type": "text/csv"}}
    first = api.request("POST", f"/batches/{bid}/contacts", **upload).json()
    assert (first["imported"], first["duplicates"], first["rows"], first["errors_total"]) == (4, 2, 6, 2)
    assert [(e["line"], e["field"], e["duplicate"]) for e in first["errors"]] == [
        (3, "phones", True), (5, "phones", True)]
    assert "same phone numbers" in first["errors"][0]["message"]
    again = api.request("POST", f"/batches/{bid}/contacts", **upload).json()   # the same file, retried
    assert (again["imported"], again["duplicates"], again["errors_total"]) == (0, 6, 6)
    assert [(e["line"], e["field"]) for e in again["errors"]] == [
        (2, "phones"), (3, "phones"), (4, "phones"), (5, "phones"), (6, "external_id"), (7, "external_id")]
    as_json = api.post(f"/batches/{bid}/contacts", {"contacts": [
        {"name": "Cy", "phones": [PHONES[4]]}, {"name": "Ana", "phones": [PHONES[0], PHONES[1]]},
        {"name": "Cy", "phones": [PHONES[4]]}]}).json()
    assert (as_json["imported"], as_json["duplicates"]) == (1, 2)
    assert [(e["index"], e["duplicate"]) for e in as_json["errors"]] == [(1, True), (2, True)]
    names = sorted(j["contact"]["name"] for j in web_runtime.jobs.find({"batch_id": bid}))
    assert names == ["Ana", "Ben", "Cy", "card", "loan"]


def test_csv_upload_reports_lines_and_imports_the_rest(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    csv = (
        "\ufeffName;Phone;Phone_2;External_ID;deuda;vence\r\n"
        f"Ana;{PHONES[0]};{PHONES[1]};a1;1200;2026-03-31\r\n"
        "Bad;123;;a2;5;x\r\n"
        "\r\n"
        f'"Multi\nline";{PHONES[2]};;a3;"7;8";y\r\n'
        f"TooMany;{PHONES[3]};;a4;1;2;3\r\n"
        f"Short;{PHONES[4]}\r\n"
    )
    reply = api.request("POST", f"/batches/{bid}/contacts?region=CL", data=csv.encode("utf-8"),
                        headers={"Content-Type": "text/csv; charset=utf-8"})
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["imported"] == 3 and body["rows"] == 5
    assert [(e["line"], e.get("field")) for e in body["errors"]] == [(3, "phones[0]"), (7, "row")]
    stored = {j["contact"]["name"]: j["contact"] for j in web_runtime.jobs.find({"batch_id": bid})}
    assert stored["Ana"] == {"name": "Ana", "phones": [PHONES[0], PHONES[1]], "external_id": "a1",
                             "variables": {"deuda": "1200", "vence": "2026-03-31"}}
    assert stored["Multi\nline"]["variables"] == {"deuda": "7;8", "vence": "y"}
    assert stored["Short"]["variables"] == {"deuda": "", "vence": ""}


def test_csv_with_a_bad_header_is_refused_whole(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    for csv, field in (("name,email\nAna,a@b.c\n", "header"), (f"phone,$where\n{PHONES[0]},1\n", "header.$where"),
                       (f"phone,a.b\n{PHONES[0]},1\n", "header.a.b"), (f"phone,x,X\n{PHONES[0]},1,2\n", "header.X"),
                       ("", "body"), ("\n\n", "body")):
        reply = api.request("POST", f"/batches/{bid}/contacts", data=csv, headers={"Content-Type": "text/csv"})
        assert reply.status == 422, (csv, reply.text)
        assert reply.json()["errors"][0]["field"] == field
    assert web_runtime.jobs.coll.count_documents({}) == 0


def test_adding_contacts_to_a_completed_batch_makes_it_active_again(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    api.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": [PHONES[0]]}]})
    web_runtime.jobs.coll.update_many({"batch_id": bid}, {"$set": {"status": states.COMPLETED}})
    web_runtime.batches.set_status(bid, states.BATCH_COMPLETED, expected=(states.BATCH_ACTIVE,))
    nothing = api.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": ["1"]}]}).json()
    assert nothing["imported"] == 0 and nothing["batch_status"] == "completed"
    reply = api.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": [PHONES[1]]}]}).json()
    assert reply["imported"] == 1 and reply["batch_status"] == "active"
    assert web_runtime.batches.get(bid)["status"] == "active"
    new = web_runtime.jobs.find({"batch_id": bid, "status": states.PENDING})
    assert [j["contact"]["phones"] for j in new] == [[PHONES[1]]]
    due = web_runtime.jobs.claim_due(limit=10, lease=timedelta(minutes=1), batch_ids=web_runtime.batches.active_ids())
    assert [j["_id"] for j in due] == [new[0]["_id"]]    # the scheduler sees it


# -- jobs -------------------------------------------------------------------------------------------------


def test_get_job_with_its_attempts(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    api.post(f"/batches/{bid}/contacts", {"contacts": [{"name": "Ana", "phones": [PHONES[0], PHONES[1]]}]})
    job = web_runtime.jobs.find({"batch_id": bid})[0]
    first = f"{job['_id']}:r1:p0:d1"
    web_runtime.attempts.insert({"_id": first, "job_id": job["_id"], "batch_id": bid, "round": 1, "phone_index": 0,
                                 "dial": 1, "to_number": PHONES[0], "created_at": 1_772_900_000_000})
    web_runtime.attempts.set_call(first, "call_1")
    web_runtime.attempts.end(first, {"outcome": "no_answer", "duration_ms": 0, "ended_at": 1_772_900_030_000,
                                     "finalized_by": "poll"})
    web_runtime.attempts.insert({"_id": f"{job['_id']}:r1:p1:d2", "job_id": job["_id"], "round": 1,
                                 "phone_index": 1, "dial": 2, "to_number": PHONES[1],
                                 "created_at": 1_772_900_031_000})
    web_runtime.jobs.coll.update_one({"_id": job["_id"]}, {"$set": {"status": states.DIALING, "tries": 0,
                                                                    "dials": 2, "phone_index": 1}})
    body = api.get(f"/jobs/{job['_id']}").json()
    assert body["status"] == "dialing" and body["tries"] == 0 and body["dials"] == 2
    assert body["contact"]["name"] == "Ana"
    assert [(a["id"], a["state"], a["outcome"]) for a in body["attempts"]] == [
        (first, attempt_states.ENDED, "no_answer"), (f"{job['_id']}:r1:p1:d2", attempt_states.DIALING, None)]
    assert body["attempts"][0]["created_at"] == "2026-03-07T16:13:20.000Z"
    assert body["attempts"][0]["ended_at"] == "2026-03-07T16:13:50.000Z"
    assert api.get(f"/jobs/{'a' * 24}").status == 404


def test_list_jobs_by_state_paginated(api, web_runtime):
    make_account(api)
    bid = make_batch(api)["id"]
    api.post(f"/batches/{bid}/contacts", {"contacts": [{"name": f"c{i}", "phones": [PHONES[i]]} for i in range(7)]})
    ids = sorted(j["_id"] for j in web_runtime.jobs.find({"batch_id": bid}))
    web_runtime.jobs.coll.update_many({"_id": {"$in": ids[:5]}}, {"$set": {"status": states.FAILED}})
    pages, after = [], None
    while True:
        suffix = f"&after={after}" if after else ""
        page = api.get(f"/batches/{bid}/jobs?status=failed&limit=2{suffix}").json()
        pages.append([j["id"] for j in page["jobs"]])
        after = page["next_after"]
        if after is None:
            break
    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert [j["id"] for j in api.get(f"/batches/{bid}/jobs").json()["jobs"]] == ids
    pending = api.get(f"/batches/{bid}/jobs?status=pending").json()["jobs"]
    assert [j["id"] for j in pending] == ids[5:] and pending[0]["phones"] == [PHONES[5]]
    assert api.get(f"/batches/{bid}/jobs?status=lost").status == 422
    assert api.get(f"/batches/{bid}/jobs?after=xyz").status == 422
    assert api.get(f"/batches/{'b' * 24}/jobs").status == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_operations_routes_are_public(web, path):
    reply = web.client(token=None).get(path)
    assert reply.status == 200
    assert reply.headers["x-content-type-options"] == "nosniff"
