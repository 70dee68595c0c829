"""Results out through the real web app over HTTP, on the embedded MongoDB server: a batch's export as CSV and as
JSON lines, and a person's contact log (JSON and CSV) with its retention. Jobs' results, analyses and attempts are
seeded as the pipeline writes them."""

from __future__ import annotations

import csv
import io
import json
from urllib.parse import quote

from shared.domain import states
from shared.pipeline.maintenance import Maintenance

#: 2026-03-09 12:00:00 UTC (09:00 in Santiago).
NOON_UTC = 1_773_057_600_000
DAY_MS = 86_400_000
NAMES = ['=HYPERLINK("http://x")', "Ana", "Bruno", "Carla"]
PHONES = ["+56961250001", "+56961250002", "+56961250003", "+56961250004"]


def new_batch(api, name: str, contacts: list[dict], **settings) -> str:
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status in (200, 201)
    body = {"name": name, "account_id": "acme", **({"call_settings": settings} if settings else {})}
    reply = api.post("/batches", body)
    assert reply.status == 201, reply.text
    batch_id = reply.json()["id"]
    added = api.post(f"/batches/{batch_id}/contacts", {"contacts": contacts})
    assert added.json()["imported"] == len(contacts), added.text
    return batch_id


def seeded(api, runtime) -> tuple[str, list[str]]:
    """A batch of four contacts: the first two completed with an analysis (different custom keys; the second after a
    callback and a wrong number, by the batch's after_call rules), the third failed without a conversation, the
    fourth never called."""
    contacts = [{"name": NAMES[i], "phones": [PHONES[i]], "external_id": f"x-{i}",
                 "variables": {"deuda": str(1000 * (i + 1)), **({"vence": "2026-03-31"} if i == 1 else {})}}
                for i in range(4)]
    contacts[2]["timezone"] = "Europe/Madrid"
    batch_id = new_batch(api, "Cobranza Marzo", contacts, timezone="America/Santiago")
    jobs = runtime.jobs.find({"batch_id": batch_id}, sort=[("_id", 1)])
    ids = [j["_id"] for j in jobs]
    by_name = {j["contact"]["name"]: j["_id"] for j in jobs}
    coll = runtime.jobs.coll
    coll.update_one({"_id": by_name[NAMES[0]]}, {"$set": {
        "status": states.COMPLETED, "updated_at": NOON_UTC, "result": {
            "calls": 1, "talk_ms": 42_000, "charge": 700, "last_call_at": NOON_UTC, "last_outcome": "completed",
            "recording_url": "https://rec.example/0.wav",
            "analysis": {"call_successful": True, "call_summary": "-Will pay", "user_sentiment": "Positive",
                         "in_voicemail": False, "custom_analysis_data": {"promise": True, "amount": 1500}}}}})
    coll.update_one({"_id": by_name["Ana"]}, {"$set": {
        "status": states.COMPLETED, "updated_at": NOON_UTC + DAY_MS, "result": {
            "calls": 2, "talk_ms": 30_500, "charge": 500, "last_call_at": NOON_UTC + DAY_MS,
            "last_outcome": "completed", "after_call": "completed", "callbacks": 1,
            "callback_at": NOON_UTC + DAY_MS - 3_600_000, "wrong_numbers": 1,
            "analysis": {"call_successful": False, "call_summary": "Refused.", "user_sentiment": "Negative",
                         "custom_analysis_data": {"reason": "disputes the debt"}}}}})
    coll.update_one({"_id": by_name["Bruno"]}, {"$set": {
        "status": states.FAILED, "reason_code": "max_attempts", "updated_at": NOON_UTC + 2 * DAY_MS,
        "result": {"calls": 3, "talk_ms": 0, "charge": 0, "last_call_at": NOON_UTC, "last_outcome": "busy"}}})
    coll.update_one({"_id": by_name["Carla"]}, {"$set": {"updated_at": NOON_UTC - DAY_MS}})
    return batch_id, ids


def rows_of(reply) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(reply.body.decode("utf-8-sig"), newline="")))


def test_the_csv_export_has_a_row_per_contact_with_the_custom_and_variable_columns(api, web_runtime):
    batch_id, ids = seeded(api, web_runtime)
    reply = api.get(f"/batches/{batch_id}/results.csv")
    assert reply.status == 200, reply.text
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert reply.headers["content-disposition"] == 'attachment; filename="cobranza-marzo-results.csv"'
    assert not reply.body.startswith(b"\xef\xbb\xbf")
    header = reply.text.splitlines()[0].split(",")
    assert header == ["job_id", "external_id", "name", "phones", "status", "reason_code", "calls", "talk_s", "charge",
                      "last_call_at", "last_call_local", "outcome", "call_successful", "summary", "sentiment",
                      "recording_url", "after_call", "callbacks", "callback_at", "callback_local", "wrong_numbers",
                      "custom.amount", "custom.promise", "custom.reason", "var.deuda", "var.vence"]
    rows = rows_of(reply)
    assert [r["job_id"] for r in rows] == ids
    by_name = {r["name"]: r for r in rows}
    first = by_name["'" + NAMES[0]]           # neutralised: a spreadsheet shows it, never runs it
    assert first["phones"] == "'" + PHONES[0]
    assert (first["status"], first["calls"], first["talk_s"], first["charge"]) == ("completed", "1", "42.0", "700")
    assert first["last_call_at"] == "2026-03-09T12:00:00.000Z"
    assert first["last_call_local"] == "2026-03-09T09:00:00-03:00"
    assert (first["outcome"], first["call_successful"], first["summary"], first["sentiment"]) == (
        "completed", "true", "'-Will pay", "Positive")
    assert (first["custom.amount"], first["custom.promise"], first["custom.reason"]) == ("1500", "true", "")
    assert (first["var.deuda"], first["var.vence"], first["recording_url"]) == ("1000", "", "https://rec.example/0.wav")
    ana = by_name["Ana"]
    assert (ana["call_successful"], ana["custom.reason"], ana["var.vence"]) == ("false", "disputes the debt",
                                                                               "2026-03-31")
    assert (ana["after_call"], ana["callbacks"], ana["wrong_numbers"]) == ("completed", "1", "1")
    assert (ana["callback_at"], ana["callback_local"]) == ("2026-03-10T11:00:00.000Z", "2026-03-10T08:00:00-03:00")
    assert (first["after_call"], first["callbacks"], first["callback_at"], first["wrong_numbers"]) == ("", "0", "", "0")
    bruno = by_name["Bruno"]
    assert (bruno["status"], bruno["reason_code"], bruno["outcome"], bruno["summary"]) == (
        "failed", "max_attempts", "busy", "")
    assert bruno["last_call_local"] == "2026-03-09T13:00:00+01:00"     # the contact's own zone wins
    carla = by_name["Carla"]
    assert (carla["status"], carla["calls"], carla["last_call_at"]) == ("pending", "0", "")


def test_filters_by_status_and_by_update_time(api, web_runtime):
    batch_id, _ = seeded(api, web_runtime)
    completed = rows_of(api.get(f"/batches/{batch_id}/results.csv?status=completed"))
    assert sorted(r["external_id"] for r in completed) == ["x-0", "x-1"]
    since = rows_of(api.get(f"/batches/{batch_id}/results.csv?updated_since={NOON_UTC + DAY_MS}"))
    assert sorted(r["external_id"] for r in since) == ["x-1", "x-2"]
    iso = rows_of(api.get(f"/batches/{batch_id}/results.csv?updated_since=2026-03-10T12:00:00Z"))
    assert sorted(r["external_id"] for r in iso) == ["x-1", "x-2"]
    offset = rows_of(api.get(f"/batches/{batch_id}/results.csv?updated_since={quote('2026-03-10T09:00:00-03:00')}"))
    assert sorted(r["external_id"] for r in offset) == ["x-1", "x-2"]
    odd = api.get(f"/batches/{batch_id}/results.csv?updated_since={quote('¹²')}")   # digits int() cannot read
    assert odd.status == 422 and odd.json()["errors"][0]["field"] == "updated_since"
    # the columns are those of the contacts exported
    reply = api.get(f"/batches/{batch_id}/results.csv?status=failed")
    assert reply.text.splitlines()[0].endswith("recording_url,after_call,callbacks,callback_at,callback_local,"
                                               "wrong_numbers,var.deuda")
    none = api.get(f"/batches/{batch_id}/results.csv?status=cancelled")
    assert none.status == 200 and len(none.text.splitlines()) == 1


def test_excel_adds_a_byte_order_mark(api, web_runtime):
    batch_id, _ = seeded(api, web_runtime)
    reply = api.get(f"/batches/{batch_id}/results.csv?excel=1")
    assert reply.body.startswith(b"\xef\xbb\xbfjob_id,")
    assert len(rows_of(reply)) == 4


def test_json_lines_hold_the_same_fields_unneutralised(api, web_runtime):
    batch_id, ids = seeded(api, web_runtime)
    reply = api.get(f"/batches/{batch_id}/results.jsonl")
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/x-ndjson; charset=utf-8"
    assert reply.headers["content-disposition"] == 'attachment; filename="cobranza-marzo-results.jsonl"'
    lines = [json.loads(line) for line in reply.text.splitlines()]
    assert [line["job_id"] for line in lines] == ids
    first = next(line for line in lines if line["external_id"] == "x-0")
    assert first["name"] == NAMES[0] and first["phones"] == [PHONES[0]]
    assert first["custom"] == {"promise": True, "amount": 1500} and first["variables"] == {"deuda": "1000"}
    assert first["call_successful"] is True and first["talk_s"] == 42.0 and first["summary"] == "-Will pay"
    ana = next(line for line in lines if line["external_id"] == "x-1")
    assert (ana["after_call"], ana["callbacks"], ana["callback_at"], ana["wrong_numbers"]) == (
        "completed", 1, "2026-03-10T11:00:00.000Z", 1)
    assert first["after_call"] is None and first["callbacks"] == 0 and first["callback_at"] is None
    pending = next(line for line in lines if line["external_id"] == "x-3")
    assert pending["call_successful"] is None and pending["custom"] == {} and pending["last_call_at"] is None
    failed = api.get(f"/batches/{batch_id}/results.jsonl?status=failed").text.splitlines()
    assert [json.loads(line)["external_id"] for line in failed] == ["x-2"]


def test_bad_requests_name_the_field_and_an_unknown_batch_is_404(api, web_runtime):
    batch_id, _ = seeded(api, web_runtime)
    for query, field in (("status=finished", "status"), ("updated_since=yesterday", "updated_since"),
                         ("updated_since=2026-03-10T12:00:00", "updated_since"), ("excel=yes", "excel"),
                         ("stauts=failed", "stauts")):
        for kind in ("csv", "jsonl"):
            if kind == "jsonl" and field == "excel":
                field = "excel"   # not a parameter of JSON lines: refused as unknown
            reply = api.get(f"/batches/{batch_id}/results.{kind}?{query}")
            assert reply.status == 422, (query, kind, reply.text)
            assert [e.get("field") for e in reply.json()["errors"]] == [field], (query, kind)
    missing = "0" * 24
    for kind in ("csv", "jsonl"):
        reply = api.get(f"/batches/{missing}/results.{kind}")
        assert reply.status == 404 and reply.json()["error"] == "not_found"
        assert api.get(f"/batches/{batch_id}/results.{kind}", token=None).status == 401


def test_an_export_of_more_than_one_chunk_keeps_every_row_in_order(api, web_runtime, monkeypatch):
    from shared.stores import results_read

    monkeypatch.setattr(results_read, "EXPORT_CHUNK", 7)
    contacts = [{"name": f"C{i}", "phones": [f"+5696126{i:04d}"], "variables": {f"v{i % 3}": str(i)}}
                for i in range(50)]
    batch_id = new_batch(api, "big", contacts)
    ids = [j["_id"] for j in web_runtime.jobs.find({"batch_id": batch_id}, sort=[("_id", 1)])]
    rows = rows_of(api.get(f"/batches/{batch_id}/results.csv"))
    assert [r["job_id"] for r in rows] == ids
    assert list(rows[0])[-3:] == ["var.v0", "var.v1", "var.v2"]
    lines = api.get(f"/batches/{batch_id}/results.jsonl").text.splitlines()
    assert [json.loads(line)["job_id"] for line in lines] == ids


# -- the contact log ----------------------------------------------------------------------------------------------


def attempt(job: dict, n: int, *, created_at: int, number: str | None = None, **fields) -> dict:
    doc = {"_id": f"{job['_id']}:r{n}:p0:d{n}", "job_id": job["_id"], "batch_id": job["batch_id"],
           "account_id": job["account_id"], "to_number": number or job["contact"]["phones"][0], "round": n,
           "phone_index": 0, "created_at": created_at, "state": "ended", **fields}
    external_id = job["contact"].get("external_id")
    if external_id:
        doc["external_id"] = external_id
    return doc


def two_batches_of_one_person(api, runtime) -> list[dict]:
    """One person (number PHONES[0], external id 'p-1') in two batches, with three and two attempts; another person
    in the first batch."""
    first = new_batch(api, "Marzo", [{"name": "Ana", "phones": [PHONES[0]], "external_id": "p-1"},
                                     {"name": "Otro", "phones": [PHONES[1]], "external_id": "p-2"}],
                      timezone="America/Santiago")
    second = new_batch(api, "Abril", [{"name": "Ana", "phones": [PHONES[0]], "external_id": "p-1",
                                       "timezone": "Europe/Madrid"}])
    ana1, other = sorted(runtime.jobs.find({"batch_id": first}), key=lambda j: j["contact"]["name"])
    (ana2,) = runtime.jobs.find({"batch_id": second})
    docs = [
        attempt(ana1, 1, created_at=NOON_UTC, started_at=NOON_UTC + 1000, outcome="no_answer", duration_ms=0,
                call_id="call_a", charge=0),
        attempt(ana1, 2, created_at=NOON_UTC + DAY_MS, started_at=NOON_UTC + DAY_MS + 500, outcome="completed",
                duration_ms=61_000, call_id="call_b", charge=1020),
        attempt(ana1, 3, created_at=NOON_UTC + 2 * DAY_MS, state="not_placed"),
        attempt(ana2, 1, created_at=NOON_UTC + 3 * DAY_MS, started_at=NOON_UTC + 3 * DAY_MS, outcome="busy",
                duration_ms=0, call_id="call_c", charge=0),
        attempt(ana2, 2, created_at=NOON_UTC + 3 * DAY_MS, started_at=NOON_UTC + 3 * DAY_MS, outcome="=cmd|x",
                duration_ms=0, call_id="call_d", charge=0),     # the same millisecond as the one before
        attempt(other, 1, created_at=NOON_UTC + DAY_MS, outcome="busy"),
    ]
    runtime.attempts.coll.insert_many(docs)
    return docs


def test_the_contact_log_by_phone_lists_every_attempt_across_batches_newest_first(api, web_runtime):
    docs = two_batches_of_one_person(api, web_runtime)
    reply = api.get(f"/accounts/acme/contact-log?phone={quote(PHONES[0])}")
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["account_id"] == "acme" and body["phone"] == PHONES[0] and body["next_before"] is None
    entries = body["entries"]
    assert [e["attempt_id"] for e in entries] == [docs[4]["_id"], docs[3]["_id"], docs[2]["_id"], docs[1]["_id"],
                                                  docs[0]["_id"]]
    assert [e["batch_name"] for e in entries] == ["Abril", "Abril", "Marzo", "Marzo", "Marzo"]
    completed = entries[3]
    assert completed == {"at": "2026-03-10T12:00:00.500Z", "local": "2026-03-10T09:00:00-03:00",
                         "zone": "America/Santiago", "number": PHONES[0], "batch_id": docs[1]["batch_id"],
                         "batch_name": "Marzo", "job_id": docs[1]["job_id"], "attempt_id": docs[1]["_id"],
                         "outcome": "completed", "duration_s": 61.0, "call_id": "call_b", "charge": 1020}
    assert entries[2]["outcome"] == "not_placed" and entries[2]["at"] == "2026-03-11T12:00:00.000Z"
    assert entries[0]["zone"] == "Europe/Madrid" and entries[0]["local"] == "2026-03-12T13:00:00+01:00"
    # the same, with the '+' sent unencoded (it reads as a space) and in a national format
    assert api.get(f"/accounts/acme/contact-log?phone=+{PHONES[0][1:]}").json()["entries"] == entries
    assert api.get("/accounts/acme/contact-log?phone=961250001").json()["entries"] == entries


def test_the_contact_log_pages_with_before_even_within_one_millisecond(api, web_runtime):
    docs = two_batches_of_one_person(api, web_runtime)
    seen, before, pages = [], None, 0
    while True:
        path = "/accounts/acme/contact-log?external_id=p-1&limit=1" + (f"&before={before}" if before else "")
        body = api.get(path).json()
        assert body["external_id"] == "p-1" and "phone" not in body
        seen += [e["attempt_id"] for e in body["entries"]]
        pages += 1
        before = body["next_before"]
        if before is None:
            break
    assert seen == [docs[4]["_id"], docs[3]["_id"], docs[2]["_id"], docs[1]["_id"], docs[0]["_id"]]
    assert pages == 6     # the last page is empty: a full page always names the next one
    two = api.get("/accounts/acme/contact-log?external_id=p-1&limit=2").json()
    assert [e["attempt_id"] for e in two["entries"]] == [docs[4]["_id"], docs[3]["_id"]]
    rest = api.get(f"/accounts/acme/contact-log?external_id=p-1&limit=10&before={two['next_before']}").json()
    assert [e["attempt_id"] for e in rest["entries"]] == [docs[2]["_id"], docs[1]["_id"], docs[0]["_id"]]
    assert api.get("/accounts/acme/contact-log?external_id=nobody").json()["entries"] == []
    assert api.get("/accounts/other/contact-log?external_id=p-1").json()["entries"] == []


def test_the_contact_log_as_csv_is_neutralised_and_streams_every_page(api, web_runtime):
    docs = two_batches_of_one_person(api, web_runtime)
    reply = api.get(f"/accounts/acme/contact-log?phone={quote(PHONES[0])}&format=csv&limit=2")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert reply.headers["content-disposition"] == 'attachment; filename="acme-contact-log.csv"'
    rows = rows_of(reply)
    assert [r["attempt_id"] for r in rows] == [docs[i]["_id"] for i in (4, 3, 2, 1, 0)]
    assert rows[0]["outcome"] == "'=cmd|x" and rows[0]["number"] == "'" + PHONES[0]
    assert rows[3]["duration_s"] == "61.0" and rows[3]["charge"] == "1020" and rows[3]["zone"] == "America/Santiago"


def test_contact_log_bad_requests_name_the_fields(api, web_runtime):
    two_batches_of_one_person(api, web_runtime)
    cases = (("", ["phone", "external_id"]), (f"phone={quote(PHONES[0])}&external_id=p-1", ["phone", "external_id"]),
             ("phone=12", ["phone"]), ("phone=not-a-number", ["phone"]), ("external_id=p-1&limit=0", ["limit"]),
             ("external_id=p-1&limit=1001", ["limit"]), ("external_id=p-1&before=nonsense", ["before"]),
             ("external_id=p-1&format=xml", ["format"]), ("external_id=p-1&number=1", ["number"]))
    for query, fields in cases:
        reply = api.get(f"/accounts/acme/contact-log?{query}")
        assert reply.status == 422, (query, reply.text)
        assert [e.get("field") for e in reply.json()["errors"]] == fields, query


def test_maintenance_deletes_ended_attempts_past_the_retention_once_an_hour(api, web_runtime):
    docs = two_batches_of_one_person(api, web_runtime)
    coll = web_runtime.attempts.coll
    now = web_runtime.clock.now_ms()
    days = web_runtime.config.contact_log_retention_days
    old = now - (days + 1) * DAY_MS
    coll.update_many({"_id": {"$in": [docs[0]["_id"], docs[2]["_id"], docs[5]["_id"]]}},
                     {"$set": {"created_at": old}})
    coll.update_one({"_id": docs[1]["_id"]}, {"$set": {"created_at": old, "state": "in_call"}})   # still open
    coll.update_one({"_id": docs[3]["_id"]}, {"$set": {"created_at": now - (days - 1) * DAY_MS}})  # young enough
    maintenance = Maintenance(jobs=web_runtime.jobs, attempts=web_runtime.attempts, batches=web_runtime.batches,
                              accounts=web_runtime.accounts, cache=None, billing=web_runtime.billing,
                              slots=web_runtime.slots, coordination=web_runtime.coordination, provider=None,
                              sender=None, clock=web_runtime.clock, config=web_runtime.config, dnc=web_runtime.dnc,
                              history=web_runtime.history)
    assert maintenance.expire_contact_log() == 3
    left = {d["_id"] for d in coll.find({}, {"_id": 1})}
    assert left == {docs[1]["_id"], docs[3]["_id"], docs[4]["_id"]}
    coll.update_one({"_id": docs[1]["_id"]}, {"$set": {"state": "ended"}})
    assert maintenance.expire_contact_log() == 0          # the hour has not passed
    assert maintenance.expire_contact_log(force=True) == 1
    entries = api.get(f"/accounts/acme/contact-log?phone={quote(PHONES[0])}").json()["entries"]
    assert [e["attempt_id"] for e in entries] == [docs[4]["_id"], docs[3]["_id"]]


def test_a_database_failure_mid_export_ends_the_transfer_truncated(api, web_runtime, monkeypatch):
    import http.client

    from pymongo.errors import AutoReconnect

    from shared.stores import results_read

    monkeypatch.setattr(results_read, "EXPORT_CHUNK", 5)
    batch_id = new_batch(api, "big", [{"name": f"C{i}", "phones": [f"+5696126{i:04d}"]} for i in range(30)])
    real = results_read.JobChunks.next_chunk
    calls = [0]

    def failing(self):
        calls[0] += 1
        if calls[0] == 3:
            raise AutoReconnect("the database went away")
        return real(self)

    monkeypatch.setattr(results_read.JobChunks, "next_chunk", failing)
    for kind in ("csv", "jsonl"):
        calls[0] = 0
        conn = http.client.HTTPConnection("127.0.0.1", int(api.port), timeout=30)
        conn.request("GET", f"/batches/{batch_id}/results.{kind}", headers={"Authorization": f"Bearer {api.token}"})
        resp = conn.getresponse()
        assert resp.status == 200          # the answer had begun
        try:
            resp.read()
            truncated = False
        except http.client.IncompleteRead:
            truncated = True
        conn.close()
        assert truncated, kind             # never a complete-looking file
    monkeypatch.setattr(results_read.JobChunks, "next_chunk", real)
    assert len(rows_of(api.get(f"/batches/{batch_id}/results.csv"))) == 30


def test_a_client_that_leaves_mid_export_leaves_the_server_serving(api, web_runtime, monkeypatch):
    import socket

    from shared.stores import results_read

    monkeypatch.setattr(results_read, "EXPORT_CHUNK", 3)
    batch_id = new_batch(api, "big", [{"name": "x" * 190 + str(i), "phones": [f"+5696126{i:04d}"]}
                                      for i in range(200)])
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", int(api.port)), timeout=30)
        sock.sendall(f"GET /batches/{batch_id}/results.csv HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {api.token}\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.close()
    assert len(rows_of(api.get(f"/batches/{batch_id}/results.csv"))) == 200
    assert len(api.get(f"/batches/{batch_id}/results.jsonl").text.splitlines()) == 200
