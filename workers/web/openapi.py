"""The OpenAPI 3.0 document of the web dyno, served at ``/openapi.json``.

It describes every JSON route (admin API, webhooks, health, metrics) with its request and
response schemas; ``tests/integration/test_openapi.py`` checks it lists exactly the application's
routes and runs schemathesis against the running app with it. The dashboard's HTML pages are
not part of it (docs/web.md describes them).
"""

from __future__ import annotations

import copy
from typing import Any

from shared.domain import states
from shared.domain.after_call import AfterCallAction
from shared.domain.result_hooks import DELIVERY_STATES, EVENT_TYPES
from shared.domain.shapes import (
    PROFILE_ID_PATTERN,
    AccountShape,
    BatchShape,
    CallSettingsShape,
    ComplianceProfileShape,
    ContactPolicyShape,
    ContactShape,
    DncShape,
    PlanShape,
    PreviewShape,
    TopUpShape,
    openapi_schema,
)
from shared.stores.accounts import MAX_ACCOUNT_ID, PLAN_TYPES
from shared.stores.dnc import MAX_REASON as MAX_DNC_REASON
from workers.web import result_hooks
from workers.web.admin import DEFAULT_PAGE, MAX_JSON_CONTACTS, MAX_PAGE

VERSION = "1.0.0"

_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{24}$", "example": "65f1c0ffee0000000000abcd"}
_TIME = {"type": "string", "format": "date-time", "nullable": True, "example": "2026-03-09T12:00:00.000Z"}
_REASON_CODE = {"type": "string", "nullable": True, "description": "why, as a code of docs/reasons.md",
                "example": "max_attempts_after"}
_REASON_PARAMS = {"type": "object", "nullable": True, "description": "the reason code's parameters",
                  "example": {"limit": 3, "last": {"code": "call_outcome", "params": {"outcome": "busy"}}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable_ref(name: str) -> dict[str, Any]:
    """A reference that may also be null (OpenAPI 3.0 ignores ``nullable`` next to ``$ref``)."""
    return {"nullable": True, "allOf": [_ref(name)]}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = _json(schema)
    return out


_ERROR = _answer("An error, in the common shape", _ref("Error"))


def _errors(*codes: int) -> dict[str, Any]:
    texts = {400: "Malformed request (JSON, encoding, nesting)", 401: "Missing or invalid token",
             404: "No such resource (or a malformed id)", 409: "The resource's state forbids it",
             408: "The body did not arrive within WEBHOOK_READ_TIMEOUT_S (the connection is closed)",
             413: "Body too large", 415: "Unsupported content type",
             422: "Validation failed: one entry per bad field (text UTF-8 cannot encode, such as a lone surrogate "
                  "\\ud800, names its JSON path)",
             503: "MongoDB or Redis failed; retry"}
    out = {str(code): _answer(texts[code], _ref("Error")) for code in codes}
    if "400" in out:
        out["400"] = _unreadable(out["400"])
    out["default"] = _unreadable(_ERROR)
    return out


def _unreadable(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer``, or the HTTP server's own 400 in text/plain: a request line or a header too long for it to read
    (over 8 KiB) is refused before outdial sees the request."""
    return {"description": answer["description"] + "; a request line or header over 8 KiB: 400 in text/plain, from "
                                                   "the HTTP server",
            "content": {**answer["content"], "text/plain": {"schema": {"type": "string"}}}}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_BATCH_ID = _path("batch_id", _ID, "The batch's id (24 hex characters)")
_JOB_ID = _path("job_id", _ID, "The job's id (24 hex characters)")
_ACCOUNT_ID = _path("account_id", {"type": "string", "minLength": 1, "maxLength": MAX_ACCOUNT_ID,
                                   "pattern": r"^[^$]", "example": "acme"},
                    "The account's id (any string up to 100 characters not starting with '$')")
_ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]


def _op(op_id: str, summary: str, responses: dict[str, Any], *, params: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None, security: list[dict[str, Any]] | None = None,
        tags: tuple[str, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "responses": responses,
                          "security": _ADMIN if security is None else security}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": body}
    if tags:
        op["tags"] = list(tags)
    return op


#: Properties of call_settings whose other spellings the server accepts and normalises (``" 9:00"``, ``"AUTO"``,
#: ``"Wait"``): the document leaves their pattern or enum out so as not to call accepted input invalid.
_NORMALISED = ("start", "end", "timezone", "fallback_timezone", "blackout_dates", "on_insufficient_balance")


def _call_settings() -> dict[str, Any]:
    schema = openapi_schema(CallSettingsShape, lenient=_NORMALISED)
    schema["description"] = ("How long calls last, how often contacts are retried and when they may be called "
                             "(docs/call_settings.md). Every field is optional; null counts as unset.")
    return schema


def _compliance_profile(*, request: bool) -> dict[str, Any]:
    """A compliance profile's JSON form (docs/compliance.md); in a ``PUT`` body its ``id`` may be left out."""
    schema = openapi_schema(ComplianceProfileShape, lenient=("start", "end", "fixed_zone"))
    schema["description"] = ("A compliance profile: calling hours, holidays, caps, quiet days, the purposes it binds "
                             "and the official source of each rule (docs/compliance.md)")
    if request:
        schema["required"] = [name for name in schema["required"] if name != "id"]
    return schema


def _with_call_settings(schema: dict[str, Any]) -> dict[str, Any]:
    """A body's schema whose ``call_settings`` refers to the CallSettings component (null allowed)."""
    schema["properties"]["call_settings"] = _nullable_ref("CallSettings")
    return schema


def _batch_update(create: dict[str, Any]) -> dict[str, Any]:
    """``PATCH /batches/{batch_id}``: the fields of a create but its account, each optional."""
    schema = {k: v for k, v in copy.deepcopy(create).items() if k not in ("required", "description")}
    del schema["properties"]["account_id"]
    return schema


def _schemas() -> dict[str, Any]:
    batch_create = _with_call_settings(openapi_schema(BatchShape))
    counts = {"type": "object", "required": list(states.JOB_STATES),
              "properties": {s: {"type": "integer", "minimum": 0} for s in states.JOB_STATES},
              "description": "Jobs (contacts) per state; every state is present"}
    return {
        "Error": {
            "type": "object", "required": ["status", "error", "message", "errors"],
            "properties": {
                "status": {"type": "integer"}, "error": {"type": "string"}, "message": {"type": "string"},
                "errors": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"},
                                   "line": {"type": "integer"}, "index": {"type": "integer"}}}},
            },
        },
        "CallSettings": _call_settings(),
        "PlanRequest": openapi_schema(PlanShape),
        "AccountRequest": openapi_schema(AccountShape),
        "ContactPolicy": openapi_schema(ContactPolicyShape),
        "Account": {
            "type": "object", "required": ["account_id", "plan", "balance", "reserved", "available"],
            "properties": {
                "account_id": {"type": "string"},
                "plan": {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": list(PLAN_TYPES)},
                    "granularity": {"type": "string"}, "price_per_minute": {"type": "number"}}},
                "balance": {"type": "number", "nullable": True},
                "reserved": {"type": "number", "nullable": True},
                "available": {"type": "number", "nullable": True},
                "units": {"type": "object", "nullable": True},
                "concurrency_limit": {"type": "integer", "nullable": True},
                "contact_policy": {"type": "object", "nullable": True},
                "result_webhook": {"type": "object", "nullable": True,
                                   "description": "where result events go; the secret is never shown",
                                   "properties": {"url": {"type": "string"},
                                                  "events": {"type": "array", "items": {"type": "string"}},
                                                  "secret_set": {"type": "boolean"}}},
                "open_reservations": {"type": "integer"},
                "released_jobs": {"type": "integer"},
                "created_at": _TIME, "updated_at": _TIME,
            },
        },
        "TopUp": openapi_schema(TopUpShape),
        "WebhookDelivery": {"type": "object", "required": ["id", "type", "state", "attempts"], "properties": {
            "id": {"type": "string", "pattern": "^evt_[0-9a-f]{24}$"},
            "type": {"type": "string", "enum": list(EVENT_TYPES)},
            "state": {"type": "string", "enum": list(DELIVERY_STATES)},
            "attempts": {"type": "integer", "minimum": 0}, "created_at": _TIME,
            "next_at": {**_TIME, "description": "when it is tried next (pending only)"},
            "delivered_at": _TIME, "last_status": {"type": "integer", "nullable": True},
            "last_error": {"type": "string", "nullable": True}}},
        "WebhookDeliveries": {"type": "object", "required": ["deliveries", "count", "next_before"], "properties": {
            "deliveries": {"type": "array", "items": _ref("WebhookDelivery")}, "count": {"type": "integer"},
            "next_before": {"type": "string", "nullable": True,
                            "description": "pass as before for the next (older) page"}}},
        "BatchCreate": batch_create,
        "BatchUpdate": _batch_update(batch_create),
        "Counts": counts,
        "Progress": {"type": "object", "required": ["total", "done", "percent"], "properties": {
            k: {"type": "number" if k == "percent" else "integer"}
            for k in ("total", "done", "percent", "completed", "failed", "cancelled", "calls_in_progress",
                      "analyzing", "queued", "waiting")}},
        "Window": {"type": "object", "properties": {
            "description": {"type": "string", "nullable": True}, "timezone": {"type": "string"},
            "open_now": {"type": "boolean", "nullable": True}, "next_open_at": _TIME,
            "closed_reason": {"type": "string", "nullable": True}, "error": {"type": "string", "nullable": True}}},
        "Batch": {
            "type": "object", "required": ["id", "name", "account_id", "status"],
            "properties": {
                "id": _ID, "name": {"type": "string"}, "account_id": {"type": "string"},
                "agent_id": {"type": "string", "nullable": True}, "from_number": {"type": "string", "nullable": True},
                "status": {"type": "string", "enum": list(states.BATCH_STATES)},
                "call_settings": {"type": "object", "nullable": True},
                "settings_error": {"type": "string", "nullable": True},
                "held_reason": {"type": "string", "nullable": True,
                                "description": "why the provider refused the batch's calls (status held)"},
                "held_at": _TIME, "cancelled_at": _TIME,
                "created_at": _TIME, "updated_at": _TIME,
                "counts": _ref("Counts"), "progress": _ref("Progress"), "window": _ref("Window"),
                "oldest_in_progress": {
                    "type": "object", "nullable": True,
                    "description": "the job held longest by a process; past_deadline flags a stuck one",
                    "properties": {"job_id": _ID, "status": {"type": "string"}, "since": _TIME,
                                   "age_s": {"type": "integer"}, "deadline": _TIME,
                                   "past_deadline": {"type": "boolean"}}},
                "failures": {"type": "array", "items": {"type": "object", "required": ["reason", "count"],
                                                        "properties": {"reason": {"type": "string"},
                                                                       "reason_code": _REASON_CODE,
                                                                       "count": {"type": "integer"}}}},
            },
        },
        "BatchList": {"type": "object", "required": ["batches", "count"], "properties": {
            "batches": {"type": "array", "items": _ref("Batch")}, "count": {"type": "integer"},
            "offset": {"type": "integer"}, "next_offset": {"type": "integer", "nullable": True}}},
        "Control": {"type": "object", "required": ["id", "status", "changed"], "properties": {
            "id": _ID, "status": {"type": "string", "enum": list(states.BATCH_STATES)},
            "changed": {"type": "boolean"}, "cancelled_jobs": {"type": "integer"}}},
        "Invalidation": {"type": "object", "required": ["id", "channel"], "properties": {
            "id": _ID, "channel": {"type": "string"}, "receivers": {"type": "integer", "nullable": True}}},
        "Contact": openapi_schema(ContactShape),
        "ContactsRequest": {"type": "object", "additionalProperties": False, "required": ["contacts"],
                            "properties": {"contacts": {
                                "type": "array", "maxItems": MAX_JSON_CONTACTS,
                                "items": {"description": "A Contact (see the Contact schema). A contact that does "
                                                         "not validate is listed in errors[] by its index; the "
                                                         "others are imported."}}}},
        "PreviewRequest": _with_call_settings(openapi_schema(PreviewShape)),
        "Preview": {
            "type": "object", "required": ["from", "timezone", "zones", "window", "times"],
            "properties": {
                "from": {"type": "string"}, "timezone": {"type": "string"},
                "zones": {"type": "array", "items": {"type": "string"}},
                "zone_source": {"type": "string", "enum": ["batch", "phone", "fallback"]},
                "window": {"type": "string"}, "restricts_time": {"type": "boolean"},
                "times": {"type": "array", "items": {"type": "object", "required": ["at", "local", "zone", "rule"],
                                                     "properties": {
                    "at": {"type": "string", "format": "date-time"}, "local": {"type": "string"},
                    "local_text": {"type": "string"}, "zone": {"type": "string"},
                    "rule_index": {"type": "integer", "nullable": True}, "rule": {"type": "string"}}}},
                "after_call": {"type": "array", "items": {"type": "string"},
                               "description": "The after_call rules as sentences, in the order they apply (without "
                                              "rules: any conversation completes the contact)"},
            },
        },
        "ContactsCheck": {
            "type": "object", "required": ["valid", "rows", "errors"],
            "properties": {
                "valid": {"type": "integer"}, "rows": {"type": "integer"},
                "errors": {"type": "array", "items": {"type": "object", "required": ["message"], "properties": {
                    "line": {"type": "integer"}, "index": {"type": "integer"}, "field": {"type": "string"},
                    "message": {"type": "string"}}}},
                "errors_total": {"type": "integer"}, "errors_truncated": {"type": "boolean"},
                "stopped": {"type": "string"},
            },
        },
        "ImportResult": {
            "type": "object", "required": ["imported", "errors"],
            "properties": {
                "imported": {"type": "integer"}, "duplicates": {"type": "integer"}, "rows": {"type": "integer"},
                "errors": {"type": "array", "items": {"type": "object", "required": ["message"], "properties": {
                    "line": {"type": "integer"}, "index": {"type": "integer"}, "field": {"type": "string"},
                    "message": {"type": "string"},
                    "duplicate": {"type": "boolean", "description": "the contact is already in the batch"}}}},
                "errors_total": {"type": "integer"}, "errors_truncated": {"type": "boolean"},
                "stopped": {"type": "string"}, "batch_id": _ID,
                "batch_status": {"type": "string", "enum": list(states.BATCH_STATES)},
            },
        },
        "Attempt": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"}, "state": {"type": "string"}, "round": {"type": "integer", "nullable": True},
            "phone_index": {"type": "integer", "nullable": True}, "dial": {"type": "integer", "nullable": True},
            "to_number": {"type": "string", "nullable": True}, "call_id": {"type": "string", "nullable": True},
            "outcome": {"type": "string", "nullable": True},
            "disconnection_reason": {"type": "string", "nullable": True},
            "duration_ms": {"type": "integer", "nullable": True}, "charge": {"type": "integer", "nullable": True},
            "finalized_by": {"type": "string", "nullable": True}, "error": {"type": "string", "nullable": True},
            "reason_code": _REASON_CODE, "reason_params": _REASON_PARAMS,
            "created_at": _TIME, "started_at": _TIME, "ended_at": _TIME,
            "analysis": {"allOf": [_ref("CallAnalysis")], "nullable": True}, "analysis_at": _TIME,
            "analysis_missing": {"type": "boolean"}, "recording_url": {"type": "string", "nullable": True},
            "call_cost": {"type": "number", "nullable": True,
                          "description": "The provider's own cost of the call, in its cents"},
            "transcript": {"type": "string", "nullable": True,
                           "description": "Kept when the batch sets keep_transcripts"}}},
        "CallAnalysis": {"type": "object", "description": "Retell's post-call analysis of the call", "properties": {
            "call_successful": {"type": "boolean"}, "call_summary": {"type": "string"},
            "user_sentiment": {"type": "string"}, "in_voicemail": {"type": "boolean"},
            "custom_analysis_data": {"type": "object", "description": "The fields the operator's agent extracts"}}},
        "ContactResult": {"type": "object", "description": "What the contact came to", "properties": {
            "status": {"type": "string", "enum": list(states.JOB_STATES)}, "final": {"type": "boolean"},
            "reason_code": _REASON_CODE, "reason": {"type": "string", "nullable": True},
            "calls": {"type": "integer"}, "talk_s": {"type": "number"}, "charge": {"type": "integer"},
            "last_call_at": _TIME, "last_outcome": {"type": "string", "nullable": True},
            "last_attempt_id": {"type": "string", "nullable": True},
            "analysis": {"allOf": [_ref("CallAnalysis")], "nullable": True,
                         "description": "Of the last conversation"},
            "analysis_pending": {"type": "boolean"}, "recording_url": {"type": "string", "nullable": True},
            "after_call": {"type": "string", "nullable": True, "example": "callback",
                           "description": "The last action the batch's after_call rules took on a conversation's "
                                          "analysis: " + ", ".join(AfterCallAction)},
            "callbacks": {"type": "integer", "description": "Callbacks scheduled (after_call.callback_field)"},
            "callback_at": {**_TIME, "description": "When the last callback scheduled was due"},
            "wrong_numbers": {"type": "integer",
                              "description": "Numbers that reached the wrong person (after_call.wrong_number_field)"},
            "finished_at": _TIME}},
        "Recording": {"type": "object", "required": ["job_id", "attempt_id", "call_id", "recording_url"],
                      "properties": {"job_id": _ID, "attempt_id": {"type": "string"}, "call_id": {"type": "string"},
                                     "recording_url": {"type": "string"}}},
        "JobSummary": {"type": "object", "required": ["id", "status", "tries"], "properties": {
            "id": _ID, "batch_id": _ID, "status": {"type": "string", "enum": list(states.JOB_STATES)},
            "tries": {"type": "integer"}, "name": {"type": "string", "nullable": True},
            "external_id": {"type": "string", "nullable": True},
            "phones": {"type": "array", "items": {"type": "string"}}, "next_try_at": _TIME,
            "last_error": {"type": "string", "nullable": True}, "reason_code": _REASON_CODE,
            "reason_params": _REASON_PARAMS, "outcome": {"type": "string", "nullable": True},
            "updated_at": _TIME, "result": _ref("ContactResult")}},
        "Job": {"allOf": [_ref("JobSummary"), {"type": "object", "required": ["attempts"], "properties": {
            "account_id": {"type": "string"}, "contact": {"type": "object"}, "dials": {"type": "integer"},
            "phone_index": {"type": "integer"}, "invalid_phones": {"type": "array", "items": {"type": "integer"}},
            "postponed_by_schedule": {"type": "integer"}, "call_id": {"type": "string", "nullable": True},
            "attempt_id": {"type": "string", "nullable": True}, "lease_until": _TIME, "created_at": _TIME,
            "finished_at": _TIME, "attempts": {"type": "array", "items": _ref("Attempt")}}}]},
        "JobList": {"type": "object", "required": ["jobs", "count", "next_after"], "properties": {
            "jobs": {"type": "array", "items": _ref("JobSummary")}, "count": {"type": "integer"},
            "next_after": {**_ID, "nullable": True}}},
        "Webhook": {"type": "object", "required": ["event"], "properties": {
            "event": {"type": "string", "example": "call_ended"},
            "call": {"type": "object", "description": "Retell's call object (call_id, call_status, metadata...)"}}},
        "WebhookResult": {"type": "object", "required": ["event", "call_id", "result"], "properties": {
            "event": {"type": "string"}, "call_id": {"type": "string"},
            "result": {"type": "string", "description": "the outcome applied, duplicate, unknown_call, or accepted"}}},
        "DncRequest": openapi_schema(DncShape),
        "DncWriteResult": {"type": "object", "required": ["list", "added", "updated", "numbers"], "properties": {
            "list": {"type": "string", "description": "the account id, or global"},
            "added": {"type": "integer", "description": "numbers new on the list"},
            "updated": {"type": "integer", "description": "numbers already on it (reason replaced when given)"},
            "numbers": {"type": "integer", "description": "distinct numbers in the request"},
            "rows": {"type": "integer"}}},
        "DncEntry": {"type": "object", "required": ["list", "number"], "properties": {
            "list": {"type": "string"}, "number": {"type": "string"}, "reason": {"type": "string", "nullable": True},
            "added_at": _TIME, "updated_at": _TIME}},
        "DncRemoved": {"type": "object", "required": ["list", "number", "removed"], "properties": {
            "list": {"type": "string"}, "number": {"type": "string"}, "removed": {"type": "boolean"}}},
        "DncLookup": {"type": "object", "required": ["number", "listed", "lists"], "properties": {
            "number": {"type": "string"}, "listed": {"type": "boolean"},
            "lists": {"type": "array", "items": _ref("DncEntry")}}},
        "DncPage": {"type": "object", "required": ["list", "entries", "count", "next_after"], "properties": {
            "list": {"type": "string"}, "entries": {"type": "array", "items": _ref("DncEntry")},
            "count": {"type": "integer"}, "next_after": {"type": "string", "nullable": True}}},
        "ComplianceProfile": _compliance_profile(request=False),
        "ComplianceProfileRequest": _compliance_profile(request=True),
        "ComplianceProfileView": {
            "type": "object", "required": ["id", "builtin", "overridden", "document"], "properties": {
                "id": {"type": "string", "pattern": PROFILE_ID_PATTERN},
                "builtin": {"type": "boolean", "description": "shipped with outdial"},
                "overridden": {"type": "boolean", "description": "an operator's profile replacing a built-in one"},
                "updated_at": {**_TIME, "description": "when the operator's profile was stored (null: built-in)"},
                "document": _ref("ComplianceProfile")}},
        "ComplianceProfileList": {
            "type": "object", "required": ["profiles", "count", "problems"], "properties": {
                "profiles": {"type": "array", "items": _ref("ComplianceProfileView")},
                "count": {"type": "integer"},
                "problems": {"type": "array", "description": "stored profiles that no longer validate (not in force)",
                             "items": {"type": "object", "required": ["id", "message"], "properties": {
                                 "id": {"type": "string"}, "message": {"type": "string"}}}}}},
        "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        "Ready": {"type": "object", "required": ["status", "checks"], "properties": {
            "status": {"type": "string", "enum": ["ready", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
    }


def _control(op_id: str, summary: str) -> dict[str, Any]:
    return {"post": _op(op_id, summary, {"200": _answer("The batch's status after the control", _ref("Control")),
                                         **_errors(401, 404, 409, 503)},
                        params=[_BATCH_ID], tags=("batches",))}


def _dnc_paths(page: dict[str, Any]) -> dict[str, Any]:
    """The do-not-call routes: the account's list and the global one."""
    region = _query("region", {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                    "Region for numbers without +country (default PHONE_DEFAULT_REGION)")
    number = _path("number", {"type": "string", "minLength": 1, "maxLength": 40, "example": "+56961234567"},
                   "The number (E.164, or national with region)")
    body = {**_json(_ref("DncRequest")),
            "text/csv": {"schema": {"type": "string", "description": "UTF-8 CSV with a header row: a 'number' "
                                    "column and an optional 'reason' column"}}}
    reads: list[dict[str, list[str]]] = [{"adminToken": []}, {"readToken": []}]
    out: dict[str, Any] = {}
    for prefix, params, tag in (("/accounts/{account_id}", [_ACCOUNT_ID], "the account's"), ("", [], "the global")):
        name = "account" if prefix else "global"
        out[f"{prefix}/dnc"] = {
            "post": _op(f"add_{name}_dnc", f"Add numbers to {tag} do-not-call list (JSON or CSV); one bad row "
                                           "and nothing is written", {
                "200": _answer("Written; answered once no dial checked before the write can still reach the "
                               "provider", _ref("DncWriteResult")),
                **_errors(400, 401, 404, 413, 415, 422, 503)},
                params=[*params, region, _query("reason", {"type": "string", "maxLength": MAX_DNC_REASON},
                                                "CSV only: the reason of rows with none")],
                body=body, tags=("dnc",)),
            "get": _op(f"get_{name}_dnc", f"Whether a number is on {tag} do-not-call list (an account's route also "
                                          "answers for the global list), or the list page by page", {
                "200": _answer("The lookup (with number) or a page", {"anyOf": [_ref("DncLookup"),
                                                                               _ref("DncPage")]}),
                **_errors(401, 404, 422, 503)},
                params=[*params, _query("number", {"type": "string", "maxLength": 40}, "The number to look up"),
                        region, _query("after", {"type": "string", "maxLength": 40}, "next_after of the previous page"),
                        _query("limit", page, "Page size")],
                security=reads, tags=("dnc",)),
        }
        out[f"{prefix}/dnc/{{number}}"] = {"delete": _op(
            f"remove_{name}_dnc", f"Take a number off {tag} do-not-call list", {
                "200": _answer("Removed (removed: false when it was not listed)", _ref("DncRemoved")),
                **_errors(401, 404, 422, 503)},
            params=[*params, number, region], tags=("dnc",))}
    return out


def _result_hook_paths(reads: list[dict[str, list[str]]]) -> dict[str, Any]:
    """An account's result webhook deliveries and a redelivery."""
    event_id = _path("event_id", {"type": "string", "pattern": "^evt_[0-9a-f]{24}$",
                                  "example": "evt_0123456789abcdef01234567"}, "The event's id")
    page = {"type": "integer", "minimum": 1, "maximum": result_hooks.MAX_PAGE, "default": result_hooks.DEFAULT_PAGE}
    return {
        "/accounts/{account_id}/webhook-deliveries": {"get": _op(
            "list_webhook_deliveries", "The account's result events and their delivery state, newest first", {
                "200": _answer("A page of deliveries", _ref("WebhookDeliveries")), **_errors(401, 404, 422, 503)},
            params=[_ACCOUNT_ID, _query("state", {"type": "string", "enum": list(DELIVERY_STATES)}, "Only this state"),
                    _query("before", {"type": "string", "pattern": "^evt_[0-9a-f]{24}$"},
                           "next_before of the previous page"),
                    _query("limit", page, "Page size")],
            security=reads, tags=("accounts",))},
        "/accounts/{account_id}/webhook-deliveries/{event_id}/redeliver": {"post": _op(
            "redeliver_webhook", "Deliver an event again: pending, due now, attempts from 0, 24 fresh hours", {
                "200": _answer("The event after the change", _ref("WebhookDelivery")), **_errors(401, 404, 422, 503)},
            params=[_ACCOUNT_ID, event_id], tags=("accounts",))},
    }


def _compliance_paths(reads: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The compliance profiles in force, and the operator's own."""
    profile_id = _path("profile_id", {"type": "string", "pattern": PROFILE_ID_PATTERN, "example": "cl-cobranza"},
                       "The profile's id")
    return {
        "/compliance-profiles": {"get": _op(
            "list_compliance_profiles", "Every compliance profile in force: the built-in ones and the operator's", {
                "200": _answer("The profiles by id", _ref("ComplianceProfileList")), **_errors(401, 503)},
            security=reads, tags=("compliance",))},
        "/compliance-profiles/{profile_id}": {
            "get": _op("get_compliance_profile", "A compliance profile in force", {
                "200": _answer("The profile", _ref("ComplianceProfileView")), **_errors(401, 404, 503)},
                params=[profile_id], security=reads, tags=("compliance",)),
            "put": _op("put_compliance_profile", "Store an operator's compliance profile (the id of a built-in "
                                                 "profile replaces it)", {
                "200": _answer("Replaced a stored profile", _ref("ComplianceProfileView")),
                "201": _answer("Stored a new profile", _ref("ComplianceProfileView")),
                **_errors(400, 401, 413, 415, 422, 503)},
                params=[profile_id], body=_json(_ref("ComplianceProfileRequest")), tags=("compliance",)),
        },
    }


def _results_paths() -> dict[str, Any]:
    """A batch's export (CSV, JSON lines) and a person's contact log."""
    from workers.web.results import DEFAULT_LOG_PAGE, MAX_LOG_PAGE

    reads: list[dict[str, list[str]]] = [{"adminToken": []}, {"readToken": []}]
    filters = [_BATCH_ID,
               _query("status", {"type": "string", "enum": list(states.JOB_STATES)}, "Only contacts in this state"),
               _query("updated_since", {"type": "string", "maxLength": 40, "example": "2026-03-07T15:00:00Z"},
                      "Only contacts changed at or after this instant (ISO-8601 with its offset, or ms since the "
                      "epoch)")]
    row = {"type": "object", "description": "One contact: job_id, external_id, name, phones, status, reason_code, "
                                            "calls, talk_s, charge, last_call_at, last_call_local, outcome, "
                                            "call_successful, summary, sentiment, recording_url, after_call, "
                                            "callbacks, callback_at, callback_local, wrong_numbers, custom, "
                                            "variables"}
    entry = {"type": "object", "properties": {
        "at": _TIME, "local": {"type": "string", "nullable": True, "example": "2026-03-09T09:00:00-03:00"},
        "zone": {"type": "string", "example": "America/Santiago"},
        "number": {"type": "string", "nullable": True}, "batch_id": {"type": "string", "nullable": True},
        "batch_name": {"type": "string", "nullable": True}, "job_id": {"type": "string", "nullable": True},
        "attempt_id": {"type": "string"}, "outcome": {"type": "string", "nullable": True},
        "duration_s": {"type": "number", "nullable": True}, "call_id": {"type": "string", "nullable": True},
        "charge": {"type": "integer", "nullable": True}}}
    log = {"type": "object", "required": ["account_id", "entries", "next_before"], "properties": {
        "account_id": {"type": "string"}, "phone": {"type": "string"}, "external_id": {"type": "string"},
        "entries": {"type": "array", "items": entry},
        "next_before": {"type": "string", "nullable": True,
                        "description": "before of the next page; null on the last"}}}
    return {
        "/batches/{batch_id}/results.csv": {"get": _op(
            "results_csv", "The batch's results as CSV, one row per contact in job id order (streamed)", {
                "200": {"description": "CSV with a header row; text cells that a spreadsheet would run start with '",
                        "content": {"text/csv": {"schema": {"type": "string"}}}},
                **_errors(401, 404, 422, 503)},
            params=[*filters, _query("excel", {"type": "string", "enum": ["1", "0", "true", "false"]},
                                     "1: start with a UTF-8 byte order mark (for Excel)")],
            security=reads, tags=("results",))},
        "/batches/{batch_id}/results.jsonl": {"get": _op(
            "results_jsonl", "The batch's results as JSON lines, one object per contact in job id order (streamed)", {
                "200": {"description": "One JSON object per line",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}, "example": row}}},
                **_errors(401, 404, 422, 503)},
            params=filters, security=reads, tags=("results",))},
        "/accounts/{account_id}/contact-log": {"get": _op(
            "contact_log", "Every attempt to one person (a number or an external id) across the account's batches, "
                           "newest first", {
                "200": {"description": "A page of the contact log (format=csv: every entry from before on, streamed)",
                        "content": {**_json(log), "text/csv": {"schema": {"type": "string"}}}},
                **_errors(401, 422, 503)},
            params=[_ACCOUNT_ID,
                    _query("phone", {"type": "string", "maxLength": 40, "example": "+56961234567"},
                           "The number (E.164; send + as %2B); exactly one of phone and external_id"),
                    _query("external_id", {"type": "string", "maxLength": 200}, "The contact's external id"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LOG_PAGE,
                                     "default": DEFAULT_LOG_PAGE}, "Page size"),
                    _query("before", {"type": "string", "maxLength": 300}, "next_before of the previous page"),
                    _query("format", {"type": "string", "enum": ["json", "csv"], "default": "json"},
                           "csv: the same entries as CSV")],
            tags=("results",))},
    }


def _paths() -> dict[str, Any]:
    page = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE}
    reads: list[dict[str, list[str]]] = [{"adminToken": []}, {"readToken": []}]
    contacts_body = {**_json(_ref("ContactsRequest")),
                     "text/csv": {"schema": {"type": "string", "description": "UTF-8 CSV with a header row "
                                             "(phone/phones/phone_2..., name, external_id, timezone; other "
                                             "columns are variables)"}}}
    return {
        "/healthz": {"get": _op("healthz", "The process is up", {"200": _answer("Up", _ref("Health"))},
                                security=[], tags=("operations",))},
        "/readyz": {"get": _op("readyz", "MongoDB and Redis answer", {
            "200": _answer("Ready", _ref("Ready")), "503": _answer("A service did not answer", _ref("Ready"))},
            security=[], tags=("operations",))},
        "/metrics": {"get": _op("metrics", "Prometheus metrics of every process", {
            "200": {"description": "Prometheus text exposition",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors(401)}, security=[{"adminToken": []}, {"readToken": []}], tags=("operations",))},
        "/openapi.json": {"get": _op("openapi", "This document", {
            "200": _answer("The OpenAPI document", {"type": "object"})}, security=[], tags=("operations",))},
        "/webhooks/retell": {"post": _op("retell_webhook", "Retell call events (signed)", {
            "200": _answer("Applied (or a duplicate, or a call outdial does not know)", _ref("WebhookResult")),
            "202": _answer("Still being applied; it will be", _ref("WebhookResult")),
            "204": {"description": "Acknowledged (call_started and other events)"},
            **_errors(400, 401, 408, 413, 422, 503)},
            params=[{"name": "x-retell-signature", "in": "header", "required": True,
                     "schema": {"type": "string", "pattern": r"^v=\d+,d=[0-9a-fA-F]{64}$"},
                     "description": "v=<timestamp ms>,d=<hex HMAC-SHA256 of body + timestamp, keyed with "
                                    "RETELL_API_KEY>"}],
            body=_json(_ref("Webhook")), security=[], tags=("webhooks",))},
        "/accounts/{account_id}": {
            "put": _op("put_account", "Create or change an account's plan, balance and concurrency", {
                "200": _answer("Changed", _ref("Account")), "201": _answer("Created", _ref("Account")),
                **_errors(400, 401, 413, 415, 422, 503)},
                params=[_ACCOUNT_ID], body=_json(_ref("AccountRequest")), tags=("accounts",)),
            "get": _op("get_account", "Plan and balance", {"200": _answer("The account", _ref("Account")),
                                                          **_errors(401, 404, 422, 503)},
                       params=[_ACCOUNT_ID], tags=("accounts",)),
        },
        "/accounts/{account_id}/top-up": {"post": _op("top_up", "Add minutes or credits", {
            "200": _answer("The account after the top-up", _ref("Account")),
            **_errors(400, 401, 404, 413, 415, 422, 503)},
            params=[_ACCOUNT_ID], body=_json(_ref("TopUp")), tags=("accounts",))},
        "/batches": {
            "post": _op("create_batch", "Create a batch (campaign)", {
                "201": _answer("Created", _ref("Batch")), **_errors(400, 401, 413, 415, 422, 503)},
                body=_json(_ref("BatchCreate")), tags=("batches",)),
            "get": _op("list_batches", "List batches, newest first", {
                "200": _answer("A page of batches", _ref("BatchList")), **_errors(401, 422, 503)},
                params=[_query("status", {"type": "string", "enum": list(states.BATCH_STATES)}, "Only this status"),
                        _query("account_id", {"type": "string", "minLength": 1, "maxLength": MAX_ACCOUNT_ID,
                                              "pattern": r"^[^$]"}, "Only this account"),
                        _query("limit", page, "Page size"),
                        _query("offset", {"type": "integer", "minimum": 0, "maximum": 10_000_000, "default": 0},
                               "Batches to skip")],
                tags=("batches",)),
        },
        "/batches/{batch_id}": {
            "get": _op("get_batch", "A batch with its counts per state, progress, window and failures (what "
                                    "comes from its jobs may lag by up to BATCH_COUNTS_MAX_AGE_S, 2 s)", {
                "200": _answer("The batch", _ref("Batch")), **_errors(401, 404, 503)},
                params=[_BATCH_ID], tags=("batches",)),
            "patch": _op("update_batch", "Change name, agent, caller id or call_settings", {
                "200": _answer("The batch after the change", _ref("Batch")),
                **_errors(400, 401, 404, 413, 415, 422, 503)},
                params=[_BATCH_ID], body=_json(_ref("BatchUpdate")), tags=("batches",)),
        },
        "/batches/{batch_id}/contacts": {"post": _op("add_contacts", "Add contacts (JSON or CSV)", {
            "200": _answer("Imported; each bad row listed", _ref("ImportResult")),
            **_errors(400, 401, 404, 409, 413, 415, 422),
            "503": _answer("MongoDB or Redis failed; retry. A write that failed during the import stops it: the answer "
                           "then also holds the import's report (imported counts exactly the contacts written, "
                           "stopped says where; unconfirmed: writes that could not be read back)", _ref("Error"))},
            params=[_BATCH_ID, _query("region", {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                                      "Region for numbers without +country (default PHONE_DEFAULT_REGION)")],
            body=contacts_body, tags=("contacts",))},
        "/contacts/check": {"post": _op("check_contacts", "Validate contacts (JSON or CSV) row by row as an import "
                                                          "would, writing nothing", {
            "200": _answer("Each bad row listed", _ref("ContactsCheck")),
            **_errors(400, 401, 413, 415, 422, 503)},
            params=[_query("region", {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                           "Region for numbers without +country (default PHONE_DEFAULT_REGION)")],
            body=contacts_body, security=reads, tags=("contacts",))},
        "/call-settings/schema": {"get": _op(
            "call_settings_schema", "The JSON Schema (draft 2020-12) of call_settings, with defaults and examples",
            {"200": _answer("The schema", {"type": "object"}), **_errors(401)},
            security=reads, tags=("call_settings",))},
        "/call-settings/preview": {"post": _op(
            "call_settings_preview", "The next instants a call could start under these call_settings", {
                "200": _answer("The call times", _ref("Preview")), **_errors(400, 401, 413, 415, 422, 503)},
            body=_json(_ref("PreviewRequest")), security=reads, tags=("call_settings",))},
        "/batches/{batch_id}/jobs": {"get": _op("list_jobs", "A batch's jobs, by state, paginated", {
            "200": _answer("A page of jobs (pass next_after as after for the next)", _ref("JobList")),
            **_errors(401, 404, 422, 503)},
            params=[_BATCH_ID, _query("status", {"type": "string", "enum": list(states.JOB_STATES)}, "Only this state"),
                    _query("after", _ID, "next_after of the previous page"), _query("limit", page, "Page size")],
            tags=("jobs",))},
        "/batches/{batch_id}/pause": _control("pause_batch", "Pause (calls in progress end normally)"),
        "/batches/{batch_id}/resume": _control("resume_batch", "Resume a paused batch"),
        "/batches/{batch_id}/cancel": _control("cancel_batch", "Cancel: jobs not yet dialed are cancelled"),
        "/batches/{batch_id}/invalidate-cache": {"post": _op(
            "invalidate_cache", "Evict the batch from every process's cache (cache:invalidate:<id>)", {
                "202": _answer("Published", _ref("Invalidation")), **_errors(401, 404, 503)},
            params=[_BATCH_ID], tags=("batches",))},
        **_dnc_paths(page),
        **_compliance_paths(reads),
        **_result_hook_paths(reads),
        **_results_paths(),
        "/jobs/{job_id}": {"get": _op("get_job", "A job with its attempt history", {
            "200": _answer("The job", _ref("Job")), **_errors(401, 404, 503)},
            params=[_JOB_ID], tags=("jobs",))},
        "/jobs/{job_id}/recording": {"get": _op(
            "get_recording", "A fresh link to the recording of the job's last conversation (links expire)", {
                "200": _answer("The link, as the provider gives it now", _ref("Recording")),
                **_errors(401, 404, 503)},
            params=[_JOB_ID, _query("attempt_id", {"type": "string"}, "Another of the job's calls")],
            tags=("jobs",))},
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy)."""
    return copy.deepcopy({
        "openapi": "3.0.3",
        "info": {
            "title": "outdial web API", "version": VERSION,
            "description": "Admin API, Retell webhooks, health and metrics of the outdial web dyno. "
                           "Errors share one shape (Error). Instants are ISO-8601 UTC. See docs/web.md.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": n} for n in ("accounts", "batches", "contacts", "call_settings", "jobs", "dnc",
                                                  "compliance", "results", "webhooks", "operations")],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"},
                "readToken": {"type": "http", "scheme": "bearer",
                              "description": "The read-only token (outdial web --print-read-token): "
                                             "dashboard and /metrics only"},
            },
        },
    })
