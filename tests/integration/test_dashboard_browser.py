"""The dashboard in a real headless browser (Debian's ``chromium``) while a real campaign runs.

The browser is driven over the Chrome DevTools Protocol with aiohttp's websocket client (no extra
dependency). The campaign runs in real processes (simulator, dramatiq worker, clock dyno); the web
app serves the page. The test opens the page once and only watches: every number it sees change
comes from the page refreshing itself.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from shared.phones import numbered
from shared.simulator_process import wait_until
from tests.fixtures.web import ADMIN_TOKEN
from workers.web_http import read_token_for

START = datetime(2026, 3, 3, 13, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Santiago
CONTACTS = 16


#: Why the test does not run without a browser, and how to make it run.
NO_BROWSER = ("no chromium on PATH: install Debian's chromium (apt-get install -y chromium) to run the dashboard's "
              "browser test; .ci/run installs it")


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_required() -> bool:
    """In CI (``CI`` set) or with ``OUTDIAL_REQUIRE_BROWSER=1`` a missing browser fails the test, never skips."""
    return bool(os.environ.get("CI")) or os.environ.get("OUTDIAL_REQUIRE_BROWSER") == "1"


class Browser:
    """A headless chromium and one page, driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--remote-debugging-port=0",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
             f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.console: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        try:
            port = self._devtools_port()
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(t for t in targets if t["type"] == "page")
            self._call(self._connect(page["webSocketDebuggerUrl"]))
            for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
                self.send(domain)
        except BaseException:
            self.close()
            raise

    def _devtools_port(self) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                threading.Thread(target=self.process.stderr.read, daemon=True).start()   # keep draining
                return int(match.group(1))
        raise AssertionError("chromium did not start:\n" + "".join(seen[-20:]))

    def _call(self, coro: Any, timeout_s: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    async def _connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url, max_msg_size=0)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif data.get("method") in ("Runtime.consoleAPICalled", "Log.entryAdded", "Runtime.exceptionThrown"):
                self.console.append(data)

    async def _send(self, method: str, params: dict[str, Any]) -> Any:
        ident = next(self._ids)
        future = self.loop.create_future()
        self._pending[ident] = future
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        answer = await future
        if "error" in answer:
            raise AssertionError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def send(self, method: str, **params: Any) -> Any:
        return self._call(self._send(method, params))

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        async def shut() -> None:
            if getattr(self, "ws", None) is not None:
                await self.ws.close()
            if getattr(self, "session", None) is not None:
                await self.session.close()
        try:
            self._call(shut(), timeout_s=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def browser(tmp_path):
    executable = chromium_path()
    if executable is None:
        if browser_required():
            pytest.fail(f"{NO_BROWSER} (required: CI or OUTDIAL_REQUIRE_BROWSER=1 is set)")
        pytest.skip(f"{NO_BROWSER}; set OUTDIAL_REQUIRE_BROWSER=1 to make a missing browser a failure")
    started = Browser(executable, tmp_path / "profile")
    yield started
    started.close()


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
