"""The contact history on the real MongoDB wire server: caps hold under concurrent workers."""

import threading
from datetime import UTC, datetime

import pytz

from shared.domain.contact_policy import Touch, capped_until, parse_contact_policy
from shared.stores.contact_history import DAY_MS, ContactHistory

NOW_MS = int(datetime(2026, 3, 2, 15, 0, tzinfo=UTC).timestamp() * 1000)
ZONE = pytz.timezone("America/Santiago")


def _decide(policy):
    now = datetime.fromtimestamp(NOW_MS / 1000, UTC)
    return lambda key, calls: capped_until(policy, calls, now, ZONE)


def test_eight_workers_cannot_take_more_than_the_last_calls_of_a_day(db, clock):
    history = ContactHistory(db, clock=clock)
    policy = parse_contact_policy({"max_calls_per_day": 2})
    start = threading.Barrier(8)
    results: dict[int, object] = {}

    def worker(i: int) -> None:
        start.wait()
        results[i] = history.reserve("acc", ["n:+56911111111", "x:D-1"], Touch(NOW_MS + i, f"a{i}"),
                                     keep_ms=NOW_MS - 3 * DAY_MS, decide=_decide(policy))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = sorted(f"a{i}" for i, r in results.items() if r is None)
    assert len(winners) == 2
    for key in ("n:+56911111111", "x:D-1"):   # both keys hold exactly the winners: a refusal took its calls back
        assert sorted(t.attempt_id for t in history.calls("acc", key)) == winners
    assert all(r is None or r[1].text().startswith("contact policy") for r in results.values())


def test_a_redelivered_reservation_counts_once_and_forget_takes_it_back(db, clock):
    history = ContactHistory(db, clock=clock)
    policy = parse_contact_policy({"max_calls_per_day": 1})
    args = dict(keep_ms=NOW_MS - DAY_MS, decide=_decide(policy))
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS, "a1"), **args) is None
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS, "a1"), **args) is None   # the same attempt again
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS, "a2"), **args) is not None
    history.forget("acc", ["n:+1"], "a1", keep_ms=NOW_MS - DAY_MS)
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS, "a2"), **args) is None
    assert [t.attempt_id for t in history.calls("acc", "n:+1")] == ["a2"]
    assert history.reserve("other", ["n:+1"], Touch(NOW_MS, "b1"), **args) is None   # accounts are apart


def test_a_conversation_is_recorded_and_old_calls_are_pruned(db, clock):
    history = ContactHistory(db, clock=clock)
    policy = parse_contact_policy({"quiet_days_after_answer": 2})
    old = Touch(NOW_MS - 10 * DAY_MS, "old")
    history.reserve("acc", ["n:+1"], old, keep_ms=0, decide=lambda key, calls: None)
    history.reserve("acc", ["n:+1"], Touch(NOW_MS - 1000, "a1"), keep_ms=NOW_MS - 3 * DAY_MS,
                    decide=lambda key, calls: None)
    history.finish("acc", ["n:+1"], "a1", NOW_MS, conversation=True, keep_ms=NOW_MS - 3 * DAY_MS)
    calls = history.calls("acc", "n:+1")
    assert calls == [Touch(NOW_MS - 1000, "a1", answered_ms=NOW_MS, ended_ms=NOW_MS)]   # the 10-day-old one is gone
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS + 1, "a2"), keep_ms=NOW_MS - 3 * DAY_MS,
                           decide=_decide(policy)) is not None
    assert history.drop_account("acc") == 1 and history.calls("acc", "n:+1") == []


def test_a_new_key_is_seeded_from_the_accounts_recent_attempts(db, clock):
    db.attempts.insert_many([
        {"_id": "j1:r1:p0:d1", "account_id": "acc", "to_number": "+1", "external_id": "D-1", "state": "ended",
         "outcome": "answered", "created_at": NOW_MS - 2 * DAY_MS, "started_at": NOW_MS - 2 * DAY_MS + 5000,
         "duration_ms": 60_000, "ended_at": NOW_MS - 2 * DAY_MS + 65_000},
        {"_id": "j2:r1:p0:d1", "account_id": "acc", "to_number": "+1", "state": "not_placed",
         "created_at": NOW_MS - 1000},
        {"_id": "j3:r1:p0:d1", "account_id": "acc", "to_number": "+1", "state": "ended", "outcome": "voicemail",
         "created_at": NOW_MS - 2000, "started_at": NOW_MS - 1500, "duration_ms": 500},
        {"_id": "j4:r1:p0:d1", "account_id": "acc", "to_number": "+1", "state": "ended", "outcome": "busy",
         "created_at": NOW_MS - 30 * DAY_MS},
        {"_id": "j5:r1:p0:d1", "account_id": "other", "to_number": "+1", "state": "ended", "outcome": "busy",
         "created_at": NOW_MS - 3000},
    ])
    history = ContactHistory(db, clock=clock)
    policy = parse_contact_policy({"quiet_days_after_answer": 7})
    assert history.reserve("acc", ["n:+1", "x:D-1"], Touch(NOW_MS, "new"), keep_ms=NOW_MS - 8 * DAY_MS,
                           decide=_decide(policy)) is not None           # the conversation two days ago
    assert history.calls("acc", "n:+1") == []                            # refused: nothing was written
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS, "new"), keep_ms=NOW_MS - 8 * DAY_MS,
                           decide=lambda key, calls: None) is None
    assert [t.attempt_id for t in history.calls("acc", "n:+1")] == ["j1:r1:p0:d1", "j3:r1:p0:d1", "new"]
    assert history.calls("acc", "n:+1")[0].answered_ms == NOW_MS - 2 * DAY_MS + 65_000


def test_a_person_is_on_one_call_at_a_time_until_its_end_is_recorded(db, clock):
    history = ContactHistory(db, clock=clock)
    policy = parse_contact_policy({"max_calls_per_day": 5})
    args = dict(keep_ms=NOW_MS - DAY_MS, decide=_decide(policy))
    first = Touch(NOW_MS - 60_000, "a1", until_ms=NOW_MS + 120_000)
    assert history.reserve("acc", ["n:+1"], first, **args) is None
    until, why = history.reserve("acc", ["n:+1"], Touch(NOW_MS, "a2"), **args)
    assert until == datetime.fromtimestamp((NOW_MS + 60_000) / 1000, UTC) and "in progress" in why.text()  # a minute on
    history.finish("acc", ["n:+1"], "a1", NOW_MS - 1000, conversation=False, keep_ms=NOW_MS - DAY_MS)
    assert history.reserve("acc", ["n:+1"], Touch(NOW_MS, "a2"), **args) is None
    (ended, _) = history.calls("acc", "n:+1")
    assert ended.ended_ms == NOW_MS - 1000 and ended.answered_ms is None and ended.until_ms == NOW_MS + 120_000
