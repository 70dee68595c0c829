"""What ``outdial demo`` shows: the live view, the summary table and the calling-window check.

Rendering functions are pure (a :class:`Snapshot` or a :class:`Summary` in, plain text out), so
tests can call them; :func:`collect_summary` and :func:`find_window_violations` read MongoDB and
the simulator's record. Nothing here prints a full phone number: numbers go through
:func:`shared.logs.mask_phone`.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytz

from shared.clock import Clock, from_ms
from shared.domain import reasons, states
from shared.domain.after_call import AfterCallAction
from shared.domain.call_settings import CallSettings, default_call_settings, parse_call_settings
from shared.domain.calling_window import describe_window, is_allowed_time
from shared.domain.results import contact_result
from shared.logs import mask_phone
from shared.stores import attempts as attempt_states
from shared.stores.accounts import PLAN_CREDITS, from_storage_units
from workers.dev.demo_plan import ACCOUNT_ID, BATCHES, BatchSpec

#: Width of the progress bar, characters.
BAR_WIDTH = 24
#: Columns of the state table: (state, header).
STATE_COLUMNS: tuple[tuple[str, str], ...] = (
    (states.PENDING, "pending"), (states.QUEUED, "queued"), (states.DIALING, "dialing"),
    (states.IN_CALL, "in call"), (states.ANALYZING, "analyzing"), (states.WAITING_SCHEDULE, "wait window"),
    (states.RETRY_WAIT, "retry wait"), (states.COMPLETED, "completed"), (states.FAILED, "failed"),
)
#: Attempt states of a call the provider created (an ``ended`` attempt may lack its ``call_id`` when the
#: call's webhook was applied before the dialing thread recorded the id).
PLACED = (attempt_states.IN_CALL, attempt_states.ENDED, attempt_states.ORPHANED)
#: Violations listed one by one before the rest is only counted.
MAX_LISTED = 20

_SPECS: dict[str, BatchSpec] = {spec.key: spec for spec in BATCHES}


@dataclass(frozen=True, kw_only=True)
class Snapshot:
    """The state of the campaign at one instant.

    :param now: the shared clock's time (UTC).
    :param counts: jobs per state, per batch key.
    :param elapsed_s: real seconds since the demo started; ``campaign_s`` since the campaign's start (None: not yet).
    :param dashboard: the dashboard URL once the web dyno answered; ``web_note`` why it is missing.
    :param guard: the pipeline's dial guard on this clock (simulated): no call starts that close to a window's end.
    :param provider: the simulator's ``/debug/stats`` (``dials``, ``active``), when it answered.
    """

    now: datetime
    counts: Mapping[str, Mapping[str, int]]
    elapsed_s: float
    campaign_s: float | None
    speed: float
    seed: int
    start: datetime
    dashboard: str | None = None
    web_note: str | None = None
    guard: timedelta = timedelta(0)
    provider: Mapping[str, Any] | None = None


def local_time(at: datetime, zone: str, *, with_date: bool = False) -> str:
    """``Thu 16:40 -04`` (or ``Thu 2026-07-02 16:40 -04``) in ``zone``."""
    local = at.astimezone(pytz.timezone(zone))
    fmt = "%a %Y-%m-%d %H:%M" if with_date else "%a %H:%M"
    return f"{local.strftime(fmt)} {local.strftime('%Z')}"


def window_state(spec: BatchSpec, at: datetime, guard: timedelta = timedelta(0)) -> str:
    """``open``, ``closing`` (open, but closed ``guard`` from now: no new call starts) or ``closed``."""
    allowed, _ = is_allowed_time(spec.settings, at)
    if not allowed:
        return "closed"
    if guard > timedelta(0) and not is_allowed_time(spec.settings, at + guard)[0]:
        return "closing"
    return "open"


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = 0 if total <= 0 else min(width, round(width * done / total))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _final(counts: Mapping[str, int]) -> int:
    return sum(counts.get(s, 0) for s in states.FINAL)


def _clock_line(snap: Snapshot) -> str:
    since = snap.now - snap.start
    sign = "-" if since.total_seconds() < 0 else "+"
    span = _span(abs(since.total_seconds()))
    real = f"real {snap.elapsed_s:5.1f} s"
    return (f"simulated {snap.now.strftime('%a %Y-%m-%d %H:%M')} UTC ({sign}{span} from the start)  "
            f"clock x{snap.speed:g}  {real}")


def _span(seconds: float) -> str:
    days, rest = divmod(int(seconds), 86_400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    return f"{days}d {hours:02d}:{minutes:02d}" if days else f"{hours:02d}:{minutes:02d}"


def render_live(snap: Snapshot) -> str:
    """The live view: clock, dashboard, one progress row per batch, jobs per state, calls in flight."""
    lines = [f"outdial demo  seed {snap.seed}", _clock_line(snap)]
    if snap.campaign_s is None or snap.campaign_s < 0:
        lines.append("starting: the campaign begins when the clock reaches the start")
    lines.append(f"dashboard: {snap.dashboard}" if snap.dashboard else
                 f"dashboard: {snap.web_note or 'starting...'}")
    lines.append("")
    lines.append(f"{'batch':<12} {'local time':<15} {'window':<7} {'progress':<{BAR_WIDTH + 2}} {'final':>9}")
    in_flight = 0
    for key, counts in snap.counts.items():
        spec = _SPECS[key]
        total = sum(counts.values())
        done = _final(counts)
        in_flight += counts.get(states.DIALING, 0) + counts.get(states.IN_CALL, 0)
        state = window_state(spec, snap.now, snap.guard)
        lines.append(f"{key:<12} {local_time(snap.now, spec.timezone):<15} {state:<7} "
                     f"{bar(done, total)} {done:>4}/{total:<4}")
    lines.append("")
    header = f"{'jobs':<12}" + "".join(f"{title:>12}" for _, title in STATE_COLUMNS)
    lines.append(header)
    for key, counts in snap.counts.items():
        lines.append(f"{key:<12}" + "".join(f"{counts.get(state, 0):>12}" for state, _ in STATE_COLUMNS))
    lines.append("")
    provider = ""
    if snap.provider:
        provider = (f"; the provider has received {snap.provider.get('dials', 0)} calls, "
                    f"{snap.provider.get('active', 0)} ringing or connected now")
    lines.append(f"calls in flight: {in_flight}{provider}")
    if snap.guard > timedelta(0):
        lines.append(f"window 'closing': open, but no new call starts in its last {_span(snap.guard.total_seconds())} "
                     f"(the dial guard, {snap.guard.total_seconds() / snap.speed:g} real s at this clock speed)")
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


def render_progress_line(snap: Snapshot) -> str:
    """One line for a pipe or a log: real time, simulated time, final contacts, calls in flight."""
    total = sum(sum(c.values()) for c in snap.counts.values())
    done = sum(_final(c) for c in snap.counts.values())
    in_flight = sum(c.get(states.DIALING, 0) + c.get(states.IN_CALL, 0) for c in snap.counts.values())
    per_batch = "  ".join(f"{key} {_final(c)}/{sum(c.values())}" for key, c in snap.counts.items())
    return (f"[{snap.elapsed_s:5.1f} s] {snap.now.strftime('%a %Y-%m-%d %H:%M')} UTC  final {done}/{total}  "
            f"in flight {in_flight}  {per_batch}")


# -- summary -------------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    """Figures of one batch at the end of the run."""

    key: str
    batch_id: str = ""
    contacts: int = 0
    completed: int = 0
    failed: int = 0
    not_final: int = 0
    calls: int = 0
    retries: int = 0
    second_numbers: int = 0
    postponed: int = 0
    postponed_contacts: int = 0
    charges_units: int = 0
    #: Contacts whose last conversation's analysis is kept, and those of them the analysis calls successful.
    analysed: int = 0
    successful: int = 0
    #: What the batch's ``after_call`` rules did: callbacks scheduled, contacts that opted out, numbers that
    #: reached the wrong person.
    callbacks: int = 0
    opted_out: int = 0
    wrong_numbers: int = 0
    failed_by_reason: collections.Counter[str] = field(default_factory=collections.Counter)


@dataclass
class Summary:
    """The run: per batch figures, the account, the simulated span and the real time taken."""

    batches: list[BatchSummary]
    plan_type: str
    balance_before: float | None
    balance_after: float | None
    ledger_ok: bool
    ledger_problems: list[str]
    start: datetime
    end: datetime
    real_s: float


def failure_reason(job: Mapping[str, Any] | None) -> str:
    """A failed job's reason without the provider's code and attempt count, read from its ``reason_code`` and
    ``reason_params`` (:func:`shared.domain.reasons.headline`): ``max attempts reached: busy``."""
    reason = reasons.of(job)
    return reasons.headline(reason) if reason is not None else "unknown"


def collect_summary(runtime: Any, batch_ids: Mapping[str, str], *, clock: Clock, start: datetime,
                    real_s: float, balance_before: float | None) -> Summary:
    """Read the end state of every batch from MongoDB (jobs, attempts) and the account."""
    out: list[BatchSummary] = []
    for key, batch_id in batch_ids.items():
        row = BatchSummary(key=key, batch_id=batch_id)
        for job in runtime.jobs.of_batch(batch_id, ("status", "last_error", "reason_code", "reason_params",
                                                     "postponed_by_schedule", "result")):
            row.contacts += 1
            result = contact_result(job)
            analysis = result["analysis"]
            if analysis is not None:
                row.analysed += 1
                row.successful += 1 if analysis.get("call_successful") is True else 0
            row.callbacks += result["callbacks"]
            row.wrong_numbers += result["wrong_numbers"]
            row.opted_out += 1 if result["after_call"] == AfterCallAction.OPTED_OUT else 0
            status = job.get("status")
            if status == states.COMPLETED:
                row.completed += 1
            elif status == states.FAILED:
                row.failed += 1
                row.failed_by_reason[failure_reason(job)] += 1
            elif status not in states.FINAL:
                row.not_final += 1
            postponed = int(job.get("postponed_by_schedule", 0) or 0)
            row.postponed += postponed
            row.postponed_contacts += 1 if postponed else 0
        for attempt in runtime.attempts.of_batch(batch_id, ("call_id", "state", "round", "phone_index", "charge")):
            if not attempt.get("call_id") and attempt.get("state") not in PLACED:
                continue
            row.calls += 1
            row.retries += 1 if int(attempt.get("round", 1)) > 1 else 0
            row.second_numbers += 1 if int(attempt.get("phone_index", 0)) > 0 else 0
            row.charges_units += int(attempt.get("charge", 0) or 0)
        out.append(row)
    view = runtime.billing.balance(ACCOUNT_ID)
    check = runtime.billing.check(ACCOUNT_ID)
    return Summary(batches=out, plan_type=view["plan"]["type"], balance_before=balance_before,
                   balance_after=view.get("balance"), ledger_ok=check.ok, ledger_problems=list(check.problems),
                   start=start, end=clock.now(), real_s=real_s)


def _money(plan_type: str, units: int) -> str:
    if plan_type == PLAN_CREDITS:
        return f"{from_storage_units(plan_type, units):.3f} cr"
    return f"{units / 60:.1f} min"


def render_summary(summary: Summary, days: Mapping[str, Sequence[str]] | None = None) -> str:
    """The end-of-run table, the failure reasons, the windows (with ``days``: where the calls fell, see
    :func:`calls_by_day`), the account and what the run spanned."""
    zone = _SPECS["collections"].timezone
    span = _span((summary.end - summary.start).total_seconds())
    lines = ["", f"Summary: simulated {local_time(summary.start, zone, with_date=True)} -> "
                 f"{local_time(summary.end, zone, with_date=True)} ({span}), {summary.real_s:.0f} s real", ""]
    head = (f"{'batch':<12}{'contacts':>9}{'completed':>10}{'failed':>7}{'open':>6}{'calls':>7}{'retries':>8}"
            f"{'2nd no.':>8}{'postponed':>14}{'charges':>13}")
    lines += [head, "-" * len(head)]
    total = BatchSummary(key="total")
    for row in summary.batches:
        lines.append(_summary_row(row, summary.plan_type))
        for name in ("contacts", "completed", "failed", "not_final", "calls", "retries", "second_numbers",
                     "postponed", "postponed_contacts", "charges_units"):
            setattr(total, name, getattr(total, name) + getattr(row, name))
        total.failed_by_reason.update(row.failed_by_reason)
    lines += ["-" * len(head), _summary_row(total, summary.plan_type), ""]
    lines.append("  calls: calls placed; retries: calls in a later round; 2nd no.: calls to a contact's second "
                 "number;")
    lines.append("  postponed: times a due contact was outside its window (contacts), moved to the next opening;")
    lines.append("  open: contacts not final when the demo stopped.")
    lines.append("")
    lines.append("failed by reason:")
    for row in summary.batches:
        for i, (reason, n) in enumerate(row.failed_by_reason.most_common()):
            lines.append(f"  {row.key if i == 0 else '':<12} {n:>4}  {reason}")
    if not total.failed_by_reason:
        lines.append("  (none)")
    lines.append("")
    lines.append("results (each contact's last conversation, analysed by the agent):")
    for row in summary.batches:
        lines.append(f"  {row.key:<12} {row.analysed:>4} analysed, {row.successful:>4} successful;"
                     f"  /dashboard/batches/{row.batch_id}  /batches/{row.batch_id}/results.csv")
        spec = _SPECS.get(row.key)
        if spec is not None and spec.settings.after_call.needs_analysis:
            lines.append(f"  {'':<12} after the call: {row.callbacks} callbacks scheduled at the asked time, "
                         f"{row.opted_out} opted out (do-not-call), {row.wrong_numbers} wrong numbers passed over")
    lines.append("")
    lines.append("windows:")
    for spec in BATCHES:
        lines.append(f"  {spec.key:<12} {describe_window(spec.settings)}; {spec.call_settings['max_attempts']} "
                     f"attempts, {spec.call_settings['retry_delay_hours']} h apart")
    if days is not None:
        lines.append(render_calls_by_day(days))
    lines.append("")
    if summary.balance_after is not None:
        before = f"{summary.balance_before:.3f}" if summary.balance_before is not None else "?"
        lines.append(f"account {ACCOUNT_ID}: {summary.plan_type} plan, balance {before} -> "
                     f"{summary.balance_after:.3f}; ledger {'balanced' if summary.ledger_ok else 'NOT balanced'}")
    for problem in summary.ledger_problems:
        lines.append(f"  ledger: {problem}")
    return "\n".join(lines)


def _summary_row(row: BatchSummary, plan_type: str) -> str:
    postponed = f"{row.postponed} ({row.postponed_contacts})"
    return (f"{row.key:<12}{row.contacts:>9}{row.completed:>10}{row.failed:>7}{row.not_final:>6}{row.calls:>7}"
            f"{row.retries:>8}{row.second_numbers:>8}{postponed:>14}{_money(plan_type, row.charges_units):>13}")


def calls_by_day(calls: Sequence[Mapping[str, Any]], batch_ids: Mapping[str, str]) -> dict[str, list[str]]:
    """Per batch, each local day the provider received its calls: ``Sat 13:20-18:17 (183)``, in order.

    :param calls: the simulator's ``GET /debug/calls?created=1`` records (``received_at``: shared-clock ms).
    """
    keys: dict[str | None, str] = {batch_id: key for key, batch_id in batch_ids.items()}
    days: dict[str, dict[str, list[datetime]]] = {key: {} for key in batch_ids}
    for rec in calls:
        key = keys.get(((rec.get("body") or {}).get("metadata") or {}).get("batch_id"))
        if key is None or key not in _SPECS:
            continue
        local = from_ms(int(rec["received_at"])).astimezone(pytz.timezone(_SPECS[key].timezone))
        days[key].setdefault(local.strftime("%Y-%m-%d"), []).append(local)
    out: dict[str, list[str]] = {}
    for key, by_date in days.items():
        out[key] = []
        for date in sorted(by_date):
            stamps = sorted(by_date[date])
            out[key].append(f"{stamps[0].strftime('%a %H:%M')}-{stamps[-1].strftime('%H:%M')} ({len(stamps)})")
    return out


def render_calls_by_day(days: Mapping[str, Sequence[str]]) -> str:
    """Where the calls fell on each batch's local calendar: the windows, the weekend and the retries at a glance."""
    lines = ["", "calls by local day (first and last call the provider received, number of calls):"]
    for key, entries in days.items():
        lines.append(f"  {key:<12} " + ("   ".join(entries) if entries else "(none)"))
    return "\n".join(lines)


# -- the window check ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A call the provider received while its batch's window was closed."""

    batch: str
    to_number: str  #: masked
    received_at: datetime
    local: str
    reason: str | None


def find_window_violations(calls: Sequence[Mapping[str, Any]], runtime: Any,
                           batch_ids: Mapping[str, str]) -> list[Violation]:
    """Every created call whose arrival at the provider (``received_at``, simulator clock) was outside the window.

    :param calls: the simulator's ``GET /debug/calls?created=1`` records.
    """
    keys: dict[str | None, str] = {batch_id: key for key, batch_id in batch_ids.items()}
    stored = {batch_id: (runtime.batches.get(batch_id) or {}).get("call_settings") for batch_id in keys}
    settings: dict[str | None, CallSettings] = {
        batch_id: default_call_settings() if raw is None else parse_call_settings(raw)
        for batch_id, raw in stored.items()}
    found: list[Violation] = []
    for rec in calls:
        body = rec.get("body") or {}
        batch_id = (body.get("metadata") or {}).get("batch_id")
        at = from_ms(int(rec["received_at"]))
        to_number = str(body.get("to_number", ""))
        allowed, reason = is_allowed_time(settings.get(batch_id) or default_call_settings(), at, to_number)
        if not allowed:
            key = keys.get(batch_id, "?")
            zone = _SPECS[key].timezone if key in _SPECS else "UTC"
            found.append(Violation(key, mask_phone(to_number), at, local_time(at, zone, with_date=True), reason))
    return found


def duplicate_attempts(calls: Sequence[Mapping[str, Any]]) -> list[str]:
    """Attempt ids the provider received more than one call for (must be none)."""
    seen = collections.Counter(((rec.get("body") or {}).get("metadata") or {}).get("attempt_id") for rec in calls)
    return sorted(str(a) for a, n in seen.items() if n > 1)


def render_window_check(violations: Sequence[Violation], calls: int, duplicates: Sequence[str] = ()) -> str:
    """``0 calls outside their window`` or the list of offending calls (masked numbers)."""
    lines = ["", f"window check: {calls} calls received by the provider; {len(violations)} calls outside their window"]
    for v in violations[:MAX_LISTED]:
        lines.append(f"  {v.batch:<12} {v.to_number:<16} {v.local}  {v.reason or ''}")
    if len(violations) > MAX_LISTED:
        lines.append(f"  ... and {len(violations) - MAX_LISTED} more")
    lines.append(f"dial check: {len(duplicates)} attempts dialed twice")
    return "\n".join(lines)

