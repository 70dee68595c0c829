"""The do-not-call lists through the real web app on the real MongoDB wire server: JSON and CSV, a bad row
refuses the whole request, removal, look-ups, the account's list and the global one, normalisation."""

from __future__ import annotations

import time
from urllib.parse import quote

from shared.domain.phones import numbered
from tests.fixtures.web import ADMIN_TOKEN
from workers.web.http import read_token_for

A, B, C, D = numbered("+5696900", 4)
CSV = {"Content-Type": "text/csv"}


def national(e164: str) -> str:
    """A Chilean mobile as written at home: ``9 6900 0001``."""
    digits = e164.removeprefix("+56")
    return f"{digits[0]} {digits[1:5]} {digits[5:]}"


def setup(api) -> None:
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status in (200, 201)
    assert api.put("/accounts/other", {"plan": {"type": "unlimited"}}).status in (200, 201)


def test_json_numbers_are_normalised_and_written_once(api, web_runtime):
    setup(api)
    reply = api.post("/accounts/acme/dnc", {"numbers": [national(A), A, B], "reason": "asked on the phone"})
    assert reply.status == 200, reply.text
    assert reply.json() == {"list": "acme", "added": 2, "updated": 0, "numbers": 2, "rows": 3}
    again = api.post("/accounts/acme/dnc", {"numbers": [A]}).json()   # idempotent; the reason is kept
    assert (again["added"], again["updated"]) == (0, 1)
    docs = {d["_id"]: d for d in web_runtime.dnc.coll.find({})}
    assert set(docs) == {f"acme|{A}", f"acme|{B}"}
    assert docs[f"acme|{A}"]["reason"] == "asked on the phone" and docs[f"acme|{A}"]["number"] == A
    assert isinstance(docs[f"acme|{A}"]["added_at"], int)


def test_a_bad_row_refuses_the_request_and_writes_nothing(api, web_runtime):
    setup(api)
    reply = api.post("/accounts/acme/dnc", {"numbers": [A, "not a phone", B, "+1555"]})
    assert reply.status == 422, reply.text
    body = reply.json()
    assert body["written"] == 0 and body["errors_total"] == 2
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "numbers[1]"), (3, "numbers[3]")]
    assert all(e["message"] for e in body["errors"])
    csv = f"number,reason\n{A},x\n\n12,too short\n{B},\n".encode()
    reply = api.request("POST", "/dnc", data=csv, headers=CSV)
    assert reply.status == 422, reply.text
    assert [(e["line"], e["field"]) for e in reply.json()["errors"]] == [(4, "number")]
    assert web_runtime.dnc.coll.count_documents({}) == 0
    assert api.post("/accounts/acme/dnc", {"numbers": []}).status == 422
    assert api.post("/accounts/acme/dnc", {"numbers": [A], "extra": 1}).status == 422
    assert api.post("/accounts/acme/dnc", {"numbers": [A], "reason": 5}).status == 422
    assert api.request("POST", "/dnc", data=b"phone_number\n" + A.encode(), headers=CSV).status == 422
    assert api.post("/accounts/nobody/dnc", {"numbers": [A]}).status == 404
    assert api.post("/accounts/a|b/dnc", {"numbers": [A]}).status == 422
    assert web_runtime.dnc.coll.count_documents({}) == 0


def test_csv_upload_with_reasons_and_a_semicolon(api, web_runtime):
    setup(api)
    csv = f"\ufeffNumber;Reason\r\n{national(C)};court order\r\n{D};\r\n".encode()
    reply = api.request("POST", "/accounts/acme/dnc?reason=bulk", data=csv, headers=CSV)
    assert reply.status == 200, reply.text
    assert reply.json()["added"] == 2
    looked = api.get(f"/accounts/acme/dnc?number={quote(C)}").json()
    assert looked["listed"] and looked["lists"][0]["reason"] == "court order"
    assert api.get(f"/accounts/acme/dnc?number={quote(D)}").json()["lists"][0]["reason"] == "bulk"


def test_account_and_global_lists_lookups_removal_and_paging(api, web, web_runtime):
    setup(api)
    api.post("/accounts/acme/dnc", {"numbers": [A, B], "reason": "acme's customer"})
    api.post("/dnc", {"numbers": [B, C], "reason": "regulator"})
    reader = web.client(token=read_token_for(ADMIN_TOKEN))
    both = reader.get(f"/accounts/acme/dnc?number={quote(national(B))}")
    assert both.status == 200, both.text
    body = both.json()
    assert body["number"] == B and body["listed"]
    assert [(e["list"], e["reason"]) for e in body["lists"]] == [("acme", "acme's customer"), ("global", "regulator")]
    assert body["lists"][0]["added_at"].endswith("Z")
    # another account sees the global list only; the global route sees the global list only
    assert [e["list"] for e in reader.get(f"/accounts/other/dnc?number={quote(B)}").json()["lists"]] == ["global"]
    assert reader.get(f"/accounts/other/dnc?number={quote(A)}").json() == {"number": A, "listed": False, "lists": []}
    assert [e["list"] for e in reader.get(f"/dnc?number={quote(B)}").json()["lists"]] == ["global"]
    assert web_runtime.dnc.listed("acme", [A, B, C, D]) == {A, B, C}
    assert web_runtime.dnc.listed("other", [A, B, C, D]) == {B, C}
    # pages of one list, by number
    first = reader.get("/accounts/acme/dnc?limit=1").json()
    assert [e["number"] for e in first["entries"]] == [A] and first["next_after"] == A
    second = reader.get(f"/accounts/acme/dnc?limit=1&after={quote(A)}").json()
    assert [e["number"] for e in second["entries"]] == [B]
    third = reader.get(f"/accounts/acme/dnc?limit=1&after={quote(B)}").json()
    assert third["entries"] == [] and third["next_after"] is None
    assert [e["number"] for e in reader.get("/dnc").json()["entries"]] == [B, C]
    # the read token cannot write
    assert reader.post("/dnc", {"numbers": [D]}).status == 401
    assert reader.request("DELETE", f"/dnc/{quote(B)}").status == 401
    # removal, from one list only; twice is harmless
    gone = api.request("DELETE", f"/accounts/acme/dnc/{quote(national(B))}")
    assert gone.status == 200 and gone.json() == {"list": "acme", "number": B, "removed": True}
    assert api.request("DELETE", f"/accounts/acme/dnc/{quote(B)}").json()["removed"] is False
    assert web_runtime.dnc.listed("acme", [B]) == {B}   # still on the global list
    assert api.request("DELETE", f"/dnc/{quote(B)}").json()["removed"] is True
    assert web_runtime.dnc.listed("acme", [B]) == set()
    assert api.request("DELETE", "/dnc/12345").status == 422
    assert api.get("/dnc?number=nope").status == 422
    assert api.get("/accounts/nobody/dnc").status == 404


def test_a_write_answers_only_after_the_dial_guard(web_factory, web_runtime):
    api = web_factory().client()
    setup(api)
    started = time.monotonic()
    assert api.post("/dnc", {"numbers": [A]}).status == 200
    assert time.monotonic() - started >= web_runtime.config.pipeline_dial_guard_s


def test_list_sizes_in_metrics_and_do_not_call_failures_on_the_dashboard(api, web, web_runtime):
    from prometheus_client.parser import text_string_to_metric_families

    from shared.domain import states

    setup(api)
    api.post("/accounts/acme/dnc", {"numbers": [A, B]})
    api.post("/dnc", {"numbers": [C]})
    bid = api.post("/batches", {"name": "dnc", "account_id": "acme"}).json()["id"]
    contacts = {"contacts": [{"phones": [A, B]}, {"phones": [D]}]}
    assert api.post(f"/batches/{bid}/contacts", contacts).json()["imported"] == 2
    listed = next(j for j in web_runtime.jobs.find({"batch_id": bid}) if j["contact"]["phones"][0] == A)
    web_runtime.jobs.coll.update_one({"_id": listed["_id"]}, {"$set": {
        "status": states.FAILED, "outcome": "do_not_call", "last_error": "do not call"}})
    reader = web.client(token=read_token_for(ADMIN_TOKEN))
    text = reader.get("/metrics").text
    sizes = {s.labels["list"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
             if s.name == "outdial_dnc_numbers"}
    assert sizes == {"global": 1, "acme": 2}
    page = reader.get("/dashboard/batches").text
    assert 'data-list="global">1<' in page and 'data-list="acme">2<' in page
    assert 'data-field="do_not_call">1<' in page
