"""Every job transition against the real MongoDB wire server, including refused ones."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.clock import to_ms
from shared.domain import states
from shared.domain.call_settings import default_call_settings, parse_call_settings
from shared.domain.decisions import first_dialable_phone
from shared.domain.reasons import because
from shared.pipeline.rounds import fail_round, next_phone
from shared.stores.jobs import IllegalTransition, JobStore
from shared.stores.mongo import new_id
from tests.helpers import frozen_clock


def why(text):
    """A reason given as its text."""
    return because("text", text=text)

T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
PHONE_A, PHONE_B, PHONE_C = "+56961234567", "+56961234568", "+56961234569"


@pytest.fixture
def store(db, config):
    return JobStore(db, clock=frozen_clock(T0), config=config)


def _settings(store, raw):
    """A batch's call_settings as the pipeline hands them to the store: parsed, defaults from the store's config."""
    return parse_call_settings(raw, config=store.config)


def _make(store, n=1, phones=(PHONE_A, PHONE_B), batch_id=None, due=None):
    batch_id = batch_id or new_id()
    # each its own debt (external_id), so that they may share the numbers
    contacts = [{"name": f"c{i}", "phones": list(phones), "variables": {"i": i}, "external_id": f"debt-{i}"}
                for i in range(n)]
    result = store.create_jobs(batch_id, "acc", contacts, next_try_at=due)
    assert result.imported == n and not result.errors
    return batch_id, result.job_ids


def _claim_one(store, job_id):
    claimed = store.claim_due(limit=10, lease=timedelta(minutes=5))
    assert job_id in [j["_id"] for j in claimed]
    return next(j for j in claimed if j["_id"] == job_id)


def test_create_keeps_valid_contacts_and_names_bad_ones(store):
    contacts = [
        {"name": "ok", "phones": ["+56 9 6123 4567"]},
        {"name": "Bad Bob", "phones": ["+56961234567", "123"]},
        {"name": "ok2", "phones": ["961234568"]},
        "not an object",
    ]
    result = store.create_jobs(new_id(), "acc", contacts, start_index=1)
    assert result.imported == 2
    assert [i for i, _ in result.errors] == [2, 4]
    assert "Bad Bob" in result.errors[0][1] and "'123'" in result.errors[0][1]
    docs = store.find({})
    assert sorted(d["contact"]["phones"][0] for d in docs) == [PHONE_A, "+56961234568"]
    assert all(d["status"] == states.PENDING and d["tries"] == 0 and d["phone_index"] == 0 for d in docs)


def test_external_ids_do_not_duplicate(store):
    batch = new_id()
    first = store.create_jobs(batch, "acc", [{"phones": [PHONE_A], "external_id": "x1"},
                                             {"phones": [PHONE_B], "external_id": "x2"}])
    again = store.create_jobs(batch, "acc", [{"phones": [PHONE_A], "external_id": "x1"},
                                             {"phones": [PHONE_C], "external_id": "x3"}])
    other_batch = store.create_jobs(new_id(), "acc", [{"phones": [PHONE_A], "external_id": "x1"}])
    assert (first.imported, again.imported, again.duplicates, other_batch.imported) == (2, 1, 1, 1)
    assert store.counts(batch)[states.PENDING] == 3
    assert again.duplicate_at == [0] and "external_id 'x1'" in again.errors[0][1]
    moved = store.create_jobs(batch, "acc", [{"phones": [PHONE_C], "external_id": "x1"}])   # other numbers, same id
    assert (moved.imported, moved.duplicates) == (0, 1)


def test_the_same_phones_without_external_id_are_one_contact(store):
    batch = new_id()
    first = store.create_jobs(batch, "acc", [
        {"name": "Ana", "phones": [PHONE_A, PHONE_B]},
        {"name": "Ana again", "phones": ["9 6123 4568", "+56 9 6123 4567"]},   # the same set, written otherwise
        {"name": "Ana, one number", "phones": [PHONE_A]},                       # another set: another contact
        {"name": "Bad", "phones": ["123"]},
        {"name": "Ana once more", "phones": [PHONE_B, PHONE_A, PHONE_B]},
    ], start_index=10)
    assert (first.imported, first.duplicates, first.duplicate_at) == (2, 2, [11, 14])
    assert [i for i, _ in first.errors] == [11, 13, 14]
    assert first.errors[0][1].startswith("phones: duplicate: a contact with the same phone numbers")
    retried = store.create_jobs(batch, "acc", [{"name": "Ana", "phones": [PHONE_A, PHONE_B]},
                                               {"name": "Ana, one number", "phones": [PHONE_A]}])
    assert (retried.imported, retried.duplicates, retried.duplicate_at) == (0, 2, [0, 1])
    assert store.create_jobs(new_id(), "acc", [{"phones": [PHONE_A, PHONE_B]}]).imported == 1   # another batch
    assert sorted(j["contact"]["name"] for j in store.find({"batch_id": batch})) == ["Ana", "Ana, one number"]


def test_the_same_phones_with_different_external_ids_are_different_debts(store):
    batch = new_id()
    result = store.create_jobs(batch, "acc", [
        {"name": "loan", "phones": [PHONE_A], "external_id": "loan-1"},
        {"name": "card", "phones": [PHONE_A], "external_id": "card-7"},
        {"name": "no id", "phones": [PHONE_A]},                          # neither of them
        {"name": "loan again", "phones": [PHONE_A], "external_id": "loan-1"},
    ])
    assert (result.imported, result.duplicates, result.duplicate_at) == (3, 1, [3])
    assert result.errors == [(3, "external_id: duplicate: a contact with external_id 'loan-1' is already in "
                                 "this batch; not imported again")]


def test_concurrent_imports_of_the_same_contacts_keep_one_job_each(db, config):
    stores = [JobStore(db, clock=frozen_clock(T0), config=config) for _ in range(4)]
    batch = new_id()
    contacts = [{"name": f"c{i}", "phones": [f"+1212555{i:04d}"]} for i in range(300)]
    results = []
    barrier = threading.Barrier(len(stores))

    def upload(store):
        barrier.wait()
        results.append(store.create_jobs(batch, "acc", contacts))

    threads = [threading.Thread(target=upload, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.imported for r in results) == 300 and sum(r.duplicates for r in results) == 900
    assert stores[0].coll.count_documents({"batch_id": batch}) == 300


def test_jobs_from_before_phones_key_stay_and_new_imports_are_checked(db, config):
    from shared.stores import mongo

    db.jobs.drop()
    old = [{"_id": new_id(), "batch_id": "b" * 24, "account_id": "acc", "status": states.PENDING, "tries": 0,
            "contact": {"name": f"old{i}", "phones": [PHONE_A], "variables": {}}, "next_try_at": to_ms(T0)}
           for i in range(3)]                          # written before phones_key: the same numbers three times
    db.jobs.insert_many(old)
    mongo.ensure_indexes(db)                           # as every process does at start-up
    assert [("phones_key", 1)] in [index["key"] for index in db.jobs.index_information().values()]
    store = JobStore(db, clock=frozen_clock(T0), config=config)
    result = store.create_jobs("b" * 24, "acc", [{"phones": [PHONE_B]}, {"phones": [PHONE_B]}])
    assert (result.imported, result.duplicates) == (1, 1)
    assert store.coll.count_documents({"batch_id": "b" * 24}) == 4
    assert len(store.claim_due(limit=10, lease=timedelta(minutes=5))) == 4


def test_claim_due_respects_time_order_limit_and_batches(store):
    batch, ids = _make(store, 5)
    late_batch, late = _make(store, 1, due=T0 + timedelta(hours=1))
    store.coll.update_one({"_id": ids[3]}, {"$set": {"next_try_at": to_ms(T0 - timedelta(minutes=10))}})
    claimed = store.claim_due(limit=2, lease=timedelta(minutes=5), batch_ids=[batch, late_batch])
    assert claimed[0]["_id"] == ids[3]
    assert len(claimed) == 2
    assert all(j["status"] == states.QUEUED and j["lease_until"] == to_ms(T0 + timedelta(minutes=5)) for j in claimed)
    assert len({j["lease_owner"] for j in claimed}) == 1
    rest = store.claim_due(limit=100, lease=timedelta(minutes=5))
    assert len(rest) == 3 and late[0] not in [j["_id"] for j in rest]
    assert store.claim_due(limit=100, lease=timedelta(minutes=5), horizon=timedelta(hours=2))[0]["_id"] == late[0]
    assert store.claim_due(limit=100, lease=timedelta(minutes=5), batch_ids=[]) == []


def test_claim_only_active_batches_when_told(store):
    batch_a, _ = _make(store, 2)
    _make(store, 2)
    claimed = store.claim_due(limit=10, lease=timedelta(minutes=1), batch_ids=[batch_a])
    assert {j["batch_id"] for j in claimed} == {batch_a}


def _in_call(store, job_id, call_id="c1", job=None):
    """Claim the job (unless ``job``, its claimed document, is given) and take it through ``dialing`` to ``in_call``
    with ``call_id``; the job after it."""
    job = job or _claim_one(store, job_id)
    assert store.start_dial(job_id, job["lease_owner"], set_={"attempt_id": "a1"}, inc={"dials": 1})
    return store.record_call(job_id, job["lease_owner"], "a1", set_={"call_id": call_id})


def test_completing_and_refusals(store):
    _, (job_id,) = _make(store)
    done = {"set_": {"outcome": "answered"}}
    assert store.complete(job_id, **done) is None  # pending: not in a call
    job = _claim_one(store, job_id)
    assert store.complete(job_id, **done) is None  # queued: not in a call either
    owner = job["lease_owner"]
    assert store.start_dial(job_id, "someone-else", set_={"attempt_id": "a1"}) is None
    dialing = store.start_dial(job_id, owner, set_={"attempt_id": "a1"}, inc={"dials": 1})
    assert dialing["status"] == states.DIALING and dialing["dials"] == 1
    assert store.record_call(job_id, owner, "another-attempt", set_={"call_id": "c1"}) is None
    in_call = store.record_call(job_id, owner, "a1", set_={"call_id": "c1"})
    assert in_call["status"] == states.IN_CALL and in_call["lease_owner"] == owner
    assert store.complete(job_id, lease_owner="someone-else", **done) is None
    after = store.complete(job_id, lease_owner=owner, where={"call_id": "c1"}, **done)
    assert after["status"] == states.COMPLETED and after["finished_at"] == to_ms(T0)
    assert "lease_owner" not in after and "next_try_at" not in after
    assert store.complete(job_id, **done) is None  # already final


def test_a_move_the_table_does_not_allow_is_refused_before_any_write(store):
    _, (job_id,) = _make(store)
    job = _claim_one(store, job_id)
    before = store.get(job_id)
    with pytest.raises(IllegalTransition, match="from queued to completed"):
        store.complete(job_id, expected=states.LEASED, lease_owner=job["lease_owner"])
    with pytest.raises(IllegalTransition, match="from in_call to waiting_balance"):
        store.park_for_balance(job_id, why("x"), expected=states.LEASED)
    with pytest.raises(IllegalTransition, match="from completed to failed"):
        store.fail(job_id, why("x"), expected=(states.COMPLETED,))
    with pytest.raises(IllegalTransition, match="claimable state, not failed"):
        store.postpone(job_id, T0, why("x"), to=states.FAILED)
    with pytest.raises(IllegalTransition, match="decision cannot move a job to dialing"):
        store.apply_decision(job_id, states.DIALING, expected=(states.QUEUED,))
    with pytest.raises(IllegalTransition, match="from queued to queued"):
        store.claim_next(lease=timedelta(minutes=1), batch_ids=[job["batch_id"]], account_id="acc",
                         among=(states.QUEUED,))
    assert store.get(job_id) == before


@pytest.mark.parametrize("final", ["complete", "fail", "cancel"])
def test_a_named_move_to_a_final_state_finishes_the_job(store, final):
    _, (job_id,) = _make(store)
    job = _in_call(store, job_id)
    store.coll.update_one({"_id": job_id}, {"$set": {"poll_at": 5, "next_try_at": 9}})
    own = {"expected": (states.IN_CALL,), "lease_owner": job["lease_owner"]}
    after = {"complete": lambda: store.complete(job_id, set_={"outcome": "answered", "next_try_at": 1}, **own),
             "fail": lambda: store.fail(job_id, why("no"), set_={"lease_until": 1}, **own),
             "cancel": lambda: store.cancel(job_id, why("batch cancelled"), **own)}[final]()
    assert after["status"] in states.FINAL and after["finished_at"] == to_ms(T0)
    assert [f for f in NOT_FINAL_FIELDS if f in after] == []
    assert after["call_id"] == "c1" and after["attempt_id"] == "a1"


def test_leaving_a_leased_state_drops_the_lease(store):
    _, (a, b, c) = _make(store, 3)
    claimed = {j["_id"]: j for j in store.claim_due(limit=10, lease=timedelta(minutes=5))}
    job = _in_call(store, a, job=claimed[a])
    released = store.release(a, T0 + timedelta(minutes=1), why("provider fault"), lease_owner=job["lease_owner"],
                             where={"call_id": "c1"}, inc={"free_retries": 1})
    assert released["status"] == states.PENDING and released["free_retries"] == 1
    assert [f for f in ("lease_owner", "lease_until", "poll_at") if f in released] == []
    parked = store.park_for_balance(b, why("insufficient balance"), lease_owner=claimed[b]["lease_owner"])
    assert parked["status"] == states.WAITING_BALANCE and parked["next_try_at"] == to_ms(T0)
    assert "lease_owner" not in parked and "lease_until" not in parked
    back = store.unpark(b)
    assert back["status"] == states.PENDING and back["next_try_at"] == to_ms(T0)
    assert store.unpark(b) is None  # no longer waiting for balance
    later = store.postpone(c, T0 + timedelta(hours=1), why("outside hours"), lease_owner=claimed[c]["lease_owner"])
    assert later["status"] == states.WAITING_SCHEDULE and "lease_owner" not in later


#: What a final job never carries: it is due never again and held by no process.
NOT_FINAL_FIELDS = ("next_try_at", "lease_owner", "lease_until", "poll_at")
SOME_FIELDS = (*NOT_FINAL_FIELDS, "finished_at", "outcome", "call_id", "last_error", "tries")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(move=st.sampled_from([(frm, to) for frm in states.JOB_STATES for to in states.FINAL
                             if states.can_move(frm, to)]),
       held=st.sets(st.sampled_from(NOT_FINAL_FIELDS)),
       set_=st.dictionaries(st.sampled_from(SOME_FIELDS), st.none() | st.integers(0, 2**40) | st.text(max_size=6),
                            max_size=5),
       unset=st.lists(st.sampled_from(SOME_FIELDS), max_size=4),
       inc=st.dictionaries(st.sampled_from(("dials", "recoveries", "next_try_at", "lease_until")),
                           st.integers(0, 3), max_size=2))
def test_entering_a_final_state_always_finishes_the_job(store, move, held, set_, unset, inc):
    # Whatever the caller writes with it, a job entering completed, failed or cancelled (from any state the table
    # lets enter it) gets finished_at and loses its due time, its lease and its safety-net poll: one rule, in the
    # store.
    start, to = move
    _, (job_id,) = _make(store)
    store.coll.update_one({"_id": job_id}, {"$set": {"status": start, **{f: 7 for f in held}}})
    after = store._transition(job_id, expected=[start], to=to, set_=set_, unset=unset, inc=inc)
    assert after is not None and after["status"] == to
    assert after["finished_at"] == to_ms(T0)
    assert [f for f in NOT_FINAL_FIELDS if f in after] == []


def test_mark_failed_round_uses_batch_retry_delay(store):
    _, (job_id,) = _make(store)
    _claim_one(store, job_id)
    job = fail_round(store, job_id, why("busy"), _settings(store, {"retry_delay_hours": 48, "max_attempts": 5}))
    assert job["status"] == states.RETRY_WAIT and job["tries"] == 1 and job["last_error"] == "busy"
    assert job["next_try_at"] == to_ms(T0 + timedelta(hours=48))


def test_a_failed_round_waits_the_delay_of_the_outcome_that_ended_it(store):
    settings = _settings(store, {"retry_delay_hours": 4, "max_attempts": 5,
                                 "retry_delay_by_outcome": {"busy": 0.25, "voicemail": 24, "timeout": 1}})
    _, (a, b, c, d) = _make(store, 4, phones=(PHONE_A, PHONE_B))
    expected = {}
    assert len(store.claim_due(limit=10, lease=timedelta(minutes=5))) == 4
    for job_id in (a, b, c, d):
        assert next_phone(store, job_id, why("voicemail"), settings, outcome="voicemail")["status"] == states.PENDING
    assert len(store.claim_due(limit=10, lease=timedelta(minutes=5))) == 4
    expected[a] = next_phone(store, a, why("busy"), settings, outcome="busy"), 0.25       # the last phone's outcome
    expected[b] = next_phone(store, b, why("no answer"), settings, outcome="no_answer"), 4   # not listed
    expected[c] = fail_round(store, c, why("call too long"), settings, outcome="timeout"), 1
    expected[d] = fail_round(store, d, why("provider refused the call"), settings), 4   # no call ended it
    for job, hours in expected.values():
        assert job["status"] == states.RETRY_WAIT and job["tries"] == 1
        assert job["next_try_at"] == to_ms(T0 + timedelta(hours=hours)), job["last_error"]


def test_mark_failed_without_settings_uses_global_default(store, config):
    _, (job_id,) = _make(store)
    _claim_one(store, job_id)
    job = fail_round(store, job_id, why("no answer"), default_call_settings(store.config))
    assert job["next_try_at"] == to_ms(T0 + timedelta(minutes=config.retry_delay_minutes))
    assert job["phone_index"] == 0


def test_mark_failed_last_round_is_final(store):
    _, (job_id,) = _make(store)
    store.coll.update_one({"_id": job_id}, {"$set": {"tries": 1}})
    _claim_one(store, job_id)
    job = fail_round(store, job_id, why("busy"), _settings(store, {"max_attempts": 2}))
    assert job["status"] == states.FAILED and job["tries"] == 2
    assert job["last_error"] == "max attempts reached (2): busy"


def test_fail_terminal(store):
    _, (job_id,) = _make(store)
    _claim_one(store, job_id)
    job = store.fail(job_id, why("insufficient balance"))
    assert job["status"] == states.FAILED and job["last_error"] == "insufficient balance" and job["tries"] == 0
    assert store.fail(job_id, why("again")) is None


def test_mark_failed_refused_in_wrong_state(store):
    _, (job_id,) = _make(store)
    assert fail_round(store, job_id, why("x"), default_call_settings(store.config)) is None
    assert store.get(job_id)["status"] == states.PENDING


def test_postpone_to_waiting_schedule(store):
    _, (job_id,) = _make(store)
    job = _claim_one(store, job_id)
    monday = T0 + timedelta(days=2)
    assert store.postpone(job_id, monday, why("outside hours"), lease_owner="wrong") is None
    out = store.postpone(job_id, monday, why("outside hours"), lease_owner=job["lease_owner"],
                         inc={"postponed_by_schedule": 1})
    assert out["status"] == states.WAITING_SCHEDULE and out["next_try_at"] == to_ms(monday)
    assert out["postponed_by_schedule"] == 1 and out["tries"] == 0
    assert store.claim_due(limit=10, lease=timedelta(minutes=1)) == []


def test_next_phone_then_failed_round(store):
    _, (job_id,) = _make(store, phones=(PHONE_A, PHONE_B))
    _claim_one(store, job_id)
    job = next_phone(store, job_id, why("no answer"), default_call_settings(store.config))
    assert job["status"] == states.PENDING and job["phone_index"] == 1 and job["tries"] == 0
    _claim_one(store, job_id)
    job = next_phone(store, job_id, why("busy"), _settings(store, {"retry_delay_hours": 1, "max_attempts": 3}))
    assert job["status"] == states.RETRY_WAIT and job["tries"] == 1 and job["phone_index"] == 0


def test_next_phone_skips_invalid_numbers_forever(store):
    _, (job_id,) = _make(store, phones=(PHONE_A, PHONE_B, PHONE_C))
    _claim_one(store, job_id)
    job = next_phone(store, job_id, why("invalid destination"), default_call_settings(store.config), invalid=True)
    assert job["invalid_phones"] == [0] and job["phone_index"] == 1
    _claim_one(store, job_id)
    job = next_phone(store, job_id, why("no answer"), default_call_settings(store.config))
    assert job["phone_index"] == 2
    _claim_one(store, job_id)
    job = next_phone(store, job_id, why("no answer"), _settings(store, {"max_attempts": 3}))
    assert job["status"] == states.RETRY_WAIT and job["phone_index"] == 0
    assert first_dialable_phone(job) == 1


def test_next_phone_all_invalid_fails(store):
    _, (job_id,) = _make(store, phones=(PHONE_A,))
    _claim_one(store, job_id)
    job = next_phone(store, job_id, why("invalid destination"), default_call_settings(store.config), invalid=True)
    assert job["status"] == states.FAILED and job["last_error"].startswith("no valid phone number")


def test_release_keeps_attempts(store):
    _, (job_id,) = _make(store)
    _claim_one(store, job_id)
    later = T0 + timedelta(seconds=30)
    job = store.release(job_id, later, why("provider rate limited"))
    assert job["status"] == states.PENDING and job["tries"] == 0 and job["next_try_at"] == to_ms(later)


def test_claim_expired_takes_over_a_dead_lease(store):
    _, ids = _make(store, 3)
    claimed = store.claim_due(limit=10, lease=timedelta(minutes=-1))  # already expired
    owner = claimed[0]["lease_owner"]
    store.start_dial(ids[1], owner, set_={"attempt_id": "a1"})
    store.record_call(ids[1], owner, "a1", set_={"call_id": "c1"})
    store.start_dial(ids[2], owner, set_={})
    taken = store.claim_expired(limit=10, lease=timedelta(minutes=5))
    assert {j["_id"] for j in taken} == set(ids)
    assert {j["status"] for j in taken} == {states.QUEUED, states.IN_CALL, states.DIALING}
    assert all(j["lease_owner"] != claimed[0]["lease_owner"] and j["recoveries"] == 1 for j in taken)
    assert store.claim_expired(limit=10, lease=timedelta(minutes=5)) == []


def test_cancel_batch_finishes_only_undialed_jobs(store):
    batch, _ = _make(store, 3)
    store.claim_due(limit=1, lease=timedelta(minutes=5))
    first = store.find({"status": states.QUEUED})[0]
    store.start_dial(first["_id"], first["lease_owner"], set_={"attempt_id": "a1"})
    store.record_call(first["_id"], first["lease_owner"], "a1", set_={"call_id": "c1"})
    assert store.cancel_batch(batch) == 2
    counts = store.counts(batch)
    assert counts[states.CANCELLED] == 2 and counts[states.IN_CALL] == 1
    for job in store.find({"batch_id": batch, "status": states.CANCELLED}):
        assert job["finished_at"] == to_ms(T0) and job["reason_code"] == "batch_cancelled"
        assert [f for f in NOT_FINAL_FIELDS if f in job] == []


def test_release_waiting_balance(store):
    _make(store, 2)
    store.coll.update_many({}, {"$set": {"status": states.WAITING_BALANCE}})
    assert store.release_waiting_balance("acc") == 2
    assert store.counts()[states.PENDING] == 2


def test_eight_threads_claim_two_thousand_jobs_each_exactly_once(db, config, clock):
    store = JobStore(db, clock=clock, config=config)
    store.create_jobs(new_id(), "acc", [{"phones": [PHONE_A], "external_id": f"debt-{i}"} for i in range(2000)])
    seen: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker():
        try:
            while True:
                got = store.claim_due(limit=50, lease=timedelta(minutes=5))
                if not got:
                    if store.counts()[states.PENDING] == 0:
                        return
                    continue
                with lock:
                    seen.extend(j["_id"] for j in got)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(seen) == 2000
    assert len(set(seen)) == 2000
    assert store.counts()[states.QUEUED] == 2000


def _into(store, ids, status, **fields):
    store.coll.update_many({"_id": {"$in": list(ids)}}, {"$set": {"status": status, **fields}})


def test_claim_due_with_many_calls_in_progress_returns_the_oldest_due_of_every_claimable_state(store):
    # 300 jobs in calls, older than everything due, then due jobs spread over the three claimable states
    _, in_call = _make(store, 300, due=T0 - timedelta(hours=5))
    _into(store, in_call, states.IN_CALL, lease_owner="x", lease_until=to_ms(T0 + timedelta(hours=1)))
    due = []
    for i, state in enumerate([states.RETRY_WAIT, states.PENDING, states.WAITING_SCHEDULE] * 4):
        _, (job_id,) = _make(store, due=T0 - timedelta(minutes=60 - i))  # i = 0 is the oldest
        _into(store, [job_id], state)
        due.append(job_id)
    _, (later,) = _make(store, due=T0 + timedelta(minutes=1))  # not due yet
    first = store.claim_due(limit=5, lease=timedelta(minutes=5))
    assert [j["_id"] for j in first] == due[:5]
    assert all(j["status"] == states.QUEUED for j in first)
    rest = store.claim_due(limit=100, lease=timedelta(minutes=5))
    assert [j["_id"] for j in rest] == due[5:]
    assert later not in [j["_id"] for j in rest]
    assert store.counts()[states.IN_CALL] == 300


def test_claim_due_of_one_account_and_batch_skips_the_others(store):
    batch, mine = _make(store, 3, due=T0 - timedelta(minutes=1))
    other = store.create_jobs(batch, "other-acc", [{"phones": [PHONE_C], "external_id": "o"}],
                              next_try_at=T0 - timedelta(minutes=2)).job_ids
    _make(store, 2, due=T0 - timedelta(minutes=3))  # another batch
    claimed = store.claim_due(limit=10, lease=timedelta(minutes=5), batch_ids=[batch], account_id="acc")
    assert sorted(j["_id"] for j in claimed) == sorted(mine)
    assert store.get(other[0])["status"] == states.PENDING


def test_threads_claim_jobs_of_every_claimable_state_exactly_once_beside_calls_in_progress(db, config, clock):
    store = JobStore(db, clock=clock, config=config)
    batch = new_id()
    ids = store.create_jobs(batch, "acc", [{"phones": [PHONE_A], "external_id": f"debt-{i}"}
                                           for i in range(900)]).job_ids
    _into(store, ids[:300], states.IN_CALL, lease_owner="x", lease_until=store.clock.now_ms() + 3_600_000)
    _into(store, ids[300:400], states.RETRY_WAIT)
    _into(store, ids[400:500], states.WAITING_SCHEDULE)
    seen: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker():
        try:
            while True:
                got = store.claim_due(limit=25, lease=timedelta(minutes=5), batch_ids=[batch], account_id="acc")
                if not got:
                    if not any(store.counts()[s] for s in states.CLAIMABLE):
                        return
                    continue
                assert [j["next_try_at"] for j in got] == sorted(j["next_try_at"] for j in got)
                with lock:
                    seen.extend(j["_id"] for j in got)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(seen) == 600 and set(seen) == set(ids[300:])
    counts = store.counts()
    assert counts[states.QUEUED] == 600 and counts[states.IN_CALL] == 300


def test_claim_expired_takes_the_longest_expired_leases_first_of_every_leased_state(store):
    _, ids = _make(store, 6)
    now = to_ms(T0)
    ends = [now - 5_000, now - 60_000, now - 1_000, now + 60_000, now - 30_000, now - 2_000]
    for job_id, state, end in zip(ids, [states.QUEUED, states.IN_CALL, states.DIALING, states.IN_CALL,
                                        states.DIALING, states.QUEUED], ends, strict=True):
        _into(store, [job_id], state, lease_owner="dead", lease_until=end)
    taken = store.claim_expired(limit=3, lease=timedelta(minutes=5))
    assert {j["_id"] for j in taken} == {ids[1], ids[4], ids[0]}  # 60 s, 30 s and 5 s past their end
    rest = store.claim_expired(limit=10, lease=timedelta(minutes=5))
    assert {j["_id"] for j in rest} == {ids[5], ids[2]}  # the unexpired lease (ids[3]) stays its owner's
    assert store.get(ids[3])["lease_owner"] == "dead"


def test_open_jobs_and_calls_in_progress_are_found_in_every_state(store):
    batches = {}
    for state in (*states.JOB_STATES,):
        batches[state], (job_id,) = _make(store)
        _into(store, [job_id], state, attempt_id=f"a-{state}", lease_until=1)
    empty = new_id()
    open_ = {b for s, b in batches.items() if s not in states.FINAL}
    assert store.batches_with_open_jobs([*batches.values(), empty]) == open_
    assert all(store.has_open_jobs(b) == (s not in states.FINAL) for s, b in batches.items())
    assert sorted(j["attempt_id"] for j in store.calling()) == ["a-dialing", "a-in_call"]
    store.coll.update_many({"status": {"$eq": states.QUEUED}}, {"$set": {"account_id": "acc2"}})
    assert (store.count_queued(None), store.count_queued("acc2"), store.count_queued("acc")) == (1, 1, 0)


def test_an_insert_that_fails_reports_exactly_the_jobs_written(store):
    from shared.domain.contacts import Contact
    from shared.stores.jobs import ImportWriteFailed

    batch_id = new_id()
    assert store.create_jobs(batch_id, "acme", [{"phones": [PHONE_A]}]).imported == 1
    good = [Contact("ok", (f"+5696123458{i}",), {}) for i in range(3)]
    broken = Contact("\ud800", ("+56961234590",), {})     # built past the validation: the encoder refuses it
    with pytest.raises(ImportWriteFailed) as caught:
        store.create_jobs(batch_id, "acme", [*good, broken])
    written = store.find({"batch_id": batch_id})
    assert caught.value.unconfirmed == 0
    assert caught.value.result.imported == len(written) - 1 == len(caught.value.result.job_ids)
    assert set(caught.value.result.job_ids) <= {j["_id"] for j in written}
