"""The routes a campaign wizard needs, over real HTTP: the call_settings schema, the preview of call times, the
contacts check, and the admin session with its CSRF token (the dashboard's write access)."""

from __future__ import annotations

import re

import jsonschema

from tests.fixtures.web import ADMIN_TOKEN
from workers.web.http import ADMIN_SESSION_COOKIE, read_token_for

READ_TOKEN = read_token_for(ADMIN_TOKEN)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
OVERNIGHT = {"windows": [{"days": [1, 2, 3, 4, 5], "start": "22:00", "end": "02:00"}],
             "timezone": "America/Santiago"}


def cookie(reply, name: str) -> str | None:
    for header in reply.cookies:
        match = re.match(rf"{name}=([^;]*)", header)
        if match:
            return match.group(1)
    return None


def test_the_schema_is_served_to_either_token_and_checks_what_the_api_accepts(web, api):
    anonymous = web.client(token=None)
    assert anonymous.get("/call-settings/schema").status == 401
    schema = web.client(token=READ_TOKEN).get("/call-settings/schema").json()
    assert schema == api.get("/call-settings/schema").json()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["max_attempts"]["default"] == 3
    assert schema["properties"]["max_attempts"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 100}
    assert not jsonschema.Draft202012Validator(schema).is_valid({**OVERNIGHT, "max_attempts": 0})


def test_the_preview_lists_the_next_openings_and_refuses_like_post_batches(api):
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    answer = api.post("/call-settings/preview", {"call_settings": {**OVERNIGHT, "holidays": "CL"},
                                                 "from": "2026-03-03T13:00:00Z", "count": 5})
    assert answer.status == 200, answer.text
    body = answer.json()
    assert body["zones"] == ["America/Santiago"] and body["zone_source"] == "batch"
    assert [t["local"] for t in body["times"]] == [
        "2026-03-03T22:00:00-03:00", "2026-03-04T22:00:00-03:00", "2026-03-05T22:00:00-03:00",
        "2026-03-06T22:00:00-03:00", "2026-03-09T22:00:00-03:00"]
    assert body["times"][0]["at"] == "2026-03-04T01:00:00.000Z" and body["times"][0]["rule"] == "Mon-Fri 22:00-02:00"
    inside = api.post("/call-settings/preview", {"call_settings": OVERNIGHT, "from": "2026-03-04T04:30:00Z",
                                                 "count": 2}).json()
    assert inside["times"][0]["local"] == "2026-03-04T01:30:00-03:00"     # the overnight part of Tuesday's window

    bad = {**OVERNIGHT, "max_attempts": 0}
    preview = api.post("/call-settings/preview", {"call_settings": bad})
    create = api.post("/batches", {"name": "x", "account_id": "acme", "from_number": "+12125550100",
                                   "call_settings": bad})
    assert preview.status == create.status == 422
    assert preview.json()["errors"] == create.json()["errors"] == [
        {"field": "call_settings.max_attempts", "message": "must be between 1 and 100, got 0"}]
    assert api.get("/batches").json()["count"] == 0
    wrong = api.post("/call-settings/preview", {"phone": "12", "from": "yesterday", "count": 0, "x": 1}).json()
    assert {e["field"] for e in wrong["errors"]} == {"x", "phone", "from", "count"}


def test_the_preview_says_the_after_call_rules_in_the_order_they_apply(api):
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    plain = api.post("/call-settings/preview", {"call_settings": OVERNIGHT}).json()
    assert plain["after_call"] == ["any other conversation completes the contact"]
    assert api.post("/call-settings/preview", {}).json()["after_call"] == plain["after_call"]   # no settings at all

    rules = {"success": {"field": "promise_to_pay", "equals": True}, "callback_field": "call_me_back_at",
             "max_callbacks": 3, "opt_out_field": "do_not_call", "opt_out_scope": "contact",
             "wrong_number_field": "wrong_person"}
    said = api.post("/call-settings/preview", {"call_settings": {**OVERNIGHT, "after_call": rules}})
    assert said.status == 200, said.text
    assert said.json()["after_call"] == [
        "do_not_call true: the contact's numbers go onto the account's do-not-call list and the contact fails "
        "(opted_out)",
        "wrong_person true: the number is never dialed again for this contact; the next number is dialed now",
        "call_me_back_at holds a time: the contact is called back then, or at the next allowed time after it "
        "(at most 3 callbacks, no attempt spent)",
        "a conversation completes the contact when promise_to_pay = true; otherwise it is unsuccessful: the attempt "
        "is spent and the contact is retried after its delay"]
    assert said.json()["times"]          # the call times as before

    bad = {**OVERNIGHT, "after_call": {"opt_out_field": "do not call", "max_callbacks": 21}}
    preview = api.post("/call-settings/preview", {"call_settings": bad})
    create = api.post("/batches", {"name": "x", "account_id": "acme", "from_number": "+12125550100",
                                   "call_settings": bad})
    assert preview.status == 422 and preview.json()["errors"] == create.json()["errors"]
    assert {e["field"] for e in preview.json()["errors"]} == {"call_settings.after_call.opt_out_field",
                                                               "call_settings.after_call.max_callbacks"}


def test_with_timezone_auto_the_zone_comes_from_the_number(api):
    settings = {"timezone": "auto", "days_of_week": [1, 2, 3, 4, 5],
                "allowed_hours": {"start": "09:00", "end": "18:00"}}
    ny = api.post("/call-settings/preview", {"call_settings": settings, "phone": "+12125550100",
                                             "from": "2026-03-03T12:00:00Z", "count": 1}).json()
    assert ny["zones"] == ["America/New_York"] and ny["zone_source"] == "phone"
    assert ny["times"][0]["at"] == "2026-03-03T14:00:00.000Z"
    cl = api.post("/call-settings/preview", {"call_settings": settings, "phone": "+56961234567",
                                             "from": "2026-03-03T12:00:00Z", "count": 1}).json()
    assert cl["zones"] == ["America/Santiago"] and cl["times"][0]["at"] == "2026-03-03T12:00:00.000Z"


#: The original worker's "Cobranza urgente" settings, for collection under the profiles "auto" chooses, its window
#: opened to every day (so that a Sunday and a public holiday fall inside it).
URGENTE = {"days_of_week": [1, 2, 3, 4, 5, 6, 7], "allowed_hours": {"start": "09:00", "end": "20:00"},
           "timezone": "America/Santiago", "max_attempts": 5, "retry_delay_hours": 2, "ring_timeout": 45,
           "max_call_duration": 600, "purpose": "collection", "compliance": "auto"}
WEEKLY_CAP_WARNING = ("5 attempts 2 hours apart: cl-cobranza allows 1 call a week; each contact gets at most "
                      "1 call a week and the other attempts wait until it allows them")
CALLER_ID_WARNING = ("cl-cobranza: calls within an existing relationship, collection included, must show a caller id "
                     "with the 600 prefix (since 2025-08-13) (SUBTEL); the batch's caller id +12125550100 does not")


def test_the_preview_says_what_the_calling_law_allows_excludes_and_changes(api):
    api.put("/accounts/acme", {"plan": {"type": "unlimited"}})
    # Thursday 30 April 2026, 12:00 in Santiago: Friday 1 May is Labour Day, Sunday 3 May a Sunday.
    asked = {"call_settings": URGENTE, "phone": "+56961234567", "from_number": "+12125550100",
             "from": "2026-04-30T16:00:00Z", "count": 5}
    answer = api.post("/call-settings/preview", asked)
    assert answer.status == 200, answer.text
    body = answer.json()
    assert body["profiles"] == ["cl-cobranza"]
    assert [t["local_text"] for t in body["times"]] == [
        "Thu 2026-04-30 12:00", "Sat 2026-05-02 09:00", "Mon 2026-05-04 09:00", "Tue 2026-05-05 09:00",
        "Wed 2026-05-06 09:00"]
    assert all(t["profiles"] == [{"id": "cl-cobranza", "rule": "Mon-Sat 08:00-20:00 (America/Santiago)"}]
               for t in body["times"])
    excluded = body["excluded"]
    assert [(e["local_text"], e["zone"], e["profile"]) for e in excluded] == [
        ("Fri 2026-05-01 09:00", "America/Santiago", "cl-cobranza"),
        ("Sun 2026-05-03 09:00", "America/Santiago", "cl-cobranza")]
    assert excluded[0]["at"] == "2026-05-01T13:00:00.000Z" and excluded[0]["local"] == "2026-05-01T09:00:00-04:00"
    assert excluded[0]["why"].startswith("cl-cobranza: public holiday") and "2026-05-01" in excluded[0]["why"]
    assert excluded[1]["why"].startswith("cl-cobranza: day not allowed: Sunday 2026-05-03")
    assert body["warnings"] == [WEEKLY_CAP_WARNING, CALLER_ID_WARNING]

    # A caller id with the 600 prefix, or none given: only the cap's warning. Warnings never refuse the batch.
    prefixed = api.post("/call-settings/preview", {**asked, "from_number": "+56600123456"}).json()
    assert prefixed["warnings"] == [WEEKLY_CAP_WARNING]
    assert api.post("/call-settings/preview", {k: v for k, v in asked.items() if k != "from_number"}
                    ).json()["warnings"] == [WEEKLY_CAP_WARNING]
    created = api.post("/batches", {"name": "Cobranza urgente", "account_id": "acme", "from_number": "+12125550100",
                                    "call_settings": URGENTE})
    assert created.status == 201, created.text
    stored = created.json()["call_settings"]
    assert (stored["purpose"], stored["compliance"]) == ("collection", "auto")

    # For telemarketing, "auto" gives a Chilean number no profile: nothing excluded, nothing to warn of.
    marketing = api.post("/call-settings/preview", {**asked, "call_settings": {**URGENTE, "purpose": "telemarketing"}})
    assert marketing.status == 200, marketing.text
    plain = marketing.json()
    assert plain["profiles"] == [] and plain["excluded"] == [] and plain["warnings"] == []
    assert [t["local_text"][:3] for t in plain["times"]] == ["Thu", "Fri", "Sat", "Sun", "Mon"]
    assert all(t["profiles"] == [] for t in plain["times"])

    # "auto" needs a purpose; an unknown profile id is named by its index: as POST /batches refuses them.
    for settings, field in (({**URGENTE, "purpose": None}, "call_settings.purpose"),
                            ({**URGENTE, "compliance": ["cl-cobranza", "xx-gone"]}, "call_settings.compliance[1]")):
        preview = api.post("/call-settings/preview", {**asked, "call_settings": settings})
        create = api.post("/batches", {"name": "x", "account_id": "acme", "from_number": "+12125550100",
                                       "call_settings": settings})
        assert preview.status == create.status == 422
        assert preview.json()["errors"] == create.json()["errors"]
        assert [e["field"] for e in preview.json()["errors"]] == [field]
    bad_caller = api.post("/call-settings/preview", {**asked, "from_number": "abc"})
    assert bad_caller.status == 422 and [e["field"] for e in bad_caller.json()["errors"]] == ["from_number"]


def test_the_contacts_check_reports_each_bad_row_and_writes_nothing(web, api, web_runtime):
    csv = "name,phone,deuda\nAna,+56961234567,100\nBad,12,5\nLuis,+56961234568,7\n"
    reply = web.client(token=READ_TOKEN).request("POST", "/contacts/check", data=csv,
                                                 headers={"Content-Type": "text/csv"})
    assert reply.status == 200, reply.text
    body = reply.json()
    assert body["valid"] == 2 and body["rows"] == 3 and body["errors_total"] == 1
    assert body["errors"][0]["line"] == 3 and body["errors"][0]["field"] == "phones[0]"
    assert web_runtime.jobs.find({}, limit=10) == []


def test_an_admin_session_writes_only_with_its_csrf_token(web):
    browser = web.client(token=None)
    read = browser.request("POST", "/login", data=f"token={READ_TOKEN}", headers=FORM)
    assert read.status == 303 and cookie(read, ADMIN_SESSION_COOKIE) in (None, '""')   # read-only: no admin session
    signed = browser.request("POST", "/login", data=f"token={ADMIN_TOKEN}", headers=FORM)
    session = cookie(signed, ADMIN_SESSION_COOKIE)
    header = next(h for h in signed.cookies if h.startswith(ADMIN_SESSION_COOKIE))
    assert session and ADMIN_TOKEN not in session and "HttpOnly" in header and "SameSite=Strict" in header
    assert "Max-Age=3600" in header
    jar = {"Cookie": f"outdial_session={READ_TOKEN}; {ADMIN_SESSION_COOKIE}={session}"}
    page = browser.get("/campaigns/new", headers=jar)
    csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', page.text).group(1)
    assert 'data-admin="1"' in page.text and "unsafe-inline" not in page.headers["content-security-policy"]
    assert csrf in browser.get("/", headers=jar).text

    body = {"plan": {"type": "unlimited"}}
    assert browser.put("/accounts/acme", body, headers=jar).status == 401                 # no CSRF token
    assert browser.put("/accounts/acme", body, headers={**jar, "X-CSRF-Token": "0" * 64}).status == 401
    forged = session[:-1] + ("0" if session[-1] != "0" else "1")
    assert browser.put("/accounts/acme", body, headers={
        "Cookie": f"{ADMIN_SESSION_COOKIE}={forged}", "X-CSRF-Token": csrf}).status == 401
    assert browser.put("/accounts/acme", body, headers={
        "Cookie": f"outdial_session={READ_TOKEN}", "X-CSRF-Token": csrf}).status == 401   # the read session: never
    assert browser.put("/accounts/acme", body, headers={**jar, "X-CSRF-Token": csrf}).status == 201

    readonly = browser.get("/campaigns/new", headers={"Cookie": f"outdial_session={READ_TOKEN}"})
    assert readonly.status == 200 and 'id="read-only"' in readonly.text
    assert '<fieldset id="all" disabled>' in readonly.text
    assert '<meta name="csrf-token" content="">' in readonly.text
    evil = {**jar, **FORM, "Origin": "https://evil.example"}
    assert browser.request("POST", "/logout", headers=evil).status == 403
    assert browser.request("POST", "/login", data=f"token={ADMIN_TOKEN}", headers=evil).status == 403
    assert browser.request("POST", "/logout", headers={**jar, "Sec-Fetch-Site": "cross-site"}).status == 403
    out = browser.request("POST", "/logout", headers={**jar, "Origin": web.url})
    assert any(h.startswith(f"{ADMIN_SESSION_COOKIE}=") and "Max-Age=0" in h for h in out.cookies)


def _admin_sign_in(web) -> tuple[dict[str, str], str]:
    """A browser's cookie jar after signing in with the admin token, and the session's CSRF token."""
    signed = web.client(token=None).request("POST", "/login", data=f"token={ADMIN_TOKEN}", headers=FORM)
    jar = {"Cookie": f"outdial_session={cookie(signed, 'outdial_session')}; "
                     f"{ADMIN_SESSION_COOKIE}={cookie(signed, ADMIN_SESSION_COOKIE)}"}
    page = web.client(token=None).get("/", headers=jar)
    csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', page.text).group(1)
    return jar, csrf


def test_signing_out_ends_the_admin_session_on_every_copy_of_its_cookie(web_factory):
    web, other_dyno = web_factory(), web_factory()          # two web dynos: the revocation is shared
    browser = web.client(token=None)
    copied, csrf = _admin_sign_in(web)                       # the cookie as someone copied it
    kept, kept_csrf = _admin_sign_in(web)                    # another admin session
    body = {"plan": {"type": "unlimited"}}
    assert browser.put("/accounts/acme", body, headers={**copied, "X-CSRF-Token": csrf}).status == 201

    out = browser.request("POST", "/logout", headers={**copied, **FORM, "Origin": web.url})
    assert out.status == 303
    for dyno in (web, other_dyno):
        client = dyno.client(token=None)
        write = client.put("/accounts/acme", body, headers={**copied, "X-CSRF-Token": csrf})
        assert write.status == 401 and write.json()["error"] == "unauthorized"
        assert client.post("/batches/0123456789abcdef01234567/pause", headers={**copied, "X-CSRF-Token": csrf}
                           ).status == 401
        # The session's open pages are signed out: their next call gets 401, a page goes to the login.
        assert client.get("/dashboard/batches", headers=copied).status == 401
        for page in ("/", "/campaigns/new"):
            reply = client.get(page, headers=copied)
            assert reply.status == 303 and reply.headers["location"] == "/login"
        assert client.post("/call-settings/preview", {"call_settings": OVERNIGHT}, headers={
            **copied, "X-CSRF-Token": csrf}).status == 401

        assert client.put("/accounts/acme", body, headers={**kept, "X-CSRF-Token": kept_csrf}).status == 200
        assert kept_csrf in client.get("/campaigns/new", headers=kept).text
    read_only = {"Cookie": f"outdial_session={READ_TOKEN}"}
    assert browser.get("/dashboard/batches", headers=read_only).status == 200   # the read-only cookie: unchanged


def test_without_redis_the_admin_session_is_refused_not_trusted(web_factory, web_config, clock):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from shared.stores.admin_sessions import AdminSessions
    from workers.dev.embedded import free_port
    from workers.runtime import build_runtime

    web = web_factory()
    jar, csrf = _admin_sign_in(web)
    cut_off = build_runtime(web_config, clock)
    cut_off.admin_sessions = AdminSessions(redis.Redis(port=free_port("127.0.0.1"), socket_connect_timeout=0.5,
                                                             retry=Retry(NoBackoff(), 0)))
    client = web_factory(runtime=cut_off).client(token=None)       # a dyno whose Redis does not answer
    body = {"plan": {"type": "unlimited"}}
    write = client.put("/accounts/acme", body, headers={**jar, "X-CSRF-Token": csrf})
    assert write.status == 503 and write.json()["error"] == "service_unavailable"
    assert client.get("/campaigns/new", headers=jar).status == 503
    assert client.request("POST", "/login", data=f"token={ADMIN_TOKEN}", headers=FORM).status == 503
    assert client.request("POST", "/logout", headers={**jar, **FORM}).status == 503   # cookies kept: try again
    assert client.get("/dashboard/batches", headers={"Cookie": f"outdial_session={READ_TOKEN}"}).status == 200
    assert web.client(token=None).put("/accounts/acme", body, headers={**jar, "X-CSRF-Token": csrf}).status == 201
    cut_off.redis.close()
