"""The state tables of :mod:`shared.domain.states`: the README's job-state table is the code's, and the job store's
named transitions, run in any order on one job (against an in-memory stand-in for its collection), only ever
make the moves the table lists and never leave a final state."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.config import load_config
from shared.domain import states
from shared.domain.reasons import because
from shared.domain.states import JOB_TRANSITIONS, JobState
from shared.stores.jobs import NOT_FINAL_FIELDS, JobStore
from shared.stores.mongo import JOBS, new_id
from tests.helpers import frozen_clock

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def render_job_transitions(table: Mapping[JobState, frozenset[JobState]]) -> str:
    """The README's table of job moves, as the code's table gives it (states in declaration order)."""
    lines = ["| from | may move to |", "|---|---|"]
    for frm in JobState:
        targets = ", ".join(f"`{to}`" for to in JobState if to in table[frm])
        lines.append(f"| `{frm}` | {targets or 'nothing: final'} |")
    return "\n".join(lines) + "\n"


def test_the_readme_lists_the_moves_of_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    expected = render_job_transitions(JOB_TRANSITIONS)
    assert expected in readme, "README.md, 'Job states': paste this table in place of the old one\n" + expected


def test_the_tables_cover_every_state_and_agree_with_the_groups() -> None:
    assert set(JOB_TRANSITIONS) == set(JobState)
    assert set(states.BATCH_TRANSITIONS) == set(states.BatchState)
    assert set(states.ATTEMPT_TRANSITIONS) == set(states.AttemptState)
    for final in states.FINAL:
        assert JOB_TRANSITIONS[final] == frozenset()
    for claimable in states.CLAIMABLE:
        assert states.can_move(claimable, states.QUEUED)
    for waiting in states.NOT_DIALED:
        assert states.can_move(waiting, states.CANCELLED)
    # Every open state can end, and every state is reached from pending.
    reached, frontier = {states.PENDING}, [states.PENDING]
    while frontier:
        for to in JOB_TRANSITIONS[frontier.pop()]:
            if to not in reached:
                reached.add(to)
                frontier.append(to)
    assert reached == set(JobState)
    assert not states.can_move("pending", "no-such-state") and not states.can_move("no-such-state", "pending")
    assert states.sources(states.COMPLETED) == (states.IN_CALL, states.ANALYZING)


def test_states_are_their_strings() -> None:
    assert states.PENDING == "pending" and f"{states.IN_CALL}" == "in_call" and str(states.BATCH_HELD) == "held"
    assert {"pending": 1}[states.PENDING] == 1 and states.QUEUED in ("queued",)
    assert states.JOB_STATES[0] == "pending" and len(states.JOB_STATES) == 11


def test_the_batch_controls_moves_are_in_the_batch_table() -> None:
    moves = {  # shared.stores.batch_controls and maintenance: (from states, to)
        "pause": ((states.BATCH_ACTIVE, states.BATCH_HELD), states.BATCH_PAUSED),
        "resume": ((states.BATCH_PAUSED, states.BATCH_HELD), states.BATCH_ACTIVE),
        "cancel": ((states.BATCH_ACTIVE, states.BATCH_PAUSED, states.BATCH_HELD), states.BATCH_CANCELLED),
        "reopen": ((states.BATCH_COMPLETED,), states.BATCH_ACTIVE),
        "hold": ((states.BATCH_ACTIVE,), states.BATCH_HELD),
        "complete": ((states.BATCH_ACTIVE,), states.BATCH_COMPLETED),
    }
    allowed = {(frm, to) for frm, tos in states.BATCH_TRANSITIONS.items() for to in tos}
    assert {(frm, to) for froms, to in moves.values() for frm in froms} == allowed


# -- the named transitions on one job, against an in-memory collection --------------------------------------------


def _matches(doc: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    for key, want in query.items():
        have = doc.get(key)
        if isinstance(want, dict):
            if "$in" in want and have not in want["$in"]:
                return False
            if "$eq" in want and have != want["$eq"]:
                return False
            if "$lte" in want and (have is None or have > want["$lte"]):
                return False
        elif have != want:
            return False
    return True


class MemoryJobs:
    """The few ``jobs`` collection calls the named transitions make, on documents in a dict."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}

    def _apply(self, doc: dict[str, Any], update: Mapping[str, Any]) -> None:
        doc.update(update.get("$set", {}))
        for key in update.get("$unset", {}):
            doc.pop(key, None)
        for key, n in update.get("$inc", {}).items():
            doc[key] = doc.get(key, 0) + n

    def find_one_and_update(self, query: Mapping[str, Any], update: Mapping[str, Any], **_: Any) -> Any:
        for doc in self.docs.values():
            if _matches(doc, query):
                self._apply(doc, update)
                return dict(doc)
        return None

    def update_one(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> Any:
        hit = self.find_one_and_update(query, update)
        return SimpleNamespace(modified_count=int(hit is not None))

    def update_many(self, query: Mapping[str, Any], update: Mapping[str, Any]) -> Any:
        hits = [doc for doc in self.docs.values() if _matches(doc, query)]
        for doc in hits:
            self._apply(doc, update)
        return SimpleNamespace(modified_count=len(hits))


def _store() -> tuple[JobStore, MemoryJobs, str]:
    jobs = MemoryJobs()
    store = JobStore({JOBS: jobs}, clock=frozen_clock(T0), config=load_config({}))  # type: ignore[dict-item]
    job_id = new_id()
    jobs.docs[job_id] = {"_id": job_id, "batch_id": "b", "account_id": "acc", "status": states.PENDING,
                         "next_try_at": store.clock.now_ms(), "tries": 0}
    return store, jobs, job_id


REASON = because("text", text="why")
Op = Callable[[JobStore, str, str], Any]
#: Every named transition, each called as the pipeline calls it (``owner``: the job's lease token, or another's).
OPS: dict[str, Op] = {
    "claim": lambda s, j, o: s.claim_next(lease=timedelta(minutes=5), batch_ids=["b"], account_id="acc"),
    "start_dial": lambda s, j, o: s.start_dial(j, o, set_={"attempt_id": "a1"}, inc={"dials": 1}),
    "record_call": lambda s, j, o: s.record_call(j, o, "a1", set_={"call_id": "c1", "poll_at": 1}),
    "complete": lambda s, j, o: s.complete(j, lease_owner=o, set_={"outcome": "answered"}),
    "fail": lambda s, j, o: s.fail(j, REASON, lease_owner=o),
    "cancel_queued": lambda s, j, o: s.cancel(j, REASON, expected=(states.QUEUED,), lease_owner=o),
    "cancel_dialing": lambda s, j, o: s.cancel(j, REASON, expected=(states.DIALING,), lease_owner=o),
    "postpone": lambda s, j, o: s.postpone(j, T0, REASON, lease_owner=o, inc={"postponed_by_schedule": 1}),
    "release": lambda s, j, o: s.release(j, T0, REASON, lease_owner=o),
    "park_for_balance": lambda s, j, o: s.park_for_balance(j, REASON, lease_owner=o),
    "unpark": lambda s, j, o: s.unpark(j),
    "retry_wait": lambda s, j, o: s.apply_decision(j, states.RETRY_WAIT, expected=states.LEASED, lease_owner=o,
                                                   set_={"tries": 1, "next_try_at": 0}),
    "after_call": lambda s, j, o: s.apply_decision(j, states.CANCELLED, expected=(states.IN_CALL,),
                                                   set_={"outcome": "x"}, where={"call_id": "c1"}),
    "await_analysis": lambda s, j, o: s.apply_decision(j, states.ANALYZING, expected=(states.IN_CALL,),
                                                       set_={"next_try_at": 0}, where={"call_id": "c1"}),
    "check_analysis_later": lambda s, j, o: s.check_analysis_later(j, 0, 5),
    "callback": lambda s, j, o: s.apply_decision(j, states.WAITING_SCHEDULE, expected=(states.ANALYZING,),
                                                 set_={"next_try_at": 9, "callback_at": 9}, inc={"callbacks": 1},
                                                 where={"call_id": "c1"}),
    "unsuccessful": lambda s, j, o: s.apply_decision(j, states.RETRY_WAIT, expected=(states.ANALYZING,),
                                                     set_={"tries": 1, "next_try_at": 0}, where={"call_id": "c1"}),
    "analyzed": lambda s, j, o: s.apply_decision(j, states.COMPLETED, expected=(states.ANALYZING,),
                                                 where={"call_id": "c1"}),
    "cancel_batch": lambda s, j, o: s.cancel_batch("b"),
    "top_up": lambda s, j, o: s.release_waiting_balance("acc"),
}


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(sorted(OPS)), st.booleans()), max_size=25))
def test_named_transitions_only_make_the_moves_of_the_table(steps: list[tuple[str, bool]]) -> None:
    store, jobs, job_id = _store()
    doc = jobs.docs[job_id]
    for name, own in steps:
        before = doc["status"]
        OPS[name](store, job_id, doc.get("lease_owner", "nobody") if own else "someone-else")
        after = doc["status"]
        if before in states.FINAL:
            assert after == before, f"{name} left the final state {before}"
        if after != before:
            assert states.can_move(before, after), f"{name}: {before} -> {after}"
        if after in states.FINAL:
            assert doc["finished_at"] == store.clock.now_ms() or after == before
            assert [f for f in NOT_FINAL_FIELDS if f in doc] == []
        elif after not in states.LEASED:
            assert "lease_owner" not in doc and "lease_until" not in doc
