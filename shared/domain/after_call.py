"""What a conversation's post-call analysis decides for its contact (a batch's ``call_settings.after_call``).

Every rule reads the analysis the provider made of the call (:mod:`shared.domain.results`), in this order:

1. ``opt_out_field`` true: the person asked not to be called. The number called (``opt_out_scope: "contact"``: every
   number of the contact) goes onto the account's do-not-call list, and the contact fails (``opted_out``).
2. ``wrong_number_field`` true: the agent reached the wrong person. That number is never dialed again for this
   contact (reason ``wrong_person``) and the next one is dialed now, in the same round.
3. ``callback_field`` holds a time: the contact is called back then (:func:`callback_time`), without spending an
   attempt, at most ``max_callbacks`` times. A time that cannot be read, is in the past or is more than 30 days
   ahead is ignored (the reason is logged) and the next rule decides.
4. ``success``: a conversation that meets it completes the contact; one that misses it has the outcome
   ``unsuccessful``, a failed round (its attempt spent, ``retry_delay_by_outcome.unsuccessful`` or the batch's
   delay).

A conversation whose analysis never came (``PIPELINE_ANALYSIS_WAIT_S``) counts as ``"conversation"``: completed,
and the reason says the analysis never came. No I/O here: the pipeline (:mod:`shared.pipeline.after_call`) writes
what :func:`decide_after_analysis` returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from shared.config import Config
from shared.domain import states
from shared.domain.call_settings import AfterCall, CallSettings
from shared.domain.calling_window import NoAllowedTime, is_allowed_time, next_allowed_time, resolve_timezones
from shared.domain.decisions import JobWrite, decide_failed_round, decide_next_phone
from shared.domain.outcomes import Outcome
from shared.domain.reasons import Reason, because
from shared.domain.records import Job

#: A callback asked further ahead than this (from the call's end) is ignored.
CALLBACK_MAX_AHEAD = timedelta(days=30)
#: Texts read as true in an opt-out or wrong-number field (besides JSON ``true`` and the number 1).
TRUE_WORDS = frozenset({"true", "yes", "y", "si", "sí", "1"})
#: Most openings looked at for one that stays open for the dial guard.
_MAX_OPENINGS = 64

_LOCAL = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?$")


class AfterCallAction(StrEnum):
    """What the analysis of a conversation did to its contact (the ``after_call_action`` log line, the metric)."""

    COMPLETED = "completed"  #: the success rule is met (or there is none)
    UNSUCCESSFUL = "unsuccessful"  #: the success rule is missed: a failed round
    CALLBACK = "callback"  #: called back at the asked time (or the next allowed time after it)
    OPTED_OUT = "opted_out"  #: listed on the account's do-not-call list; the contact failed
    WRONG_NUMBER = "wrong_number"  #: that number is invalid for this contact; the next one now
    NO_ANALYSIS = "no_analysis"  #: the analysis never came: completed, as a conversation


def is_true(value: Any) -> bool:
    """Whether an analysis field's value says yes: JSON ``true``, the number 1, or a text of :data:`TRUE_WORDS`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in TRUE_WORDS


def _same(value: Any, wanted: Any) -> bool:
    """A field's value equals a rule's value: equal JSON values, a number and its text, or texts that differ only in
    case and surrounding blanks."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return is_true(value) == bool(wanted) if isinstance(wanted, bool) else value == wanted
    if isinstance(wanted, str) and isinstance(value, str):
        return value.strip().casefold() == wanted.strip().casefold()
    if isinstance(wanted, int | float) and isinstance(value, str):
        try:
            return float(value.strip()) == float(wanted)
        except ValueError:
            return False
    return bool(value == wanted)


def success_met(rule: str | Mapping[str, Any], analysis: Mapping[str, Any]) -> bool:
    """Whether a conversation with ``analysis`` meets ``after_call.success``."""
    if rule == "conversation":
        return True
    if rule == "call_successful":
        return analysis.get("call_successful") is True
    assert isinstance(rule, Mapping)
    custom = analysis.get("custom_analysis_data") or {}
    if rule["field"] not in custom:
        return False
    value = custom[rule["field"]]
    if "equals" in rule:
        return _same(value, rule["equals"])
    return any(_same(value, wanted) for wanted in rule["in"])


def describe_success(rule: str | Mapping[str, Any]) -> str:
    """The rule in words (logs, reasons, the preview)."""
    if rule == "conversation":
        return "any conversation"
    if rule == "call_successful":
        return "call_successful"
    assert isinstance(rule, Mapping)
    if "equals" in rule:
        return f"{rule['field']} = {json.dumps(rule['equals'], ensure_ascii=False)}"
    return f"{rule['field']} in {json.dumps(list(rule['in']), ensure_ascii=False)}"


def describe_after_call(rules: AfterCall) -> list[str]:
    """Each rule of ``after_call`` as a sentence, in the order they are applied (the preview and the wizard)."""
    said = []
    if rules.opt_out_field:
        listed = "the contact's numbers go" if rules.opt_out_scope == "contact" else "the number goes"
        said.append(f"{rules.opt_out_field} true: {listed} onto the account's do-not-call list and the contact fails "
                    "(opted_out)")
    if rules.wrong_number_field:
        said.append(f"{rules.wrong_number_field} true: the number is never dialed again for this contact; the next "
                    "number is dialed now")
    if rules.callback_field:
        said.append(f"{rules.callback_field} holds a time: the contact is called back then, or at the next allowed "
                    f"time after it (at most {rules.max_callbacks} callbacks, no attempt spent)")
    if rules.success == "conversation":
        said.append("any other conversation completes the contact")
    else:
        said.append(f"a conversation completes the contact when {describe_success(rules.success)}; otherwise it is "
                    "unsuccessful: the attempt is spent and the contact is retried after its delay")
    return said


# -- the callback's time --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Asked:
    """A time a person asked for, read: the instant (a date alone: local midnight that day) and whether only a
    date was given."""

    at: datetime
    date_only: bool = False


def read_asked(value: Any, zone: str) -> Asked | None:
    """The time in a callback field: an ISO-8601 instant with its offset (``2026-03-10T15:00:00-03:00``, ``...Z``),
    or a local ``YYYY-MM-DD HH:MM`` (``T`` or a blank between, seconds allowed) or ``YYYY-MM-DD`` read in ``zone``
    (the callee's). None when it is none of these (or not a real date or time)."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) > 40:
        return None
    local = _LOCAL.match(text)
    tz = ZoneInfo(zone)
    try:
        if local is not None:
            year, month, day, hour, minute, second = (int(g) if g is not None else None for g in local.groups())
            assert year is not None and month is not None and day is not None
            if hour is None:
                return Asked(_local_instant(datetime(year, month, day), tz), date_only=True)
            return Asked(_local_instant(datetime(year, month, day, hour, minute or 0, second or 0), tz))
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return Asked(parsed.astimezone(UTC))


def _local_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant a local wall-clock reading names: the first of two in a fall-back overlap; in a spring-forward
    gap (a reading that does not exist), the reading moved forward by the gap (02:30 becomes 03:30)."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) != wall:
        return max(first, wall.replace(tzinfo=tz, fold=1).astimezone(UTC))
    return first


@dataclass(frozen=True)
class CallbackTime:
    """When a callback is placed (``at``), or why it is not (``problem``: ``unreadable``, ``past``, ``too_far``,
    ``no_window``); ``asked`` is the time read from the field, ``zone`` the callee's zone it was read in."""

    at: datetime | None = None
    asked: Asked | None = None
    problem: str | None = None
    zone: str = "UTC"


def _open_for(settings: CallSettings, start: datetime, phone: str, contact_timezone: str | None, guard: timedelta,
              config: Config) -> datetime:
    """The first instant >= ``start`` at which the window is open and still open ``guard`` later (the dial's own
    test), so a callback is never scheduled where its dial would only wait again."""
    at = next_allowed_time(settings, start, phone, contact_timezone=contact_timezone, config=config)
    for _ in range(_MAX_OPENINGS):
        if guard <= timedelta(0) or is_allowed_time(settings, at + guard, phone, contact_timezone=contact_timezone,
                                                    config=config)[0]:
            return at
        at = next_allowed_time(settings, at + guard, phone, contact_timezone=contact_timezone, config=config)
    raise NoAllowedTime("no opening of the calling window lasts the dial guard", zones=())


def callback_time(value: Any, *, ended: datetime, now: datetime, settings: CallSettings, phone: str,
                  contact_timezone: str | None, guard: timedelta, config: Config) -> CallbackTime:
    """When to call a person back who asked for ``value`` (the callback field's value) in a call that ended at
    ``ended``, decided at ``now``.

    The asked time (:func:`read_asked`, local times in the callee's zone: the contact's, else the batch's, else the
    number's first zone), or the first time after it that the calling window (its days, hours, holidays and blackout
    dates) allows for ``guard`` more; never before ``now``. A date alone asks for the first allowed time that day. It
    is ignored when it cannot be read, when it is before the call's end (a date: before the end's local date), or
    when it, or the time found for it, is more than :data:`CALLBACK_MAX_AHEAD` after the end. The contact policy
    and the do-not-call lists are applied by the dial when the time comes (a capped person waits for the next time
    the caps allow).
    """
    zone = resolve_timezones(settings, phone, contact_timezone=contact_timezone, config=config)[0]
    asked = read_asked(value, zone)
    if asked is None:
        return CallbackTime(problem="unreadable", zone=zone)
    bound = ended + CALLBACK_MAX_AHEAD
    if asked.date_only:
        local_end = ended.astimezone(ZoneInfo(zone)).date()
        if asked.at.astimezone(ZoneInfo(zone)).date() < local_end:
            return CallbackTime(asked=asked, zone=zone, problem="past")
    elif asked.at < ended:
        return CallbackTime(asked=asked, zone=zone, problem="past")
    if asked.at > bound:
        return CallbackTime(asked=asked, zone=zone, problem="too_far")
    try:
        at = _open_for(settings, max(asked.at, now), phone, contact_timezone, guard, config)
    except NoAllowedTime:
        return CallbackTime(asked=asked, zone=zone, problem="no_window")
    if at > bound:
        return CallbackTime(asked=asked, zone=zone, problem="too_far")
    return CallbackTime(at=at, asked=asked, zone=zone)


# -- the decision ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AfterCallDecision:
    """What the analysis decided: the action, the job's write, the numbers to list as do-not-call (an opt-out),
    and, when a callback was asked but not scheduled, why (for the log)."""

    action: AfterCallAction
    write: JobWrite
    dnc_numbers: tuple[str, ...] = ()
    callback: CallbackTime | None = None
    callback_ignored: str | None = None


def _analysis_value(analysis: Mapping[str, Any], key: str | None) -> Any:
    if not key:
        return None
    custom = analysis.get("custom_analysis_data")
    return custom.get(key) if isinstance(custom, Mapping) else None


def _result(action: AfterCallAction, **more: Any) -> dict[str, Any]:
    return {"result.after_call": action.value, **{f"result.{k}": v for k, v in more.items()}}


def decide_after_analysis(job: Job | Mapping[str, Any], analysis: Mapping[str, Any] | None,
                          settings: CallSettings, *, ended: datetime, now: datetime, config: Config,
                          guard: timedelta = timedelta(0), stopped: Reason | None = None) -> AfterCallDecision:
    """The job's next state once its conversation's ``analysis`` is known (None: it never came), by the batch's
    ``after_call`` (see the module's docstring for the order of the rules).

    :param job: the job as read, in the call that ended (``phone_index``: the number that reached the person).
    :param ended: when the conversation ended (the reference of a callback's bounds).
    :param guard: simulated time from a dial's decision to the provider receiving the call (the callback is placed
        where the window stays open that long).
    :param stopped: why the job's batch lets no job wait any more (cancelled): what would wait is ``cancelled``
        instead; an opt-out still lists the number and fails the contact, a success still completes it.
    The returned write holds ``where`` on the job's call, so a job that moved on refuses it.
    """
    job = Job.of(job)
    rules = settings.after_call
    now_ms = int(now.timestamp() * 1000)
    this_call = {"call_id": job.call_id}
    lang = config.lang
    decision = _decide(job, analysis, settings, rules, ended=ended, now=now, now_ms=now_ms, config=config,
                       guard=guard)
    write = decision.write
    if stopped is not None and write.status not in states.FINAL:
        write = JobWrite(states.CANCELLED, {**stopped.fields(lang), **_result(decision.action)})
    return replace(decision, write=replace(write, where={**write.where, **this_call}))


def _decide(job: Job, analysis: Mapping[str, Any] | None, settings: CallSettings, rules: AfterCall, *,
            ended: datetime, now: datetime, now_ms: int, config: Config, guard: timedelta) -> AfterCallDecision:
    lang = config.lang
    if analysis is None:
        return AfterCallDecision(AfterCallAction.NO_ANALYSIS, JobWrite(
            states.COMPLETED, {"outcome": Outcome.ANSWERED.value, **because("analysis_never_came").fields(lang),
                               **_result(AfterCallAction.NO_ANALYSIS)}))
    if is_true(_analysis_value(analysis, rules.opt_out_field)):
        phones = job.contact.phones
        listed = (tuple(dict.fromkeys(phones)) if rules.opt_out_scope == "contact" else (job.phone,))
        return AfterCallDecision(AfterCallAction.OPTED_OUT, JobWrite(
            states.FAILED, {**because("opted_out").fields(lang), **_result(AfterCallAction.OPTED_OUT)}),
            dnc_numbers=listed)
    if is_true(_analysis_value(analysis, rules.wrong_number_field)):
        change = decide_next_phone(job, because("wrong_person"), settings, now_ms=now_ms, config=config,
                                   invalid=True, outcome=Outcome.INVALID_NUMBER.value)
        return AfterCallDecision(AfterCallAction.WRONG_NUMBER, replace(change, set_={
            **change.set_, **_result(AfterCallAction.WRONG_NUMBER)}, inc={"result.wrong_numbers": 1}))
    ignored: str | None = None
    callback: CallbackTime | None = None
    asked = _analysis_value(analysis, rules.callback_field)
    if asked not in (None, "", False):
        if job.callbacks >= rules.max_callbacks:
            ignored = "max_callbacks"
        else:
            callback = callback_time(asked, ended=ended, now=now, settings=settings, phone=job.phone,
                                     contact_timezone=job.contact.timezone, guard=guard, config=config)
            ignored = callback.problem
        if callback is not None and callback.at is not None:
            at_ms = int(callback.at.timestamp() * 1000)
            local = callback.at.astimezone(ZoneInfo(callback.zone)).strftime("%Y-%m-%d %H:%M")
            reason = because("callback_scheduled", local=f"{local} {callback.zone}", asked=str(asked)[:60])
            return AfterCallDecision(AfterCallAction.CALLBACK, JobWrite(
                states.WAITING_SCHEDULE, {"next_try_at": at_ms, "callback_at": at_ms, "free_retries": 0,
                                          **reason.fields(lang),
                                          **_result(AfterCallAction.CALLBACK, callback_at=at_ms)},
                inc={"callbacks": 1, "result.callbacks": 1}), callback=callback)
    if success_met(rules.success, analysis):
        return AfterCallDecision(AfterCallAction.COMPLETED, JobWrite(
            states.COMPLETED, {"outcome": Outcome.ANSWERED.value, **_result(AfterCallAction.COMPLETED)}),
            callback=callback, callback_ignored=ignored)
    reason = because("call_outcome", outcome=Outcome.UNSUCCESSFUL.value, provider=describe_success(rules.success))
    change = decide_failed_round(job, reason, settings, now_ms=now_ms, config=config,
                                 outcome=Outcome.UNSUCCESSFUL.value)
    return AfterCallDecision(AfterCallAction.UNSUCCESSFUL, replace(change, set_={
        **change.set_, **_result(AfterCallAction.UNSUCCESSFUL)}), callback=callback, callback_ignored=ignored)
