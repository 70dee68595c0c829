"""The dashboard in a real headless browser (Debian's ``chromium``) while a real campaign runs.

The browser is driven over the Chrome DevTools Protocol with aiohttp's websocket client (no extra
dependency). The campaign runs in real processes (simulator, dramatiq worker, clock dyno); the web
app serves the page. The test opens the page once and only watches: every number it sees change
comes from the page refreshing itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.domain.phones import numbered
from tests.fixtures.browser import Browser
from tests.fixtures.web import ADMIN_TOKEN
from tests.helpers import wait_until
from workers.web.http import read_token_for

pytestmark = pytest.mark.slow   # a running stack and a headless browser

START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Santiago
CONTACTS = 16


def numbers(count: int) -> list[str]:
    return numbered("+56967", count)


CARD = "document.querySelector('[data-batch-id=\"{bid}\"]')"


def read_card(browser: Browser, bid: str) -> dict[str, Any] | None:
    """What the page shows for the batch right now: its status and every number on its card."""
    return browser.evaluate(f"""(() => {{
        const card = {CARD.format(bid=bid)};
        if (!card) return null;
        const out = {{status: card.getAttribute('data-status')}};
        card.querySelectorAll('[data-count]').forEach(e => out[e.getAttribute('data-count')] = +e.textContent);
        card.querySelectorAll('[data-field]').forEach(
            e => out['field_' + e.getAttribute('data-field')] = e.textContent);
        return out;
    }})()""")


def test_the_dashboard_shows_a_campaign_as_it_runs(stack_factory, web_factory, browser):
    from shared.clock import started_at

    phones = numbers(CONTACTS)
    scenario = {"numbers": {p: {"outcome": "answer", "ring_s": 2, "duration_s": 40} for p in phones}}
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=scenario,
                                   simulator_flags={"concurrency_limit": 50})
    server = web_factory(runtime=runtime, admin_token=ADMIN_TOKEN, dashboard_cache_s=0.2)
    api = server.client()
    assert api.put("/accounts/acme", {"plan": {"type": "unlimited"}, "concurrency_limit": 2}).status == 201
    bid = api.post("/batches", {"name": "Recordatorio de pago", "account_id": "acme", "agent_id": "agent_test",
                                "from_number": "+12125550100"}).json()["id"]

    browser.send("Page.navigate", url=f"{server.url}/login")   # signing in: the form, never a token in an address
    wait_until(lambda: browser.evaluate("document.readyState === 'complete' && !!document.getElementById('token')"),
               timeout_s=30, interval_s=0.1)
    browser.evaluate(f"document.getElementById('token').value = {json.dumps(read_token_for(ADMIN_TOKEN))}; "
                     "document.querySelector('form').submit(); true")
    wait_until(lambda: browser.evaluate("location.pathname") == "/", timeout_s=30, interval_s=0.1)
    browser.send("Page.navigate", url=f"{server.url}/?refresh=1")
    first = wait_until(lambda: read_card(browser, bid), timeout_s=30, interval_s=0.1)
    assert browser.evaluate("document.title") == "outdial · campaigns"
    assert first["status"] == "active" and first["field_total"] == "0"
    assert "Recordatorio de pago" in browser.evaluate(f"{CARD.format(bid=bid)}.querySelector('h2').textContent")

    reply = api.post(f"/batches/{bid}/contacts",
                     {"contacts": [{"name": f"c{i}", "phones": [p]} for i, p in enumerate(phones)]})
    assert reply.json()["imported"] == CONTACTS

    seen: list[dict[str, Any]] = []

    def finished() -> bool:
        card = read_card(browser, bid)
        if card and (not seen or card != seen[-1]):
            seen.append(card)
        return bool(card) and card["completed"] == CONTACTS and card["status"] == "completed"

    try:
        wait_until(finished, timeout_s=120, interval_s=0.1)
    except TimeoutError:
        raise AssertionError(f"page never showed the end; it showed {seen[-3:]}\n{stack.logs()}") from None
    assert int(browser.evaluate("document.body.getAttribute('data-refreshes')")) >= 3
    assert seen[0]["field_total"] in ("0", str(CONTACTS))
    assert any(card["field_total"] == str(CONTACTS) and card["completed"] < CONTACTS for card in seen)
    assert any(int(card["field_calls"]) > 0 for card in seen), seen        # calls in progress were shown
    completed = [card["completed"] for card in seen]
    assert completed == sorted(completed) and len(set(completed)) >= 3, completed   # it moved, never backwards
    assert seen[-1]["field_percent"] == "100.0" and seen[-1]["pending"] == 0 and seen[-1]["failed"] == 0
    assert seen[-1]["field_completed"] == str(CONTACTS)
    problems = [entry for entry in browser.console
                if entry.get("method") == "Runtime.exceptionThrown"
                or entry.get("params", {}).get("entry", {}).get("level") == "error"]
    assert not problems, problems     # no script error, no Content-Security-Policy violation
