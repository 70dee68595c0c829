"""What the wizard and the preview say of a batch's settings under the compliance profiles that apply: where the
batch asks for more than the law allows, what will really happen. Warnings never block a batch.

No I/O: the profiles come from :func:`shared.domain.calling_window.applicable_profiles`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.domain.call_settings import CallSettings
from shared.domain.compliance import Cap, ComplianceProfile


@dataclass(frozen=True)
class CallerIdRule:
    """A caller id a profile's calls must show: its E.164 prefix, the rule in words and its source."""

    prefix: str
    rule: str
    source: str


#: Caller ids by profile: Chile's telecom regulator (SUBTEL) requires, since 2025-08-13, the 600 prefix for calls
#: within an existing relationship (collection included) and 809 for unsolicited marketing.
CALLER_IDS: dict[str, CallerIdRule] = {
    "cl-cobranza": CallerIdRule("+56600", "calls within an existing relationship, collection included, must show a "
                                          "caller id with the 600 prefix (since 2025-08-13)", "SUBTEL"),
}


def _calls_within(settings: CallSettings, cap: Cap) -> int:
    """How many calls the batch's own settings would make to one person within the cap's span: its attempts, one a
    retry delay apart (the window aside)."""
    span_h = cap.hours if cap.hours is not None else (cap.days or 1) * 24
    delay_h = settings.retry_delay_hours
    if delay_h <= 0:
        return settings.max_attempts
    return min(settings.max_attempts, 1 + int(span_h // delay_h))


def _attempts_text(settings: CallSettings) -> str:
    attempts = settings.max_attempts
    return (f"{attempts} attempt{'s' if attempts != 1 else ''} {settings.retry_delay_hours:g} hour"
            f"{'s' if settings.retry_delay_hours != 1 else ''} apart")


def compliance_warnings(settings: CallSettings, profiles: Iterable[ComplianceProfile], *,
                        from_number: str | None = None) -> list[str]:
    """Each way the batch asks for more than a profile allows, said as what will happen."""
    said: list[str] = []
    for profile in profiles:
        for cap in profile.caps:
            if _calls_within(settings, cap) > cap.count:
                rule = cap.rule or f"{cap.count} calls"
                said.append(f"{_attempts_text(settings)}: {profile.id} allows {rule}; each contact gets at most "
                            f"{rule} and the other attempts wait until it allows them")
        if profile.quiet_days_after_conversation and settings.after_call.callback_field:
            said.append(f"{profile.id}: no call within {profile.quiet_days_after_conversation} days after a "
                        "conversation; a callback asked sooner waits until then")
        caller = CALLER_IDS.get(profile.id)
        if caller is not None and from_number and not from_number.startswith(caller.prefix):
            said.append(f"{profile.id}: {caller.rule} ({caller.source}); the batch's caller id {from_number} does "
                        "not")
    return said
