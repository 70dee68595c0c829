"""Bad input to the admin API and the webhook: a clear 4xx, and nothing written."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.provider.webhooks import SIGNATURE_HEADER, sign_webhook

PHONE = "+56961234567"
OTHER = "+56961234568"


@pytest.fixture
def setup(api, web_runtime):
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status == 201
    batch = api.post("/batches", {"name": "b", "account_id": "acme"}).json()
    return batch["id"]


def snapshot(runtime) -> tuple[int, int, int, list[Any]]:
    """What is stored: counts of batches, jobs, accounts, and the batches' documents."""
    db = runtime.db
    return (db.batches.count_documents({}), db.jobs.count_documents({}), db.accounts.count_documents({}),
            sorted((d["_id"], d["updated_at"], d.get("name"), d.get("call_settings")) for d in db.batches.find()))


def raw_post(api, method: str, path: str, data: bytes | str, content_type: str = "application/json"):
    return api.request(method, path, data=data, headers={"Content-Type": content_type})


def routes_with_bodies(batch_id: str) -> list[tuple[str, str]]:
    return [("POST", "/batches"), ("PUT", "/accounts/acme"), ("PATCH", f"/batches/{batch_id}"),
            ("POST", f"/batches/{batch_id}/contacts"), ("POST", "/accounts/acme/top-up")]


@pytest.mark.parametrize("body", [b"{", b'{"name": "x",}', b"{'name': 'x'}", b"nul", b'{"a": NaN}',
                                  b'{"a": Infinity}', b"\xff\xfe{}", b"", b"   "])
def test_malformed_json_gets_400_and_writes_nothing(api, web_runtime, setup, body):
    before = snapshot(web_runtime)
    for method, path in routes_with_bodies(setup):
        reply = raw_post(api, method, path, body)
        assert reply.status == 400, (method, path, body, reply.text)
        payload = reply.json()
        assert payload["error"] == "bad_request" and payload["errors"][0]["message"] == payload["message"]
    assert snapshot(web_runtime) == before


def test_deeply_nested_json_gets_400(api, web_runtime, setup):
    before = snapshot(web_runtime)
    deep = "[" * 100_000 + "]" * 100_000
    reply = raw_post(api, "POST", "/batches", '{"name": "x", "account_id": "acme", "call_settings": ' + deep + "}")
    assert reply.status == 400 and "nested" in reply.json()["message"]
    reply = raw_post(api, "POST", "/batches", '{"a": ' + "[" * 40 + "]" * 40 + "}")
    assert reply.status == 400
    assert snapshot(web_runtime) == before


@pytest.mark.parametrize("body,field", [
    ([], "body"), ("x", "body"), ({"name": 5, "account_id": "acme"}, "name"),
    ({"name": "x", "account_id": ["acme"]}, "account_id"), ({"name": "x", "account_id": "acme", "call_settings": "x"},
                                                          "call_settings"),
    ({"name": "x", "account_id": "acme", "call_settings": {"max_attempts": "3"}}, "call_settings.max_attempts"),
    ({"name": "x", "account_id": "acme", "call_settings": {"days_of_week": [1, True]}}, "call_settings.days_of_week"),
    ({"name": "x", "account_id": "acme", "call_settings": {"retry_delay_hours": 1e308}},
     "call_settings.retry_delay_hours"),
])
def test_wrong_types_get_422_naming_the_field(api, web_runtime, setup, body, field):
    before = snapshot(web_runtime)
    reply = api.post("/batches", body)
    assert reply.status == 422, reply.text
    assert field in [e.get("field") for e in reply.json()["errors"]]
    assert snapshot(web_runtime) == before


def test_unknown_fields_get_422_everywhere(api, web_runtime, setup):
    before = snapshot(web_runtime)
    cases = [
        ("POST", "/batches", {"name": "x", "account_id": "acme", "priority": 1}, "priority"),
        ("PATCH", f"/batches/{setup}", {"status": "active"}, "status"),
        ("PUT", "/accounts/acme", {"plan": {"type": "unlimited"}, "owner": "me"}, "owner"),
        ("POST", "/accounts/acme/top-up", {"amount": 1, "currency": "USD"}, "currency"),
        ("POST", f"/batches/{setup}/contacts", {"contacts": [], "mode": "replace"}, "mode"),
        ("POST", "/batches", {"name": "x", "account_id": "acme", "call_settings": {"speed": 2}}, "call_settings.speed"),
    ]
    for method, path, body, field in cases:
        reply = api.request(method, path, json_body=body)
        assert reply.status == 422, (path, reply.text)
        assert field in [e.get("field") for e in reply.json()["errors"]], reply.text
        assert "unknown" in reply.text or "cannot be changed" in reply.text
    assert snapshot(web_runtime) == before


def test_dollar_keys_are_refused_with_nothing_written(api, web_runtime, setup):
    before = snapshot(web_runtime)
    contacts = [{"name": "ok", "phones": [PHONE]}, {"name": "evil", "phones": [OTHER], "variables": {"$where": "1"}}]
    reply = api.post(f"/batches/{setup}/contacts", {"contacts": contacts})
    assert reply.status == 422
    assert reply.json()["errors"] == [{"field": "contacts[1].variables.$where",
                                       "message": "keys starting with '$' are not allowed"}]
    for method, path, body in [
        ("POST", "/batches", {"name": "x", "account_id": "acme", "call_settings": {"$set": {"a": 1}}}),
        ("PUT", "/accounts/acme", {"plan": {"type": "unlimited", "$inc": 1}}),
        ("PATCH", f"/batches/{setup}", {"$rename": {"name": "x"}}),
    ]:
        assert api.request(method, path, json_body=body).status == 422
    assert api.put("/accounts/$bad", {"plan": {"type": "unlimited"}}).status == 422
    csv = f"phone,$gt\n{PHONE},1\n"
    assert raw_post(api, "POST", f"/batches/{setup}/contacts", csv, "text/csv").status == 422
    assert snapshot(web_runtime) == before


@pytest.mark.parametrize("bad", ["xyz", "123", "g" * 24, "0" * 25, "%24where", "..%2F..%2Fetc"])
def test_invalid_object_ids_get_a_4xx(api, web_runtime, setup, bad):
    before = snapshot(web_runtime)
    for method, path, body in [("GET", f"/batches/{bad}", None), ("PATCH", f"/batches/{bad}", {"name": "x"}),
                               ("POST", f"/batches/{bad}/contacts", {"contacts": [{"phones": [PHONE]}]}),
                               ("POST", f"/batches/{bad}/pause", None), ("POST", f"/batches/{bad}/cancel", None),
                               ("GET", f"/batches/{bad}/jobs", None), ("GET", f"/jobs/{bad}", None),
                               ("POST", f"/batches/{bad}/invalidate-cache", None)]:
        reply = api.request(method, path, json_body=body)
        assert reply.status == 404, (method, path, reply.text)
        assert reply.json()["error"] in ("not_found", "not_found_error") or reply.json()["status"] == 404
    assert api.get(f"/batches/{setup}/jobs?after={bad}").status == 422
    assert snapshot(web_runtime) == before


def test_wrong_content_types_get_415(api, web_runtime, setup):
    before = snapshot(web_runtime)
    reply = raw_post(api, "POST", "/batches", '{"name": "x", "account_id": "acme"}', "text/plain")
    assert reply.status == 415 and "application/json" in reply.json()["message"]
    reply = raw_post(api, "POST", f"/batches/{setup}/contacts", "<contacts/>", "application/xml")
    assert reply.status == 415
    reply = raw_post(api, "PUT", "/accounts/acme", "plan=unlimited", "application/x-www-form-urlencoded")
    assert reply.status == 415
    assert snapshot(web_runtime) == before


def test_oversized_bodies_get_413_and_write_nothing(web_factory, web_runtime):
    server = web_factory(max_json_bytes=2_000, max_contacts_json_bytes=4_000, max_csv_bytes=4_000,
                         max_webhook_bytes=4_000)
    api = server.client()
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    bid = api.post("/batches", {"name": "b", "account_id": "acme"}).json()["id"]
    before = snapshot(web_runtime)
    big_name = {"name": "x" * 3_000, "account_id": "acme"}
    assert api.post("/batches", big_name).status == 413
    chunked = api.request("POST", "/batches", body_iter=iter([json.dumps(big_name).encode()]),
                          headers={"Content-Type": "application/json"})
    assert chunked.status == 413 and chunked.json()["error"] == "body_too_large"
    contacts = {"contacts": [{"name": f"c{i}", "phones": [PHONE], "external_id": f"e{i}"} for i in range(100)]}
    assert api.post(f"/batches/{bid}/contacts", contacts).status == 413
    csv = "phone,name\n" + f"{PHONE},somebody\n" * 400
    assert raw_post(api, "POST", f"/batches/{bid}/contacts", csv, "text/csv").status == 413
    signed = b'{"event": "call_ended", "pad": "' + b"x" * 5_000 + b'"}'
    reply = server.client(token=None).request(
        "POST", "/webhooks/retell", data=signed,
        headers={"Content-Type": "application/json", SIGNATURE_HEADER: sign_webhook(signed, server.context.settings
                                                                                      .webhook_api_key)})
    assert reply.status == 413
    assert snapshot(web_runtime) == before


def test_a_chunked_csv_past_the_limit_stops_there_and_says_what_it_imported(web_factory, web_runtime):
    """Without Content-Length the size is known only while reading: rows read before the limit stay."""
    server = web_factory(max_csv_bytes=4_000)
    api = server.client()
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    bid = api.post("/batches", {"name": "b", "account_id": "acme"}).json()["id"]
    rows = [f"{PHONE},c{i},e{i}\n".encode() for i in range(400)]
    reply = api.request("POST", f"/batches/{bid}/contacts", body_iter=iter([b"phone,name,external_id\n", *rows]),
                        headers={"Content-Type": "text/csv"})
    assert reply.status == 413
    body = reply.json()
    assert body["imported"] == web_runtime.jobs.coll.count_documents({"batch_id": bid}) > 0
    assert body["imported"] < 400


def test_too_many_json_contacts_is_refused_whole(api, web_runtime, setup):
    before = snapshot(web_runtime)
    reply = api.post(f"/batches/{setup}/contacts", {"contacts": [{"phones": [PHONE]}] * 100_001})
    assert reply.status == 422 and "text/csv" in reply.json()["message"]
    assert api.post(f"/batches/{setup}/contacts", {"contacts": {"phones": [PHONE]}}).status == 422
    assert api.post(f"/batches/{setup}/contacts", {}).status == 422
    assert snapshot(web_runtime) == before


def test_bad_query_parameters_get_422(api, setup):
    for path in ("/batches?limit=-1", "/batches?limit=501", "/batches?offset=x", "/batches?account_id=%24x",
                 f"/batches/{setup}/contacts?region=XX", f"/batches/{setup}/jobs?limit=0"):
        method = "POST" if "contacts" in path else "GET"
        reply = api.request(method, path, json_body={"contacts": []} if method == "POST" else None)
        assert reply.status == 422, (path, reply.text)
        assert reply.json()["errors"][0]["field"] in ("limit", "offset", "account_id", "region")


def test_unknown_query_parameters_get_422(api, setup):
    typo = api.get(f"/batches/{setup}/jobs?stauts=failed")
    assert typo.status == 422
    assert typo.json()["errors"] == [{"field": "stauts",
                                      "message": "unknown query parameter (known: status, after, limit)"}]
    assert api.get(f"/batches/{setup}?verbose=1").status == 422
    assert api.post(f"/batches/{setup}/pause?force=1").status == 422


def test_unknown_routes_and_methods_answer_in_the_common_shape(api):
    missing = api.get("/nothing/here")
    assert missing.status == 404 and missing.json()["error"] == "not_found"
    wrong = api.request("DELETE", "/batches")
    assert wrong.status == 405 and "GET" in wrong.headers["allow"] and wrong.json()["status"] == 405


# -- properties -------------------------------------------------------------------------------------------

JSON_LEAF = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
JSON = st.recursive(JSON_LEAF, lambda children: st.lists(children, max_size=4) |
                    st.dictionaries(st.text(string.ascii_letters + "$_.", max_size=12), children, max_size=5),
                    max_leaves=20)
KEYS = st.sampled_from(["name", "account_id", "agent_id", "from_number", "call_settings", "x"])
SETTINGS_KEYS = st.sampled_from(["max_call_duration", "ring_timeout", "max_attempts", "retry_delay_hours",
                                 "allowed_hours", "days_of_week", "timezone", "windows", "holidays",
                                 "blackout_dates", "on_insufficient_balance", "fallback_timezone"])
BATCH_BODIES = st.fixed_dictionaries({"name": st.just("n"), "account_id": st.just("acme")}) | \
    st.dictionaries(KEYS, JSON, max_size=5)
SETTINGS = st.dictionaries(SETTINGS_KEYS, JSON, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BATCH_BODIES, call_settings=st.none() | SETTINGS)
def test_any_json_body_gets_201_or_a_4xx_and_a_4xx_writes_nothing(api, web_runtime, setup, body, call_settings):
    if call_settings is not None:
        body = {**body, "call_settings": call_settings}
    before = snapshot(web_runtime)
    reply = api.post("/batches", body)
    assert reply.status == 201 or 400 <= reply.status < 500, reply.text
    payload = reply.json()
    if reply.status != 201:
        assert snapshot(web_runtime) == before
        assert payload["errors"] and all(e["message"] for e in payload["errors"])
    else:
        assert web_runtime.batches.get(payload["id"]) is not None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(["plan", "concurrency_limit", "other"]), JSON, max_size=3),
       plan=st.none() | st.dictionaries(st.sampled_from(["type", "balance", "price_per_minute", "granularity"]),
                                        JSON_LEAF | st.sampled_from(["minutes", "credits", "unlimited", "second"]),
                                        max_size=4))
def test_any_account_body_gets_2xx_or_a_4xx(api, web_runtime, setup, body, plan):
    if plan is not None:
        body = {**body, "plan": plan}
    before = web_runtime.db.accounts.find_one({"_id": "fuzz"})
    reply = api.put("/accounts/fuzz", body)
    assert reply.status in (200, 201) or 400 <= reply.status < 500, reply.text
    if reply.status >= 400:
        assert web_runtime.db.accounts.find_one({"_id": "fuzz"}) == before


@pytest.mark.parametrize("path", ["/accounts/%113%14", "/accounts/a%0D%0ALocation:x", "/accounts/a%20b"])
def test_account_ids_with_control_characters_are_refused(api, web_runtime, path):
    before = snapshot(web_runtime)
    reply = api.request("PUT", path, data=json.dumps({"plan": {"type": "unlimited"}}),
                        headers={"Content-Type": "application/json"})
    assert reply.status == 422 and reply.json()["errors"][0]["field"] == "account_id"
    assert snapshot(web_runtime) == before


#: A lone UTF-16 surrogate, as a client writes it in JSON: valid JSON, but no UTF-8 (nor BSON) can hold it.
LONE = "\\ud800"


def test_lone_surrogates_get_422_naming_the_field_and_write_nothing(api, web_runtime, setup):
    before = snapshot(web_runtime)
    cases = [
        ("POST", "/batches", '{"name": "' + LONE + '", "account_id": "acme"}', "name"),
        ("PATCH", f"/batches/{setup}", '{"name": "ok ' + LONE + '"}', "name"),
        ("POST", "/batches", '{"name": "x", "account_id": "acme", "' + LONE + '": 1}', "\\ud800"),
        ("POST", "/batches", '{"name": "x", "account_id": "acme", "call_settings": {"timezone": "' + LONE + '"}}',
         "call_settings.timezone"),
        ("POST", "/accounts/acme/dnc", '{"numbers": ["' + PHONE + '"], "reason": "' + LONE + '"}', "reason"),
        ("POST", f"/batches/{setup}/contacts",
         '{"contacts": [{"name": "ok", "phones": ["' + PHONE + '"]}, {"name": "' + LONE + '", "phones": ["' + OTHER
         + '"]}]}', "contacts[1].name"),
        ("POST", f"/batches/{setup}/contacts",
         '{"contacts": [{"phones": ["' + PHONE + '"], "variables": {"k' + LONE + '": "v"}}]}',
         "contacts[0].variables.k\\ud800"),
    ]
    for method, path, raw, field in cases:
        reply = raw_post(api, method, path, raw.encode())
        assert reply.status == 422, (path, raw, reply.text)
        body = reply.json()
        assert body["error"] == "validation_failed" and body["errors"][0]["field"] == field, (raw, body)
        assert "UTF-8" in body["errors"][0]["message"]
    assert snapshot(web_runtime) == before
    assert web_runtime.dnc.coll.count_documents({}) == 0


def test_a_csv_with_surrogate_bytes_reports_the_row_and_imports_the_others(api, web_runtime, setup):
    # "\ud800" written as UTF-8 would be (CESU-8): no valid UTF-8 holds it, so the row is reported, not imported.
    csv = f"phone,name\n{PHONE},Ana\n{OTHER},B\xed\xa0\x80b\n".encode("latin-1")
    reply = raw_post(api, "POST", f"/batches/{setup}/contacts", csv, "text/csv")
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["imported"] == 1 and body["errors"] == [
        {"line": 3, "message": "is not valid UTF-8 (save the file as 'CSV UTF-8')"}]
    assert [j["contact"]["name"] for j in web_runtime.jobs.find({"batch_id": setup})] == ["Ana"]


def test_header_bytes_that_are_not_utf8_are_refused_like_any_wrong_token(api, web, setup):
    anonymous = web.client(token=None)
    for headers in ({"Authorization": "Bearer \xff\xfe"},
                    {"Cookie": "outdial_session=\xff", "X-CSRF-Token": "\xed\xa0\x80"},
                    {SIGNATURE_HEADER: "v=1,d=\xff"}):
        for method, path in (("GET", "/batches"), ("GET", "/dashboard/batches"), ("POST", "/webhooks/retell")):
            reply = anonymous.request(method, path, data=b"{}", headers={"Content-Type": "application/json", **headers})
            assert reply.status == 401, (headers, path, reply.text)
