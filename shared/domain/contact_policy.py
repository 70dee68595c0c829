"""An account's contact policy: how often one person may be called, across every batch of the account.

``contact_policy`` (on the account, optional)::

    {"max_calls": {"count": 7, "days": 7},   # at most 7 calls in any 7 consecutive days
     "max_calls_per_day": 2,                  # at most 2 calls on one day
     "quiet_days_after_answer": 7}            # no call on the day of a conversation and the 6 days after it

Every field is optional; a policy with none is no policy. This example is the US CFPB's Regulation F
presumption for debt collectors (more than 7 calls within 7 consecutive days, or a call within 7 days
after a telephone conversation, the day of the conversation being the first of the 7).

Calls are counted per number and, when the contact has one, per ``external_id`` (each key on its own),
over every batch of the account. Every placed call counts, answered or not; a call counts as a
conversation (for ``quiet_days_after_answer``) when it connected and did not reach a voicemail. Days
are the callee's local days (the zone the calling window uses for that number). A contact that a cap
holds back is never failed for it: it waits (``waiting_schedule``) for the first instant both the caps
and the calling window allow.

This module is the arithmetic, without I/O: :func:`parse_contact_policy` validates,
:func:`capped_until` decides. :mod:`shared.stores.contact_history` keeps the calls and makes the decision
and the record one atomic step per key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytz

from shared.domain.reasons import Reason, because
from shared.domain.records import Contact
from shared.domain.shapes import COUNT_RANGE, DAYS_RANGE, ContactPolicyShape, MaxCallsShape, validate_shape
from shared.errors import ValidationError

#: Fields of ``contact_policy`` and of its ``max_calls`` (declared by :class:`shared.domain.shapes.ContactPolicyShape`).
POLICY_FIELDS = tuple(ContactPolicyShape.model_fields)
MAX_CALLS_FIELDS = tuple(MaxCallsShape.model_fields)
__all__ = ["COUNT_RANGE", "DAYS_RANGE", "MAX_CALLS_FIELDS", "POLICY_FIELDS", "ContactPolicy", "Touch", "capped_until",
           "contact_keys", "day_start", "parse_contact_policy", "policy_of"]


@dataclass(frozen=True)
class ContactPolicy:
    """A parsed policy; None fields do not cap."""

    max_calls: int | None = None
    max_calls_days: int | None = None
    max_calls_per_day: int | None = None
    quiet_days_after_answer: int | None = None

    @property
    def history_days(self) -> int:
        """Days of calls a decision needs (plus one: a local day spans more than 24 hours of UTC)."""
        return max(self.max_calls_days or 1, self.quiet_days_after_answer or 1, 1) + 1

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.max_calls is not None:
            doc["max_calls"] = {"count": self.max_calls, "days": self.max_calls_days}
        if self.max_calls_per_day is not None:
            doc["max_calls_per_day"] = self.max_calls_per_day
        if self.quiet_days_after_answer is not None:
            doc["quiet_days_after_answer"] = self.quiet_days_after_answer
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None) -> ContactPolicy | None:
        """The stored policy (already validated on write), or None."""
        if not doc:
            return None
        return parse_contact_policy(doc)


def parse_contact_policy(raw: Any, *, field: str = "contact_policy") -> ContactPolicy | None:
    """Validate a ``contact_policy`` with :class:`shared.domain.shapes.ContactPolicyShape` (every problem at once); None
    for null or ``{}``.

    :raises ValidationError: naming each bad field (``contact_policy.max_calls.count``, ...).
    """
    if raw is None:
        return None
    shape = validate_shape(ContactPolicyShape, raw, prefix=field)
    if isinstance(shape, list):
        raise ValidationError(shape)
    return policy_of(shape)


def policy_of(shape: ContactPolicyShape | None) -> ContactPolicy | None:
    """The policy a validated ``contact_policy`` sets; None for none (or one with no cap)."""
    if shape is None:
        return None
    max_calls = shape.max_calls
    policy = ContactPolicy(max_calls=max_calls.count if max_calls else None,
                           max_calls_days=max_calls.days if max_calls else None,
                           max_calls_per_day=shape.max_calls_per_day,
                           quiet_days_after_answer=shape.quiet_days_after_answer)
    return policy if policy.to_document() else None


@dataclass(frozen=True)
class Touch:
    """One placed call in a key's history: when it was placed, the latest it can still be going (its
    attempt's deadline), when it ended, and when it ended in a conversation."""

    at_ms: int
    attempt_id: str
    answered_ms: int | None = None
    until_ms: int | None = None
    ended_ms: int | None = None

    def open_at(self, t_ms: int) -> bool:
        """Whether the call may still be going at ``t_ms`` (not known to have ended, before its latest end).
        A call placed "after" ``t_ms`` counts too: another process's reading of the shared time may be a
        little ahead of this one's."""
        return self.ended_ms is None and self.until_ms is not None and t_ms < self.until_ms

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"at": self.at_ms, "a": self.attempt_id}
        for name, value in (("ans", self.answered_ms), ("u", self.until_ms), ("e", self.ended_ms)):
            if value is not None:
                doc[name] = value
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Touch:
        def ms(name: str) -> int | None:
            return int(doc[name]) if doc.get(name) is not None else None

        return cls(at_ms=int(doc["at"]), attempt_id=str(doc["a"]), answered_ms=ms("ans"), until_ms=ms("u"),
                   ended_ms=ms("e"))


def contact_keys(contact: Contact | Mapping[str, Any], phone: str) -> list[str]:
    """The keys a call to ``phone`` counts against: the number, and the contact's ``external_id`` if any
    (``contact``: a job's contact, or its document)."""
    keys = [f"n:{phone}"]
    external = contact.external_id if isinstance(contact, Contact) else contact.get("external_id")
    if external not in (None, ""):
        keys.append(f"x:{external}")
    return keys


def _local_day(ms: int, zone: Any) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=zone).date()


def day_start(day: date, zone: Any) -> datetime:
    """The first instant of local ``day`` in ``zone`` (UTC): local midnight, or the end of a gap over it."""
    naive = datetime(day.year, day.month, day.day)
    try:
        local = zone.localize(naive, is_dst=None)
    except pytz.NonExistentTimeError:
        local = zone.localize(naive, is_dst=False)   # the offset before the gap: the instant the day begins
    except pytz.AmbiguousTimeError:
        local = zone.localize(naive, is_dst=True)    # the first of the two midnights
    day_begins: datetime = local.astimezone(UTC)
    return day_begins


#: While a call to the person may still be going, the contact is decided again this often (simulated).
BUSY_RECHECK = timedelta(minutes=1)


def capped_until(policy: ContactPolicy, touches: Iterable[Touch], now: datetime, zone: Any, *,
                 recheck: timedelta = BUSY_RECHECK) -> tuple[datetime, Reason] | None:
    """None when one more call now keeps every cap; else ``(first instant the caps allow, why)``.

    :param touches: the key's calls placed so far (never in the future of ``now``).
    :param zone: the callee's zone (a pytz zone): the caps count local days.

    Whatever the policy, a person is on one call at a time: while a call to the key may still be going
    (placed, its end not recorded yet, before the latest it can be finalized: ``until_ms``) the contact
    is decided again ``recheck`` later (or at that latest end, if sooner): a conversation that ends
    meanwhile then starts its quiet days before the next call. Future days hold no calls yet, so once a
    day is allowed every later day is: the answer is the start of the first allowed local day when that
    is not today and it comes after the recheck, else the recheck.
    """
    touches = list(touches)
    now_ms = int(now.timestamp() * 1000)
    busy = max((t.until_ms or 0 for t in touches if t.open_at(now_ms)), default=None)
    days = _capped_days(policy, touches, now, zone)
    if busy is None:
        return days
    again = min(datetime.fromtimestamp(busy / 1000, UTC), now + recheck)
    if days is None or days[0] <= again:
        return again, because("contact_in_progress")
    return days


def _capped_days(policy: ContactPolicy, touches: list[Touch], now: datetime,
                 zone: Any) -> tuple[datetime, Reason] | None:
    today = now.astimezone(zone).date()
    per_day: dict[date, int] = {}
    answered: list[date] = []
    for touch in touches:
        day = _local_day(touch.at_ms, zone)
        per_day[day] = per_day.get(day, 0) + 1
        if touch.answered_ms is not None:
            answered.append(_local_day(touch.answered_ms, zone))
    first = today
    reasons: list[str] = []
    if policy.quiet_days_after_answer and answered:
        until = max(answered) + timedelta(days=policy.quiet_days_after_answer)
        if until > first:
            first = until
            reasons.append(f"{policy.quiet_days_after_answer} quiet days after the conversation of {max(answered)}")
    day = first
    for _ in range(DAYS_RANGE[1] + 2):
        over = []
        if policy.max_calls_per_day is not None and per_day.get(day, 0) >= policy.max_calls_per_day:
            over.append(f"{policy.max_calls_per_day} calls on {day}")
        if policy.max_calls is not None and policy.max_calls_days is not None:
            span = [day - timedelta(days=k) for k in range(policy.max_calls_days)]
            if sum(per_day.get(d, 0) for d in span) >= policy.max_calls:
                over.append(f"{policy.max_calls} calls in the {policy.max_calls_days} days to {day}")
        if not over:
            break
        if day == first:
            reasons.extend(over)
        day += timedelta(days=1)
    if day == today:
        return None
    return day_start(day, zone), because("contact_policy", why="; ".join(reasons))
