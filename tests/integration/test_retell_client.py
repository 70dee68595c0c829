"""The Retell client against the simulator over real HTTP: every endpoint, every error class,
the ambiguous create and its reconciliation, and one client shared by threads and forked processes."""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.clock import Clock, started_at
from shared.config import Config, load_config
from shared.errors import (
    CallNotFound,
    CreateOutcomeUnknown,
    DialAborted,
    PaymentRequired,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from shared.provider.retell import RetellClient
from workers.dev.simulator.process import SimulatorProcess
from workers.runtime import build_runtime

FROM = "+14155550100"
ANSWERS = "+14155550001"
BUSY = "+14155550002"
STUCK = "+14155550003"
SCENARIO = {"numbers": {ANSWERS: {"outcome": "answer", "ring_s": 2, "duration_s": 60}, BUSY: "busy", STUCK: "stuck"}}
#: Simulated seconds per real second for lifecycle tests: a 60 s call lasts 0.3 real seconds.
FAST = 200.0


def client_for(sim: SimulatorProcess, **options: Any) -> RetellClient:
    options.setdefault("backoff_base_s", 0.01)
    options.setdefault("backoff_max_s", 0.05)
    return RetellClient(load_config({}), base_url=sim.base_url, api_key=sim.api_key, **options)


#: The clock of this module's simulators: one value, so that tests share pooled simulators.
CLOCK = started_at(datetime(2026, 3, 9, 14, 0, tzinfo=UTC), speed=FAST)


@pytest.fixture
def sim(simulator_factory: Callable[..., SimulatorProcess]) -> SimulatorProcess:
    return simulator_factory(clock=CLOCK, scenario=SCENARIO)


# -- endpoints ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_create_sends_the_mapped_body_and_returns_a_registered_call(sim, sim_wait):
    def go():
        with client_for(sim) as client:
            return client.create_phone_call(
                from_number=FROM, to_number=ANSWERS, agent_id="agent_collect",
                dynamic_variables={"name": "Ana", "amount": 1200}, metadata={"job_id": "j1", "attempt": 1},
                ring_timeout_s=45, max_call_duration_s=600)

    call = go()
    assert call.call_id.startswith("call_") and call.call_status == "registered"
    assert call.to_number == ANSWERS and call.agent_id == "agent_collect"
    assert call.metadata == {"job_id": "j1", "attempt": 1}
    [record] = sim.calls()
    assert record["call_id"] == call.call_id and record["status"] == 201
    assert record["body"] == {
        "from_number": FROM, "to_number": ANSWERS, "override_agent_id": "agent_collect",
        "retell_llm_dynamic_variables": {"name": "Ana", "amount": "1200"}, "metadata": {"job_id": "j1", "attempt": 1},
        "agent_override": {"agent": {"ring_duration_ms": 45_000, "max_call_duration_ms": 600_000}},
    }


@pytest.mark.slow
def test_get_call_follows_the_lifecycle_to_analysis(sim, sim_wait):
    def go():
        with client_for(sim) as client:
            call = client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata={"job_id": "j2"})
            seen = {call.call_status}
            for _ in range(400):
                got = client.get_call(call.call_id)
                seen.add(got.call_status)
                if got.call_analysis:
                    return seen, got
                time.sleep(0.01)
            raise AssertionError(f"never analyzed; saw {seen}")

    seen, final = go()
    assert {"registered", "ongoing", "ended"} <= seen
    assert final.is_final and final.connected and final.duration_ms == 60_000
    assert final.end_timestamp_ms - final.start_timestamp_ms == 60_000
    assert final.disconnection_reason in ("user_hangup", "agent_hangup")
    assert final.call_analysis["call_successful"] is True and final.metadata == {"job_id": "j2"}


@pytest.mark.slow
def test_stop_call_ends_a_stuck_call_once(sim):
    def go():
        with client_for(sim) as client:
            call = client.create_phone_call(from_number=FROM, to_number=STUCK, max_call_duration_s=60)
            first = client.stop_call(call.call_id)
            second = client.stop_call(call.call_id)
            return first, second, client.get_call(call.call_id)

    first, second, call = go()
    assert first is True and second is False
    assert call.is_final and call.disconnection_reason == "manual_stopped"


@pytest.mark.slow
def test_list_calls_pages_and_filters(sim):
    def go():
        with client_for(sim) as client:
            made = [client.create_phone_call(from_number=FROM, to_number=BUSY, metadata={"i": i})
                    for i in range(5)]
            client.create_phone_call(from_number=FROM, to_number=ANSWERS)
            criteria = {"to_number": {"type": "string", "op": "eq", "value": BUSY}}
            first = client.list_calls(filter_criteria=criteria, limit=2, include_total=True)
            everything = list(client.iter_calls(filter_criteria=criteria, page_limit=2))
            ascending = client.list_calls(filter_criteria=criteria, sort_order="ascending", limit=10)
            return made, first, everything, ascending

    made, first, everything, ascending = go()
    assert len(first.items) == 2 and first.has_more and first.pagination_key and first.total == 5
    assert sorted(c.call_id for c in everything) == sorted(c.call_id for c in made)
    assert len({c.call_id for c in everything}) == 5
    assert [c.metadata["i"] for c in ascending.items] == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_find_calls_by_metadata_matches_on_the_client_side(sim):
    def go():
        with client_for(sim) as client:
            for attempt in (1, 2, 2):
                client.create_phone_call(from_number=FROM, to_number=BUSY,
                                         metadata={"job_id": "jx", "attempt": attempt})
            client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata={"job_id": "jx", "attempt": 2})
            return (client.find_calls_by_metadata(BUSY, "attempt", 2, page_limit=1),
                    client.find_calls_by_metadata(BUSY, "attempt", 3),
                    client.find_calls_by_metadata(BUSY, "attempt", 2, since_ms=10**15))

    twice, none, unstarted = go()
    assert len(twice) == 2 and all(c.to_number == BUSY and c.metadata["attempt"] == 2 for c in twice)
    assert none == []
    assert len(unstarted) == 2  # calls that never started are kept whatever since_ms says


@pytest.mark.slow
def test_since_ms_drops_calls_that_started_before(sim, sim_wait):
    def go():
        with client_for(sim) as client:
            call = client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata={"job_id": "s"})
            for _ in range(300):
                if client.get_call(call.call_id).start_timestamp_ms:
                    break
                time.sleep(0.01)
            started = client.get_call(call.call_id).start_timestamp_ms
            return (started, client.find_calls_by_metadata(ANSWERS, "job_id", "s", since_ms=started),
                    client.find_calls_by_metadata(ANSWERS, "job_id", "s", since_ms=started + 1))

    started, kept, dropped = go()
    assert started and len(kept) == 1 and dropped == []


@pytest.mark.slow
def test_get_concurrency_counts_calls_in_progress(sim):
    def go():
        with client_for(sim) as client:
            for _ in range(3):
                client.create_phone_call(from_number=FROM, to_number=STUCK)
            return client.get_concurrency()

    c = go()
    assert c.current == 3 and c.limit == 20 and c.available_outbound == 17


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wrong_key_is_an_auth_error(sim):
    def go():
        with RetellClient(load_config({}), base_url=sim.base_url, api_key="key_wrong") as client:
            client.get_concurrency()

    with pytest.raises(ProviderAuthError) as info:
        go()
    assert info.value.status == 401 and not info.value.retryable
    assert sim.stats()["requests"]["get_concurrency"] == 1  # not retried


@pytest.mark.slow
def test_validation_error_keeps_the_message_and_is_not_retried(sim):
    def go():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number="4155550101")

    with pytest.raises(ProviderRejected) as info:
        go()
    assert info.value.status == 400 and "E.164" in info.value.message and not info.value.retryable
    assert len(sim.calls()) == 1 and sim.dials() == []


@pytest.mark.parametrize("not_found_status", [404, 422])
@pytest.mark.slow
def test_unknown_call_is_call_not_found(simulator_factory, not_found_status):
    sim = simulator_factory(not_found_status=not_found_status)

    def go(method):
        with client_for(sim) as client:
            getattr(client, method)("call_does_not_exist")

    for method in ("get_call", "stop_call"):
        with pytest.raises(CallNotFound) as info:
            go(method)
        assert info.value.status == not_found_status


@pytest.mark.slow
def test_payment_required(sim):
    sim.script_faults("create_phone_call", "402")

    def go():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS)

    with pytest.raises(PaymentRequired) as info:
        go()
    assert info.value.status == 402 and not info.value.retryable and sim.dials() == []


@pytest.mark.slow
def test_rate_limited_create_carries_retry_after_and_is_not_retried(sim):
    sim.set_faults(retry_after_ms=1500, script={"create_phone_call": ["429"]})

    def go():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS)

    with pytest.raises(RateLimited) as info:
        go()
    assert info.value.retry_after_s == 1.5 and info.value.retryable
    assert len(sim.calls()) == 1 and sim.dials() == []


@pytest.mark.slow
def test_server_error_on_create_without_a_key_is_ambiguous_and_not_sent_again(sim):
    sim.script_faults("create_phone_call", "500")

    def go():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS)

    with pytest.raises(CreateOutcomeUnknown) as info:   # a 500 may have come after the call was made
        go()
    assert info.value.status == 500 and not info.value.retryable
    assert len(sim.calls()) == 1


@pytest.mark.parametrize("faults", [["500"], ["drop"], ["502", "504"], ["slow"], ["drop_before", "500"]])
@pytest.mark.slow
def test_an_ambiguous_create_is_sent_again_with_its_key_and_dials_once(sim, faults):
    sim.set_faults(slow_ms=1500, script={"create_phone_call": faults})

    def go():
        with client_for(sim, create_timeout_s=0.5) as client:
            return client.create_phone_call(from_number=FROM, to_number=ANSWERS, idempotency_key="att-1",
                                            metadata={"attempt_id": "att-1"})

    call = go()
    assert [d["call_id"] for d in sim.dials()] == [call.call_id]      # one call, whatever the first answers were
    sends = sim.calls()
    assert len(sends) == len(faults) + 1 and all(r["body"]["idempotency_key"] == "att-1" for r in sends)
    assert sim.stats()["dials"] == 1


@pytest.mark.slow
def test_the_check_before_each_send_stops_a_create(sim):
    checks: list[int] = []

    def refuse() -> None:
        checks.append(1)
        raise DialAborted("window", "window closed")

    def go():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS, idempotency_key="att-2",
                                     precheck=refuse)

    with pytest.raises(DialAborted):           # before the first send: nothing was sent
        go()
    assert checks == [1] and sim.calls() == []

    sim.script_faults("create_phone_call", "500")
    allowed = iter([None])

    def once() -> None:
        if next(allowed, "stop") == "stop":
            raise DialAborted("fence", "lease too short")

    def again():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS, idempotency_key="att-3",
                                     precheck=once)

    with pytest.raises(CreateOutcomeUnknown):  # after an ambiguous send, the outcome stays unknown
        again()
    assert len(sim.calls()) == 1


@pytest.mark.slow
def test_idempotent_requests_are_retried_until_they_succeed(sim):
    def go():
        with client_for(sim) as client:
            call = client.create_phone_call(from_number=FROM, to_number=BUSY)
            sim.script_faults("get_call", "500", "429")
            return client.get_call(call.call_id)

    sim.set_faults(retry_after_ms=20)
    assert go().to_number == BUSY
    assert sim.stats()["requests"]["get_call"] == 3


@pytest.mark.slow
def test_retries_give_up_after_max_retries(sim):
    sim.script_faults("get_concurrency", "503", "503", "503", "503")

    def go():
        with client_for(sim, max_retries=2) as client:
            client.get_concurrency()

    with pytest.raises(ProviderUnavailable):
        go()
    assert sim.stats()["requests"]["get_concurrency"] == 3


@pytest.mark.slow
def test_long_retry_after_is_left_to_the_caller(sim):
    sim.set_faults(retry_after_ms=120_000, script={"list_calls": ["429"]})

    def go():
        with client_for(sim, max_retry_after_s=30) as client:
            client.list_calls()

    with pytest.raises(RateLimited) as info:
        go()
    assert info.value.retry_after_s == 120 and sim.stats()["requests"]["list_calls"] == 1


@pytest.mark.slow
def test_slow_answer_is_a_timeout(sim):
    sim.set_faults(slow_ms=2000, script={"get_concurrency": ["slow"]})

    def go():
        with client_for(sim, timeout_s=0.3, max_retries=0) as client:
            client.get_concurrency()

    with pytest.raises(ProviderTimeout):
        go()


def test_nobody_listening_is_provider_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: connection refused

    def go():
        with RetellClient(load_config({}), base_url=f"http://127.0.0.1:{port}", max_retries=0) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS)

    with pytest.raises(ProviderUnavailable) as info:
        go()
    assert not isinstance(info.value, CreateOutcomeUnknown)  # nothing was sent: safe to dial again


# -- the ambiguous create -------------------------------------------------------------------------


@pytest.mark.slow
def test_dropped_create_is_ambiguous_and_reconciles_to_the_created_call(sim):
    sim.script_faults("create_phone_call", "drop")
    meta = {"job_id": "job_amb", "attempt": 3}

    def go():
        with client_for(sim) as client:
            try:
                client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata=meta)
            except CreateOutcomeUnknown as exc:
                assert exc.to_number == ANSWERS and exc.metadata == meta and not exc.retryable
                return client.find_calls_by_metadata(exc.to_number, "attempt", 3)
            raise AssertionError("the dropped create did not raise CreateOutcomeUnknown")

    found = go()
    [dial] = sim.dials()
    assert [c.call_id for c in found] == [dial["call_id"]]


@pytest.mark.slow
def test_create_lost_before_processing_reconciles_to_nothing(sim):
    sim.script_faults("create_phone_call", "drop_before")

    def go():
        with client_for(sim) as client:
            with pytest.raises(CreateOutcomeUnknown):
                client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata={"attempt": 1})
            return client.find_calls_by_metadata(ANSWERS, "attempt", 1)

    assert go() == [] and sim.dials() == []


@pytest.mark.slow
def test_create_timeout_is_ambiguous_and_the_call_exists(sim):
    sim.set_faults(slow_ms=1500, script={"create_phone_call": ["slow"]})

    def go():
        with client_for(sim, create_timeout_s=0.3) as client:
            with pytest.raises(CreateOutcomeUnknown):
                client.create_phone_call(from_number=FROM, to_number=BUSY, metadata={"attempt": 7})
            return client.find_calls_by_metadata(BUSY, "attempt", 7)

    found = go()
    assert len(found) == 1 and len(sim.dials()) == 1


@pytest.mark.slow
def test_a_trickling_create_answer_ends_at_the_create_timeout_as_ambiguous(sim):
    # The answer's body comes a byte at a time over 10 s: every read gets something, so a timeout per read never
    # fires. The create timeout bounds the whole request: past it the outcome is unknown, as after a read timeout.
    sim.set_faults(slow_ms=10_000, script={"create_phone_call": ["trickle"]})

    def go():
        with client_for(sim, create_timeout_s=1.5) as client:
            started = time.monotonic()
            with pytest.raises(CreateOutcomeUnknown) as info:
                client.create_phone_call(from_number=FROM, to_number=BUSY, metadata={"attempt": 9})
            elapsed = time.monotonic() - started
            again = client.create_phone_call(from_number=FROM, to_number=BUSY, metadata={"attempt": 10})
            return elapsed, info.value, again

    elapsed, error, again = go()
    assert elapsed < 1.5 + 3, elapsed   # the defect itself: it took the whole 10 s
    assert "within 1.5 s" in error.message and error.metadata == {"attempt": 9}
    assert again.call_status == "registered" and len(sim.dials()) == 2   # the connection pool still serves


@pytest.mark.slow
def test_a_trickled_answer_that_ends_in_time_parses(sim):
    sim.set_faults(slow_ms=600, script={"get_concurrency": ["trickle"], "create_phone_call": ["trickle"]})

    def go():
        with client_for(sim, timeout_s=5, create_timeout_s=5) as client:
            return client.create_phone_call(from_number=FROM, to_number=ANSWERS), client.get_concurrency()

    call, concurrency = go()
    assert call.call_id == sim.dials()[0]["call_id"] and concurrency.limit == 20


@pytest.mark.slow
def test_a_trickling_answer_of_any_request_ends_at_its_timeout(sim):
    sim.set_faults(slow_ms=10_000, script={"get_concurrency": ["trickle"]})

    def go():
        with client_for(sim, timeout_s=1, max_retries=0) as client:
            started = time.monotonic()
            with pytest.raises(ProviderTimeout):
                client.get_concurrency()
            return time.monotonic() - started

    assert go() < 1 + 3


@pytest.mark.parametrize("status", ["502", "504"])
@pytest.mark.slow
def test_gateway_errors_on_create_are_ambiguous(sim, status):
    sim.script_faults("create_phone_call", status)

    def go():
        with client_for(sim) as client:
            client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata={"attempt": 1})

    with pytest.raises(CreateOutcomeUnknown) as info:
        go()
    assert info.value.status == int(status) and info.value.metadata == {"attempt": 1}


@pytest.mark.slow
def test_unknown_disconnection_reason_parses(simulator_factory):
    sim = simulator_factory(clock=CLOCK,
                            scenario={"numbers": {BUSY: {"outcome": "failed", "reason": "quantum_decoherence"}}})

    def go():
        with client_for(sim) as client:
            call = client.create_phone_call(from_number=FROM, to_number=BUSY)
            for _ in range(300):
                got = client.get_call(call.call_id)
                if got.is_final:
                    return got
                time.sleep(0.01)
            raise AssertionError("never ended")

    call = go()
    assert call.disconnection_reason == "quantum_decoherence" and not call.reason_is_known


# -- one client per process, shared by threads -----------------------------------------------------


@pytest.mark.slow
def test_the_runtime_client_from_many_threads(simulator_config: Config, clock: Clock, simulator: SimulatorProcess):
    runtime = build_runtime(simulator_config, clock)
    try:
        client = runtime.provider
        assert client is runtime.provider and client.base_url == simulator.base_url
        results: list[Any] = []
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                call = client.create_phone_call(from_number=FROM, to_number=f"+1415555{i:04d}", metadata={"i": i})
                results.append((client.get_call(call.call_id).metadata["i"], client.stop_call(call.call_id)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert sorted(i for i, _ in results) == list(range(16)) and all(stopped for _, stopped in results)
        assert client.get_concurrency().current == 0
        assert len(client.find_calls_by_metadata("+14155550003", "i", 3)) == 1
        assert client.list_calls(limit=100).items and len(simulator.dials()) == 16
    finally:
        runtime.close()


@pytest.mark.slow
def test_a_client_from_the_process_config_raises_the_same_errors(simulator: SimulatorProcess):
    client = RetellClient(load_config({}).with_overrides(retell_base_url=simulator.base_url,
                                                         retell_api_key=simulator.api_key))
    try:
        with pytest.raises(CallNotFound):
            client.get_call("call_missing")
        simulator.script_faults("create_phone_call", "drop")
        with pytest.raises(CreateOutcomeUnknown):
            client.create_phone_call(from_number=FROM, to_number=ANSWERS, metadata={"attempt": 1})
    finally:
        client.close()


def _child_uses_client(client: RetellClient, out: Any) -> None:
    try:
        out.put(client.get_concurrency().limit)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(repr(exc))


@pytest.mark.slow
def test_a_client_works_in_a_forked_child_and_leaves_the_parents_connections(simulator: SimulatorProcess):
    config = load_config({}).with_overrides(retell_base_url=simulator.base_url, retell_api_key=simulator.api_key)
    client = RetellClient(config)
    assert client.get_concurrency().limit == 20  # the parent has an open connection in its pool
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_uses_client, args=(client, out))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and out.get(timeout=5) == 20
    assert client.get_concurrency().limit == 20  # and the parent's still works
    client.close()


def test_provider_errors_share_one_base():
    for cls in (ProviderRejected, ProviderAuthError, PaymentRequired, CallNotFound, RateLimited, ProviderUnavailable,
                ProviderTimeout, CreateOutcomeUnknown):
        assert issubclass(cls, ProviderError)
