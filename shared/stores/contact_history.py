"""The calls placed to each person of an account, kept for the account's contact policy.

One document per account and key (``n:<E.164>`` for a number, ``x:<external_id>`` for a contact's own
id): ``{_id: "<account>|<key>", account_id, key, calls: [{at, a, u, e, ans}], v}``, where ``at`` is
when a call was placed (shared ms), ``a`` its attempt id, ``u`` the latest it can still be going (its
attempt's deadline), ``e`` when it ended and ``ans`` when it ended in a conversation. The
array is only ever replaced whole, under the document's version ``v`` (compare and set), and pruned
to the days the policy looks at, so each document stays small.

:meth:`ContactHistory.reserve` makes "may this call be placed?" and "it is placed" one step per
key: the decision is taken on the version read, and the call is recorded only if that version is
still the current one; otherwise it reads again and decides again. Two workers can therefore never
both take the last call a day allows. A call that is then not placed after all (the dial was aborted,
the provider refused it) is taken back (:meth:`forget`); a take-back that is lost counts a call too
many, which errs on the callee's side.

A key seen for the first time is seeded from the account's attempts of the days the policy looks at,
so a policy set in the middle of a campaign counts the calls already made (numbers always; an
``external_id`` from the attempts that recorded it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from shared.clock import Clock
from shared.domain.contact_policy import Touch
from shared.errors import StoreError
from shared.stores import attempts as attempt_states
from shared.stores.mongo import ATTEMPTS, CONTACT_HISTORY

#: Compare-and-set rounds on one key before giving up (each lost round means another process wrote).
MAX_ROUNDS = 50
DAY_MS = 86_400_000
#: How long a seeded attempt that has not ended may still be going: the longest call validation allows
#: (2 h) plus the longest ring (5 min) and a margin.
SEEDED_OPEN_MS = (7200 + 300 + 300) * 1000

T = TypeVar("T")


def _doc_id(account_id: str, key: str) -> str:
    return f"{account_id}|{key}"


def conversation_ms(attempt: Mapping[str, Any]) -> int | None:
    """When an ended attempt's call ended in a conversation (it connected, and not to a voicemail), else None."""
    if attempt.get("state") != attempt_states.ENDED or attempt.get("outcome") == "voicemail":
        return None
    if attempt.get("started_at") is None or not int(attempt.get("duration_ms") or 0):
        return None
    return int(attempt.get("ended_at") or attempt.get("finalized_at") or attempt["started_at"])


def _ended_ms(attempt: Mapping[str, Any]) -> int:
    return int(attempt.get("ended_at") or attempt.get("finalized_at") or attempt["created_at"])


class ContactHistory:
    """The ``contact_history`` collection.

    :param db: the MongoDB database (it also reads ``attempts`` to seed a new key).
    """

    def __init__(self, db: Database[dict[str, Any]], *, clock: Clock) -> None:
        self.coll: Collection[dict[str, Any]] = db[CONTACT_HISTORY]
        self.attempts: Collection[dict[str, Any]] = db[ATTEMPTS]
        self.clock = clock

    # -- reads ------------------------------------------------------------------------------------

    def calls(self, account_id: str, key: str) -> list[Touch]:
        """The key's recorded calls (oldest first)."""
        doc = self.coll.find_one({"_id": _doc_id(account_id, key)})
        return [Touch.from_document(d) for d in (doc or {}).get("calls", [])]

    def _read(self, account_id: str, key: str, since_ms: int) -> tuple[list[Touch], int | None]:
        doc = self.coll.find_one({"_id": _doc_id(account_id, key)})
        if doc is None:
            return self._seed(account_id, key, since_ms), None
        return [Touch.from_document(d) for d in doc.get("calls", [])], int(doc.get("v", 0))

    def _seed(self, account_id: str, key: str, since_ms: int) -> list[Touch]:
        kind, _, value = key.partition(":")
        field = "to_number" if kind == "n" else "external_id"
        found = self.attempts.find(
            {"account_id": account_id, field: value, "created_at": {"$gte": since_ms},
             "state": {"$in": [attempt_states.DIALING, attempt_states.IN_CALL, attempt_states.ENDED]}},
            {"_id": 1, "created_at": 1, "state": 1, "outcome": 1, "started_at": 1, "duration_ms": 1,
             "ended_at": 1, "finalized_at": 1})
        touches = [Touch(at_ms=int(a["created_at"]), attempt_id=a["_id"], answered_ms=conversation_ms(a),
                         until_ms=int(a["created_at"]) + SEEDED_OPEN_MS,
                         ended_ms=_ended_ms(a) if a.get("state") == attempt_states.ENDED else None,
                         outcome=(str(a["outcome"]) if a.get("state") == attempt_states.ENDED and a.get("outcome")
                                  else None))
                   for a in found]
        return sorted(touches, key=lambda t: (t.at_ms, t.attempt_id))

    # -- writes -----------------------------------------------------------------------------------

    def _write(self, account_id: str, key: str, version: int | None, touches: list[Touch]) -> bool:
        """Replace the key's calls if its version is still ``version`` (None: the document is new)."""
        calls = [t.to_document() for t in touches]
        now = self.clock.now_ms()
        if version is None:
            try:
                self.coll.insert_one({"_id": _doc_id(account_id, key), "account_id": account_id, "key": key,
                                      "calls": calls, "v": 1, "updated_at": now})
            except DuplicateKeyError:
                return False
            return True
        result = self.coll.update_one({"_id": _doc_id(account_id, key), "v": version},
                                      {"$set": {"calls": calls, "v": version + 1, "updated_at": now}})
        return result.modified_count == 1

    def _change(self, account_id: str, key: str, keep_ms: int,
                change: Callable[[list[Touch]], tuple[list[Touch] | None, T | None]]) -> T | None:
        """Read the key's calls (pruned to those after ``keep_ms``), ``change`` them, write them back under
        the version read; again while another process wrote in between. ``change`` returns the new list
        (None: write nothing) and a value passed back to the caller."""
        for _ in range(MAX_ROUNDS):
            touches, version = self._read(account_id, key, keep_ms)
            kept = [t for t in touches if t.at_ms >= keep_ms or (t.answered_ms or 0) >= keep_ms]
            new, value = change(kept)
            if new is None or self._write(account_id, key, version, new):
                return value
        raise StoreError(f"the contact history of {key[:2]}... kept changing; try again")

    def reserve(self, account_id: str, keys: Iterable[str], touch: Touch, *, keep_ms: int,
                decide: Callable[[str, list[Touch]], T | None]) -> T | None:
        """Record ``touch`` against every key if ``decide`` (of the key and its calls) allows it on each (None);
        else take back what was recorded and return the first refusal. Keys are taken in a fixed order.

        A touch of the same attempt already recorded (a redelivered message) is not recorded twice.
        """
        done: list[str] = []
        for key in sorted(set(keys)):
            def change(kept: list[Touch], key: str = key) -> tuple[list[Touch] | None, T | None]:
                if any(t.attempt_id == touch.attempt_id for t in kept):
                    return None, None
                verdict = decide(key, kept)
                return (None, verdict) if verdict is not None else ([*kept, touch], None)

            refused = self._change(account_id, key, keep_ms, change)
            if refused is not None:
                self.forget(account_id, done, touch.attempt_id, keep_ms=keep_ms)
                return refused
            done.append(key)
        return None

    def forget(self, account_id: str, keys: Iterable[str], attempt_id: str, *, keep_ms: int) -> None:
        """Take back the attempt's call (it was not placed)."""
        for key in keys:
            def change(kept: list[Touch]) -> tuple[list[Touch] | None, None]:
                rest = [t for t in kept if t.attempt_id != attempt_id]
                return (rest if len(rest) != len(kept) else None), None

            self._change(account_id, key, keep_ms, change)

    def finish(self, account_id: str, keys: Iterable[str], attempt_id: str, ended_ms: int, *,
               conversation: bool, keep_ms: int, outcome: str | None = None) -> None:
        """The attempt's call ended at ``ended_ms`` (in a conversation or not) with ``outcome``: the person is free
        for the next call the caps allow (a cap that does not count that outcome no longer counts the call), and a
        conversation starts the quiet days. A call missing from the history is recorded as placed when it ended."""
        for key in keys:
            def change(kept: list[Touch]) -> tuple[list[Touch] | None, None]:
                mine = next((t for t in kept if t.attempt_id == attempt_id), None)
                if mine is not None and mine.ended_ms is not None:
                    return None, None
                done = Touch(at_ms=mine.at_ms if mine else ended_ms, attempt_id=attempt_id,
                             answered_ms=ended_ms if conversation else None,
                             until_ms=mine.until_ms if mine else None, ended_ms=ended_ms, outcome=outcome)
                return [*(t for t in kept if t.attempt_id != attempt_id), done], None

            self._change(account_id, key, keep_ms, change)

    def drop_account(self, account_id: str) -> int:
        """Forget the account's history (its policy was removed: a new one seeds again from the attempts)."""
        return int(self.coll.delete_many({"account_id": account_id}).deleted_count)
