"""POST /webhooks/retell against the real app, the simulator's calls and real signatures.

Each job is dialed through the real pipeline (its call lives in the simulator); no dramatiq worker
runs, so only the webhook (or a poll the test makes itself) can finalize it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.clock import started_at, use_clock
from shared.domain import states
from shared.domain.results import analysis_of, read_analysis
from shared.metrics import REGISTRY
from shared.provider.webhooks import SIGNATURE_HEADER, sign_webhook
from shared.stores import attempts as attempt_states
from tests.fixtures.web import WebServer, pipeline_for
from tests.helpers import wait_until
from workers.runtime import build_runtime

pytestmark = pytest.mark.slow   # the simulator process

BUSY = "+56961234501"
ANSWER = "+56961234502"
ANSWER_2 = "+56961234503"
STUCK = "+56961234504"
SCENARIO = {"numbers": {BUSY: "busy", ANSWER: {"outcome": "answer", "duration_s": 30},
                        ANSWER_2: {"outcome": "answer", "duration_s": 30}, STUCK: "stuck"}}


#: The process clock of these tests: 60 times faster than real time (a 30 s call lasts half a second).
#: One value for the module, so that its tests share pooled simulators.
FAST = started_at(datetime.now(UTC), speed=60)


@pytest.fixture
def fast():
    with use_clock(FAST):
        yield FAST


@dataclass
class Rig:
    runtime: Any
    pipeline: Any
    simulator: Any
    server: WebServer
    batch_id: str = ""

    @property
    def key(self) -> str:
        return self.simulator.api_key

    def in_call(self, phone: str, *, name: str = "contact") -> dict[str, Any]:
        """A job of this rig's batch dialed through the pipeline: ``in_call`` with its call at the simulator."""
        result = self.runtime.jobs.create_jobs(self.batch_id, "acme", [{"name": name, "phones": [phone]}])
        job_id = result.job_ids[0]
        claimed = self.runtime.jobs.claim_due(limit=100, lease=timedelta(minutes=10))
        mine = next(j for j in claimed if j["_id"] == job_id)
        assert self.pipeline.dial(job_id, mine["lease_owner"]) == "dialed"
        job = self.runtime.jobs.get(job_id)
        # When the simulator delivers webhooks, a call that ends at once (busy) may be finalized already.
        assert job["call_id"] and (job["status"] == states.IN_CALL or job["attempt_id"])
        return job

    def ended_call(self, job: dict[str, Any], *, analyzed: bool = False) -> dict[str, Any]:
        """The call object of ``job`` once it ended (and, ``analyzed``, once its analysis is there)."""
        def ready() -> dict[str, Any] | None:
            call = self.pipeline.provider.get_call(job["call_id"])
            if not call.is_final or (analyzed and not call.call_analysis):
                return None
            return call.raw
        return wait_until(ready, timeout_s=30, interval_s=0.05)

    def post(self, event: str, call: dict[str, Any] | None, *, key: str | None = None,
             timestamp_ms: int | None = None, signature: str | None = None, tamper: bool = False,
             body: bytes | None = None) -> Any:
        raw = body if body is not None else json.dumps({"event": event, "call": call}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        if signature is None:
            signature = sign_webhook(raw, key or self.key, timestamp_ms)
        if signature:
            headers[SIGNATURE_HEADER] = signature
        if tamper:
            raw = raw.replace(b'"call_status"', b'"call_status" ', 1)
        return self.server.client(token=None).request("POST", "/webhooks/retell", data=raw, headers=headers)


@pytest.fixture
def rig_factory(web_config, fast, db, simulator_factory, web_factory):
    def make(**settings: Any) -> Rig:
        simulator = simulator_factory(clock=fast, config=web_config, scenario=SCENARIO)
        runtime, pipeline = pipeline_for(build_runtime(web_config, fast), simulator)
        pipeline.rebuild_slots()   # what the scheduler's first periodic run does: slot sets known
        server = web_factory(runtime=runtime, pipeline=pipeline, **settings)
        runtime.account_changes.apply("acme", {"plan": {"type": "minutes", "balance": 100}})
        batch = runtime.batches.create({"name": "webhooks", "account_id": "acme", "agent_id": "agent_test",
                                        "from_number": "+12125550100",
                                        "call_settings": {"max_attempts": 3, "retry_delay_hours": 1}})
        return Rig(runtime=runtime, pipeline=pipeline, simulator=simulator, server=server, batch_id=batch["_id"])

    return make


@pytest.fixture
def rig(rig_factory) -> Rig:
    return rig_factory()


def test_unsigned_forged_stale_and_tampered_webhooks_get_401_and_change_nothing(rig):
    job = rig.in_call(BUSY)
    call = rig.ended_call(job)
    now_ms = int(time.time() * 1000)
    refused = {
        "unsigned": rig.post("call_ended", call, signature=""),
        "wrong key": rig.post("call_ended", call, key="key_somebody_else"),
        "stale": rig.post("call_ended", call, timestamp_ms=now_ms - 10 * 60 * 1000),
        "from the future": rig.post("call_ended", call, timestamp_ms=now_ms + 10 * 60 * 1000),
        "body changed after signing": rig.post("call_ended", call, tamper=True),
        "malformed header": rig.post("call_ended", call, signature="v=123,d=nothex"),
    }
    assert {name: r.status for name, r in refused.items()} == dict.fromkeys(refused, 401)
    assert all(r.json()["error"] == "invalid_signature" for r in refused.values())
    after = rig.runtime.jobs.get(job["_id"])
    assert after["status"] == states.IN_CALL and after["updated_at"] == job["updated_at"]
    assert rig.runtime.attempts.get(job["attempt_id"])["state"] == attempt_states.IN_CALL

    accepted = rig.post("call_ended", call)
    assert accepted.status == 200, accepted.text
    assert accepted.json() == {"event": "call_ended", "call_id": job["call_id"], "result": "busy"}


def test_a_body_over_one_mebibyte_is_refused_before_its_signature_is_computed(rig):
    job = rig.in_call(BUSY)
    call = rig.ended_call(job)
    padded = {**call, "transcript": "x" * (1 << 20)}
    reply = rig.post("call_ended", padded)                       # correctly signed, but too large
    assert reply.status == 413
    assert rig.runtime.jobs.get(job["_id"])["status"] == states.IN_CALL


def test_unauthenticated_reads_are_bounded(rig_factory):
    rig = rig_factory(webhook_max_reads=1)
    host, port = rig.server.url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)))
    try:   # a sender that declares a body and never finishes it holds the only read
        stalled.sendall(b"POST /webhooks/retell HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n{")
        wait_until(lambda: rig.server.context.webhooks.reading == 1, timeout_s=10)
        refused = rig.post("call_ended", {"call_id": "c"})
        assert refused.status == 503 and refused.headers.get("retry-after") == "5"
    finally:
        stalled.close()
    wait_until(lambda: rig.server.context.webhooks.reading == 0, timeout_s=10)
    assert rig.post("call_started", {"call_id": "c"}).status == 204


def test_call_ended_finalizes_the_job_through_the_pipeline(rig):
    job = rig.in_call(BUSY)
    reply = rig.post("call_ended", rig.ended_call(job))
    assert reply.status == 200 and reply.json()["result"] == "busy"
    after = rig.runtime.jobs.get(job["_id"])
    # one phone, busy: a failed round, retried after retry_delay_hours
    assert after["status"] == states.RETRY_WAIT and after["tries"] == 1
    attempt = rig.runtime.attempts.get(job["attempt_id"])
    assert attempt["state"] == attempt_states.ENDED
    assert attempt["outcome"] == "busy" and attempt["finalized_by"] == "webhook"


def test_duplicate_and_out_of_order_deliveries_apply_once(rig):
    job = rig.in_call(ANSWER)
    analyzed = rig.ended_call(job, analyzed=True)
    ended = {k: v for k, v in analyzed.items() if k != "call_analysis"}
    first = rig.post("call_analyzed", analyzed)          # the later event arrives first
    assert first.status == 200 and first.json()["result"] == "answered"
    done = rig.runtime.jobs.get(job["_id"])
    assert done["status"] == states.COMPLETED
    account = rig.runtime.billing.balance("acme")
    again = [rig.post("call_ended", ended), rig.post("call_analyzed", analyzed), rig.post("call_ended", ended)]
    assert [r.status for r in again] == [200, 200, 200]
    assert [r.json()["result"] for r in again] == ["duplicate"] * 3
    assert rig.runtime.jobs.get(job["_id"])["updated_at"] == done["updated_at"]
    assert rig.runtime.billing.balance("acme")["units"] == account["units"]
    assert account["units"]["balance"] == 6000 - 30     # charged once: 30 s of talk
    assert rig.runtime.billing.check("acme").ok


def test_call_started_and_other_events_are_acknowledged_without_change(rig):
    job = rig.in_call(ANSWER)
    call = rig.pipeline.provider.get_call(job["call_id"]).raw
    for event in ("call_started", "transcript_updated", "transfer_started"):
        reply = rig.post(event, call)
        assert reply.status == 204, (event, reply.text)
    assert rig.runtime.jobs.get(job["_id"])["updated_at"] == job["updated_at"]


def test_an_ended_event_whose_call_is_still_going_is_not_applied(rig):
    job = rig.in_call(STUCK)
    call = wait_until(lambda: (c := rig.pipeline.provider.get_call(job["call_id"])).call_status == "ongoing" and c,
                      timeout_s=30)
    reply = rig.post("call_ended", call.raw)
    assert reply.status == 204
    assert rig.runtime.jobs.get(job["_id"])["status"] == states.IN_CALL


def test_the_job_is_found_by_call_id_when_metadata_is_missing(rig):
    job = rig.in_call(BUSY)
    call = {k: v for k, v in rig.ended_call(job).items() if k != "metadata"}
    reply = rig.post("call_ended", call)
    assert reply.json()["result"] == "busy"
    assert rig.runtime.attempts.get(job["attempt_id"])["finalized_by"] == "webhook"


def test_calls_outdial_does_not_know_are_acknowledged(rig):
    foreign = {"call_id": "call_not_ours", "call_status": "ended", "disconnection_reason": "user_hangup",
               "metadata": {"job_id": "0" * 24}}
    reply = rig.post("call_ended", foreign)
    assert reply.status == 200 and reply.json()["result"] == "unknown_call"
    assert rig.post("call_ended", {**foreign, "metadata": {}}).json()["result"] == "unknown_call"


def test_signed_but_malformed_bodies_get_400(rig):
    for body in (b"{not json", b"[1, 2]", b'{"call": {}}', b'{"event": "call_ended", "call": {"no": "id"}}',
                 b'{"event": "call_ended", "call": "x"}'):
        reply = rig.post("", None, body=body)
        assert reply.status == 400, (body, reply.text)
        assert reply.json()["errors"][0]["message"]


def test_a_slow_finalize_is_answered_202_in_time_and_still_applied(rig_factory):
    rig = rig_factory(webhook_threads=1, webhook_wait_s=0.3)
    job = rig.in_call(BUSY)
    call = rig.ended_call(job)
    gate = threading.Event()
    blocker = rig.server.context.webhooks.pool.submit(gate.wait, 60)   # a stuck MongoDB, as the pool sees it
    try:
        reply = rig.post("call_ended", call)
        assert reply.status == 202 and reply.json()["result"] == "accepted"
        assert rig.runtime.jobs.get(job["_id"])["status"] == states.IN_CALL
    finally:
        gate.set()
        blocker.result(10)
    wait_until(lambda: rig.runtime.jobs.get(job["_id"])["status"] == states.RETRY_WAIT, timeout_s=30)
    assert rig.runtime.attempts.get(job["attempt_id"])["finalized_by"] == "webhook"
    assert rig.post("call_ended", call).json()["result"] == "duplicate"


def test_deliveries_that_share_one_finalize_count_it_once(rig_factory):
    rig = rig_factory(webhook_threads=1, webhook_wait_s=5)
    job = rig.in_call(BUSY)
    analyzed = rig.ended_call(job, analyzed=True)
    ended = {k: v for k, v in analyzed.items() if k != "call_analysis"}

    def count(result: str) -> float:
        return REGISTRY.get_sample_value("outdial_webhooks_total", {"result": result}) or 0.0

    before = {r: count(r) for r in ("finalized", "duplicate", "analyzed")}
    processor = rig.server.context.webhooks
    submitted: list[bool] = []   # per delivery: did it start a finalize (True) or join the running one (False)
    original = processor._submit

    def spy(call: Any, name: str) -> Any:
        future, fresh = original(call, name)
        submitted.append(fresh)
        return future, fresh

    processor._submit = spy
    gate = threading.Event()
    blocker = rig.server.context.webhooks.pool.submit(gate.wait, 60)   # both deliveries arrive while it is busy
    replies: list[Any] = []
    senders = [threading.Thread(target=lambda e=e, c=c: replies.append(rig.post(e, c)))
               for e, c in (("call_ended", ended), ("call_analyzed", analyzed))]
    try:
        for n, sender in enumerate(senders, start=1):   # call_ended first: it starts the finalize the other joins
            sender.start()
            wait_until(lambda n=n: len(submitted) == n, timeout_s=10)
    finally:
        gate.set()
        blocker.result(10)
        for sender in senders:
            sender.join(30)
    assert submitted == [True, False]
    # the call_analyzed that joined the finalize keeps its analysis once the finalize is done
    assert sorted(r.json()["result"] for r in replies) == ["analyzed", "busy"]
    assert count("finalized") - before["finalized"] == 1 and count("analyzed") - before["analyzed"] == 1
    assert count("duplicate") == before["duplicate"]
    attempt = rig.runtime.attempts.of_call(analyzed["call_id"])
    assert read_analysis(attempt["analysis"]) == analysis_of(analyzed["call_analysis"])


def test_overload_answers_503_and_the_poll_still_finalizes(rig_factory):
    rig = rig_factory(webhook_threads=1, webhook_wait_s=0.3, webhook_max_pending=1)
    first, second = rig.in_call(BUSY, name="first"), rig.in_call(ANSWER, name="second")
    first_call, second_call = rig.ended_call(first), rig.ended_call(second)
    gate = threading.Event()
    blocker = rig.server.context.webhooks.pool.submit(gate.wait, 60)
    try:
        assert rig.post("call_ended", first_call).status == 202            # queued behind the blocker
        assert rig.post("call_ended", first_call).status == 202            # the same call shares that finalize
        shed = rig.post("call_ended", second_call)
        assert shed.status == 503 and shed.headers.get("retry-after") == "5"
    finally:
        gate.set()
        blocker.result(10)
    wait_until(lambda: rig.runtime.jobs.get(first["_id"])["status"] == states.RETRY_WAIT, timeout_s=30)
    assert rig.runtime.jobs.get(first["_id"])["dials"] == 1
    # the refused webhook lost nothing: the poll actor's step finalizes the call
    assert rig.runtime.jobs.get(second["_id"])["status"] == states.IN_CALL
    assert rig.pipeline.poll(second["_id"], second["lease_owner"], second["call_id"], 0) == "answered"
    assert rig.runtime.attempts.get(second["attempt_id"])["finalized_by"] == "poll"


def test_the_simulator_delivers_signed_webhooks_that_finalize_every_call(rig):
    rig.simulator.configure(webhook_url=f"{rig.server.url}/webhooks/retell")
    jobs = [rig.in_call(phone, name=f"c{i}") for i, phone in enumerate((BUSY, ANSWER, ANSWER_2))]

    def finalized() -> bool:
        return all(rig.runtime.jobs.get(j["_id"])["status"] != states.IN_CALL for j in jobs)

    wait_until(finalized, timeout_s=60, interval_s=0.1)
    outcomes = {j["contact"]["phones"][0]: rig.runtime.attempts.get(j["attempt_id"]) for j in jobs}
    assert {p: (a["outcome"], a["finalized_by"]) for p, a in outcomes.items()} == {
        BUSY: ("busy", "webhook"), ANSWER: ("answered", "webhook"), ANSWER_2: ("answered", "webhook")}

    def delivered() -> list[dict[str, Any]] | None:
        log = rig.simulator.webhooks()
        return log if len(log) >= 7 else None   # busy: ended, analyzed; each answer: started, ended, analyzed

    log = wait_until(delivered, timeout_s=60)
    assert all(entry["ok"] and entry["attempts"] == 1 for entry in log), log
    statuses = {entry["status"] for entry in log}
    assert {200, 204} <= statuses <= {200, 202, 204}   # 202 only if a finalize outlasted the 5 s wait


#: The body a slow sender declares, and the part of it it sends before the answer.
_DECLARED = 1000
_FIRST = b"{"


def _slow_sender(rig: Rig) -> socket.socket:
    """A connection that declares a 1,000-byte webhook body and sends one byte of it."""
    host, port = rig.server.url.removeprefix("http://").split(":")
    sender = socket.create_connection((host, int(port)), timeout=60)
    sender.sendall(b"POST /webhooks/retell HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (_DECLARED, _FIRST))
    return sender


def _answer_of(sender: socket.socket) -> tuple[int, bytes]:
    """The status and raw bytes of the answer on ``sender``: its head and its ``Content-Length`` of body. Then the
    sender sends the rest of the body it declared, which ends aiohttp's lingering read of what is left of the request
    (else up to 10 s), and reads until the server closes the connection: its connection task is over, and none is
    left pending when the rig stops."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sender.recv(65536)
        assert chunk, f"connection closed before the answer's head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n")[1:]
               if line.lower().startswith(b"content-length:")]
    assert lengths, head
    while len(body) < int(lengths[0]):
        chunk = sender.recv(65536)
        assert chunk, f"connection closed inside the answer's body: {data!r}"
        body += chunk
    sender.sendall(b" " * (_DECLARED - len(_FIRST)))
    while sender.recv(65536):   # the server closes the connection (the answer said so)
        pass
    return int(head.split(b" ", 2)[1]), head + b"\r\n\r\n" + body


def test_slow_bodies_are_refused_at_the_read_deadline_and_free_their_read_slots(rig_factory):
    """Every read slot held by a sender that never finishes its body: signed webhooks get 503 only until the read
    deadline (WEBHOOK_READ_TIMEOUT_S, 5 s by default, 2 s here): then each slow sender is answered 408 and a signed
    webhook goes in."""
    rig = rig_factory(webhook_read_timeout_s=2.0)
    processor = rig.server.context.webhooks
    slots = rig.server.context.settings.webhook_max_reads
    assert slots == 64 and rig.server.context.settings.webhook_read_timeout_s == 2.0
    senders = [_slow_sender(rig) for _ in range(slots)]
    try:
        wait_until(lambda: processor.reading == slots, timeout_s=4)
        assert rig.post("call_started", {"call_id": "c"}).status == 503       # every read slot is held
        answers = [_answer_of(sender) for sender in senders]
    finally:
        for sender in senders:
            sender.close()
    assert [status for status, _ in answers] == [408] * slots
    assert b'"error":"request_timeout"' in answers[0][1]
    assert processor.reading == 0
    # the senders gone, none of their connections stays open on the server (none is pending when the rig stops)
    wait_until(lambda: not rig.server._runner.server.connections, timeout_s=10)
    assert rig.post("call_started", {"call_id": "c"}).status == 204          # signed, read, acknowledged
    job = rig.in_call(BUSY)
    accepted = rig.post("call_ended", rig.ended_call(job))
    assert accepted.status == 200 and accepted.json()["result"] == "busy"


def _requests(route: str, status: str) -> float:
    return REGISTRY.get_sample_value("outdial_http_requests_total",
                                     {"route": route, "method": "POST", "status": status}) or 0.0


def test_a_client_that_disconnects_mid_body_is_logged_once_as_499_without_a_traceback(rig, caplog):
    caplog.set_level(logging.INFO)
    route = "/webhooks/retell"
    before = {status: _requests(route, status) for status in ("499", "500")}
    sender = _slow_sender(rig)
    wait_until(lambda: rig.server.context.webhooks.reading == 1, timeout_s=10)
    sender.close()
    wait_until(lambda: _requests(route, "499") == before["499"] + 1, timeout_s=10)
    assert rig.server.context.webhooks.reading == 0
    assert _requests(route, "500") == before["500"]
    lines = [r for r in caplog.records if r.getMessage() == "client_disconnected"]
    assert len(lines) == 1 and lines[0].status == 499 and lines[0].route == route
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
    assert rig.post("call_started", {"call_id": "c"}).status == 204
