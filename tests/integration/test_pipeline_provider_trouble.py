"""Nobody is hammered, every contact ends: connected calls that drop, refused calls, provider account
problems, calls that never end, numbers with a long history, and one workspace shared by accounts.

Real processes (simulator, dramatiq workers, clock) and simulator scenarios; the checks read the
simulator's own record and the system's recorded decisions.
"""

from __future__ import annotations

import collections
import itertools
from datetime import UTC, datetime

import pytest

from shared.clock import started_at
from shared.domain import states
from shared.stores import attempts as attempt_states
from shared.stores.batch_controls import resume_batch
from tests.helpers import jitter_s, wait_until
from tests.integration.test_pipeline_campaign import numbers, setup_campaign, wait_final

pytestmark = pytest.mark.slow   # a running stack (simulator, workers, clock) or the simulator process

START = datetime(2026, 3, 3, 14, 0, tzinfo=UTC)   # a Tuesday, 11:00 in Santiago
#: Free retries 0.1, 0.2, 0.4 ... real seconds apart (5 s in production), so that a test sees several.
QUICK_RETRIES = {"pipeline_free_retry_base_s": 0.1, "pipeline_max_free_retries": 4}


def contacts_for(phones, per_contact=1):
    return [{"name": f"c{i}", "phones": list(phones[start:start + per_contact])}
            for i, start in enumerate(range(0, len(phones), per_contact))]


def test_a_connected_call_that_drops_spends_its_attempt_and_is_not_called_again_soon(stack_factory):
    # 90 s conversations that end with the agent's connection lost, on both numbers of each contact.
    phones = numbers("31", 6)
    dropped = {"outcome": "answer", "ring_s": 2, "duration_s": 90, "reason": "error_llm_websocket_lost_connection"}
    stack, runtime = stack_factory(clock=started_at(START, speed=240),
                                   scenario={"numbers": dict.fromkeys(phones, dropped)})
    settings = {"max_attempts": 3, "retry_delay_hours": 0.05}
    batch = setup_campaign(runtime, contacts_for(phones, 2), settings)
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    per_contact = collections.Counter(r["body"]["metadata"]["job_id"] for r in stack.simulator.dials())
    assert max(per_contact.values()) <= 3 * 2 and set(per_contact.values()) == {3}   # one call per round
    for job in runtime.jobs.find({"batch_id": batch["_id"]}):
        assert job["status"] == states.FAILED and job["tries"] == 3
        assert job["last_error"].startswith("max attempts reached (3): connected call dropped")
        attempts = runtime.attempts.for_job(job["_id"])
        assert [a["outcome"] for a in attempts] == ["dropped"] * 3
        for failed, retry in itertools.pairwise(attempts):   # each waited the retry delay (3 simulated minutes)
            assert retry["due_at"] - failed["finalized_at"] >= 0.05 * 3_600_000
        assert all(a["charge"] is not None for a in attempts)


def test_refused_calls_back_off_and_a_budget_ends_the_round(stack_factory):
    patient, hopeless = numbers("32", 2)
    refused = {"outcome": "failed", "ring_s": 0.5, "reason": "concurrency_limit_reached"}
    scenario = {"numbers": {patient: {"sequence": [refused, refused, refused, {"outcome": "answer", "duration_s": 20}]},
                            hopeless: refused}}
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=scenario, config_overrides=QUICK_RETRIES)
    contacts = [{"name": "patient", "phones": [patient]}, {"name": "hopeless", "phones": [hopeless]}]
    batch = setup_campaign(runtime, contacts, {"max_attempts": 2, "retry_delay_hours": 0.01})
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    jobs = {j["contact"]["name"]: j for j in runtime.jobs.find({"batch_id": batch["_id"]})}
    assert jobs["patient"]["status"] == states.COMPLETED and jobs["patient"]["tries"] == 0   # refusals spent nothing
    attempts = runtime.attempts.for_job(jobs["patient"]["_id"])
    waits = [b["due_at"] - a["finalized_at"] for a, b in itertools.pairwise(attempts)]
    first_s = QUICK_RETRIES["pipeline_free_retry_base_s"]
    assert len(waits) == 3 and waits == sorted(waits) and waits[0] >= first_s * 0.8 * 60_000   # growing backoff
    hopeless_job = jobs["hopeless"]
    assert hopeless_job["status"] == states.FAILED and hopeless_job["tries"] == 2
    assert "free retries spent" in hopeless_job["last_error"]
    # per round: 1 call + 4 free retries, then the round fails; two rounds
    assert len(stack.simulator.dials(hopeless)) == 2 * (1 + 4)


def test_a_caller_id_the_provider_refuses_holds_the_batch_and_burns_no_number(stack_factory):
    phones = numbers("33", 4)
    scenario = {"numbers": {p: {"outcome": "answer", "duration_s": 20} for p in phones},
                "from_numbers": ["+12125550199"]}   # the workspace owns another number than the batch's
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario=scenario)
    batch = setup_campaign(runtime, contacts_for(phones, 2), {})
    held = wait_until(lambda: (b := runtime.batches.get(batch["_id"]))["status"] == states.BATCH_HELD and b,
                      timeout_s=60)
    assert "caller id" in held["held_reason"] and "from_number" in held["held_reason"]
    wait_until(lambda: runtime.jobs.counts(batch["_id"])[states.PENDING] == 2, timeout_s=30)
    for job in runtime.jobs.find({"batch_id": batch["_id"]}):
        assert job["tries"] == 0 and job["invalid_phones"] == [] and job["status"] == states.PENDING
    refused = len(stack.simulator.calls())
    assert refused >= 1 and stack.simulator.dials() == []
    # The operator fixes the caller id and resumes: every contact is called and reached.
    runtime.batches.update(batch["_id"], {"from_number": "+12125550199"})
    resume_batch(runtime.batches, batch["_id"])
    wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    assert {j["status"] for j in runtime.jobs.find({"batch_id": batch["_id"]})} == {states.COMPLETED}


def test_bad_key_and_no_payment_hold_every_batch_until_resumed(stack_factory):
    phones = numbers("34", 4)
    stack, runtime = stack_factory(clock=started_at(START, speed=60),
                                   scenario={"numbers": {p: {"outcome": "answer", "duration_s": 20} for p in phones}})
    stack.simulator.script_faults("create_phone_call", *["401"] * 10)
    first = setup_campaign(runtime, contacts_for(phones[:2]), {})
    second = runtime.batches.create({"name": "other", "account_id": "acme", "agent_id": "agent_test"})
    runtime.jobs.create_jobs(second["_id"], "acme", contacts_for(phones[2:]))
    for batch in (first, second):
        held = wait_until(lambda b=batch: (d := runtime.batches.get(b["_id"]))["status"] == states.BATCH_HELD and d,
                          timeout_s=60)
        assert "API key" in held["held_reason"] or "401" in held["held_reason"]
    # Every job is back to pending, unspent, before anything changes at the provider.
    wait_until(lambda: not any(j["status"] in states.LEASED for j in runtime.jobs.find({"account_id": "acme"})),
               timeout_s=60)
    assert stack.simulator.dials() == []
    stack.simulator.script_faults("create_phone_call", *["402"] * 10)   # the key is fixed, but the trial ended
    resume_batch(runtime.batches, first["_id"])
    try:
        held = wait_until(lambda: (d := runtime.batches.get(first["_id"]))["status"] == states.BATCH_HELD
                          and "402" in d["held_reason"] and d, timeout_s=60)
    except TimeoutError:
        raise AssertionError(f"{runtime.batches.get(first['_id'])}\n{runtime.jobs.find({})}\n"
                             f"{stack.simulator.request('GET', '/debug/faults')}") from None
    assert held["held_reason"]
    assert stack.simulator.dials() == []
    stack.simulator.set_faults()   # paid
    for batch in (first, second):
        resume_batch(runtime.batches, batch["_id"])
        wait_final(runtime, batch["_id"], timeout_s=60, stack=stack)
    jobs = runtime.jobs.find({"account_id": "acme"})
    assert {j["status"] for j in jobs} == {states.COMPLETED} and {j["tries"] for j in jobs} == {0}


def test_a_call_that_never_ends_is_stopped_and_a_failing_stop_is_retried_then_ended_here(stack_factory):
    stubborn, silent = numbers("35", 2)
    # A lease of 20 real seconds gives the provider a stop grace of 10 (half the lease) after the deadline. At 120x
    # the deadline (ring timeout + longest call + grace: 110 simulated seconds) comes 0.9 real seconds after the dial.
    clock = started_at(START, speed=120)
    stack, runtime = stack_factory(clock=clock, config_overrides={"pipeline_lease_s": 20.0},
                                   scenario={"numbers": {stubborn: "stuck", silent: "stuck"}})
    stack.simulator.script_faults("stop_call", *["500"] * 6)   # the first two stops fail (3 sends each)
    settings = {"ring_timeout": 20, "max_call_duration": 60, "max_attempts": 1}
    batch = setup_campaign(runtime, [{"name": "stubborn", "phones": [stubborn]}], settings)
    wait_final(runtime, batch["_id"], timeout_s=90, stack=stack)
    (job,) = runtime.jobs.find({"batch_id": batch["_id"]})
    (attempt,) = runtime.attempts.for_job(job["_id"])
    assert job["status"] == states.FAILED and attempt["outcome"] == "timeout" and attempt["stopped_for_timeout"]
    assert job["stop_attempts"] >= 3 and job["stop_acked"]
    assert stack.simulator.call_debug(attempt["call_id"])["status"] == "ended"   # the third stop went through

    # A provider that never stops the call: the attempt ends here, a stop grace after its deadline. A stack of its
    # own (nothing of the first left in the broker), whose 10 s lease gives a stop grace of 5 real seconds (its
    # create timeout below the dialing lease, as the configuration requires). The stops start at the deadline;
    # the look that ends the attempt is the one after the second failed stop: two stops of three sends each (at
    # least 1.1 s each with the client's backoff) and the waits after them (1 s, then 2 s) put it at least 5.2 real
    # seconds after the deadline, past the grace, and about 6 on a loaded machine.
    stack.stop(graceful=False)
    runtime.redis.flushdb()
    short_lease = {"pipeline_lease_s": 10.0, "retell_create_timeout_s": 5.0}
    stack, runtime = stack_factory(clock=clock, config_overrides=short_lease, scenario={"numbers": {silent: "stuck"}})
    stack.simulator.set_faults(endpoints=["stop_call"], rate_500=1.0)
    other = runtime.batches.create({"name": "silent", "account_id": "acme", "agent_id": "agent_test",
                                    "call_settings": settings})
    runtime.jobs.create_jobs(other["_id"], "acme", [{"name": "silent", "phones": [silent]}])
    wait_final(runtime, other["_id"], timeout_s=90, stack=stack)
    (job,) = runtime.jobs.find({"batch_id": other["_id"]})
    (attempt,) = runtime.attempts.for_job(job["_id"])
    assert attempt["outcome"] == "timeout" and attempt["forced_end"] and attempt["finalized_by"] == "deadline"
    assert job["stop_attempts"] >= 1 and not job.get("stop_acked")   # its stops were tried, none went through
    deadline_s = (job["dialed_at"] + (20 + 60 + 30) * 1000) / 1000
    assert attempt["finalized_at"] / 1000 - deadline_s <= clock.simulated_seconds(5) + jitter_s(clock)   # stop grace
    assert runtime.slots.holders("acme") == {} and runtime.billing.check("acme").ok
    wait_until(lambda: runtime.batches.get(other["_id"])["status"] == states.BATCH_COMPLETED, timeout_s=30)


def test_a_number_with_a_long_history_is_looked_up_within_bounds(config, db, clock, simulator_factory):
    """An unknown create past the idempotency hour: the lookup reads at most 10 pages of the number's
    calls, and past the attempt's deadline it gives up instead of failing on every try."""
    from tests.fixtures.web import pipeline_for
    from workers.runtime import build_runtime

    fast = started_at(START, speed=1)
    sim = simulator_factory(clock=fast, concurrency_limit=5000,
                            scenario={"defaults": {"answer": {"ring_s": [1, 1], "duration_s": [1, 1]}}})
    runtime, pipeline = pipeline_for(build_runtime(config, fast), sim)
    (phone,) = numbers("36", 1)
    for i in range(2_100):   # 11 pages of 200 calls to the same number
        sim.request("POST", "/v2/create-phone-call", {"from_number": "+12125550100", "to_number": phone,
                                                       "metadata": {"n": i}}, auth=True)
    runtime.account_changes.apply("acme", {"plan": {"type": "unlimited"}})
    batch = runtime.batches.create({"name": "history", "account_id": "acme", "agent_id": "agent_test"})
    job_id = runtime.jobs.create_jobs(batch["_id"], "acme", [{"name": "c", "phones": [phone]}]).job_ids[0]
    two_hours_ago = fast.now_ms() - 2 * 3_600_000
    aid = f"{job_id}:r1:p0:d1"
    runtime.jobs.coll.update_one({"_id": job_id}, {"$set": {
        "status": states.DIALING, "attempt_id": aid, "lease_owner": "owner", "dials": 1, "dialed_at": two_hours_ago,
        "lease_until": fast.now_ms() + 60_000}})
    runtime.attempts.insert({"_id": aid, "job_id": job_id, "batch_id": batch["_id"], "account_id": "acme",
                             "round": 1, "phone_index": 0, "dial": 1, "to_number": phone,
                             "created_at": two_hours_ago, "owner": "owner"})
    assert pipeline.reconcile(job_id, "owner") == "given_up"
    job = runtime.jobs.get(job_id)
    assert job["status"] == states.RETRY_WAIT and job["tries"] == 1 and "past the deadline" in job["last_error"]
    attempt = runtime.attempts.get(aid)
    assert attempt["state"] == attempt_states.ENDED and attempt["outcome"] == "unknown"
    lists = sim.stats()["requests"]["list_calls"]
    assert lists <= 10


def test_three_accounts_share_the_workspace_fairly(stack_factory):
    # Every account may have 20 calls at once; the workspace (one API key) allows 25.
    big, small, tiny = numbers("37", 120), numbers("38", 24), numbers("39", 24)
    rules = {p: {"outcome": "answer", "ring_s": 2, "duration_s": [30, 60]} for p in big + small + tiny}
    stack, runtime = stack_factory(clock=started_at(START, speed=60), scenario={"numbers": rules}, workers=2,
                                   simulator_flags={"concurrency_limit": 25})
    batches = {}
    for account, phones in (("big", big), ("small", small), ("tiny", tiny)):
        runtime.account_changes.apply(account, {"plan": {"type": "unlimited"}, "concurrency_limit": 20})
        batch = runtime.batches.create({"name": account, "account_id": account, "agent_id": "agent_test"})
        runtime.jobs.create_jobs(batch["_id"], account, contacts_for(phones))
        batches[account] = batch["_id"]
    for batch_id in batches.values():
        wait_final(runtime, batch_id, timeout_s=180, stack=stack)
    stats = stack.simulator.stats()
    assert stats["max_active"] <= 25 and stats["rejected_for_concurrency"] == 0
    reasons = collections.Counter(a.get("disconnection_reason") for a in runtime.attempts.coll.find({}))
    assert reasons["concurrency_limit_reached"] == 0
    dials = stack.simulator.dials()
    account_of = {bid: acc for acc, bid in batches.items()}
    first_call = min(r["received_at"] for r in dials)
    per_minute: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for rec in dials:
        per_minute[account_of[rec["body"]["metadata"]["batch_id"]]][(rec["received_at"] - first_call) // 60_000] += 1
    for account in batches:   # nobody waits for the big campaign: every account is called in the first minute
        assert per_minute[account][0] > 0, dict(per_minute)
    print("\ncalls per account per simulated minute:",
          {a: [per_minute[a][m] for m in range(max(max(c) for c in per_minute.values()) + 1)] for a in batches})
    assert sum(per_minute["big"].values()) == 120
