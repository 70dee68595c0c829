"""A batch's results page (``GET /dashboard/batches/{id}``) rendered by the real web app from seeded documents.

The batch and its contacts go in through the admin API; the calls' attempts and the contacts' results are written
directly (the pipeline writes them in a running campaign). The page in a real browser is tested in
test_results_browser.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

from shared.domain.call_settings import parse_call_settings
from shared.domain.results import stored_analysis
from shared.stores.batch_results import BatchResultsStore
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import frozen_clock
from workers.runtime import build_runtime
from workers.web.http import read_token_for

READ_TOKEN = read_token_for(ADMIN_TOKEN)
#: Wednesday 4 March 2026, 12:00 in Santiago (-03:00); Madrid is +01:00.
NOW = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)
WEEKDAYS = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"},
            "timezone": "America/Santiago"}
PHONES = ["+56961234701", "+56961234702", "+56961234703", "+56961234704"]


def ms(hour_utc: int, minute: int = 0) -> int:
    return int(datetime(2026, 3, 4, hour_utc, minute, tzinfo=UTC).timestamp() * 1000)


def seed_results(runtime: Any, api: Any, *, name: str = "Cobranza marzo") -> str:
    """A batch of four contacts: Ana (one conversation, successful), Beto (three unanswered calls, failed), Carla
    (in Madrid: a voicemail, then an unsuccessful conversation), Dora (not called yet). Returns the batch id."""
    assert api.put("/accounts/acme", {"plan": {"type": "minutes", "balance": 600}}).status in (200, 201)
    bid = api.post("/batches", {"name": name, "account_id": "acme", "call_settings": WEEKDAYS}).json()["id"]
    contacts = [{"name": "Ana <b>Pérez</b>", "phones": [PHONES[0]]}, {"name": "Beto", "phones": [PHONES[1]]},
                {"name": "Carla", "phones": [PHONES[2]], "timezone": "Europe/Madrid"},
                {"name": "Dora", "phones": [PHONES[3]], "external_id": "D-4"}]
    assert api.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == 4
    jobs = {j["contact"]["name"]: j for j in runtime.jobs.find({"batch_id": bid})}
    ana, beto, carla = jobs["Ana <b>Pérez</b>"]["_id"], jobs["Beto"]["_id"], jobs["Carla"]["_id"]

    def attempt(job: str, n: int, outcome: str | None, started: int | None, created: int, *, state: str = "ended",
                call: bool = True) -> dict[str, Any]:
        doc = {"_id": f"{job}:r{n}:p0:d{n}", "job_id": job, "batch_id": bid, "account_id": "acme",
               "to_number": PHONES[0], "round": n, "phone_index": 0, "created_at": created, "state": state}
        if call:
            doc["call_id"] = f"call_{job[-6:]}_{n}"
        if outcome:
            doc["outcome"] = outcome
        if started is not None:
            doc["started_at"] = started
        return doc

    runtime.attempts.coll.insert_many([
        attempt(ana, 1, "answered", ms(13, 15), ms(13, 14)),                 # 10:15 in Santiago
        attempt(beto, 1, "no_answer", ms(12, 5), ms(12, 4)),                 # 09:05
        attempt(beto, 2, "no_answer", ms(14, 40), ms(14, 39)),               # 11:40
        attempt(beto, 3, "no_answer", None, ms(14, 50)),                     # never started: its creation, 11:50
        attempt(carla, 1, "voicemail", ms(14, 0), ms(14, 0)),                # 15:00 in Madrid
        attempt(carla, 2, "answered", ms(15, 10), ms(15, 9)),                # 16:10 in Madrid
        attempt(carla, 3, None, None, ms(15, 30), call=False),               # ended without a call: not counted
        attempt(jobs["Dora"]["_id"], 1, None, None, ms(15, 40), state="dialing"),   # not ended: not counted
    ])
    analysis_ana = {"call_successful": True, "call_summary": "Promised to pay on Friday.",
                    "user_sentiment": "Positive", "in_voicemail": False,
                    "custom_analysis_data": {"promise_to_pay": True, "amount": 12000}}
    analysis_carla = {"call_successful": False, "call_summary": "Asked to be called back. " * 12,
                      "user_sentiment": "Neutral", "in_voicemail": False,
                      "custom_analysis_data": {"callback": "tomorrow"}}
    results = {
        ana: ("completed", ms(13, 20), {"calls": 1, "talk_ms": 95_000, "charge": 96, "last_outcome": "answered",
                                        "analysis": stored_analysis(analysis_ana)}),
        beto: ("failed", ms(14, 55), {"calls": 3, "talk_ms": 0, "charge": 0, "last_outcome": "no_answer",
                                      "analysis": None}),
        carla: ("completed", ms(15, 15), {"calls": 2, "talk_ms": 300_000, "charge": 301,
                                          "last_outcome": "answered", "analysis": stored_analysis(analysis_carla)}),
    }
    for job, (status, finished, result) in results.items():
        extra = {"last_error": "max attempts reached (3): no_answer"} if status == "failed" else {}
        runtime.jobs.coll.update_one({"_id": job}, {"$set": {"status": status, "finished_at": finished,
                                                             "result": result, **extra}})
    return bid


def figures(page: str) -> dict[str, str]:
    return dict(re.findall(r'data-figure="(\w+)"><dt>[^<]*</dt><dd>([^<]*)</dd>', page))


def charts_of(page: str) -> dict[str, ET.Element]:
    found = re.findall(r"(<svg xmlns=.*?</svg>)", page, flags=re.S)
    roots = [ET.fromstring(svg) for svg in found]
    return {root.get("data-chart"): root for root in roots}


def bars(root: ET.Element, cls: str, key: str) -> dict[str, int]:
    return {r.get(key): int(r.get("data-count")) for r in root.iter("{http://www.w3.org/2000/svg}rect")
            if cls in (r.get("class") or "").split()}


def test_the_results_page_shows_figures_charts_and_the_latest_results(web_factory, web_config, db):
    runtime = build_runtime(web_config, frozen_clock(NOW))
    server = web_factory(runtime=runtime)
    bid = seed_results(runtime, server.client())
    reply = server.client(token=READ_TOKEN).get(f"/dashboard/batches/{bid}")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    assert "unsafe-inline" not in reply.headers["content-security-policy"]
    page = reply.text
    assert "style=" not in page and "<script" not in page                 # nothing the CSP would refuse

    assert figures(page) == {"contacts": "4", "final": "3", "completed": "2", "calls": "6", "talk": "6m 35s",
                             "charge": "6.62 min", "success": "50%"}
    assert "1 of 2 analysed conversations" in page

    drawn = charts_of(page)
    assert set(drawn) == {"outcomes", "hours", "attempts"}
    assert bars(drawn["outcomes"], "seg", "data-outcome") == {"answered": 2, "voicemail": 1, "no_answer": 3}
    hours = {int(h): n for h, n in bars(drawn["hours"], "hour-bar", "data-hour").items() if n}
    assert hours == {9: 1, 10: 1, 11: 2, 15: 1, 16: 1}                  # Carla's calls in Madrid's hours
    shaded = sorted(int(r.get("data-hour")) for r in drawn["hours"].iter("{http://www.w3.org/2000/svg}rect")
                    if r.get("class") == "window-hour" and r.get("data-hour"))
    assert shaded == list(range(9, 18))
    assert bars(drawn["attempts"], "count-bar", "data-calls") == {"0": 1, "1": 1, "2": 1, "3": 1}

    table = page[page.index('data-field="latest"'):]
    rows = re.findall(r'<tr data-job-id="(\w+)">(.*?)</tr>', table, flags=re.S)
    names = [re.search(r'class="name">([^<]*)<', row).group(1) for _, row in rows]
    assert names == ["Carla", "Beto", "Ana &lt;b&gt;Pérez&lt;/b&gt;"]       # newest first, escaped
    header = table[: table.index("</thead>")]
    assert re.findall(r'data-custom="(\w+)"', header) == ["callback", "promise_to_pay", "amount"]
    ana = rows[2][1]
    assert "Promised to pay on Friday." in ana and "Positive" in ana and "<td>yes</td>" in ana and "12000" in ana
    assert "max attempts reached (3): no_answer" in rows[1][1] and "no answer" in rows[1][1]
    assert "…" in rows[0][1]                                                # a long summary is cut in the cell

    for href in (f"/batches/{bid}/results.csv", f"/batches/{bid}/results.csv?excel=1", f"/batches/{bid}/results.jsonl"):
        assert f'href="{href}"' in page
    card = server.client(token=READ_TOKEN).get("/").text
    assert f'href="/dashboard/batches/{bid}"' in card and f'href="/batches/{bid}/results.csv"' in card


def test_a_batch_without_calls_and_an_unknown_batch(web_factory, web_config, db):
    runtime = build_runtime(web_config, frozen_clock(NOW))
    server = web_factory(runtime=runtime)
    api = server.client()
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    bid = api.post("/batches", {"name": "Empty", "account_id": "acme"}).json()["id"]
    reader = server.client(token=READ_TOKEN)
    page = reader.get(f"/dashboard/batches/{bid}").text
    assert page.count("no calls yet") >= 3 and "No contact has finished yet." in page
    assert figures(page)["contacts"] == "0" and figures(page)["success"] == "—"
    assert set(charts_of(page)) == {"outcomes", "hours", "attempts"}

    for missing in ("0123456789abcdef01234567", "not-a-batch"):
        reply = reader.get(f"/dashboard/batches/{missing}")
        assert reply.status == 404 and reply.headers["content-type"].startswith("text/html")
        assert "No such batch" in reply.text and missing in reply.text
    anonymous = server.client(token=None).get(f"/dashboard/batches/{bid}")
    assert anonymous.status == 303 and anonymous.headers["location"] == "/login"


def test_the_read_caps_what_it_reads_and_says_so(web_factory, web_config, db):
    runtime = build_runtime(web_config, frozen_clock(NOW))
    server = web_factory(runtime=runtime)
    bid = seed_results(runtime, server.client())
    store = BatchResultsStore(runtime.db, config=runtime.config)
    settings = parse_call_settings(WEEKDAYS, config=runtime.config)
    full = store.read(bid, settings)
    assert not full.calls_capped and full.calls_read == 6 and not full.jobs_capped and full.contacts_read == 4
    capped = store.read(bid, settings, max_calls=3, max_jobs=2, latest=1)
    assert capped.calls_capped and capped.jobs_capped and capped.contacts_read == 2 and len(capped.latest) == 1
    # the three most recently created ended attempts: Carla's without a call, her conversation, Beto's third call
    assert capped.outcomes == {"answered": 1, "no_answer": 1} and capped.calls_read == 2
    assert capped.latest[0]["name"] == "Carla" and capped.latest[0]["result"]["calls"] == 2


def test_with_timezone_auto_a_calls_hour_is_read_in_the_zone_of_the_number(web_runtime):
    runtime = web_runtime
    bid = "6a0000000000000000000001"
    runtime.jobs.coll.insert_many([
        {"_id": "6a00000000000000000000a1", "batch_id": bid, "status": "completed",
         "contact": {"name": "Madrid", "phones": ["+34912345678"]}, "result": {"calls": 1}},
        {"_id": "6a00000000000000000000a2", "batch_id": bid, "status": "completed",
         "contact": {"name": "Unknown zone", "phones": ["+80012345678"]}, "result": {"calls": 1}},
    ])
    runtime.attempts.coll.insert_many([
        {"_id": "6a00000000000000000000a1:r1:p0:d1", "job_id": "6a00000000000000000000a1", "batch_id": bid,
         "to_number": "+34912345678", "state": "ended", "call_id": "c1", "outcome": "answered",
         "created_at": ms(9, 0), "started_at": ms(9, 1)},                   # 10:01 in Madrid
        {"_id": "6a00000000000000000000a2:r1:p0:d1", "job_id": "6a00000000000000000000a2", "batch_id": bid,
         "to_number": "+80012345678", "state": "ended", "call_id": "c2", "outcome": "busy",
         "created_at": ms(9, 0), "started_at": ms(9, 1)},                   # no zone: the fallback, Lima (-05:00)
    ])
    settings = parse_call_settings({"timezone": "auto", "fallback_timezone": "America/Lima"}, config=runtime.config)
    read = BatchResultsStore(runtime.db, config=runtime.config).read(bid, settings)
    assert {h: n for h, n in enumerate(read.hours) if n} == {10: 1, 4: 1}
    assert read.outcomes == {"answered": 1, "busy": 1} and read.calls_per_contact == {1: 2} and read.latest == []


AFTER_CALL = {**WEEKDAYS, "after_call": {"success": {"field": "promise_to_pay", "equals": True},
                                         "callback_field": "call_me_back_at", "opt_out_field": "do_not_call",
                                         "wrong_number_field": "wrong_person"}}


def after_call_figures(page: str) -> dict[str, str] | None:
    if 'data-field="after-call"' not in page:
        return None
    block = page[page.index('data-field="after-call"'):]
    return dict(re.findall(r'data-figure="(\w+)"><dt>[^<]*</dt><dd>([^<]*)</dd>', block[:block.index("</dl>")]))


def test_the_results_page_counts_what_the_after_call_rules_did(web_factory, web_config, db):
    runtime = build_runtime(web_config, frozen_clock(NOW))
    server = web_factory(runtime=runtime)
    api, reader = server.client(), server.client(token=READ_TOKEN)
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status in (200, 201)
    bid = api.post("/batches", {"name": "Reglas", "account_id": "acme", "call_settings": AFTER_CALL}).json()["id"]
    names = ["Ana", "Beto", "Carla", "Dora", "Eva", "Fede"]
    contacts = [{"name": n, "phones": [f"+5696123480{i}"]} for i, n in enumerate(names)]
    assert api.post(f"/batches/{bid}/contacts", {"contacts": contacts}).json()["imported"] == len(names)
    page = reader.get(f"/dashboard/batches/{bid}").text
    assert after_call_figures(page) == {"callbacks": "0", "opt_outs": "0", "wrong_numbers": "0",
                                        "unsuccessful": "0"}                       # rules, nothing done yet

    jobs = {j["contact"]["name"]: j["_id"] for j in runtime.jobs.find({"batch_id": bid})}
    written = {   # as the after-call decision writes them
        "Ana": {"status": "failed", "reason_code": "opted_out", "finished_at": ms(13),
                "result": {"calls": 1, "after_call": "opted_out"}},
        "Beto": {"status": "waiting_schedule", "callbacks": 2, "callback_at": ms(20),
                 "result": {"calls": 2, "after_call": "callback", "callbacks": 2, "callback_at": ms(20)}},
        "Carla": {"status": "completed", "finished_at": ms(14),
                  "result": {"calls": 3, "after_call": "completed", "callbacks": 1, "wrong_numbers": 1}},
        "Dora": {"status": "retry_wait", "reason_code": "call_outcome",
                 "result": {"calls": 1, "after_call": "unsuccessful"}},
        "Eva": {"status": "analyzing", "result": {"calls": 1}},
        "Fede": {"status": "failed", "reason_code": "wrong_person", "finished_at": ms(15),
                 "result": {"calls": 2, "after_call": "wrong_number", "wrong_numbers": 2}},
    }
    for name, fields in written.items():
        runtime.jobs.coll.update_one({"_id": jobs[name]}, {"$set": fields})
    server.context.batch_results.forget(bid)
    page = reader.get(f"/dashboard/batches/{bid}").text
    assert after_call_figures(page) == {"callbacks": "3", "opt_outs": "1", "wrong_numbers": "3",
                                        "unsuccessful": "1"}
    assert figures(page)["final"] == "3"          # analyzing is open: not final

    store = BatchResultsStore(runtime.db, config=runtime.config)
    read = store.read(bid, parse_call_settings(AFTER_CALL, config=runtime.config))
    assert (read.callbacks, read.opt_outs, read.wrong_numbers, read.unsuccessful) == (3, 1, 3, 1)
    latest = {row["name"]: row["result"] for row in read.latest}
    assert latest["Ana"]["after_call"] == "opted_out" and latest["Fede"]["wrong_numbers"] == 2
    assert (latest["Carla"]["callbacks"], latest["Carla"]["callback_at"]) == (1, None)
    beto = api.get(f"/jobs/{jobs['Beto']}").json()["result"]            # the contact's view: instants as ISO
    assert (beto["after_call"], beto["callbacks"], beto["callback_at"], beto["wrong_numbers"]) == (
        "callback", 2, "2026-03-04T20:00:00.000Z", 0)

    # The dashboard's card counts the contact whose analysis is awaited, as an open state.
    card = reader.get("/?refresh=1").text
    card = card[card.index(f'data-batch-id="{bid}"'):]
    assert re.search(r'<dd data-count="analyzing">1</dd>', card)
    assert re.search(r'<span data-field="analyzing">1</span>', card)
    assert api.get(f"/batches/{bid}").json()["progress"]["analyzing"] == 1


def test_after_call_figures_show_only_with_rules_or_something_to_count(web_factory, web_config, db):
    runtime = build_runtime(web_config, frozen_clock(NOW))
    server = web_factory(runtime=runtime)
    bid = seed_results(runtime, server.client())
    reader = server.client(token=READ_TOKEN)
    assert after_call_figures(reader.get(f"/dashboard/batches/{bid}").text) is None     # no rules, all zero
    job = runtime.jobs.find({"batch_id": bid}, limit=1)[0]
    runtime.jobs.coll.update_one({"_id": job["_id"]}, {"$set": {"result.callbacks": 1}})
    server.context.batch_results.forget(bid)
    assert after_call_figures(reader.get(f"/dashboard/batches/{bid}").text)["callbacks"] == "1"
