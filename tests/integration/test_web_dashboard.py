"""The dashboard's HTTP behaviour: sign-in, the read-only session cookie, escaping, the batch cards.

The page in a real browser is tested in test_dashboard_browser.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from shared.domain import states
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import frozen_clock
from workers.runtime import build_runtime
from workers.web.http import read_token_for

READ_TOKEN = read_token_for(ADMIN_TOKEN)
PHONES = [f"+5696123{n:04d}" for n in range(4700, 4720)]


def session(reply) -> str | None:
    for header in reply.cookies:
        match = re.match(r"outdial_session=([^;]*)", header)
        if match:
            return match.group(1)
    return None


def test_the_page_needs_a_session_and_sign_in_sets_a_read_only_cookie(web):
    anonymous = web.client(token=None)
    first = anonymous.get("/")
    assert first.status == 303 and first.headers["location"] == "/login"
    login = anonymous.get("/login")
    assert login.status == 200 and 'name="token"' in login.text
    wrong = anonymous.request("POST", "/login", data="token=nope",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status == 401 and session(wrong) is None
    for token in (ADMIN_TOKEN, READ_TOKEN):
        ok = anonymous.request("POST", "/login", data=f"token={token}",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert ok.status == 303 and ok.headers["location"] == "/"
        cookie = next(h for h in ok.cookies if h.startswith("outdial_session="))
        assert session(ok) == READ_TOKEN              # never the admin token
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = anonymous.get("/", headers={"Cookie": f"outdial_session={READ_TOKEN}"})
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert anonymous.get("/", headers={"Cookie": f"outdial_session={ADMIN_TOKEN}"}).status == 303
    assert anonymous.get("/dashboard/batches").status == 401
    out = anonymous.request("POST", "/logout", headers={"Cookie": f"outdial_session={READ_TOKEN}"})
    assert out.status == 303 and session(out) in ("", '""') and "Max-Age=0" in out.cookies[0]


def test_a_token_in_the_address_is_never_accepted(web):
    for token in (READ_TOKEN, ADMIN_TOKEN):
        for path in (f"/?token={token}", f"/login?token={token}"):
            reply = web.client(token=None).get(path)
            assert reply.status in (200, 303) and not reply.cookies, path
            assert reply.status == 200 or reply.headers["location"] == "/login"
        assert web.client(token=None).get(f"/batches?token={token}").status == 401


def test_static_files_are_public(web):
    css = web.client(token=None).get("/static/dashboard.css")
    js = web.client(token=None).get("/static/dashboard.js")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")
    assert js.status == 200 and "fetch(" in js.text


def test_without_admin_token_the_dashboard_is_disabled(web_factory):
    server = web_factory(admin_token=None)
    page = server.client(token=None).get("/login")
    assert page.status == 401 and "ADMIN_TOKEN is not set" in page.text


def test_each_batch_has_a_card_with_counts_window_calls_and_failures(web_factory, web_config, db):
    saturday = datetime(2026, 3, 7, 15, 0, tzinfo=UTC)
    runtime = build_runtime(web_config, frozen_clock(saturday))
    server = web_factory(runtime=runtime)
    api = server.client()
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 4})
    weekdays = {"days_of_week": [1, 2, 3, 4, 5], "allowed_hours": {"start": "09:00", "end": "18:00"}}
    bid = api.post("/batches", {"name": "<script>alert('x')</script> & co", "account_id": "acme",
                                "call_settings": weekdays}).json()["id"]
    api.post(f"/batches/{bid}/contacts", {"contacts": [{"phones": [p]} for p in PHONES[:8]]})
    jobs = runtime.jobs.find({"batch_id": bid}, sort=[("_id", 1)])
    plan = [(states.IN_CALL, None), (states.DIALING, None), (states.COMPLETED, None),
            (states.FAILED, "no valid phone number: invalid_destination"),
            (states.FAILED, "max attempts reached (3): busy"), (states.FAILED, "max attempts reached (3): busy")]
    for job, (state, reason) in zip(jobs, plan, strict=False):
        runtime.jobs.coll.update_one({"_id": job["_id"]}, {"$set": {"status": state, "last_error": reason}})
    page = server.client(token=READ_TOKEN).get("/").text
    card = page[page.index(f'data-batch-id="{bid}"'):]
    card = card[: card.index("</section>")]
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; co" in card
    counts = dict(re.findall(r'data-count="(\w+)">(\d+)<', card))
    assert counts == {"pending": "2", "queued": "0", "dialing": "1", "in_call": "1", "analyzing": "0", "completed": "1",
                      "waiting_schedule": "0", "retry_wait": "0", "waiting_balance": "0", "failed": "3",
                      "cancelled": "0"}
    assert re.search(r'data-field="calls">2<', card)
    assert re.search(r'data-field="percent">50.0<', card)
    assert "closed</span>, opens" in card and "Mon 09 Mar 09:00 America/Santiago" in card
    assert re.search(r"max attempts reached \(3\): busy</td><td class=\"n\">2<", card)
    assert '<rect class="seg-failed"' in card and "<title>failed: 3</title>" in card
    fragment = server.client(token=READ_TOKEN).get("/dashboard/batches")
    assert fragment.status == 200 and f'data-batch-id="{bid}"' in fragment.text and "<html" not in fragment.text
