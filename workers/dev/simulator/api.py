"""What the simulator accepts, as Retell does: create-phone-call bodies and v3 list-calls filters.

Pure functions: a bad request raises :class:`ApiError` with Retell's status code and a message
naming the field; the aiohttp handlers turn it into ``{"status": "error", "message": ...}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.provider.retell import MAX_CALL_DURATION_MS_RANGE, RING_DURATION_MS_RANGE

__all__ = ["ApiError", "CreateRequest", "ListQuery", "parse_create_body", "parse_list_body"]

#: Retell's defaults for the agent fields a call may override, milliseconds.
DEFAULT_RING_DURATION_MS = 30_000
DEFAULT_MAX_CALL_DURATION_MS = 3_600_000
#: v3 list-calls page size when the request sets none, and the largest accepted.
DEFAULT_LIST_LIMIT = 50
MAX_LIST_LIMIT = 1000
#: Webhook events an agent can subscribe to; the first three are the default.
WEBHOOK_EVENTS = ("call_started", "call_ended", "call_analyzed", "transcript_updated", "transfer_started",
                  "transfer_bridged", "transfer_cancelled", "transfer_ended")
DEFAULT_WEBHOOK_EVENTS = WEBHOOK_EVENTS[:3]

CREATE_FIELDS = frozenset({
    "from_number", "to_number", "override_agent_id", "override_agent_version", "retell_llm_dynamic_variables",
    "metadata", "custom_sip_headers", "ignore_e164_validation", "agent_override", "idempotency_key",
    "honor_internal_dnc",
})
#: Longest idempotency key accepted.
MAX_IDEMPOTENCY_KEY = 255
_E164 = re.compile(r"\+[1-9]\d{6,14}")


class ApiError(Exception):
    """A request Retell would refuse: ``status`` (400, 401, 404, 422, ...) and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- create-phone-call ---------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class CreateRequest:
    """A valid create-phone-call body, with the per-call agent overrides resolved."""

    from_number: str
    to_number: str
    agent_id: str | None
    agent_version: int | str | None
    dynamic_variables: dict[str, str] | None
    metadata: dict[str, Any] | None
    ring_duration_ms: int
    max_call_duration_ms: int
    webhook_url: str | None
    webhook_events: tuple[str, ...]
    idempotency_key: str | None = None


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _string_map(value: Any, name: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _bad(f"{name} must be an object")
    for key, item in value.items():
        if not isinstance(item, str):
            raise _bad(f"{name}.{key} must be a string, got {type(item).__name__}")
    return dict(value)


def _int_in(value: Any, name: str, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be an integer, got {value!r}")
    if not bounds[0] <= value <= bounds[1]:
        raise _bad(f"{name} must be between {bounds[0]} and {bounds[1]}, got {value}")
    return value


def _override_agent(value: Any) -> Mapping[str, Any] | None:
    """The ``agent`` part of ``agent_override`` after checking the envelope, or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad("agent_override must be an object")
    unknown = sorted(set(value) - {"agent", "retell_llm", "conversation_flow"})
    if unknown:
        raise _bad(f"agent_override has unknown field(s): {', '.join(unknown)}")
    for key in ("agent", "retell_llm", "conversation_flow"):
        if value.get(key) is not None and not isinstance(value[key], Mapping):
            raise _bad(f"agent_override.{key} must be an object")
    return value.get("agent")


def _agent_override(value: Any) -> tuple[int, int, str | None, tuple[str, ...]]:
    ring, longest, url, events = DEFAULT_RING_DURATION_MS, DEFAULT_MAX_CALL_DURATION_MS, None, DEFAULT_WEBHOOK_EVENTS
    agent = _override_agent(value)
    if agent is None:
        return ring, longest, url, events
    if "ring_duration_ms" in agent:
        ring = _int_in(agent["ring_duration_ms"], "agent_override.agent.ring_duration_ms", RING_DURATION_MS_RANGE)
    if "max_call_duration_ms" in agent:
        longest = _int_in(agent["max_call_duration_ms"], "agent_override.agent.max_call_duration_ms",
                          MAX_CALL_DURATION_MS_RANGE)
    if agent.get("webhook_url") is not None:
        url = agent["webhook_url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _bad("agent_override.agent.webhook_url must be an http(s) URL")
    if agent.get("webhook_events") is not None:
        events = agent["webhook_events"]
        if not isinstance(events, list) or not all(e in WEBHOOK_EVENTS for e in events):
            raise _bad(f"agent_override.agent.webhook_events must be a list of {', '.join(WEBHOOK_EVENTS)}")
        events = tuple(events)
    return ring, longest, url, events


def _idempotency_key(body: Mapping[str, Any]) -> str | None:
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_IDEMPOTENCY_KEY):
        raise _bad(f"idempotency_key must be a non-empty string of at most {MAX_IDEMPOTENCY_KEY} characters")
    if not isinstance(body.get("honor_internal_dnc", False), bool):
        raise _bad("honor_internal_dnc must be a boolean")
    return key


def parse_create_body(body: Any) -> CreateRequest:
    """Validate a ``POST /v2/create-phone-call`` body as Retell does; raises :class:`ApiError` (400)."""
    if not isinstance(body, Mapping):
        raise _bad("request body must be a JSON object")
    unknown = sorted(set(body) - CREATE_FIELDS)
    if unknown:
        raise _bad(f"unknown field(s) in request body: {', '.join(unknown)}")
    skip_from_check = body.get("ignore_e164_validation", False)
    if not isinstance(skip_from_check, bool):
        raise _bad("ignore_e164_validation must be a boolean")
    for name in ("from_number", "to_number"):
        value = body.get(name)
        if value is None or value == "":
            raise _bad(f"{name} is required")
        if not isinstance(value, str):
            raise _bad(f"{name} must be a string, got {type(value).__name__}")
        if not (name == "from_number" and skip_from_check) and not _E164.fullmatch(value):
            raise _bad(f"{name} must be a valid E.164 phone number (e.g. +14155551234)")
    agent_id = body.get("override_agent_id")
    if agent_id is not None and (not isinstance(agent_id, str) or not agent_id):
        raise _bad("override_agent_id must be a non-empty string")
    version = body.get("override_agent_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int | str)):
        raise _bad("override_agent_version must be an integer or a string")
    variables = body.get("retell_llm_dynamic_variables")
    if variables is not None:
        variables = _string_map(variables, "retell_llm_dynamic_variables")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise _bad("metadata must be an object")
    if body.get("custom_sip_headers") is not None:
        _string_map(body["custom_sip_headers"], "custom_sip_headers")
    key = _idempotency_key(body)
    ring, longest, url, events = _agent_override(body.get("agent_override"))
    return CreateRequest(
        from_number=body["from_number"], to_number=body["to_number"], agent_id=agent_id, agent_version=version,
        dynamic_variables=variables, metadata=dict(metadata) if metadata is not None else None,
        ring_duration_ms=ring, max_call_duration_ms=longest, webhook_url=url, webhook_events=events,
        idempotency_key=key,
    )


# -- list-calls v3 -------------------------------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any]], bool]

#: Top-level filter fields and the filter types each accepts.
FIELD_TYPES: dict[str, tuple[str, ...]] = {
    "call_id": ("string", "enum"), "batch_call_id": ("string",), "from_number": ("string",),
    "to_number": ("string",), "call_status": ("enum",), "call_type": ("enum",), "direction": ("enum",),
    "disconnection_reason": ("enum",), "user_sentiment": ("enum",), "data_storage_setting": ("enum",),
    "agent_tag": ("enum",), "start_timestamp": ("number", "range"), "end_timestamp": ("number", "range"),
    "duration_ms": ("number", "range"), "combined_cost": ("number", "range"), "e2e_latency_p50": ("number", "range"),
    "call_successful": ("boolean",), "in_voicemail": ("boolean",),
}
#: Fields that take a list of keyed filters, and where their values live in a call object.
KEYED_FIELDS = {"metadata": ("metadata",), "dynamic_variables": ("retell_llm_dynamic_variables",),
                "custom_analysis_data": ("call_analysis", "custom_analysis_data"),
                "custom_attributes": ("custom_attributes",)}
#: Where a top-level field's value lives in a call object, when not at the top.
_PATHS = {
    "user_sentiment": ("call_analysis", "user_sentiment"), "call_successful": ("call_analysis", "call_successful"),
    "in_voicemail": ("call_analysis", "in_voicemail"), "combined_cost": ("call_cost", "combined_cost"),
    "e2e_latency_p50": ("latency", "e2e", "p50"),
}
_OPS = {"string": ("eq", "ne", "sw", "ew", "co"), "enum": ("in",), "number": ("eq", "ne", "gt", "ge", "lt", "le"),
        "range": ("bt",), "boolean": ("eq",), "present": ("pr", "np")}


def _lookup(call: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = call
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(kind: str, op: str, actual: Any, expected: Any) -> bool:
    if kind == "present":
        return (actual is not None) == (op == "pr")
    if actual is None:
        return op == "ne"
    if kind == "string":
        if not isinstance(actual, str):
            actual = str(actual)
        return {"eq": actual == expected, "ne": actual != expected, "sw": actual.startswith(expected),
                "ew": actual.endswith(expected), "co": expected in actual}[op]
    if kind == "enum":
        return actual in expected
    if kind == "boolean":
        return actual is expected
    if not _is_number(actual):
        return False
    if kind == "range":
        return expected[0] <= actual <= expected[1]
    return {"eq": actual == expected, "ne": actual != expected, "gt": actual > expected, "ge": actual >= expected,
            "lt": actual < expected, "le": actual <= expected}[op]


def _check_value(kind: str, value: Any, where: str) -> None:
    ok = {
        "string": lambda v: isinstance(v, str),
        "enum": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "number": _is_number,
        "range": lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v),
        "boolean": lambda v: isinstance(v, bool),
        "present": lambda v: True,
    }[kind](value)
    if not ok:
        raise _bad(f"filter_criteria.{where}.value has the wrong type for a {kind} filter")


def _one_filter(spec: Any, where: str, allowed: tuple[str, ...], path: tuple[str, ...],
                keyed: bool = False) -> Predicate:
    if not isinstance(spec, Mapping):
        raise _bad(f"filter_criteria.{where} must be an object with type, op and value")
    kind, op = spec.get("type"), spec.get("op")
    if kind not in allowed:
        raise _bad(f"filter_criteria.{where}.type must be one of {', '.join(allowed)}, got {kind!r}")
    if op not in _OPS[kind]:
        raise _bad(f"filter_criteria.{where}.op must be one of {', '.join(_OPS[kind])} for type {kind}, got {op!r}")
    if kind != "present" and "value" not in spec:
        raise _bad(f"filter_criteria.{where}.value is required")
    value = spec.get("value")
    _check_value(kind, value, where)
    if keyed:
        key = spec.get("key")
        if not isinstance(key, str) or not key:
            raise _bad(f"filter_criteria.{where}.key is required")
        path = (*path, key)
    return lambda call: _compare(kind, op, _lookup(call, path), value)


def _agent_filter(spec: Any) -> Predicate:
    if not isinstance(spec, list) or not all(isinstance(a, Mapping) and isinstance(a.get("agent_id"), str)
                                             for a in spec):
        raise _bad("filter_criteria.agent must be a list of {agent_id, version?}")
    wanted = [(a["agent_id"], a.get("version")) for a in spec]

    def match(call: Mapping[str, Any]) -> bool:
        return any(call.get("agent_id") == agent and (not versions or call.get("agent_version") in versions)
                   for agent, versions in wanted)

    return match


def compile_filter(criteria: Any) -> Predicate:
    """A predicate over call objects for a v3 ``filter_criteria`` (AND of every condition)."""
    if criteria is None:
        return lambda call: True
    if not isinstance(criteria, Mapping):
        raise _bad("filter_criteria must be an object")
    predicates: list[Predicate] = []
    for name, spec in criteria.items():
        if name == "agent":
            predicates.append(_agent_filter(spec))
        elif name in KEYED_FIELDS:
            if not isinstance(spec, list):
                raise _bad(f"filter_criteria.{name} must be a list of filters")
            predicates += [_one_filter(item, f"{name}[{i}]", tuple(_OPS), KEYED_FIELDS[name], keyed=True)
                           for i, item in enumerate(spec)]
        elif name in FIELD_TYPES:
            predicates.append(_one_filter(spec, name, FIELD_TYPES[name], _PATHS.get(name, (name,))))
        else:
            raise _bad(f"filter_criteria.{name} is not a supported filter")
    return lambda call: all(p(call) for p in predicates)


@dataclass(frozen=True, kw_only=True)
class ListQuery:
    """A valid v3 list-calls body."""

    predicate: Predicate
    to_number: str | None
    limit: int
    pagination_key: str | None
    skip: int
    descending: bool
    include_total: bool


def parse_list_body(body: Any) -> ListQuery:
    """Validate a ``POST /v3/list-calls`` body; raises :class:`ApiError` (400)."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise _bad("request body must be a JSON object")
    unknown = sorted(set(body) - {"filter_criteria", "limit", "pagination_key", "skip", "sort_order", "include_total"})
    if unknown:
        raise _bad(f"unknown field(s) in request body: {', '.join(unknown)}")
    limit = body.get("limit", DEFAULT_LIST_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad("limit must be a positive integer")
    skip = body.get("skip", 0)
    if isinstance(skip, bool) or not isinstance(skip, int) or skip < 0:
        raise _bad("skip must be an integer >= 0")
    key = body.get("pagination_key")
    if key is not None and not isinstance(key, str):
        raise _bad("pagination_key must be a string")
    order = body.get("sort_order", "descending")
    if order not in ("ascending", "descending"):
        raise _bad("sort_order must be 'ascending' or 'descending'")
    include_total = body.get("include_total", False)
    if not isinstance(include_total, bool):
        raise _bad("include_total must be a boolean")
    criteria = body.get("filter_criteria")
    to_spec = criteria.get("to_number") if isinstance(criteria, Mapping) else None
    to_number = to_spec.get("value") if isinstance(to_spec, Mapping) and to_spec.get("op") == "eq" else None
    return ListQuery(predicate=compile_filter(criteria), to_number=to_number if isinstance(to_number, str) else None,
                     limit=min(limit, MAX_LIST_LIMIT), pagination_key=key or None, skip=skip,
                     descending=order == "descending", include_total=include_total)
