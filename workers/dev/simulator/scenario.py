"""What the simulator does with each number: scenario rules, the random mix, injected faults.

A scenario is a JSON object (file given to ``outdial simulator --scenario``, or
``PUT /debug/scenario``); docs/retell.md describes it. Every choice is deterministic: the
outcome of the n-th call to a number depends only on the scenario, the seed, the number and
n, never on the order in which different numbers were dialed.
"""

from __future__ import annotations

import random
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.dev.simulator.templates import TemplateError, check_templates

__all__ = [
    "ENDPOINTS",
    "FAULTS",
    "OUTCOMES",
    "Faults",
    "OutcomeSpec",
    "Plan",
    "Scenario",
    "ScenarioError",
    "parse_faults",
    "parse_scenario",
    "plan_call",
]

#: Outcomes a rule can name.
OUTCOMES = ("answer", "no_answer", "busy", "voicemail", "invalid", "failed", "stuck")
#: The mix used for numbers no rule names (weights; normalised).
DEFAULT_MIX: dict[str, float] = {
    "answer": 0.55, "no_answer": 0.18, "voicemail": 0.12, "busy": 0.08, "failed": 0.04, "invalid": 0.03,
}
#: Per-outcome defaults: ``ring_s`` = simulated seconds from create to answer (or to the busy/failure signal),
#: ``duration_s`` = simulated seconds from answer to hang-up. ``[lo, hi]`` draws uniformly.
DEFAULT_PARAMS: dict[str, dict[str, tuple[float, float]]] = {
    "answer": {"ring_s": (2.0, 12.0), "duration_s": (20.0, 180.0)},
    "voicemail": {"ring_s": (12.0, 25.0), "duration_s": (8.0, 30.0)},
    "no_answer": {"ring_s": (0.0, 0.0), "duration_s": (0.0, 0.0)},
    "busy": {"ring_s": (1.0, 4.0), "duration_s": (0.0, 0.0)},
    "invalid": {"ring_s": (0.5, 2.0), "duration_s": (0.0, 0.0)},
    "failed": {"ring_s": (0.5, 3.0), "duration_s": (0.0, 0.0)},
    "stuck": {"ring_s": (1.0, 3.0), "duration_s": (0.0, 0.0)},
}
#: ``disconnection_reason`` of each outcome (answer: user_hangup or agent_hangup at random).
OUTCOME_REASONS = {
    "no_answer": "dial_no_answer", "busy": "dial_busy", "voicemail": "voicemail_reached",
    "invalid": "invalid_destination", "failed": "dial_failed",
}
#: Simulated seconds between the end of a call and its analysis (``call_analyzed``).
DEFAULT_ANALYSIS_DELAY_S = 5.0
#: Agent reported when a request names none and the scenario sets none.
DEFAULT_AGENT_ID = "agent_simulated"

#: Endpoint names (as the client's metrics label them), with short aliases accepted in fault settings.
ENDPOINTS = ("create_phone_call", "get_call", "stop_call", "list_calls", "get_concurrency")
_ENDPOINT_ALIASES = {"create": "create_phone_call", "get": "get_call", "stop": "stop_call", "list": "list_calls",
                     "concurrency": "get_concurrency"}
#: Faults that can be scripted: an HTTP status answered before the request is processed, ``slow``
#: (answer late, after processing), ``late`` (hold the request ``slow_ms``, then process and answer it: a
#: create the provider is still working on when the client gives up), ``trickle`` (process, then send the
#: answer's body a byte at a time over ``slow_ms``), ``drop`` (process, then close the connection without
#: answering), ``drop_before`` (close without processing), ``none`` (a normal answer; a placeholder in a script).
FAULTS = ("400", "401", "402", "404", "408", "409", "422", "429", "500", "502", "503", "504",
          "slow", "late", "trickle", "drop", "drop_before", "none")

_E164 = re.compile(r"\+[1-9]\d{6,14}")


class ScenarioError(ValueError):
    """A scenario or fault setting that cannot be used; the message names the field."""


# -- outcomes ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class OutcomeSpec:
    """One outcome with its optional parameters (None: the outcome's default)."""

    outcome: str
    ring_s: tuple[float, float] | None = None
    duration_s: tuple[float, float] | None = None
    reason: str | None = None
    status: str | None = None
    successful: bool | None = None
    sentiment: str | None = None
    custom_analysis_data: dict[str, Any] | None = None


def _range(value: Any, where: str) -> tuple[float, float]:
    if isinstance(value, bool):
        raise ScenarioError(f"{where}: must be a number of seconds or [lo, hi], got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ScenarioError(f"{where}: must be >= 0, got {value}")
        return float(value), float(value)
    if (isinstance(value, list | tuple) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        lo, hi = float(value[0]), float(value[1])
        if lo < 0 or hi < lo:
            raise ScenarioError(f"{where}: needs 0 <= lo <= hi, got {list(value)}")
        return lo, hi
    raise ScenarioError(f"{where}: must be a number of seconds or [lo, hi], got {value!r}")


_SPEC_FIELDS = {"outcome", "ring_s", "duration_s", "reason", "status", "successful", "sentiment",
                "custom_analysis_data"}


def _outcome_spec(raw: Any, where: str) -> OutcomeSpec:
    if isinstance(raw, str):
        raw = {"outcome": raw}
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"{where}: must be an outcome name or an object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SPEC_FIELDS)
    if unknown:
        raise ScenarioError(f"{where}: unknown field(s) {', '.join(unknown)}")
    outcome = raw.get("outcome")
    if outcome not in OUTCOMES:
        raise ScenarioError(f"{where}.outcome: must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    for name in ("reason", "status", "sentiment"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ScenarioError(f"{where}.{name}: must be a string")
    if raw.get("successful") is not None and not isinstance(raw["successful"], bool):
        raise ScenarioError(f"{where}.successful: must be true or false")
    custom = raw.get("custom_analysis_data")
    if custom is not None and not isinstance(custom, Mapping):
        raise ScenarioError(f"{where}.custom_analysis_data: must be an object")
    try:
        check_templates(custom, f"{where}.custom_analysis_data")
    except TemplateError as exc:
        raise ScenarioError(str(exc)) from None
    return OutcomeSpec(
        outcome=outcome,
        ring_s=_range(raw["ring_s"], f"{where}.ring_s") if raw.get("ring_s") is not None else None,
        duration_s=_range(raw["duration_s"], f"{where}.duration_s") if raw.get("duration_s") is not None else None,
        reason=raw.get("reason"), status=raw.get("status"), successful=raw.get("successful"),
        sentiment=raw.get("sentiment"), custom_analysis_data=dict(custom) if custom is not None else None,
    )


def _rule(raw: Any, where: str) -> tuple[OutcomeSpec, ...]:
    """A number's rule: one outcome, or ``{"sequence": [...]}`` (the n-th call takes the n-th, the last repeats)."""
    if isinstance(raw, Mapping) and "sequence" in raw:
        if set(raw) != {"sequence"}:
            raise ScenarioError(f"{where}: a sequence rule has only the field 'sequence'")
        seq = raw["sequence"]
        if not isinstance(seq, list) or not seq:
            raise ScenarioError(f"{where}.sequence: must be a non-empty list of outcomes")
        return tuple(_outcome_spec(item, f"{where}.sequence[{i}]") for i, item in enumerate(seq))
    return (_outcome_spec(raw, where),)


# -- scenario ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Scenario:
    """Parsed scenario. Build it with :func:`parse_scenario`."""

    seed: int | None = None
    mix: tuple[tuple[str, float], ...] = tuple(DEFAULT_MIX.items())
    params: dict[str, dict[str, tuple[float, float]]] = field(default_factory=lambda: dict(DEFAULT_PARAMS))
    numbers: dict[str, tuple[OutcomeSpec, ...]] = field(default_factory=dict)
    prefixes: tuple[tuple[str, tuple[OutcomeSpec, ...]], ...] = ()
    agent_id: str = DEFAULT_AGENT_ID
    from_numbers: frozenset[str] | None = None
    analysis_delay_s: float = DEFAULT_ANALYSIS_DELAY_S
    raw: dict[str, Any] = field(default_factory=dict)

    def rule_for(self, to_number: str) -> tuple[OutcomeSpec, ...] | None:
        """The number's own rule, else the longest matching prefix rule, else None (random mix)."""
        rule = self.numbers.get(to_number)
        if rule is not None:
            return rule
        for prefix, prefix_rule in self.prefixes:
            if to_number.startswith(prefix):
                return prefix_rule
        return None

    def pick(self, to_number: str, nth: int, rng: random.Random) -> OutcomeSpec:
        """The outcome of the ``nth`` (0-based) accepted call to ``to_number``."""
        rule = self.rule_for(to_number)
        if rule is not None:
            return rule[min(nth, len(rule) - 1)]
        r = rng.random()
        acc = 0.0
        for name, weight in self.mix:
            acc += weight
            if r < acc:
                return OutcomeSpec(outcome=name)
        return OutcomeSpec(outcome=self.mix[-1][0])


_SCENARIO_FIELDS = {"seed", "mix", "defaults", "numbers", "prefixes", "agent_id", "from_numbers", "analysis_delay_s"}


def _parse_mix(raw: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise ScenarioError("mix: must be a non-empty object {outcome: weight}")
    weights: list[tuple[str, float]] = []
    for name, weight in raw.items():
        if name not in OUTCOMES:
            raise ScenarioError(f"mix.{name}: unknown outcome (one of {', '.join(OUTCOMES)})")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ScenarioError(f"mix.{name}: weight must be a number >= 0, got {weight!r}")
        weights.append((name, float(weight)))
    total = sum(w for _, w in weights)
    if total <= 0:
        raise ScenarioError("mix: weights must not all be 0")
    return tuple((name, w / total) for name, w in weights if w > 0)


def _parse_params(raw: Any) -> dict[str, dict[str, tuple[float, float]]]:
    params = {name: dict(values) for name, values in DEFAULT_PARAMS.items()}
    if not isinstance(raw, Mapping):
        raise ScenarioError("defaults: must be an object {outcome: {ring_s, duration_s}}")
    for name, values in raw.items():
        if name not in OUTCOMES:
            raise ScenarioError(f"defaults.{name}: unknown outcome")
        if not isinstance(values, Mapping) or set(values) - {"ring_s", "duration_s"}:
            raise ScenarioError(f"defaults.{name}: only ring_s and duration_s can be set")
        for key, value in values.items():
            params[name][key] = _range(value, f"defaults.{name}.{key}")
    return params


def _parse_numbers(raw: Any) -> dict[str, tuple[OutcomeSpec, ...]]:
    if not isinstance(raw, Mapping):
        raise ScenarioError("numbers: must be an object {E.164 number: rule}")
    numbers = {}
    for number, rule in raw.items():
        if not isinstance(number, str) or not _E164.fullmatch(number):
            raise ScenarioError(f"numbers: key {number!r} is not an E.164 number such as +15551234567")
        numbers[number] = _rule(rule, f"numbers[{number}]")
    return numbers


def _parse_prefixes(raw: Any) -> tuple[tuple[str, tuple[OutcomeSpec, ...]], ...]:
    if not isinstance(raw, Mapping):
        raise ScenarioError("prefixes: must be an object {number prefix: rule}")
    out = []
    for prefix, rule in raw.items():
        if not isinstance(prefix, str) or not re.fullmatch(r"\+\d{1,14}", prefix):
            raise ScenarioError(f"prefixes: key {prefix!r} must be '+' followed by digits")
        out.append((prefix, _rule(rule, f"prefixes[{prefix}]")))
    out.sort(key=lambda item: len(item[0]), reverse=True)
    return tuple(out)


def parse_scenario(raw: Mapping[str, Any] | None) -> Scenario:
    """Validate a scenario object; raises :class:`ScenarioError` naming the bad field. None gives the default."""
    if raw is None:
        return Scenario()
    if not isinstance(raw, Mapping):
        raise ScenarioError(f"a scenario must be a JSON object, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _SCENARIO_FIELDS)
    if unknown:
        raise ScenarioError(f"unknown scenario field(s): {', '.join(unknown)} "
                            f"(known: {', '.join(sorted(_SCENARIO_FIELDS))})")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ScenarioError(f"seed: must be an integer, got {seed!r}")
    agent_id = raw.get("agent_id", DEFAULT_AGENT_ID)
    if not isinstance(agent_id, str) or not agent_id:
        raise ScenarioError("agent_id: must be a non-empty string")
    from_numbers = raw.get("from_numbers")
    if from_numbers is not None:
        if not isinstance(from_numbers, list) or not all(isinstance(n, str) for n in from_numbers):
            raise ScenarioError("from_numbers: must be a list of E.164 strings")
        from_numbers = frozenset(from_numbers)
    delay = raw.get("analysis_delay_s", DEFAULT_ANALYSIS_DELAY_S)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise ScenarioError(f"analysis_delay_s: must be a number >= 0, got {delay!r}")
    return Scenario(
        seed=seed,
        mix=_parse_mix(raw["mix"]) if "mix" in raw else tuple(DEFAULT_MIX.items()),
        params=_parse_params(raw.get("defaults") or {}),
        numbers=_parse_numbers(raw.get("numbers") or {}),
        prefixes=_parse_prefixes(raw.get("prefixes") or {}),
        agent_id=agent_id,
        from_numbers=from_numbers,
        analysis_delay_s=float(delay),
        raw=dict(raw),
    )


# -- timeline ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Plan:
    """A call's whole life, decided at creation. Instants are shared-clock milliseconds.

    ``connect_ms`` None: never connects. ``end_ms`` None: runs until stop-call (``stuck``).
    """

    outcome: str
    connect_ms: int | None
    end_ms: int | None
    reason: str | None
    final_status: str
    in_voicemail: bool
    successful: bool
    sentiment: str
    custom_analysis_data: dict[str, Any]


def _draw(bounds: tuple[float, float], rng: random.Random) -> float:
    lo, hi = bounds
    return lo if hi <= lo else rng.uniform(lo, hi)


def plan_call(spec: OutcomeSpec, *, created_ms: int, ring_duration_ms: int, max_call_duration_ms: int,
              rng: random.Random, params: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
              unconnected_status: str = "ended") -> Plan:
    """Decide when the call connects and ends, and why.

    :param ring_duration_ms: how long it may ring unanswered (Retell's ``ring_duration_ms``).
    :param max_call_duration_ms: longest connected time (Retell's ``max_call_duration_ms``); ``stuck`` ignores it.
    :param unconnected_status: ``call_status`` of a call that ended without connecting (``ended`` or ``not_connected``).
    """
    defaults = (params or DEFAULT_PARAMS)[spec.outcome]
    ring_ms = round(_draw(spec.ring_s or defaults["ring_s"], rng) * 1000)
    talk_ms = round(_draw(spec.duration_s or defaults["duration_s"], rng) * 1000)
    outcome = spec.outcome
    connect_ms: int | None = None
    end_ms: int | None
    reason: str | None
    forced = False  # the ring time or the duration limit decided the reason, not the outcome
    if outcome in ("answer", "voicemail") and ring_ms < ring_duration_ms:
        connect_ms = created_ms + ring_ms
        if talk_ms > max_call_duration_ms:
            end_ms, reason, forced = connect_ms + max_call_duration_ms, "max_duration_reached", True
        else:
            end_ms = connect_ms + talk_ms
            reason = OUTCOME_REASONS.get(outcome) or rng.choice(("user_hangup", "agent_hangup"))
    elif outcome in ("answer", "voicemail", "no_answer"):
        end_ms, reason, forced = created_ms + ring_duration_ms, "dial_no_answer", outcome != "no_answer"
    elif outcome == "stuck":
        connect_ms = created_ms + min(ring_ms, ring_duration_ms - 1000)
        end_ms, reason = None, None
    else:
        end_ms, reason = created_ms + min(ring_ms, ring_duration_ms), OUTCOME_REASONS[outcome]
    if spec.reason and end_ms is not None and not forced:
        reason = spec.reason
    connected = connect_ms is not None
    answered = outcome == "answer" and connected
    return Plan(
        outcome=outcome,
        connect_ms=connect_ms,
        end_ms=end_ms,
        reason=reason,
        final_status=spec.status or ("ended" if connected else unconnected_status),
        in_voicemail=outcome == "voicemail" and connected,
        successful=spec.successful if spec.successful is not None else answered and reason != "max_duration_reached",
        sentiment=spec.sentiment or (rng.choice(("Positive", "Neutral", "Negative")) if answered else "Unknown"),
        custom_analysis_data=dict(spec.custom_analysis_data or {}),
    )


# -- faults ------------------------------------------------------------------------------------------

@dataclass(kw_only=True)
class Faults:
    """Injected faults: random rates per request, plus scripted faults consumed in order.

    :param rate_429: share of requests answered 429 with ``retry-after``.
    :param rate_500: share answered 500.
    :param rate_slow: share answered ``slow_ms`` late (after processing: a slow create has created its call).
    :param rate_drop: share processed and then dropped without an answer (a create has created its call).
    :param slow_ms: delay of a slow answer (and how long a trickled answer's body takes), real milliseconds;
        default 3000.
    :param retry_after_ms: the 429's ``retry-after-ms`` (and ``retry-after`` in whole seconds); default 1000.
    :param endpoints: endpoints the random rates apply to; default all.
    :param script: per endpoint, faults applied to its next requests in order (see :data:`FAULTS`).
    """

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_slow: float = 0.0
    rate_drop: float = 0.0
    slow_ms: int = 3000
    retry_after_ms: int = 1000
    endpoints: frozenset[str] = frozenset(ENDPOINTS)
    script: dict[str, deque[str]] = field(default_factory=dict)

    def pick(self, endpoint: str, rng: random.Random) -> str | None:
        """The fault for this request of ``endpoint``, or None for a normal answer."""
        queue = self.script.get(endpoint)
        if queue:
            fault = queue.popleft()
            return None if fault == "none" else fault
        if endpoint not in self.endpoints:
            return None
        r = rng.random()
        for name, rate in (("drop", self.rate_drop), ("429", self.rate_429), ("500", self.rate_500),
                           ("slow", self.rate_slow)):
            if r < rate:
                return name
            r -= rate
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate_429": self.rate_429, "rate_500": self.rate_500, "rate_slow": self.rate_slow,
            "rate_drop": self.rate_drop, "slow_ms": self.slow_ms, "retry_after_ms": self.retry_after_ms,
            "endpoints": sorted(self.endpoints), "script": {k: list(v) for k, v in self.script.items() if v},
        }


def _endpoint(name: Any, where: str) -> str:
    full = _ENDPOINT_ALIASES.get(name, name)
    if full not in ENDPOINTS:
        raise ScenarioError(f"{where}: unknown endpoint {name!r} (one of {', '.join(ENDPOINTS)})")
    return full


def _parse_script(raw: Any) -> dict[str, deque[str]]:
    if not isinstance(raw, Mapping):
        raise ScenarioError("script: must be an object {endpoint: [fault, ...]}")
    script = {}
    for name, faults in raw.items():
        endpoint = _endpoint(name, "script")
        if not isinstance(faults, list) or not all(str(f) in FAULTS for f in faults):
            raise ScenarioError(f"script.{name}: must be a list of faults ({', '.join(FAULTS)})")
        script[endpoint] = deque(str(f) for f in faults)
    return script


def parse_faults(raw: Mapping[str, Any] | None, *, base: Faults | None = None) -> Faults:
    """Fault settings from a JSON object; fields not given keep ``base``'s values (default: no faults)."""
    base = base or Faults()
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ScenarioError("faults must be a JSON object")
    known = {"rate_429", "rate_500", "rate_slow", "rate_drop", "slow_ms", "retry_after_ms", "endpoints", "script"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ScenarioError(f"unknown fault field(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for name in ("rate_429", "rate_500", "rate_slow", "rate_drop"):
        value = raw.get(name, getattr(base, name))
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ScenarioError(f"{name}: must be a number between 0 and 1, got {value!r}")
        values[name] = float(value)
    if sum(values.values()) > 1:
        raise ScenarioError("rate_*: the rates must add up to at most 1")
    for name in ("slow_ms", "retry_after_ms"):
        value = raw.get(name, getattr(base, name))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ScenarioError(f"{name}: must be an integer >= 0 (milliseconds), got {value!r}")
        values[name] = value
    endpoints = base.endpoints
    if "endpoints" in raw:
        if not isinstance(raw["endpoints"], list):
            raise ScenarioError("endpoints: must be a list of endpoint names")
        endpoints = frozenset(_endpoint(e, "endpoints") for e in raw["endpoints"])
    script = _parse_script(raw["script"]) if "script" in raw else {k: deque(v) for k, v in base.script.items()}
    return Faults(endpoints=endpoints, script=script, **values)
