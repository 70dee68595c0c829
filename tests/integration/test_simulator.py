"""The simulator over HTTP: outcome rules, overrides, stop-call, the concurrency limit, signed
webhooks with retries, request validation, faults and the debug endpoints."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.clock import Clock, started_at
from shared.provider.webhooks import verify_webhook
from tests.helpers import wait_until
from workers.dev.simulator.process import SimulatorProcess

pytestmark = pytest.mark.slow   # the simulator process

FROM = "+14155550100"
N = {name: f"+1415555{i:04d}" for i, name in enumerate(
    ["answer", "no_answer", "busy", "voicemail", "invalid", "failed", "stuck", "third", "long", "slow_pick"], start=1)}
SCENARIO = {
    "numbers": {
        N["answer"]: {"outcome": "answer", "ring_s": 3, "duration_s": 45, "successful": True},
        N["no_answer"]: "no_answer", N["busy"]: "busy", N["voicemail"]: {"outcome": "voicemail", "ring_s": 15},
        N["invalid"]: "invalid", N["failed"]: "failed", N["stuck"]: "stuck",
        N["third"]: {"sequence": ["no_answer", "busy", {"outcome": "answer", "duration_s": 30}]},
        N["long"]: {"outcome": "answer", "ring_s": 2, "duration_s": 900},
        N["slow_pick"]: {"outcome": "answer", "ring_s": 40, "duration_s": 30},
    },
    "analysis_delay_s": 2,
}
FAST = 200.0  # simulated seconds per real second


def fast_clock() -> Clock:
    return started_at(datetime(2026, 3, 9, 14, 0, tzinfo=UTC), speed=FAST)


#: The clock of this module's simulators: one value, so that tests share pooled simulators.
CLOCK = fast_clock()


def http(sim: SimulatorProcess, method: str, path: str, body: Any = None, *, key: str | None = "default",
         raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
    """One request; returns (status, decoded JSON or None, headers) for any status."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {sim.api_key if key == 'default' else key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(sim.base_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            payload = resp.read()
            return resp.status, json.loads(payload) if payload else None, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, json.loads(payload) if payload else None, dict(exc.headers)


def create(sim: SimulatorProcess, to_number: str, **extra: Any) -> dict[str, Any]:
    status, body, _ = http(sim, "POST", "/v2/create-phone-call", {"from_number": FROM, "to_number": to_number, **extra})
    assert status == 201, body
    return body


def get(sim: SimulatorProcess, call_id: str) -> dict[str, Any]:
    status, body, _ = http(sim, "GET", f"/v2/get-call/{call_id}")
    assert status == 200, body
    return body


def analyzed(sim: SimulatorProcess, call_id: str) -> dict[str, Any]:
    return wait_until(lambda: (c := get(sim, call_id)).get("call_analysis") and c, timeout_s=30,
                      message=f"analysis of {call_id}")


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return simulator_factory(clock=CLOCK, scenario=SCENARIO)


class WebhookSink:
    """A real HTTP server that records webhook requests; ``fail_next`` makes it answer 500."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.fail_next = 0
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with sink.lock:
                    failing = sink.fail_next > 0
                    sink.fail_next -= 1 if failing else 0
                    sink.received.append({"path": self.path, "body": body, "headers": dict(self.headers),
                                          "answered": 500 if failing else 204})
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a 20 ms poll: close() (shutdown) returns within it instead of the default half second
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def events(self, call_id: str | None = None, *, path: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            items = list(self.received)
        out = []
        for item in items:
            payload = json.loads(item["body"])
            if (call_id is None or payload["call"]["call_id"] == call_id) and (path is None or item["path"] == path):
                out.append((payload["event"], payload))
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    s = WebhookSink()
    yield s
    s.close()


# -- outcomes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,status,reason,connected,voicemail", [
    ("answer", "ended", None, True, False),
    ("no_answer", "ended", "dial_no_answer", False, False),
    ("busy", "ended", "dial_busy", False, False),
    ("voicemail", "ended", "voicemail_reached", True, True),
    ("invalid", "ended", "invalid_destination", False, False),
    ("failed", "ended", "dial_failed", False, False),
])
def test_outcome_rules(sim, name, status, reason, connected, voicemail):
    call = analyzed(sim, create(sim, N[name], metadata={"job_id": "j"})["call_id"])
    assert call["call_status"] == status and call["to_number"] == N[name] and call["metadata"] == {"job_id": "j"}
    if reason:
        assert call["disconnection_reason"] == reason
    else:
        assert call["disconnection_reason"] in ("user_hangup", "agent_hangup")
    assert ("start_timestamp" in call) is connected
    assert call["call_analysis"]["in_voicemail"] is voicemail
    assert call["end_timestamp"] and call["duration_ms"] == (call["end_timestamp"] - call["start_timestamp"]
                                                             if connected else 0)
    if name == "answer":
        assert call["duration_ms"] == 45_000 and call["call_analysis"]["call_successful"] is True
        assert call["transcript"] and call["call_cost"]["total_duration_seconds"] == 45


def test_answer_goes_registered_ongoing_ended(sim):
    created = create(sim, N["answer"])
    call_id = created["call_id"]
    seen = [created["call_status"]]

    def until_ended() -> bool:
        status = get(sim, call_id)["call_status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "ended"

    wait_until(until_ended, interval_s=0.002, message="ended")
    assert seen[0] == "registered" and seen[-1] == "ended" and "ongoing" in seen


def test_answers_on_the_third_try_counted_per_number(sim):
    outcomes = [analyzed(sim, create(sim, N["third"])["call_id"]) for _ in range(4)]
    assert [c["disconnection_reason"] for c in outcomes[:2]] == ["dial_no_answer", "dial_busy"]
    assert all("start_timestamp" in c for c in outcomes[2:])
    assert len(sim.dials(N["third"])) == 4


def test_random_mix_is_deterministic_per_seed(simulator_factory):
    numbers = [f"+1212555{i:04d}" for i in range(40)]

    def outcomes(seed: int) -> list[str]:
        s = simulator_factory(seed=seed, concurrency_limit=1000)
        return [s.call_debug(create(s, n)["call_id"])["outcome"] for n in numbers]

    first, again, other = outcomes(7), outcomes(7), outcomes(8)
    assert first == again and first != other
    assert len(set(first)) >= 3  # a mix, not one outcome


def test_ring_duration_override_is_honoured(sim):
    default = sim.call_debug(create(sim, N["no_answer"])["call_id"])
    short = sim.call_debug(create(sim, N["no_answer"], agent_override={"agent": {"ring_duration_ms": 10_000}})[
        "call_id"])
    assert default["end_ms"] - default["created_ms"] == 30_000
    assert short["end_ms"] - short["created_ms"] == 10_000 and short["ring_duration_ms"] == 10_000
    # answers after 40 s: rings out with 30 s, connects with 45 s
    rings_out = analyzed(sim, create(sim, N["slow_pick"])["call_id"])
    patient = analyzed(sim, create(sim, N["slow_pick"], agent_override={"agent": {"ring_duration_ms": 45_000}})[
        "call_id"])
    assert rings_out["disconnection_reason"] == "dial_no_answer" and "start_timestamp" not in rings_out
    assert "start_timestamp" in patient


def test_max_call_duration_override_is_honoured(sim):
    call = analyzed(sim, create(sim, N["long"], agent_override={"agent": {"max_call_duration_ms": 60_000}})["call_id"])
    assert call["disconnection_reason"] == "max_duration_reached" and call["duration_ms"] == 60_000


def test_stuck_call_ignores_max_duration_until_stopped(sim, sink):
    sim.configure(webhook_url=sink.url)
    call_id = create(sim, N["stuck"], agent_override={"agent": {"max_call_duration_ms": 60_000}})["call_id"]
    # 120 simulated seconds: well past max_call_duration_ms
    wait_until(lambda: sim.health()["now_ms"] - sim.call_debug(call_id)["created_ms"] > 120_000, message="time")
    assert get(sim, call_id)["call_status"] == "ongoing"
    status, body, _ = http(sim, "POST", f"/v2/stop-call/{call_id}")
    assert status == 204 and body is None
    call = analyzed(sim, call_id)
    assert call["call_status"] == "ended" and call["disconnection_reason"] == "manual_stopped"
    status, body, _ = http(sim, "POST", f"/v2/stop-call/{call_id}")
    assert status == 400 and body["status"] == "error" and "already ended" in body["message"]
    wait_until(lambda: [e for e, _ in sink.events(call_id)] == ["call_started", "call_ended", "call_analyzed"],
               message="webhooks of the stopped call")


def test_stopping_a_ringing_call_never_connects_it(sim, sink):
    sim.configure(webhook_url=sink.url)
    call_id = create(sim, N["no_answer"])["call_id"]
    assert http(sim, "POST", f"/v2/stop-call/{call_id}")[0] == 204
    call = analyzed(sim, call_id)
    assert call["disconnection_reason"] == "manual_stopped" and "start_timestamp" not in call
    wait_until(lambda: [e for e, _ in sink.events(call_id)] == ["call_ended", "call_analyzed"], message="webhooks")


def test_unconnected_status_can_be_not_connected(simulator_factory):
    s = simulator_factory(clock=CLOCK, scenario=SCENARIO, unconnected_status="not_connected")
    assert analyzed(s, create(s, N["busy"])["call_id"])["call_status"] == "not_connected"
    assert analyzed(s, create(s, N["answer"])["call_id"])["call_status"] == "ended"


# -- concurrency --------------------------------------------------------------------------------------


def test_concurrency_limit_429_mode(simulator_factory):
    s = simulator_factory(clock=CLOCK, scenario=SCENARIO, concurrency_limit=3, concurrency_mode="429")
    calls = [create(s, N["stuck"]) for _ in range(3)]
    status, body, _ = http(s, "POST", "/v2/create-phone-call", {"from_number": FROM, "to_number": N["busy"]})
    assert status == 429 and body == {"status": "error", "message": body["message"]} and "oncurrency" in body["message"]
    assert http(s, "GET", "/get-concurrency")[1]["current_concurrency"] == 3
    assert http(s, "POST", f"/v2/stop-call/{calls[0]['call_id']}")[0] == 204
    create(s, N["busy"])  # room again
    stats = s.stats()
    assert stats["max_active"] == 3 and stats["rejected_for_concurrency"] == 1 and stats["dials"] == 4


def test_concurrency_limit_reason_mode(simulator_factory):
    s = simulator_factory(clock=CLOCK, scenario=SCENARIO, concurrency_limit=2)
    for _ in range(2):
        create(s, N["stuck"])
    refused = analyzed(s, create(s, N["third"])["call_id"])
    assert refused["disconnection_reason"] == "concurrency_limit_reached" and "start_timestamp" not in refused
    assert s.stats()["max_active"] == 2 and s.stats()["rejected_for_concurrency"] == 1
    s.configure(concurrency_limit=10)
    # the refused call was not a dial: the number's sequence starts from its first entry
    assert analyzed(s, create(s, N["third"])["call_id"])["disconnection_reason"] == "dial_no_answer"
    assert len(s.dials(N["third"])) == 2  # both creates made a call object


def test_concurrency_frees_as_calls_end(sim):
    sim.configure(concurrency_limit=2, concurrency_mode="429")
    for _ in range(2):
        create(sim, N["busy"])  # ends within 4 simulated seconds
    wait_until(lambda: http(sim, "GET", "/get-concurrency")[1]["current_concurrency"] == 0, message="calls end")
    create(sim, N["busy"])


# -- webhooks -----------------------------------------------------------------------------------------


def test_webhooks_are_sent_in_order_and_signed(sim, sink):
    sim.configure(webhook_url=sink.url + "/hooks")
    call_id = create(sim, N["answer"], metadata={"job_id": "w1"})["call_id"]
    wait_until(lambda: len(sink.events(call_id)) == 3, message="three webhooks")
    events = sink.events(call_id)
    assert [e for e, _ in events] == ["call_started", "call_ended", "call_analyzed"]
    with sink.lock:
        requests = [r for r in sink.received if json.loads(r["body"])["call"]["call_id"] == call_id]
    for item in requests:
        signature = item["headers"].get("X-Retell-Signature") or item["headers"].get("x-retell-signature")
        assert verify_webhook(item["body"], signature, sim.api_key)
        assert not verify_webhook(item["body"], signature, "key_other")
        assert item["path"] == "/hooks"
    started, ended, done = (p["call"] for _, p in events)
    assert started["call_status"] == "ongoing" and "end_timestamp" not in started
    assert ended["call_status"] == "ended" and "call_analysis" not in ended and ended["metadata"] == {"job_id": "w1"}
    assert done["call_analysis"]["call_successful"] is True


def test_no_call_started_for_calls_that_never_connect(sim, sink):
    sim.configure(webhook_url=sink.url)
    call_id = create(sim, N["busy"])["call_id"]
    wait_until(lambda: len(sink.events(call_id)) == 2, message="two webhooks")
    assert [e for e, _ in sink.events(call_id)] == ["call_ended", "call_analyzed"]
    assert "metadata" not in sink.events(call_id)[0][1]["call"]  # omitted when never set


def test_failed_webhooks_are_retried_up_to_three_times(simulator_factory, sink):
    s = simulator_factory(clock=CLOCK, scenario=SCENARIO, webhook_url=sink.url, webhook_retry_delay_s=0.05)
    sink.fail_next = 2
    call_id = create(s, N["busy"], agent_override={"agent": {"webhook_events": ["call_ended"]}})["call_id"]
    [delivery] = wait_until(lambda: s.webhooks(call_id), message="delivery")
    assert delivery["ok"] and delivery["attempts"] == 3 and delivery["event"] == "call_ended"
    sink.fail_next = 10
    other = create(s, N["busy"], agent_override={"agent": {"webhook_events": ["call_ended"]}})["call_id"]
    [gave_up] = wait_until(lambda: s.webhooks(other), message="giving up")
    assert not gave_up["ok"] and gave_up["attempts"] == 4  # 1 + 3 retries
    assert s.stats()["webhooks"]["gave_up"] == 1


def test_agent_webhook_url_and_events_override_the_default(sim, sink):
    call_id = create(sim, N["busy"], agent_override={"agent": {"webhook_url": sink.url + "/agent",
                                                               "webhook_events": ["call_analyzed"]}})["call_id"]
    wait_until(lambda: sink.events(call_id), message="webhook")
    assert [(e, p["call"]["call_id"]) for e, p in sink.events(call_id, path="/agent")] == [("call_analyzed", call_id)]


# -- validation, auth, errors ---------------------------------------------------------------------


@pytest.mark.parametrize("body,words", [
    ({"to_number": N["busy"]}, "from_number is required"),
    ({"from_number": FROM}, "to_number is required"),
    ({"from_number": FROM, "to_number": "14155550101"}, "E.164"),
    ({"from_number": FROM, "to_number": "+1 415 555 0101"}, "E.164"),
    ({"from_number": 14155550100, "to_number": N["busy"]}, "from_number must be a string"),
    ({"from_number": FROM, "to_number": N["busy"], "ring_timeout": 30}, "unknown field"),
    ({"from_number": FROM, "to_number": N["busy"], "metadata": ["x"]}, "metadata must be an object"),
    ({"from_number": FROM, "to_number": N["busy"], "retell_llm_dynamic_variables": {"a": 1}}, "must be a string"),
    ({"from_number": FROM, "to_number": N["busy"], "agent_override": {"agent": {"max_call_duration_ms": 10}}},
     "between"),
])
def test_bad_create_bodies_are_rejected_like_retell(sim, body, words):
    status, answer, _ = http(sim, "POST", "/v2/create-phone-call", body)
    assert status == 400 and answer["status"] == "error" and words in answer["message"]
    assert sim.dials() == [] and sim.calls()[-1]["status"] == 400


def test_invalid_json_is_400(sim):
    status, answer, _ = http(sim, "POST", "/v2/create-phone-call", raw=b"{not json")
    assert status == 400 and answer["status"] == "error"


@pytest.mark.parametrize("key", [None, "key_wrong", ""])
@pytest.mark.parametrize("method,path", [("POST", "/v2/create-phone-call"), ("GET", "/v2/get-call/call_x"),
                                         ("POST", "/v2/stop-call/call_x"), ("POST", "/v3/list-calls"),
                                         ("GET", "/get-concurrency")])
def test_bad_auth_is_401_everywhere(sim, key, method, path):
    body = {"from_number": FROM, "to_number": N["busy"]} if method == "POST" else None
    status, answer, _ = http(sim, method, path, body, key=key)
    assert status == 401 and answer["status"] == "error" and answer["message"]
    assert sim.dials() == []


def test_from_numbers_restrict_the_caller_id(sim):
    sim.set_scenario({**SCENARIO, "from_numbers": ["+14155550199"]})
    status, answer, _ = http(sim, "POST", "/v2/create-phone-call", {"from_number": FROM, "to_number": N["busy"]})
    assert status == 422 and "from_number" in answer["message"]
    assert http(sim, "POST", "/v2/create-phone-call",
                {"from_number": "+14155550199", "to_number": N["busy"]})[0] == 201


def test_fault_rates_and_retry_after(sim):
    sim.set_faults(rate_429=1.0, retry_after_ms=2500)
    status, answer, headers = http(sim, "GET", "/get-concurrency")
    assert status == 429 and answer["status"] == "error"
    assert headers["retry-after-ms"] == "2500" and headers["retry-after"] == "3"
    sim.set_faults(rate_500=1.0, endpoints=["create_phone_call"])
    assert http(sim, "GET", "/get-concurrency")[0] == 200
    assert http(sim, "POST", "/v2/create-phone-call", {"from_number": FROM, "to_number": N["busy"]})[0] == 500
    sim.set_faults()
    create(sim, N["busy"])
    assert sim.stats()["faults"] == {"429": 1, "500": 1}


def test_invalid_fault_and_scenario_updates_are_refused(sim):
    for path, body, words in [("/debug/faults", {"rate_429": 3}, "rate_429"),
                              ("/debug/scenario", {"numbers": {N["busy"]: "exploded"}}, "outcome"),
                              ("/debug/config", {"concurrency_mode": "queue"}, "concurrency_mode")]:
        status, answer, _ = http(sim, "PUT", path, body, key=None)
        assert status == 400 and words in answer["message"]


def test_scenario_can_be_replaced_at_run_time(sim):
    assert analyzed(sim, create(sim, N["busy"])["call_id"])["disconnection_reason"] == "dial_busy"
    sim.set_scenario({"numbers": {N["busy"]: "invalid"}, "analysis_delay_s": 0})
    assert analyzed(sim, create(sim, N["busy"])["call_id"])["disconnection_reason"] == "invalid_destination"
    assert http(sim, "GET", "/debug/scenario", key=None)[1] == {"numbers": {N["busy"]: "invalid"},
                                                                "analysis_delay_s": 0}


# -- list, records, stats, reset ----------------------------------------------------------------------


def test_list_calls_v3_filters(sim):
    a = create(sim, N["busy"], metadata={"job_id": "ja", "attempt": 1})
    create(sim, N["busy"], metadata={"job_id": "jb", "attempt": 1})
    create(sim, N["stuck"], metadata={"job_id": "ja", "attempt": 2})
    status, page, _ = http(sim, "POST", "/v3/list-calls", {"filter_criteria": {
        "to_number": {"type": "string", "op": "eq", "value": N["busy"]},
        "metadata": [{"type": "string", "op": "eq", "key": "job_id", "value": "ja"}]}})
    assert status == 200 and [c["call_id"] for c in page["items"]] == [a["call_id"]] and page["has_more"] is False
    _, ongoing, _ = http(sim, "POST", "/v3/list-calls", {"filter_criteria": {
        "call_status": {"type": "enum", "op": "in", "value": ["ongoing", "registered"]},
        "to_number": {"type": "string", "op": "eq", "value": N["stuck"]}}})
    assert len(ongoing["items"]) == 1
    status, bad, _ = http(sim, "POST", "/v3/list-calls", {"filter_criteria": {"to_number": "x"}})
    assert status == 400 and bad["status"] == "error"


def test_debug_calls_records_every_create_on_the_shared_clock(simulator_factory):
    clock = fast_clock()
    s = simulator_factory(clock=clock, scenario=SCENARIO)
    before = clock.now_ms()
    body = {"from_number": FROM, "to_number": N["busy"], "metadata": {"job_id": "jr", "attempt": 2}}
    made = create(s, N["busy"], metadata=body["metadata"])
    after = clock.now_ms()
    http(s, "POST", "/v2/create-phone-call", {"from_number": FROM})  # rejected: recorded, no call
    records = s.calls()
    assert len(records) == 2
    first, second = records
    assert before <= first["received_at"] <= after
    assert first["body"] == body and first["call_id"] == made["call_id"] and first["status"] == 201
    assert second["call_id"] is None and second["status"] == 400
    assert s.dials() == [first] and s.calls(to_number=N["busy"]) == [first]


def test_dropped_create_is_recorded_with_its_call(sim):
    sim.script_faults("create", "drop")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        http(sim, "POST", "/v2/create-phone-call", {"from_number": FROM, "to_number": N["busy"]})
    [record] = sim.calls()
    assert record["call_id"] and record["fault"] == "drop" and record["status"] == "dropped"
    assert get(sim, record["call_id"])["to_number"] == N["busy"]


def test_a_repeated_idempotency_key_replays_the_original_call_and_dials_nothing(sim):
    first = create(sim, N["answer"], idempotency_key="attempt-1")
    again = create(sim, N["answer"], idempotency_key="attempt-1")
    assert again["call_id"] == first["call_id"]
    other = create(sim, N["answer"], idempotency_key="attempt-2")
    assert other["call_id"] != first["call_id"]
    records = sim.calls()
    assert [r.get("idempotent_replay", False) for r in records] == [False, True, False]
    assert records[1]["call_id"] == first["call_id"] and records[1]["status"] == 201
    stats = sim.stats()
    assert stats["dials"] == 2 and stats["calls_created"] == 2 and stats["idempotent_replays"] == 1
    assert [d["call_id"] for d in sim.dials()] == [first["call_id"], other["call_id"]]
    status, body, _ = http(sim, "POST", "/v2/create-phone-call",
                           {"from_number": FROM, "to_number": N["busy"], "idempotency_key": "attempt-1"})
    assert status == 422 and "idempotency_key" in body["message"]   # the same key for another request


def test_an_idempotency_key_is_honoured_for_one_hour_of_the_shared_clock(simulator_factory):
    clock = started_at(datetime(2026, 3, 9, 14, 0, tzinfo=UTC), speed=36_000)   # an hour is 0.1 real seconds
    s = simulator_factory(clock=clock, scenario=SCENARIO)
    first = create(s, N["answer"], idempotency_key="attempt-9")
    wait_until(lambda: s.stats()["now_ms"] - first_created(s) > 3_600_000, timeout_s=10)
    later = create(s, N["answer"], idempotency_key="attempt-9")
    assert later["call_id"] != first["call_id"] and s.stats()["dials"] == 2


def first_created(sim: SimulatorProcess) -> int:
    return sim.calls()[0]["received_at"]


def test_stats_and_reset(sim):
    calls = [create(sim, N["stuck"]) for _ in range(3)]
    stats = sim.stats()
    assert stats["calls_created"] == 3 and stats["active"] == 3 and stats["max_active"] == 3
    assert stats["requests"]["create_phone_call"] == 3 and stats["responses"]["create_phone_call:201"] == 3
    sim.reset()
    after = sim.stats()
    assert after["calls_created"] == 0 and after["active"] == 0 and after["max_active"] == 0 and sim.calls() == []
    assert http(sim, "GET", f"/v2/get-call/{calls[0]['call_id']}")[0] == 422
