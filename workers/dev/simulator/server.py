"""A local provider that speaks Retell's HTTP API: ``outdial simulator``.

Same paths, auth, JSON shapes, status codes and error bodies as Retell (docs/retell.md), so
the client cannot tell it from Retell except by what it is told to do: which outcome each
number gets (:mod:`workers.dev.simulator.scenario`), the workspace concurrency limit, injected
faults, and where to send signed webhooks. Calls live on the shared clock
(``shared.clock.get_clock()``): a sped-up clock compresses their durations.

Debug endpoints (no auth; bind to loopback): ``GET /debug/calls`` (every create request; ``?created=1``
only those that made or replayed a call, ``?timeline=1`` with each call's created/connected/ended instants),
``GET /debug/calls/{call_id}``, ``GET /debug/stats``, ``GET /debug/webhooks``,
``GET|PUT /debug/scenario``, ``GET|PUT /debug/faults``, ``GET|PUT /debug/config``,
``POST /debug/reset`` (``?full=1``: also scenario, faults and settings back to the start), ``GET /debug/health``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web

from shared.clock import Clock, get_clock
from shared.logs import event, get_logger
from shared.provider.webhooks import SIGNATURE_HEADER, sign_webhook
from workers.dev.simulator.api import ApiError, CreateRequest, parse_create_body, parse_list_body
from workers.dev.simulator.calls import CallBook, SimCall
from workers.dev.simulator.scenario import (
    Faults,
    Plan,
    Scenario,
    ScenarioError,
    parse_faults,
    parse_scenario,
    plan_call,
)

log = get_logger(__name__)

__all__ = ["Simulator", "SimulatorSettings", "build_app", "start_server"]

#: Workspace concurrency limit (Retell's pay-as-you-go default).
DEFAULT_CONCURRENCY_LIMIT = 20
#: What a create beyond the limit gets: ``reason`` = 201 and a call that ends at once with
#: ``concurrency_limit_reached`` (what Retell's concurrency page describes); ``429`` = an error answer.
CONCURRENCY_MODES = ("reason", "429")
DEFAULT_CONCURRENCY_MODE = "reason"
#: Status of get-call / stop-call for an unknown id (Retell's schema declares 422; 404 is selectable).
DEFAULT_NOT_FOUND_STATUS = 422
#: Retell's webhook behaviour: 10 s timeout, up to 3 retries.
DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_WEBHOOK_RETRIES = 3
#: Real seconds between two attempts of one webhook.
DEFAULT_WEBHOOK_RETRY_DELAY_S = 1.0
#: Webhook requests in flight at once.
DEFAULT_WEBHOOK_MAX_IN_FLIGHT = 100
#: Webhook deliveries kept for ``GET /debug/webhooks``.
DEFAULT_WEBHOOK_LOG = 20_000
#: Real seconds a stopping simulator waits for requests in progress (a slow fault may be sleeping).
SHUTDOWN_GRACE_S = 0.5
#: Simulated milliseconds after which a call refused for concurrency ends.
CONCURRENCY_REFUSAL_MS = 300
#: How long a create's ``idempotency_key`` is honoured, simulated milliseconds (Retell: one hour).
IDEMPOTENCY_WINDOW_MS = 3_600_000

_FAULT_MESSAGES = {
    400: "Bad request", 401: "API key is missing or invalid", 402: "No valid payment method or trial ended",
    404: "Not found", 408: "Request timeout", 409: "Conflict", 422: "Unprocessable entity",
    429: "Account rate limited, please throttle your requests", 500: "An unexpected server error occurred",
    502: "Bad gateway", 503: "Service unavailable", 504: "Gateway timeout",
}


@dataclass(kw_only=True)
class SimulatorSettings:
    """Run-time settings (``PUT /debug/config`` changes the first six).

    :param api_key: the key requests must carry (``Authorization: Bearer``) and webhooks are signed with.
    :param concurrency_limit: calls dialing or connected at once; default 20.
    :param concurrency_mode: ``reason`` (default) or ``429``, see :data:`CONCURRENCY_MODES`.
    :param webhook_url: where webhooks go when the call's agent override names none; None: not sent.
    :param not_found_status: 422 (default) or 404 for an unknown call id.
    :param unconnected_status: ``call_status`` of calls that never connected: ``ended`` (default) or ``not_connected``.
    :param seed: seed of the random mix and faults; None: the scenario's, else 0.
    :param webhook_timeout_s: per attempt, real seconds; default 10.
    :param webhook_retries: retries after a failed attempt; default 3.
    :param webhook_retry_delay_s: real seconds between attempts; default 1.
    :param webhook_max_in_flight: concurrent webhook requests; default 100.
    """

    api_key: str
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT
    concurrency_mode: str = DEFAULT_CONCURRENCY_MODE
    webhook_url: str | None = None
    not_found_status: int = DEFAULT_NOT_FOUND_STATUS
    unconnected_status: str = "ended"
    seed: int | None = None
    webhook_timeout_s: float = DEFAULT_WEBHOOK_TIMEOUT_S
    webhook_retries: int = DEFAULT_WEBHOOK_RETRIES
    webhook_retry_delay_s: float = DEFAULT_WEBHOOK_RETRY_DELAY_S
    webhook_max_in_flight: int = DEFAULT_WEBHOOK_MAX_IN_FLIGHT

    def update(self, raw: Mapping[str, Any]) -> None:
        """Apply a partial update from ``PUT /debug/config``; raises :class:`ScenarioError` naming the field."""
        checks: dict[str, Callable[[Any], bool]] = {
            "concurrency_limit": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "concurrency_mode": lambda v: v in CONCURRENCY_MODES,
            "webhook_url": lambda v: v is None or (isinstance(v, str) and v.startswith(("http://", "https://"))),
            "not_found_status": lambda v: v in (404, 422),
            "unconnected_status": lambda v: v in ("ended", "not_connected"),
            "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
        }
        if not isinstance(raw, Mapping):
            raise ScenarioError("config must be a JSON object")
        for name, value in raw.items():
            if name not in checks:
                raise ScenarioError(f"unknown config field {name!r} (known: {', '.join(checks)})")
            if not checks[name](value):
                raise ScenarioError(f"{name}: invalid value {value!r}")
        for name, value in raw.items():
            setattr(self, name, value)

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("api_key")
        return data


class Simulator:
    """The simulated workspace: calls, rules, faults, records and webhooks.

    :param settings: see :class:`SimulatorSettings`.
    :param scenario: outcome rules; default the random mix.
    :param faults: injected faults; default none.
    :param clock: the shared clock; default ``get_clock()``.
    """

    def __init__(self, *, settings: SimulatorSettings, scenario: Scenario | None = None,
                 faults: Faults | None = None, clock: Clock | None = None) -> None:
        self.settings = settings
        self.scenario = scenario or Scenario()
        self.faults = faults or Faults()
        self.clock = clock or get_clock()
        #: What the simulator started with, for :meth:`reset` with ``full=True``.
        self._initial = (replace(settings), self.scenario, self.faults.to_dict())
        self._webhook_session: aiohttp.ClientSession | None = None
        self._webhook_gate: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Per call, set when its latest webhook's first attempt is over: the call's next event waits for it, so
        #: a call's events arrive in the order of their instants even when two are due within milliseconds (a
        #: sped-up clock), while a failing event's retries never hold back the next one.
        self._last_delivery: dict[str, asyncio.Event] = {}
        self._reset_state()

    # -- state ---------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self.book = CallBook()
        self.records: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.webhook_counts: Counter[str] = Counter()
        self.webhook_log: deque[dict[str, Any]] = deque(maxlen=DEFAULT_WEBHOOK_LOG)
        self.rejected_for_concurrency = 0
        self.idempotent_replays = 0
        #: Calls by the ``idempotency_key`` of the create that made them.
        self.idempotency: dict[str, SimCall] = {}
        self._fault_rng = random.Random(f"{self.seed}|faults")

    @property
    def seed(self) -> int:
        if self.settings.seed is not None:
            return self.settings.seed
        return self.scenario.seed if self.scenario.seed is not None else 0

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def reset(self, *, full: bool = False) -> None:
        """Forget every call, record and counter. Scenario, faults and settings stay, unless ``full``:
        then they are put back to what the simulator started with (a fresh simulator, without a restart)."""
        for call in self.book.order:
            for handle in call.timers.values():
                handle.cancel()
        for task in list(self._tasks):
            task.cancel()
        if full:
            settings, self.scenario, faults = self._initial
            self.settings = replace(settings)
            self.faults = parse_faults(faults)
        self._reset_state()

    def set_scenario(self, scenario: Scenario) -> None:
        """Replace the rules; per-number dial counts restart so sequences start from their first entry."""
        self.scenario = scenario
        self.book.dial_counts.clear()
        self._fault_rng = random.Random(f"{self.seed}|faults")

    # -- operations ----------------------------------------------------------------------------------

    def replay(self, req: CreateRequest) -> SimCall | None:
        """The call an earlier create with the same ``idempotency_key`` made within the hour, else None.

        A key reused with another destination or caller id is refused (422), as a different request.
        """
        if not req.idempotency_key:
            return None
        known = self.idempotency.get(req.idempotency_key)
        if known is None or self.now_ms() - known.created_ms > IDEMPOTENCY_WINDOW_MS:
            return None
        if (known.request.to_number, known.request.from_number) != (req.to_number, req.from_number):
            raise ApiError(422, "idempotency_key was already used for a different request")
        return known

    def create_call(self, req: CreateRequest) -> SimCall:
        """Accept a valid create: apply the concurrency limit, plan the call, schedule its webhooks."""
        if self.scenario.from_numbers is not None and req.from_number not in self.scenario.from_numbers:
            raise ApiError(422, "from_number not found: it is not a number of this workspace")
        now = self.now_ms()
        over_limit = self.book.active_count(now) >= self.settings.concurrency_limit
        if over_limit and self.settings.concurrency_mode == "429":
            self.rejected_for_concurrency += 1
            raise ApiError(429, f"Concurrency limit reached ({self.settings.concurrency_limit} concurrent calls)")
        nth = self.book.dials(req.to_number)
        rng = random.Random(f"{self.seed}|{req.to_number}|{nth}")
        if over_limit:
            self.rejected_for_concurrency += 1
            plan = Plan(outcome="concurrency_limited", connect_ms=None, end_ms=now + CONCURRENCY_REFUSAL_MS,
                        reason="concurrency_limit_reached", final_status=self.settings.unconnected_status,
                        in_voicemail=False, successful=False, sentiment="Unknown", custom_analysis_data={})
        else:
            spec = self.scenario.pick(req.to_number, nth, rng)
            plan = plan_call(spec, created_ms=now, ring_duration_ms=req.ring_duration_ms,
                             max_call_duration_ms=req.max_call_duration_ms, rng=rng, params=self.scenario.params,
                             unconnected_status=self.settings.unconnected_status)
        call = SimCall.planned(call_id=f"call_{uuid.uuid4().hex}", seq=self.book.next_seq(), created_ms=now,
                               request=req, agent_id=req.agent_id or self.scenario.agent_id, plan=plan,
                               analysis_delay_ms=round(self.scenario.analysis_delay_s * 1000))
        self.book.add(call, now, refused=over_limit)
        if req.idempotency_key:
            self.idempotency[req.idempotency_key] = call
        self._schedule_webhooks(call, now)
        return call

    def get_call(self, call_id: str) -> SimCall:
        call = self.book.get(call_id)
        if call is None:
            raise ApiError(self.settings.not_found_status, f"Call {call_id} not found")
        return call

    def stop_call(self, call_id: str) -> None:
        call = self.get_call(call_id)
        now = self.now_ms()
        pending = set(call.timers)
        if not self.book.stop(call, now, unconnected_status=self.settings.unconnected_status):
            raise ApiError(400, f"Call {call_id} has already ended")
        for handle in call.timers.values():
            handle.cancel()
        call.timers.clear()
        events = call.request.webhook_events
        if "call_started" in pending and call.connect_ms is not None:
            self._schedule(call, "call_started", now, now)
        if "call_ended" in events:
            self._schedule(call, "call_ended", now, now)
        if "call_analyzed" in events and call.analyzed_ms is not None:
            self._schedule(call, "call_analyzed", call.analyzed_ms, now)

    def concurrency(self) -> dict[str, Any]:
        limit = self.settings.concurrency_limit
        return {"current_concurrency": self.book.active_count(self.now_ms()), "concurrency_limit": limit,
                "base_concurrency": limit, "purchased_concurrency": 0, "concurrency_purchase_limit": 0,
                "remaining_purchase_limit": 0, "concurrency_burst_enabled": False, "concurrency_burst_limit": 0,
                "reserved_inbound_concurrency": 0}

    def stats(self) -> dict[str, Any]:
        now = self.now_ms()
        return {
            "now_ms": now, "calls_created": len(self.book), "dials": sum(self.book.dial_counts.values()),
            "active": self.book.active_count(now), "max_active": self.book.max_active,
            "concurrency_limit": self.settings.concurrency_limit, "concurrency_mode": self.settings.concurrency_mode,
            "rejected_for_concurrency": self.rejected_for_concurrency, "idempotent_replays": self.idempotent_replays,
            "requests": dict(self.requests),
            "responses": dict(self.responses), "faults": dict(self.faults_injected),
            "webhooks": {**{k: 0 for k in ("delivered", "failed_attempts", "gave_up", "skipped_no_url")},
                         **dict(self.webhook_counts), "in_flight": len(self._tasks)},
        }

    # -- webhooks ------------------------------------------------------------------------------------

    def _schedule_webhooks(self, call: SimCall, now: int) -> None:
        events = call.request.webhook_events
        if "call_started" in events and call.connect_ms is not None:
            self._schedule(call, "call_started", call.connect_ms, now)
        if call.end_ms is not None:
            if "call_ended" in events:
                self._schedule(call, "call_ended", call.end_ms, now)
            analyzed = call.analyzed_ms
            if "call_analyzed" in events and analyzed is not None:
                self._schedule(call, "call_analyzed", analyzed, now)

    def _schedule(self, call: SimCall, name: str, at_ms: int, now: int) -> None:
        loop = asyncio.get_running_loop()
        delay_s = max(0.0, self.clock.real_seconds((at_ms - now) / 1000))
        due = loop.time() + delay_s
        call.timers[name] = loop.call_at(due, self._fire, call, name, at_ms, due)

    def _fire(self, call: SimCall, name: str, at_ms: int, due: float) -> None:
        call.timers.pop(name, None)
        url = call.request.webhook_url or self.settings.webhook_url
        if not url:
            self.webhook_counts["skipped_no_url"] += 1
            return
        previous = self._last_delivery.get(call.call_id)
        first_done = self._last_delivery[call.call_id] = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            self._deliver(call, name, at_ms, url, due, after=previous, first_done=first_done))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._delivered(call.call_id, first_done, done))

    def _delivered(self, call_id: str, first_done: asyncio.Event, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        first_done.set()
        if self._last_delivery.get(call_id) is first_done:
            del self._last_delivery[call_id]

    async def _deliver(self, call: SimCall, name: str, at_ms: int, url: str, due: float, *,
                       after: asyncio.Event | None = None, first_done: asyncio.Event | None = None) -> None:
        if after is not None:
            await after.wait()   # the call's previous event has had its first attempt
        payload = {"event": name, "call": call.view(at_ms, analysis=name != "call_ended")}
        raw = json.dumps(payload, separators=(",", ":")).encode()
        assert self._webhook_session is not None and self._webhook_gate is not None
        loop = asyncio.get_running_loop()
        entry: dict[str, Any] = {"event": name, "call_id": call.call_id, "url": url, "at_ms": at_ms,
                                 "attempts": 0, "ok": False, "status": None}
        timeout = aiohttp.ClientTimeout(total=self.settings.webhook_timeout_s)
        for attempt in range(1 + self.settings.webhook_retries):
            if attempt:
                await asyncio.sleep(self.settings.webhook_retry_delay_s)
            async with self._webhook_gate:
                if attempt == 0:
                    entry["lag_ms"] = round((loop.time() - due) * 1000, 1)
                entry["attempts"] = attempt + 1
                signature = sign_webhook(raw, self.settings.api_key)
                headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature}
                try:
                    async with self._webhook_session.post(url, data=raw, headers=headers, timeout=timeout) as resp:
                        await resp.read()
                        entry["status"] = resp.status
                        entry["ok"] = 200 <= resp.status < 300
                except (aiohttp.ClientError, TimeoutError) as exc:
                    entry["status"] = type(exc).__name__
            if first_done is not None:
                first_done.set()
            if entry["ok"]:
                break
            self.webhook_counts["failed_attempts"] += 1
        entry["delivered_at"] = self.now_ms()
        self.webhook_counts["delivered" if entry["ok"] else "gave_up"] += 1
        if not entry["ok"]:
            event(log, "simulator_webhook_gave_up", call_id=call.call_id, webhook=name, status=entry["status"])
        self.webhook_log.append(entry)

    async def start(self) -> None:
        """Open the webhook session (aiohttp start-up hook)."""
        self._webhook_gate = asyncio.Semaphore(self.settings.webhook_max_in_flight)
        self._webhook_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.settings.webhook_max_in_flight))

    async def stop(self) -> None:
        """Cancel timers and deliveries, close the webhook session (aiohttp clean-up hook)."""
        self.reset()
        if self._webhook_session is not None:
            await self._webhook_session.close()


# -- HTTP --------------------------------------------------------------------------------------------

Handler = Callable[[web.Request, Any, dict[str, Any]], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response({"status": "error", "message": message}, status=status, headers=headers)


async def _trickle(request: web.Request, response: web.Response, seconds: float) -> web.StreamResponse:
    """Send ``response``'s status and headers at once, then its body a byte at a time over ``seconds``: every
    read of the client gets something well within any read timeout, so only a whole-request deadline ends it."""
    body = bytes(response.body or b"")  # type: ignore[arg-type]
    out = web.StreamResponse(status=response.status, headers={k: v for k, v in response.headers.items()
                                                              if k.lower() != "content-length"})
    out.content_length = len(body)
    pause = seconds / max(1, len(body))
    try:
        await out.prepare(request)
        for i in range(len(body)):
            await out.write(body[i:i + 1])
            await asyncio.sleep(pause)
        await out.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client gave up on the answer
    return out


def _drop(request: web.Request) -> web.Response:
    """Close the connection without answering (the client sees a disconnect)."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=500)


class _Api:
    """The aiohttp handlers around one :class:`Simulator`."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def endpoint(self, name: str, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap a Retell handler: count, record creates, check auth, inject faults, map errors."""
        sim = self.sim

        async def wrapped(request: web.Request) -> web.StreamResponse:
            sim.requests[name] += 1
            record: dict[str, Any] = {"received_at": sim.now_ms(), "body": None, "call_id": None, "status": None}
            raw = await request.read() if request.method == "POST" else b""
            body, bad_json = _parse_json(raw)
            if name == "create_phone_call":
                record["body"] = body if not bad_json else raw.decode("utf-8", "replace")
                sim.records.append(record)
            fault = None
            try:
                _authorize(request, sim.settings.api_key)
                fault = sim.faults.pick(name, sim._fault_rng)
                if fault is not None:
                    sim.faults_injected[fault] += 1
                    record["fault"] = fault
                    if fault == "drop_before":
                        record["status"] = "dropped"
                        return _drop(request)
                    if fault.isdigit():
                        raise ApiError(int(fault), _FAULT_MESSAGES.get(int(fault), "error"))
                    if fault == "late":
                        await asyncio.sleep(sim.faults.slow_ms / 1000)
                if bad_json:
                    raise ApiError(400, "request body is not valid JSON")
                response = await handler(request, body, record)
            except ApiError as exc:
                headers = None
                if exc.status == 429 and fault == "429":
                    ms = sim.faults.retry_after_ms
                    headers = {"retry-after-ms": str(ms), "retry-after": str(math.ceil(ms / 1000))}
                response = _error(exc.status, exc.message, headers)
            if fault == "slow":
                await asyncio.sleep(sim.faults.slow_ms / 1000)
            if fault == "trickle" and isinstance(response, web.Response):
                record["status"] = response.status
                sim.responses[f"{name}:{response.status}"] += 1
                return await _trickle(request, response, sim.faults.slow_ms / 1000)
            if fault == "drop":
                record["status"] = "dropped"
                sim.responses[f"{name}:dropped"] += 1
                return _drop(request)
            record["status"] = response.status
            sim.responses[f"{name}:{response.status}"] += 1
            return response

        return wrapped

    async def create(self, request: web.Request, body: Any, record: dict[str, Any]) -> web.StreamResponse:
        req = parse_create_body(body)
        call = self.sim.replay(req)
        if call is not None:
            # The same key within the hour: the original call, nothing dialed.
            self.sim.idempotent_replays += 1
            record["idempotent_replay"] = True
        else:
            call = self.sim.create_call(req)
        record["call_id"] = call.call_id
        return web.json_response(call.view(call.created_ms), status=201)

    async def get(self, request: web.Request, body: Any, record: dict[str, Any]) -> web.StreamResponse:
        call = self.sim.get_call(request.match_info["call_id"])
        return web.json_response(call.view(self.sim.now_ms()))

    async def stop(self, request: web.Request, body: Any, record: dict[str, Any]) -> web.StreamResponse:
        self.sim.stop_call(request.match_info["call_id"])
        return web.Response(status=204)

    async def list(self, request: web.Request, body: Any, record: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(self.sim.book.list(parse_list_body(body), self.sim.now_ms()))

    async def concurrency(self, request: web.Request, body: Any, record: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(self.sim.concurrency())

    # -- debug ---------------------------------------------------------------------------------------

    async def debug_calls(self, request: web.Request) -> web.StreamResponse:
        records = self.sim.records
        to_number = request.query.get("to_number")
        if to_number:
            records = [r for r in records if isinstance(r["body"], dict) and r["body"].get("to_number") == to_number]
        if request.query.get("created") in ("1", "true"):
            records = [r for r in records if r["call_id"]]
        if request.query.get("timeline") in ("1", "true"):
            # Each record with its call's life: when it was created, connected and ended (or was stopped).
            now = self.sim.now_ms()
            records = [{**r, "call": self._timeline(r["call_id"], now)} if r["call_id"] else r for r in records]
        return web.json_response(records)

    def _timeline(self, call_id: str, now: int) -> dict[str, Any] | None:
        call = self.sim.book.get(call_id)
        if call is None:
            return None
        debug = call.debug(now)
        return {k: debug[k] for k in ("created_ms", "connect_ms", "end_ms", "stopped_ms", "outcome", "status")}

    async def debug_call(self, request: web.Request) -> web.StreamResponse:
        call = self.sim.book.get(request.match_info["call_id"])
        if call is None:
            return _error(404, "no such call")
        now = self.sim.now_ms()
        return web.json_response({**call.debug(now), "call": call.view(now), "pending_webhooks": sorted(call.timers)})

    async def debug_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.sim.stats())

    async def debug_webhooks(self, request: web.Request) -> web.StreamResponse:
        entries = list(self.sim.webhook_log)
        call_id = request.query.get("call_id")
        if call_id:
            entries = [e for e in entries if e["call_id"] == call_id]
        return web.json_response(entries)

    async def get_scenario(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.sim.scenario.raw)

    async def put_scenario(self, request: web.Request) -> web.StreamResponse:
        try:
            self.sim.set_scenario(parse_scenario(await _json_body(request)))
        except ScenarioError as exc:
            return _error(400, str(exc))
        return web.json_response(self.sim.scenario.raw)

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.sim.faults.to_dict())

    async def put_faults(self, request: web.Request) -> web.StreamResponse:
        """Replace the faults (fields not given are reset to none); ``PATCH`` updates only the fields given."""
        try:
            base = self.sim.faults if request.method == "PATCH" else None
            self.sim.faults = parse_faults(await _json_body(request), base=base)
        except ScenarioError as exc:
            return _error(400, str(exc))
        return web.json_response(self.sim.faults.to_dict())

    async def get_config(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.sim.settings.public())

    async def put_config(self, request: web.Request) -> web.StreamResponse:
        try:
            self.sim.settings.update(await _json_body(request))
        except ScenarioError as exc:
            return _error(400, str(exc))
        return web.json_response(self.sim.settings.public())

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self.sim.reset(full=request.query.get("full") in ("1", "true"))
        return web.json_response({"ok": True})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "now_ms": self.sim.now_ms(), "speed": self.sim.clock.speed})


def _parse_json(raw: bytes) -> tuple[Any, bool]:
    if not raw.strip():
        return None, False
    try:
        return json.loads(raw), False
    except ValueError:
        return None, True


async def _json_body(request: web.Request) -> Any:
    body, bad = _parse_json(await request.read())
    if bad:
        raise ScenarioError("request body is not valid JSON")
    return body


def _authorize(request: web.Request, api_key: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "API key is missing: send Authorization: Bearer <key>")
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "API key is invalid")


def build_app(sim: Simulator) -> web.Application:
    """The aiohttp application serving Retell's paths and the debug endpoints for ``sim``."""
    api = _Api(sim)
    app = web.Application(client_max_size=1024 ** 2)
    ep = api.endpoint
    app.router.add_post("/v2/create-phone-call", ep("create_phone_call", api.create))
    app.router.add_get("/v2/get-call/{call_id}", ep("get_call", api.get))
    app.router.add_post("/v2/stop-call/{call_id}", ep("stop_call", api.stop))
    app.router.add_post("/v3/list-calls", ep("list_calls", api.list))
    app.router.add_get("/get-concurrency", ep("get_concurrency", api.concurrency))
    app.router.add_get("/debug/calls", api.debug_calls)
    app.router.add_get("/debug/calls/{call_id}", api.debug_call)
    app.router.add_get("/debug/stats", api.debug_stats)
    app.router.add_get("/debug/webhooks", api.debug_webhooks)
    app.router.add_get("/debug/scenario", api.get_scenario)
    app.router.add_put("/debug/scenario", api.put_scenario)
    app.router.add_get("/debug/faults", api.get_faults)
    app.router.add_put("/debug/faults", api.put_faults)
    app.router.add_patch("/debug/faults", api.put_faults)
    app.router.add_get("/debug/config", api.get_config)
    app.router.add_put("/debug/config", api.put_config)
    app.router.add_patch("/debug/config", api.put_config)
    app.router.add_post("/debug/reset", api.reset)
    app.router.add_get("/debug/health", api.health)

    async def on_startup(_: web.Application) -> None:
        await sim.start()

    async def on_cleanup(_: web.Application) -> None:
        await sim.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def start_server(sim: Simulator, *, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``sim`` on ``host:port`` (0: any free port). Returns the runner (``await runner.cleanup()``) and port."""
    runner = web.AppRunner(build_app(sim), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    server = site._server   # the asyncio.Server the site listens with (None only before start)
    sockets = server.sockets if isinstance(server, asyncio.Server) else []
    actual = sockets[0].getsockname()[1] if sockets else port
    return runner, actual
