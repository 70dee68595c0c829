"""Chaos: a whole campaign while workers are killed and frozen, Redis loses everything and the provider
fails, with a calling window that closes and opens again during the run.

Every check is made against the simulator's own record of the creates it received:
no attempt dialed twice, no contact on two calls at once, no call received outside its window, never
more calls at once than the account's limit; and every contact final, every call accounted for, the
account never below zero and its ledger balanced. The figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from shared.clock import from_ms, started_at
from shared.domain import states
from shared.domain.call_settings import parse_call_settings
from shared.domain.calling_window import is_allowed_time
from shared.stores import attempts as attempt_states
from tests.integration.test_pipeline_campaign import numbers, wait_final
from workers.dev import embedded

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

OPENS = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)   # Tuesday 09:00 in Santiago
#: Three windows a day: the campaign starts before the first, and two close while calls are going on.
SETTINGS = {"windows": [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "09:00", "end": "09:08"},
                        {"days": [1, 2, 3, 4, 5, 6, 7], "start": "09:11", "end": "09:20"},
                        {"days": [1, 2, 3, 4, 5, 6, 7], "start": "09:23", "end": "13:00"}],
            "timezone": "America/Santiago", "max_attempts": 2, "retry_delay_hours": 0.02, "ring_timeout": 20,
            "max_call_duration": 120}
MIX = {"answer": 0.6, "no_answer": 0.15, "busy": 0.1, "voicemail": 0.1, "invalid": 0.05}
SCENARIO = {"seed": 11, "mix": MIX, "defaults": {"answer": {"ring_s": [1, 4], "duration_s": [10, 30]},
                                                 "voicemail": {"ring_s": [2, 4], "duration_s": [5, 10]},
                                                 "no_answer": {"ring_s": [5, 10]}}}
#: Provider faults on every endpoint: 5% 500, 2% 429, 1% dropped after processing, 1% answered after the
#: client gave up (3 s, past the 1.5 s create timeout).
FAULTS = {"rate_500": 0.05, "rate_429": 0.02, "rate_drop": 0.01, "rate_slow": 0.01, "slow_ms": 3000,
          "retry_after_ms": 200}
LIMIT = 20
CONTACTS = 300


def _signal_group(proc, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def test_chaos_campaign(stack_factory):
    servers = [embedded.start_redis()]   # this test's own Redis: it is stopped and started again
    try:
        _run(stack_factory, servers)
    finally:
        for server in servers:
            server.stop()


def _replace_worker(stack, index: int) -> None:
    stack.kill_worker(index)
    stack.workers.pop(index)
    stack.start_worker()


def _run(stack_factory, servers: list) -> None:
    redis = servers[0]
    port = int(redis.url.rsplit(":", 1)[1].split("/")[0])
    clock = started_at(OPENS - timedelta(minutes=2), speed=60)
    stack, runtime = stack_factory(
        clock=clock, scenario=SCENARIO, workers=3, simulator_flags={"concurrency_limit": 100, **FAULTS},
        config_overrides={"pipeline_lease_s": 3.0, "retell_create_timeout_s": 1.5, "redis_url": redis.url})
    runtime.account_changes.apply("acme", {"plan": {"type": "minutes", "balance": 2000}, "concurrency_limit": LIMIT})
    batch = runtime.batches.create({"name": "chaos", "account_id": "acme", "agent_id": "agent_test",
                                    "call_settings": SETTINGS})
    phones = numbers("40", CONTACTS * 2)
    contacts = [{"name": f"c{i}", "phones": phones[2 * i: 2 * i + 2], "external_id": f"c{i}"} for i in range(CONTACTS)]
    assert runtime.jobs.create_jobs(batch["_id"], "acme", contacts).imported == CONTACTS

    lowest_balance = [float("inf")]
    stop_watching = threading.Event()

    def watch_balance() -> None:
        while not stop_watching.wait(0.25):
            try:
                lowest_balance[0] = min(lowest_balance[0], runtime.billing.balance("acme")["units"]["balance"])
            except Exception:  # noqa: BLE001 - MongoDB busy or Redis restarting: the next reading counts
                pass

    watcher = threading.Thread(target=watch_balance, daemon=True)
    watcher.start()
    rng = random.Random(17)
    started = time.monotonic()
    events: list[str] = []

    def at(second: float) -> None:
        time.sleep(max(0.0, second - (time.monotonic() - started)))

    try:
        # The faults, at seconds of real time since the start (the first window opens after 2).
        at(4)
        _replace_worker(stack, rng.randrange(3))
        events.append("SIGKILL worker")
        at(7)
        frozen = stack.workers[rng.randrange(3)]
        _signal_group(frozen, signal.SIGSTOP)          # longer than its 4.5 s dialing leases
        events.append("SIGSTOP worker")
        at(10)
        redis.stop()                                   # queues, delayed messages, slots, locks: all gone
        events.append("Redis stopped")
        at(11)
        servers.append(embedded.start_redis(port=port))
        events.append("Redis restarted")
        at(13)
        _signal_group(frozen, signal.SIGCONT)
        events.append("SIGCONT worker")
        at(16)
        _replace_worker(stack, rng.randrange(3))
        events.append("SIGKILL worker")
        at(19)
        frozen = stack.workers[rng.randrange(3)]
        _signal_group(frozen, signal.SIGSTOP)
        at(25)
        _signal_group(frozen, signal.SIGCONT)
        events.append("SIGSTOP/SIGCONT worker")
        wait_final(runtime, batch["_id"], timeout_s=240, stack=stack)
    finally:
        stop_watching.set()
        watcher.join(5)
    elapsed = time.monotonic() - started

    dials = stack.simulator.dials(timeline=True)
    attempts = {a["_id"]: a for a in runtime.attempts.coll.find({"batch_id": batch["_id"]})}
    jobs = runtime.jobs.find({"batch_id": batch["_id"]})
    stats = stack.simulator.stats()

    # 0 attempts dialed twice (a create replayed with its idempotency key dialed nothing).
    per_attempt = collections.Counter(r["body"]["metadata"]["attempt_id"] for r in dials)
    assert max(per_attempt.values()) == 1, per_attempt.most_common(3)
    # 0 contacts on two calls at once.
    per_contact = collections.defaultdict(list)
    for rec in dials:
        life = rec["call"]
        per_contact[rec["body"]["metadata"]["job_id"]].append((life["created_ms"], life["end_ms"] or 10**15))
    overlapping = [job for job, lives in per_contact.items()
                   if any(b[0] < a[1] for a, b in zip(sorted(lives), sorted(lives)[1:], strict=False))]
    assert not overlapping, overlapping[:3]
    # 0 calls received outside the window.
    window = parse_call_settings(SETTINGS)
    outside = [r for r in dials if not is_allowed_time(window, from_ms(r["received_at"]), r["body"]["to_number"])[0]]
    assert not outside, [(from_ms(r["received_at"]).isoformat(), r["body"]["metadata"]["attempt_id"]) for r in outside]
    # Never more calls at once than the account's limit.
    assert stats["max_active"] <= LIMIT, stats["max_active"]
    # Every contact final; every call belongs to an attempt that ended (or was stopped as an orphan).
    assert {j["status"] for j in jobs} <= set(states.FINAL)
    for rec in dials:
        attempt = attempts.get(rec["body"]["metadata"]["attempt_id"])
        assert attempt is not None and attempt["state"] in (attempt_states.ENDED, attempt_states.ORPHANED), rec
    # Faults never spend an attempt: a contact that failed used both rounds, or had no valid number left.
    for job in jobs:
        if job["status"] == states.FAILED:
            assert job["tries"] == 2 or job["last_error"].startswith("no valid phone number"), job
    # The account never below zero, its ledger balanced, nothing left reserved.
    view = runtime.billing.balance("acme")
    assert lowest_balance[0] >= 0 and view["units"]["balance"] >= 0 and view["units"]["reserved"] == 0
    assert runtime.billing.check("acme").ok
    recovered = runtime.jobs.coll.count_documents({"batch_id": batch["_id"], "recoveries": {"$gte": 1}})
    assert recovered > 0   # the faults did interrupt work in progress

    calls_per_contact = collections.Counter(r["body"]["metadata"]["job_id"] for r in dials)
    lives = [(a.get("finalized_at") or a.get("updated_at") or a["created_at"]) - a["created_at"]
             for a in attempts.values() if a["state"] == attempt_states.ENDED]
    deadline_s = SETTINGS["ring_timeout"] + SETTINGS["max_call_duration"] + 30
    assert max(calls_per_contact.values()) <= SETTINGS["max_attempts"] * 2   # nobody called again and again
    print(f"\nchaos: {CONTACTS} contacts x 2 numbers, 3 workers, limit {LIMIT}, {elapsed:.0f} s real; "
          f"faults: {', '.join(events)}")
    print(f"  calls created {len(dials)}, creates received {len(stack.simulator.calls())}, "
          f"absorbed by the idempotency key {stats['idempotent_replays']}, provider faults {stats['faults']}")
    print(f"  attempts dialed twice 0, contacts on two calls at once 0, calls outside the window 0, "
          f"max simultaneous {stats['max_active']} (limit {LIMIT})")
    print(f"  jobs {collections.Counter(j['status'] for j in jobs)}, recovered leases {recovered}, "
          f"lowest balance {lowest_balance[0]} s, ledger balanced")
    print(f"  most calls one contact received {max(calls_per_contact.values())} (at most 2 rounds x 2 numbers); "
          f"longest attempt from dial to its end {max(lives) / 1000:.0f} simulated s (deadline {deadline_s} s "
          f"+ lease and stop grace)")
