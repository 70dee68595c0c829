"""The demo campaign: the account, the three example batches, the contacts and what each number does.

Everything here is a plain function of the seed, so two runs with the same ``--seed`` (and
``--contacts``) dial the same numbers and get the same outcomes. The batches are the three
examples of the original design (docs/call_settings.md); the contacts are split among them and
each gets a *profile* — answers at once, answers on a later round, only its second number
answers, always busy, an invalid number... — that becomes the simulator's rule for its numbers.

The campaign starts on a Saturday at 13:00 in Santiago (14:00 in Buenos Aires; in July Chile is
on UTC-4), so within five simulated days every interesting thing happens: collections dials and
retries every 2 h until its window closes at 20:00, skips Sunday and goes on Monday 09:00;
Argentina (Monday to Friday) and the survey (Tuesday to Thursday) wait out the weekend; the
Argentine retries come 24 h apart, the survey's 48 h later, on Thursday; second numbers are
dialed when the first does not answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import phonenumbers
import pytz

from shared.domain.call_settings import CallSettings, parse_call_settings

#: The simulated instant the campaign starts at: Saturday 2026-07-04 13:00 in Santiago (17:00 UTC).
DEFAULT_START = pytz.timezone("America/Santiago").localize(datetime(2026, 7, 4, 13, 0)).astimezone(UTC)
#: Contacts created when ``--contacts`` is not given.
DEFAULT_CONTACTS = 300
#: Seed of the contacts and outcomes when ``--seed`` is not given.
DEFAULT_SEED = 7
#: The demo's account id.
ACCOUNT_ID = "demo"
#: The demo account's plan: credits at 0.12 per connected minute, billed per second, 1,000 credits.
ACCOUNT_PLAN: dict[str, Any] = {"type": "credits", "balance": 1000, "price_per_minute": 0.12, "granularity": "second"}
#: Provider concurrency slots of the demo account (and the simulator's limit).
DEFAULT_CONCURRENCY_LIMIT = 100
#: Agent and caller id of the demo batches (the simulator accepts any).
AGENT_ID = "agent_demo"
FROM_NUMBER = "+56229990000"


@dataclass(frozen=True, kw_only=True)
class BatchSpec:
    """One example batch.

    :param key: short name used in tables.
    :param name: the batch's name.
    :param region: region of its contacts' numbers (``CL`` or ``AR``).
    :param share: fraction of the contacts that go to this batch.
    :param call_settings: the batch's call_settings, as an operator would send them.
    """

    key: str
    name: str
    region: str
    share: float
    call_settings: dict[str, Any]

    @property
    def timezone(self) -> str:
        return str(self.call_settings["timezone"])

    @cached_property
    def settings(self) -> CallSettings:
        """``call_settings`` parsed (once)."""
        return parse_call_settings(self.call_settings)


#: What the collections batch does with what each person said (``call_settings.after_call``): a callback asked
#: for is placed at that time (or the window's next opening after it), an opt-out lists the number on the account's
#: do-not-call list, a wrong person makes the contact's next number the one dialed.
AFTER_CALL: dict[str, Any] = {"callback_field": "callback_at", "opt_out_field": "do_not_call",
                              "wrong_number_field": "wrong_person"}
#: How often a collections conversation asks for a callback, opts out or reaches the wrong person.
AFTER_CALL_SHARES: dict[str, float] = {"callback": 0.12, "opt_out": 0.04, "wrong_person": 0.05}
#: The callback times asked for, as the simulator writes them relative to the call's end: three hours later
#: (an instant), or a day two days later (a date alone: the window's first opening that day).
CALLBACK_TIMES = ("{{end+3h}}", "{{date+2d@America/Santiago}}")

#: The three example batches of the original design (docs/call_settings.md, cases 1-3).
BATCHES: tuple[BatchSpec, ...] = (
    BatchSpec(key="collections", name="Urgent collections", region="CL", share=0.4, call_settings={
        "max_call_duration": 600, "ring_timeout": 45, "max_attempts": 5, "retry_delay_hours": 2,
        "allowed_hours": {"start": "09:00", "end": "20:00"}, "days_of_week": [1, 2, 3, 4, 5, 6],
        "timezone": "America/Santiago", "after_call": AFTER_CALL}),
    BatchSpec(key="survey", name="Satisfaction survey", region="CL", share=0.3, call_settings={
        "max_call_duration": 300, "ring_timeout": 30, "max_attempts": 2, "retry_delay_hours": 48,
        "allowed_hours": {"start": "10:00", "end": "18:00"}, "days_of_week": [2, 3, 4],
        "timezone": "America/Santiago"}),
    BatchSpec(key="argentina", name="Clients in Argentina", region="AR", share=0.3, call_settings={
        "max_call_duration": 420, "ring_timeout": 40, "max_attempts": 3, "retry_delay_hours": 24,
        "allowed_hours": {"start": "11:00", "end": "19:00"}, "days_of_week": [1, 2, 3, 4, 5],
        "timezone": "America/Argentina/Buenos_Aires"}),
)

#: Contact profiles: weight, and the simulator rule of the first and (when present) second number.
#: A rule is what ``outdial simulator`` accepts (docs/retell.md): an outcome, or a sequence the n-th
#: call to that number follows.
PROFILES: dict[str, tuple[float, Any, Any]] = {
    "answers": (0.36, "answer", None),
    "answers_2nd_round": (0.10, {"sequence": ["no_answer", "answer"]}, None),
    "voicemail_then_answers": (0.06, {"sequence": ["voicemail", "voicemail", "answer"]}, None),
    "second_number_answers": (0.10, "no_answer", "answer"),
    "first_number_invalid": (0.04, "invalid", "answer"),
    "busy": (0.08, "busy", None),
    "never_answers": (0.10, "no_answer", None),
    "voicemail": (0.06, "voicemail", None),
    "invalid_number": (0.05, "invalid", None),
    "both_busy": (0.05, "busy", {"sequence": ["busy", "busy", "answer"]}),
}

#: Simulated ring and talk times (seconds) of the demo's calls.
OUTCOME_DEFAULTS: dict[str, dict[str, list[float]]] = {
    "answer": {"ring_s": [3, 15], "duration_s": [30, 240]},
    "voicemail": {"ring_s": [10, 20], "duration_s": [10, 25]},
}

_FIRST = ("Ana", "Benjamín", "Camila", "Diego", "Elena", "Felipe", "Gabriela", "Héctor", "Isidora", "Joaquín",
          "Karina", "Lucas", "Martina", "Nicolás", "Olivia", "Pablo", "Renata", "Sebastián", "Tomás", "Valentina")
_LAST = ("Araya", "Bustos", "Castro", "Díaz", "Espinoza", "Fuentes", "González", "Herrera", "Ibáñez", "Jara",
         "López", "Muñoz", "Núñez", "Orellana", "Pérez", "Rojas", "Silva", "Torres", "Vargas", "Zúñiga")


@dataclass
class Campaign:
    """The demo's contacts per batch key and the simulator scenario for their numbers."""

    contacts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)
    scenario: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(c) for c in self.contacts.values())


def split(total: int, batches: Sequence[BatchSpec] = BATCHES) -> dict[str, int]:
    """How many of ``total`` contacts each batch gets (by ``share``; every batch at least one when possible)."""
    counts = {b.key: int(total * b.share) for b in batches}
    rest = total - sum(counts.values())
    # the leftover goes first to batches that got none, then by largest remainder
    order = sorted(batches, key=lambda b: (counts[b.key] > 0, -(total * b.share - counts[b.key])))
    for b in order[:rest]:
        counts[b.key] += 1
    return counts


def _number(rng: random.Random, region: str, used: set[str]) -> str:
    """A fresh valid mobile number of ``region`` (CL: +569 + 8 digits; AR: +54 9 11 + 8 digits)."""
    while True:
        if region == "AR":
            candidate = f"+54911{rng.randrange(10**7, 10**8)}"
        else:
            candidate = f"+569{rng.randrange(10**7, 10**8)}"
        if candidate not in used and phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            used.add(candidate)
            return candidate


def _variables(key: str, rng: random.Random, index: int) -> dict[str, str]:
    if key == "collections":
        return {"amount_due": f"{rng.randrange(20, 900) * 1000} CLP", "due_date": f"2026-06-{rng.randrange(1, 29):02d}",
                "invoice": f"F-{100000 + index}"}
    if key == "survey":
        return {"product": rng.choice(("home insurance", "car insurance", "travel insurance")),
                "agent_name": "Sofía"}
    return {"amount_due": f"{rng.randrange(10, 500) * 1000} ARS",
            "branch": rng.choice(("Palermo", "Belgrano", "Centro"))}


def _analysed(rule: Any, key: str, rng: random.Random) -> Any:
    """``rule`` with each answered call given what the agent would extract from the conversation (the batch's
    kind of campaign): whether it succeeded, the sentiment and the custom analysis data."""
    if isinstance(rule, dict) and "sequence" in rule:
        return {**rule, "sequence": [_analysed(step, key, rng) for step in rule["sequence"]]}
    if rule != "answer":
        return rule
    successful = rng.random() < 0.7
    if key == "survey":
        score = rng.randint(6, 10) if successful else rng.randint(1, 5)
        custom: dict[str, Any] = {"satisfaction": score, "would_recommend": score >= 8}
    else:
        custom = {"promise_to_pay": successful,
                  "promise_to_pay_date": f"2026-07-{rng.randrange(6, 31):02d}" if successful else None,
                  "dispute": not successful and rng.random() < 0.4}
    sentiment = rng.choice(("Positive", "Neutral")) if successful else rng.choice(("Neutral", "Negative"))
    return {"outcome": "answer", "successful": successful, "sentiment": sentiment, "custom_analysis_data": custom}


def _after_call(rule: Any, key: str, rng: random.Random) -> Any:
    """``rule`` (already analysed) with what some collections conversations say that the batch's ``after_call``
    acts on: a wrong person or an opt-out on any answered call; a callback asked on the first call of a number that
    always answers, whose callback is then a plain conversation."""
    if key != "collections":
        return rule
    if isinstance(rule, dict) and "sequence" in rule:
        return {**rule, "sequence": [_said(step, rng) for step in rule["sequence"]]}
    if not _answered(rule):
        return rule
    draw = rng.random()
    if draw < AFTER_CALL_SHARES["callback"]:
        asked = {**rule, "custom_analysis_data": {**rule["custom_analysis_data"],
                                                  "callback_at": rng.choice(CALLBACK_TIMES)}}
        return {"sequence": [asked, rule]}
    return _said(rule, rng, draw=draw - AFTER_CALL_SHARES["callback"])


def _answered(rule: Any) -> bool:
    return isinstance(rule, dict) and rule.get("outcome") == "answer"


def _said(rule: Any, rng: random.Random, *, draw: float | None = None) -> Any:
    """An answered ``rule`` that now and then opts out or reached the wrong person."""
    if not _answered(rule):
        return rule
    draw = rng.random() if draw is None else draw
    if draw < AFTER_CALL_SHARES["opt_out"]:
        said = {"do_not_call": True}
    elif draw < AFTER_CALL_SHARES["opt_out"] + AFTER_CALL_SHARES["wrong_person"]:
        said = {"wrong_person": True}
    else:
        return rule
    return {**rule, "custom_analysis_data": {**rule["custom_analysis_data"], **said}}


def build_campaign(total: int = DEFAULT_CONTACTS, *, seed: int = DEFAULT_SEED,
                   batches: Sequence[BatchSpec] = BATCHES) -> Campaign:
    """Contacts for every batch and the simulator scenario that decides their calls.

    :param total: number of contacts over all batches (>= 1).
    :param seed: seed of names, numbers, profiles and the simulator's draws (durations).
    """
    if total < 1:
        raise ValueError(f"contacts: must be >= 1, got {total}")
    rng = random.Random(seed)
    talk = random.Random(seed + 1)   # what each conversation comes to: its own draws, the contacts stay the same
    said = random.Random(seed + 2)   # what the after-call rules act on: its own draws, the conversations stay too
    names = list(PROFILES)
    weights = [PROFILES[n][0] for n in names]
    used: set[str] = set()
    campaign = Campaign(scenario={"seed": seed, "defaults": OUTCOME_DEFAULTS, "numbers": {}})
    numbers: dict[str, Any] = campaign.scenario["numbers"]
    for spec in batches:
        rows: list[dict[str, Any]] = []
        for i in range(split(total, batches)[spec.key]):
            profile = rng.choices(names, weights)[0]
            _, first_rule, second_rule = PROFILES[profile]
            phones = [_number(rng, spec.region, used)]
            numbers[phones[0]] = _after_call(_analysed(first_rule, spec.key, talk), spec.key, said)
            if second_rule is not None:
                phones.append(_number(rng, spec.region, used))
                numbers[phones[1]] = _after_call(_analysed(second_rule, spec.key, talk), spec.key, said)
            external_id = f"{spec.key}-{i + 1:04d}"
            rows.append({"name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", "phones": phones,
                         "external_id": external_id, "variables": _variables(spec.key, rng, i)})
            campaign.profiles[external_id] = profile
        campaign.contacts[spec.key] = rows
    return campaign


def batch_body(spec: BatchSpec) -> dict[str, Any]:
    """The ``POST /batches`` body of an example batch."""
    return {"name": spec.name, "account_id": ACCOUNT_ID, "agent_id": AGENT_ID, "from_number": FROM_NUMBER,
            "call_settings": dict(spec.call_settings)}


def account_body(concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT,
                 plan: Mapping[str, Any] = ACCOUNT_PLAN) -> dict[str, Any]:
    """The ``PUT /accounts/demo`` body."""
    return {"plan": dict(plan), "concurrency_limit": concurrency_limit}
