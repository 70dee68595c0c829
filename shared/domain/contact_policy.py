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

from shared.domain.compliance import Cap, ComplianceProfile
from shared.domain.reasons import Reason, because
from shared.domain.records import Contact
from shared.domain.shapes import COUNT_RANGE, DAYS_RANGE, ContactPolicyShape, MaxCallsShape, validate_shape
from shared.errors import ValidationError

#: Fields of ``contact_policy`` and of its ``max_calls`` (declared by :class:`shared.domain.shapes.ContactPolicyShape`).
POLICY_FIELDS = tuple(ContactPolicyShape.model_fields)
MAX_CALLS_FIELDS = tuple(MaxCallsShape.model_fields)
__all__ = ["COUNT_RANGE", "DAYS_RANGE", "MAX_CALLS_FIELDS", "POLICY_FIELDS", "ContactPolicy", "Limits", "Touch",
           "capped_until", "contact_keys", "day_start", "limits_of", "parse_contact_policy", "policy_of"]


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
    #: the call's outcome once it ended (``answered``, ``busy``, ...; None while it may be going, or unknown)
    outcome: str | None = None

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
        if self.outcome is not None:
            doc["o"] = self.outcome
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Touch:
        def ms(name: str) -> int | None:
            return int(doc[name]) if doc.get(name) is not None else None

        return cls(at_ms=int(doc["at"]), attempt_id=str(doc["a"]), answered_ms=ms("ans"), until_ms=ms("u"),
                   ended_ms=ms("e"), outcome=str(doc["o"]) if doc.get("o") else None)


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
    return limits_capped_until(Limits(policy=policy), touches, now, zone, recheck=recheck)


def _or_busy(capped: tuple[datetime, Reason] | None, touches: list[Touch], now: datetime,
             recheck: timedelta) -> tuple[datetime, Reason] | None:
    """``capped``, unless a call to the key may still be going and the caps would let the next call through
    sooner than ``recheck`` (or that call's latest end): then decide again then."""
    now_ms = int(now.timestamp() * 1000)
    busy = max((t.until_ms or 0 for t in touches if t.open_at(now_ms)), default=None)
    if busy is None:
        return capped
    again = min(datetime.fromtimestamp(busy / 1000, UTC), now + recheck)
    if capped is None or capped[0] <= again:
        return again, because("contact_in_progress")
    return capped


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


# -- the caps of compliance profiles, with the account's policy ------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """Everything that caps the calls to one person for one call: the account's contact policy and the caps and
    quiet periods of the compliance profiles that apply to the call. All of them apply (the stricter wins)."""

    policy: ContactPolicy | None = None
    #: ``(profile id, cap)``
    caps: tuple[tuple[str, Cap], ...] = ()
    #: ``(profile id, quiet days after a conversation)``
    quiet: tuple[tuple[str, int], ...] = ()

    @property
    def history_days(self) -> int:
        """Days of calls a decision needs (one more than the longest span: a local day spans more than 24 h)."""
        spans = [self.policy.history_days if self.policy else 1]
        spans += [(cap.days or -(-(cap.hours or 0) // 24)) + 1 for _, cap in self.caps]
        spans += [days + 1 for _, days in self.quiet]
        return max(spans)

    def for_key(self, key: str, keys: Iterable[str]) -> Limits:
        """What caps ``key`` among ``keys`` (those of one call): a cap ``per`` debt counts the contact's
        ``external_id`` (``x:``), or its number when the contact has none; every other cap counts each key."""
        has_debt = any(k.startswith("x:") for k in keys)
        debt_key = key.startswith("x:") or not has_debt
        return Limits(self.policy, tuple((pid, cap) for pid, cap in self.caps if cap.per != "debt" or debt_key),
                      self.quiet)


def limits_of(policy: ContactPolicy | None, profiles: Iterable[ComplianceProfile]) -> Limits | None:
    """The limits of a call (None: nothing caps it)."""
    caps = tuple((p.id, cap) for p in profiles for cap in p.caps)
    quiet = tuple((p.id, p.quiet_days_after_conversation) for p in profiles if p.quiet_days_after_conversation)
    if policy is None and not caps and not quiet:
        return None
    return Limits(policy, caps, quiet)


def _counted(cap: Cap, touch: Touch) -> bool:
    """Whether a call counts toward ``cap``: every call when the cap counts every outcome, a call whose outcome is
    not known yet (it may still be going) always, else when its outcome is one the cap counts."""
    return cap.counts is None or touch.outcome is None or touch.outcome in cap.counts


def _cap_until(cap: Cap, touches: list[Touch], now: datetime, zone: Any) -> datetime | None:
    """None when one more call now keeps ``cap``; else the first instant it allows one."""
    counted = [t for t in touches if _counted(cap, t)]
    if cap.hours is not None:
        # A call is counted from its end once it ended (it reached the person after it was decided, never after
        # it ended), else from when it was decided.
        span_ms = cap.hours * 3_600_000
        now_ms = int(now.timestamp() * 1000)
        moments = (t.ended_ms if t.ended_ms is not None else t.at_ms for t in counted)
        inside = sorted(m for m in moments if m > now_ms - span_ms)
        if len(inside) < cap.count:
            return None
        return datetime.fromtimestamp((inside[len(inside) - cap.count] + span_ms) / 1000, UTC)
    days = cap.days or 1
    today = now.astimezone(zone).date()
    per_day: dict[date, int] = {}
    for touch in counted:
        local = _local_day(touch.at_ms, zone)
        per_day[local] = per_day.get(local, 0) + 1
    day = today
    for _ in range(days + 2):
        if sum(per_day.get(day - timedelta(days=k), 0) for k in range(days)) < cap.count:
            break
        day += timedelta(days=1)
    return None if day == today else day_start(day, zone)


def limits_capped_until(limits: Limits, touches: Iterable[Touch], now: datetime, zone: Any, *,
                        recheck: timedelta = BUSY_RECHECK) -> tuple[datetime, Reason] | None:
    """:func:`capped_until` of every limit together: None when one more call now keeps them all; else the first
    instant all of them allow (each, once it allows a call, keeps allowing it: no call is placed meanwhile) and
    why (the limits that hold it back)."""
    touches = list(touches)
    found: list[tuple[datetime, Reason]] = []
    if limits.policy is not None:
        days = _capped_days(limits.policy, touches, now, zone)
        if days is not None:
            found.append(days)
    for pid, cap in limits.caps:
        until = _cap_until(cap, touches, now, zone)
        if until is not None:
            found.append((until, because("compliance", profile=pid, why=cap.rule or f"{cap.count} calls")))
    last_talk = max((_local_day(t.answered_ms, zone) for t in touches if t.answered_ms is not None), default=None)
    for pid, quiet_days in limits.quiet:
        if last_talk is not None and last_talk + timedelta(days=quiet_days) > now.astimezone(zone).date():
            found.append((day_start(last_talk + timedelta(days=quiet_days), zone),
                          because("compliance", profile=pid,
                                  why=f"{quiet_days} days after the conversation of {last_talk}")))
    capped = None
    if found:
        latest = max(at for at, _ in found)
        reasons = [r for at, r in found if at == latest] or [r for _, r in found]
        capped = (latest, reasons[0])
    return _or_busy(capped, touches, now, recheck)
