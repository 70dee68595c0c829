"""The "New campaign" wizard in headless Chromium, against the real web app and a real stack on a sped-up clock.

The operator signs in with the admin token, enters an overnight window 22:00-02:00 with ``max_attempts: 0``
(the API's 422 shows inline and nothing is created), fixes it (the preview lists times inside the window),
uploads a CSV with one bad row (its error is shown) and starts the campaign. Then the decision is checked:
it is 20:00 in Santiago, so both contacts wait in ``waiting_schedule`` with ``next_try_at`` at 22:00 local,
the simulator received no call, and the dashboard shows them waiting; its pause button (with a confirmation)
pauses the batch. Resumed, on a clock two minutes before the window opens, both are dialed for 22:00 and the
provider receives every call inside the window.

The after-call rules are set, refused inline, fixed, reviewed and stored. The calling law: the compliance profiles
are offered by id and name; the README's urgent collections settings under the profiles "auto" chooses for a Chilean
number, from a US caller id, get the weekly cap's and the caller id's warnings, which block nothing: the campaign
starts with its purpose and compliance stored.

``OUTDIAL_SCREENSHOTS=docs`` writes the screenshots of steps 3 and 4 and of the calling law to docs/screenshots
(docs/frontend.md shows them); otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.clock import started_at
from tests.fixtures.browser import Browser, set_files, sign_in
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import wait_until

pytestmark = pytest.mark.slow   # a running stack and a headless browser

START = datetime(2026, 3, 3, 23, 0, tzinfo=UTC)   # Tuesday 20:00 in Santiago (UTC-3)
OPENS = datetime(2026, 3, 4, 1, 0, tzinfo=UTC)    # Tuesday 22:00 in Santiago: the window opens
PHONES = ["+56967100001", "+56967100002"]
CSV = f"name,phone,deuda\nAna Pérez,{PHONES[0]},125000\nSin número,12345,1\nLuis Soto,{PHONES[1]},98000\n"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def fill(browser: Browser, values: dict[str, str]) -> None:
    """Type ``values`` into the inputs with these ids, firing ``input`` as typing does."""
    browser.evaluate(f"""(() => {{
        const values = {json.dumps(values)};
        for (const id in values) {{
            const el = document.getElementById(id);
            el.value = values[id];
            el.dispatchEvent(new Event('input', {{bubbles: true}}));
        }}
        return true;
    }})()""")


def click(browser: Browser, selector: str) -> None:
    browser.evaluate(f"document.querySelector({json.dumps(selector)}).click(); true")


def test_the_wizard_creates_a_campaign_that_waits_for_its_window(stack_factory, web_factory, browser, tmp_path):
    shots = DOCS if os.environ.get("OUTDIAL_SCREENSHOTS") == "docs" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    scenario = {"numbers": {p: {"outcome": "answer", "ring_s": 2, "duration_s": 30} for p in PHONES}}
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=scenario)
    server = web_factory(runtime=runtime, admin_token=ADMIN_TOKEN, dashboard_cache_s=0.2)
    api = server.client()
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 2}).status == 201

    sign_in(browser, server.url, ADMIN_TOKEN)
    browser.send("Page.navigate", url=f"{server.url}/campaigns/new")
    browser.wait_for("document.body && document.body.getAttribute('data-ready') === '1'")
    assert browser.evaluate("document.body.getAttribute('data-admin')") == "1"
    fill(browser, {"f-name": "Cobranza nocturna", "f-account": "acme", "f-agent": "agent_test",
                   "f-from": "+12125550100"})

    # 1. call_settings: an overnight window with max_attempts 0 -> the API's 422, inline; nothing created
    click(browser, '#steps li[data-goto="3"]')
    click(browser, "#mode-windows")
    fill(browser, {"f-windows": "1-5 22:00 02:00", "f-timezone": "America/Santiago", "f-max-attempts": "0",
                   "f-retry": "24"})
    click(browser, "#to-review")
    message = browser.wait_for(
        "document.querySelector('[data-error-for=\"call_settings.max_attempts\"]').textContent")
    assert message == "must be between 1 and 100, got 0"
    assert browser.evaluate("document.getElementById('f-max-attempts').getAttribute('aria-invalid')") == "true"
    assert browser.evaluate("document.body.getAttribute('data-step')") == "3"
    assert api.get("/batches").json()["count"] == 0

    # 2. fixed: the preview lists the next five openings, all inside the window
    fill(browser, {"f-max-attempts": "2"})
    browser.wait_for("document.body.getAttribute('data-preview') === 'ok' && "
                     "document.querySelectorAll('#preview .preview-time').length === 5")
    assert browser.evaluate("document.querySelector('[data-error-for=\"call_settings.max_attempts\"]')"
                            ".textContent") == ""
    local = browser.evaluate("[...document.querySelectorAll('#preview .preview-time')]"
                             ".map(r => r.getAttribute('data-local'))")
    assert local[0] == "2026-03-03T22:00:00-03:00", local
    assert all(t[11:16] == "22:00" for t in local), local
    browser.screenshot(shots / "wizard-step3.png")

    # 3. contacts: a CSV with one bad row; that row's error is shown (checked by the import's own rules)
    click(browser, '#steps li[data-goto="2"]')
    upload = tmp_path / "contacts.csv"
    upload.write_text(CSV, encoding="utf-8")
    set_files(browser, "#f-csv-file", upload)
    browser.wait_for("!!document.querySelector('#contacts-report .row-error')")
    assert browser.evaluate("document.querySelector('.row-error').getAttribute('data-line')") == "3"
    assert "phone" in browser.evaluate("document.querySelector('.row-error').textContent")
    assert browser.evaluate("document.querySelector('.report-summary').getAttribute('data-valid')") == "2"

    # 4. review and start
    click(browser, '#steps li[data-goto="3"]')
    click(browser, "#to-review")
    browser.wait_for("document.body.getAttribute('data-step') === '4'")
    click(browser, "#start")
    bid = browser.wait_for("document.body.getAttribute('data-started')")
    assert browser.evaluate("document.querySelector('#result .report-summary').getAttribute('data-imported')") == "2"
    assert browser.evaluate("document.querySelector('#result .row-error').getAttribute('data-line')") == "3"
    browser.screenshot(shots / "wizard-step4.png")
    batch = api.get(f"/batches/{bid}").json()
    assert batch["call_settings"] == {"windows": [{"days": [1, 2, 3, 4, 5], "start": "22:00", "end": "02:00"}],
                                      "timezone": "America/Santiago", "max_attempts": 2, "retry_delay_hours": 24}

    # The decision: outside the window, both contacts wait for 22:00 local; nothing reached the provider.
    opens_ms = int(OPENS.timestamp() * 1000)

    def waiting() -> bool:
        jobs = runtime.jobs.find({"batch_id": bid}, limit=10)
        return len(jobs) == 2 and all(j["status"] == "waiting_schedule" and j["next_try_at"] == opens_ms
                                      for j in jobs)

    wait_until(waiting, timeout_s=15, interval_s=0.1)
    assert runtime.clock.now() < OPENS and stack.simulator.calls() == []

    browser.send("Page.navigate", url=f"{server.url}/?refresh=1")
    card = f"document.querySelector('[data-batch-id=\"{bid}\"]')"
    browser.wait_for(f"{card} && {card}.querySelector('[data-count=\"waiting_schedule\"]').textContent === '2'")
    browser.evaluate("window.confirm = () => true; true")     # the confirmation dialog, answered yes
    browser.wait_for(f"!{card}.querySelector('button[data-action=\"pause\"]').disabled")
    click(browser, f'[data-batch-id="{bid}"] button[data-action="pause"]')
    browser.wait_for(f"document.querySelector('[data-batch-id=\"{bid}\"]').getAttribute('data-status') === 'paused'")
    assert api.get(f"/batches/{bid}").json()["status"] == "paused"
    assert stack.simulator.calls() == []
    # no script error, no Content-Security-Policy violation (the 422 answers the wizard asked for are expected)
    problems = [p for p in browser.problems()
                if "status of 422" not in p.get("params", {}).get("entry", {}).get("text", "")]
    assert not problems, problems

    # Resumed, and on a clock two minutes before 22:00 (a new stack on the same database, at 60x): the
    # contacts are dialed for the decided instant, and the provider receives every call inside the window.
    assert api.post(f"/batches/{bid}/resume", {}).status == 200
    stack.stop(graceful=False)
    stack, runtime = stack_factory(clock=started_at(OPENS - timedelta(minutes=2), speed=60), scenario=scenario)
    wait_until(lambda: {j["status"] for j in runtime.jobs.find({"batch_id": bid})} == {"completed"},
               timeout_s=60, interval_s=0.2)
    dials = stack.simulator.dials()
    assert len(dials) == 2 and min(rec["received_at"] for rec in dials) >= opens_ms
    assert max(rec["received_at"] for rec in dials) < opens_ms + 4 * 3600 * 1000   # before 02:00
    assert {a["due_at"] for a in runtime.attempts.coll.find({"batch_id": bid})} == {opens_ms}


def choose(browser: Browser, values: dict[str, str]) -> None:
    """Pick ``values`` in the selects with these ids, firing ``change`` as a person choosing does."""
    browser.evaluate(f"""(() => {{
        const values = {json.dumps(values)};
        for (const id in values) {{
            const el = document.getElementById(id);
            el.value = values[id];
            el.dispatchEvent(new Event('change', {{bubbles: true}}));
        }}
        return true;
    }})()""")


AFTER_CALL_RULES = "[...document.querySelectorAll('#preview-after-call .after-call-rule')].map(li => li.textContent)"


def test_the_wizard_sets_the_after_call_rules_and_shows_them_before_the_start(web_factory, browser):
    server = web_factory()
    api = server.client()
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status == 201
    sign_in(browser, server.url, ADMIN_TOKEN)
    browser.send("Page.navigate", url=f"{server.url}/campaigns/new")
    browser.wait_for("document.body && document.body.getAttribute('data-ready') === '1'")
    fill(browser, {"f-name": "Cobranza con reglas", "f-account": "acme", "f-agent": "agent_test",
                   "f-from": "+12125550100", "f-csv-text": f"name,phone\nAna Pérez,{PHONES[0]}\n"})

    # No rule set: the preview says so, and the settings carry no after_call at all.
    click(browser, '#steps li[data-goto="3"]')
    browser.wait_for("document.body.getAttribute('data-preview') === 'ok'")
    assert browser.wait_for(f"{AFTER_CALL_RULES}.length === 1 && {AFTER_CALL_RULES}") == [
        "any other conversation completes the contact"]
    assert browser.evaluate("document.getElementById('ac-success-rule').hidden") is True
    click(browser, "#to-review")
    browser.wait_for("document.body.getAttribute('data-step') === '4'")
    settings = browser.evaluate("[...document.querySelectorAll('#review dt')].find(dt => dt.textContent === "
                                "'call_settings').nextElementSibling.textContent")
    assert "after_call" not in json.loads(settings)
    click(browser, '#steps li[data-goto="3"]')

    # Every rule, one field name the API refuses: its error shows next to that input, and the step cannot be left.
    choose(browser, {"f-ac-success": "equals", "f-ac-opt-out-scope": "contact"})
    assert browser.evaluate("document.getElementById('ac-success-rule').hidden") is False
    assert browser.evaluate("document.getElementById('ac-success-in').hidden") is True
    fill(browser, {"f-ac-success-field": "promise_to_pay", "f-ac-success-equals": "true",
                   "f-ac-callback": "call_me_back_at", "f-ac-max-callbacks": "3", "f-ac-opt-out": "do not call",
                   "f-ac-wrong-number": "wrong_person"})
    slot = "document.querySelector('[data-error-for=\"call_settings.after_call.opt_out_field\"]')"
    message = browser.wait_for(f"{slot}.textContent")
    assert message.startswith("must be a key of the analysis's custom_analysis_data") and "'do not call'" in message
    assert browser.evaluate(f"{slot}.previousElementSibling.id") == "f-ac-opt-out"
    assert browser.evaluate("document.getElementById('f-ac-opt-out').getAttribute('aria-invalid')") == "true"
    assert browser.evaluate("document.body.getAttribute('data-preview')") == "invalid"
    click(browser, "#to-review")
    browser.wait_for(f"{slot}.textContent !== ''")
    assert browser.evaluate("document.body.getAttribute('data-step')") == "3"

    # Fixed: the preview says the rules in the order they apply; "true" was read as JSON's true.
    fill(browser, {"f-ac-opt-out": "do_not_call"})
    browser.wait_for(f"document.body.getAttribute('data-preview') === 'ok' && {AFTER_CALL_RULES}.length === 4")
    rules = browser.evaluate(AFTER_CALL_RULES)
    assert rules[0].startswith("do_not_call true: the contact's numbers go onto the account's do-not-call list")
    assert rules[1].startswith("wrong_person true: the number is never dialed again")
    assert "(at most 3 callbacks, no attempt spent)" in rules[2]
    assert rules[3].startswith("a conversation completes the contact when promise_to_pay = true;")

    # "is one of": a list, its values read as JSON where they are true, false or numbers
    choose(browser, {"f-ac-success": "in"})
    fill(browser, {"f-ac-success-in": "paid, 2, FALSE, 007"})
    browser.wait_for(f"{AFTER_CALL_RULES}.length === 4 && {AFTER_CALL_RULES}[3].includes(' in ')")
    assert browser.evaluate(AFTER_CALL_RULES)[3].startswith(
        'a conversation completes the contact when promise_to_pay in ["paid", 2, false, "007"];')
    assert browser.evaluate(f"{slot}.textContent") == ""

    # The review lists them; the stored batch has them.
    click(browser, "#to-review")
    browser.wait_for("document.body.getAttribute('data-step') === '4' && "
                     "document.querySelectorAll('#review-after-call .after-call-rule').length === 4")
    review = browser.evaluate("[...document.querySelectorAll('#review-after-call .after-call-rule')]"
                              ".map(li => li.textContent)")
    assert review == browser.evaluate(AFTER_CALL_RULES)
    click(browser, "#start")
    bid = browser.wait_for("document.body.getAttribute('data-started')")
    stored = api.get(f"/batches/{bid}").json()["call_settings"]
    assert stored["after_call"] == {"success": {"field": "promise_to_pay", "in": ["paid", 2, False, "007"]},
                                    "callback_field": "call_me_back_at", "max_callbacks": 3,
                                    "opt_out_field": "do_not_call", "opt_out_scope": "contact",
                                    "wrong_number_field": "wrong_person"}
    problems = [p for p in browser.problems()
                if "status of 422" not in p.get("params", {}).get("entry", {}).get("text", "")]
    assert not problems, problems


LAW_WARNINGS = ("[...document.querySelectorAll('#preview-warning-list .compliance-warning')]"
                ".map(li => li.textContent)")
CAP_WARNING = ("5 attempts 2 hours apart: cl-cobranza allows 1 call a week; each contact gets at most 1 call a "
               "week and the other attempts wait until it allows them")
CALLER_ID_WARNING = ("cl-cobranza: calls within an existing relationship, collection included, must show a caller id "
                     "with the 600 prefix (since 2025-08-13) (SUBTEL); the batch's caller id +12125550100 does not")


def test_the_wizard_applies_the_calling_law_and_warns_without_blocking(web_factory, browser, tmp_path):
    shots = DOCS if os.environ.get("OUTDIAL_SCREENSHOTS") == "docs" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    server = web_factory()
    api = server.client()
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}}).status == 201
    sign_in(browser, server.url, ADMIN_TOKEN)
    browser.send("Page.navigate", url=f"{server.url}/campaigns/new")
    browser.wait_for("document.body && document.body.getAttribute('data-ready') === '1' && "
                     "document.body.getAttribute('data-profiles') === '1'")
    fill(browser, {"f-name": "Cobranza urgente", "f-account": "acme", "f-agent": "agent_test",
                   "f-from": "+12125550100", "f-csv-text": f"name,phone\nAna Pérez,{PHONES[0]}\n"})
    click(browser, '#steps li[data-goto="3"]')
    browser.wait_for("document.body.getAttribute('data-preview') === 'ok'")
    # No calling law by default: nothing of it is sent, said or listed.
    assert browser.evaluate("document.getElementById('compliance-profiles').hidden") is True
    assert browser.evaluate("document.getElementById('preview-warnings').hidden") is True
    assert browser.evaluate("document.getElementById('preview-excluded-box').hidden") is True

    # "these profiles": every profile in force, each with its id and name.
    click(browser, "#compliance-chosen")
    assert browser.evaluate("document.getElementById('compliance-profiles').hidden") is False
    listed = browser.evaluate("[...document.querySelectorAll('#compliance-list input[name=\"profile\"]')]"
                              ".map(c => c.value)")
    in_force = api.get("/compliance-profiles").json()["profiles"]
    assert listed == [p["id"] for p in in_force]
    cl_name = next(p["document"]["name"] for p in in_force if p["id"] == "cl-cobranza")
    label = browser.evaluate("document.querySelector('#compliance-list li[data-profile=\"cl-cobranza\"]').textContent")
    assert "cl-cobranza" in label and cl_name in label

    # cl-cobranza on a weekend window: each time names the profile's rule that allows it (Saturdays only), and
    # the Sundays the batch's window allows are listed as excluded by the law, with why.
    click(browser, '#compliance-list input[value="cl-cobranza"]')
    for day in ("1", "2", "3", "4", "5", "6", "7"):
        click(browser, f'input[name="day"][value="{day}"]')        # Mon-Fri off, Sat and Sun on
    fill(browser, {"f-start": "09:00", "f-end": "20:00", "f-timezone": "America/Santiago",
                   "f-preview-phone": "+56961234567"})
    browser.wait_for("document.body.getAttribute('data-preview') === 'ok' && "
                     "document.querySelectorAll('#preview-excluded .excluded').length > 0")
    rules = browser.evaluate("[...document.querySelectorAll('#preview .preview-time')].map(r => "
                             "[r.getAttribute('data-local'), r.querySelector('.profile-rule').textContent])")
    assert rules and all(rule == "cl-cobranza: Mon-Sat 08:00-20:00 (America/Santiago)" for _, rule in rules), rules
    excluded = browser.evaluate("[...document.querySelectorAll('#preview-excluded .excluded')].map(li => "
                                "[li.getAttribute('data-profile'), li.textContent])")
    assert all(profile == "cl-cobranza" and "cl-cobranza: " in said for profile, said in excluded), excluded
    assert any("Sunday" in said for _, said in excluded), excluded
    assert browser.evaluate("document.getElementById('preview-excluded-box').hidden") is False
    assert browser.evaluate("document.getElementById('preview-profiles').getAttribute('data-profiles')") == \
        "cl-cobranza"

    # A profile id the server does not know (a list older than the profiles in force): named in the profiles' slot.
    browser.evaluate("""(() => {
        const li = document.querySelector('#compliance-list li').cloneNode(true);
        li.querySelector('input').value = 'xx-gone';
        document.getElementById('compliance-list').appendChild(li);
        li.querySelector('input').checked = true;
        li.querySelector('input').dispatchEvent(new Event('change', {bubbles: true}));
        return true;
    })()""")
    slot = "document.querySelector('[data-error-for=\"call_settings.compliance\"]')"
    assert "'xx-gone'" in browser.wait_for(f"{slot}.textContent")
    assert browser.evaluate("document.body.getAttribute('data-preview')") == "invalid"
    browser.evaluate("document.querySelector('#compliance-list input[value=\"xx-gone\"]').closest('li').remove(); "
                     "true")

    # "Cobranza urgente": Monday to Saturday 09:00-20:00, 5 attempts 2 hours apart, 45 s ring, 600 s calls, and the
    # profiles auto chooses. Without a purpose auto is refused, in the purpose's slot.
    click(browser, 'input[name="day"][value="7"]')
    for day in ("1", "2", "3", "4", "5"):
        click(browser, f'input[name="day"][value="{day}"]')
    fill(browser, {"f-max-attempts": "5", "f-retry": "2", "f-ring": "45", "f-duration": "600"})
    click(browser, "#compliance-auto")
    assert browser.evaluate("document.getElementById('compliance-profiles').hidden") is True
    purpose_slot = "document.querySelector('[data-error-for=\"call_settings.purpose\"]')"
    assert browser.wait_for(f"{purpose_slot}.textContent") == 'is required with compliance "auto" (it chooses the ' \
                                                              'profiles)'
    assert browser.evaluate("document.getElementById('f-purpose').getAttribute('aria-invalid')") == "true"
    assert browser.evaluate(f"{slot}.textContent") == ""

    # With collection: the weekly cap's warning and the caller id's, in a status box that blocks nothing.
    choose(browser, {"f-purpose": "collection"})
    warnings = browser.wait_for(f"document.body.getAttribute('data-preview') === 'ok' && {LAW_WARNINGS}.length === 2 "
                                f"&& {LAW_WARNINGS}")
    assert warnings == [CAP_WARNING, CALLER_ID_WARNING]
    assert browser.evaluate(f"{purpose_slot}.textContent") == ""
    box = "document.getElementById('preview-warnings')"
    assert browser.evaluate(f"{box}.hidden") is False and browser.evaluate(f"{box}.getAttribute('role')") == "status"
    assert browser.evaluate("document.getElementById('preview-profiles').textContent") == \
        "Calling law for this number: cl-cobranza"
    assert browser.evaluate("document.getElementById('to-review').disabled") is False
    browser.screenshot(shots / "wizard-law.png")

    # The review says the purpose, the compliance and the warnings again; the campaign starts all the same.
    click(browser, "#to-review")
    browser.wait_for("document.body.getAttribute('data-step') === '4' && "
                     "document.querySelectorAll('#review-law .compliance-warning').length === 2")
    review = browser.evaluate("Object.fromEntries([...document.querySelectorAll('#review dt')]"
                              ".map(dt => [dt.textContent, dt.nextElementSibling.textContent]))")
    assert review["Purpose"] == "collection" and review["Compliance"].startswith("auto")
    assert browser.evaluate("[...document.querySelectorAll('#review-law .compliance-warning')]"
                            ".map(li => li.textContent)") == warnings
    assert browser.evaluate("document.getElementById('start').disabled") is False
    click(browser, "#start")
    bid = browser.wait_for("document.body.getAttribute('data-started')")
    stored = api.get(f"/batches/{bid}").json()
    assert stored["from_number"] == "+12125550100"
    assert stored["call_settings"] == {"days_of_week": [1, 2, 3, 4, 5, 6],
                                       "allowed_hours": {"start": "09:00", "end": "20:00"},
                                       "timezone": "America/Santiago", "max_attempts": 5, "retry_delay_hours": 2,
                                       "ring_timeout": 45, "max_call_duration": 600, "purpose": "collection",
                                       "compliance": "auto"}
    problems = [p for p in browser.problems()
                if "status of 422" not in p.get("params", {}).get("entry", {}).get("text", "")]
    assert not problems, problems
