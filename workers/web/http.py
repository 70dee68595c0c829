"""HTTP plumbing of the web dyno: the error shape, access levels, bounded bodies, JSON in and out.

Every error answer, whatever raised it, has one shape::

    {"status": 422, "error": "validation_failed", "message": "call_settings.max_attempts: ...",
     "errors": [{"field": "call_settings.max_attempts", "message": "must be between 1 and 100"}]}

``errors`` always holds at least one entry (``field`` is present when a field is to blame).

Access levels (:func:`access`): ``public``; ``read`` (the dashboard and ``/metrics``: the admin
token or the read-only token, as a bearer token or, for the dashboard, the session cookie);
``admin`` (the admin token as a bearer token, or the dashboard's admin session cookie together with
its CSRF token in ``X-CSRF-Token``: a cookie alone opens nothing, so no cross-site request can use a
browser's session). An admin session cookie counts only while its session is open in Redis
(:class:`shared.stores.admin_sessions.AdminSessions`): signing out closes it for every copy of the cookie on every dyno.
Tokens are compared with :func:`hmac.compare_digest`. With ``ADMIN_TOKEN`` unset every non-public route answers 401.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from shared.domain.text import printable, unencodable

PUBLIC = "public"
READ = "read"
ADMIN = "admin"

#: Cookie holding the dashboard's read-only token.
SESSION_COOKIE = "outdial_session"
#: Cookie holding an admin session (signed, short-lived; set by signing in with the admin token).
ADMIN_SESSION_COOKIE = "outdial_admin"
#: Request key under which the access check leaves the request's open admin session (the cookie's value), if any.
ADMIN_SESSION = web.RequestKey("outdial_admin_session", str)
#: Lifetime of an admin session, seconds (real time).
ADMIN_SESSION_MAX_AGE_S = 3600
#: Header carrying the session's CSRF token on every write made with the admin session cookie.
CSRF_HEADER = "X-CSRF-Token"
#: Longest JSON body of an ordinary admin request, bytes.
DEFAULT_MAX_JSON_BYTES = 1 << 20
#: Largest JSON body of ``POST /batches/{id}/contacts``, bytes (larger lists: send CSV, which streams).
DEFAULT_MAX_CONTACTS_JSON_BYTES = 32 << 20
#: Largest CSV upload, bytes (it streams: memory does not grow with it).
DEFAULT_MAX_CSV_BYTES = 512 << 20
#: Largest webhook body, bytes, refused (413) before it is buffered or its HMAC computed. ``call_analyzed``
#: carries the transcript; a larger delivery is lost to the webhook path only: the poll still finalizes the call.
DEFAULT_MAX_WEBHOOK_BYTES = 1 << 20
#: Webhook bodies being read and verified at once (anyone can send them); more get 503 at once.
DEFAULT_MAX_WEBHOOK_READS = 64
#: Status counted and logged for a request whose client went away before its answer (nginx's convention).
CLIENT_CLOSED = 499
#: Deepest nesting accepted in a JSON body.
MAX_JSON_DEPTH = 32

_READ_TOKEN_CONTEXT = b"outdial read-only token v1"
_SESSION_CONTEXT = b"outdial admin session v1|"
_CSRF_CONTEXT = b"outdial csrf v1|"

H = TypeVar("H", bound=Callable[..., Awaitable[web.StreamResponse]])


class ApiError(Exception):
    """An HTTP error answer in the common shape.

    :param status: HTTP status.
    :param code: short machine-readable code (``not_found``, ``validation_failed``...).
    :param message: one sentence for people.
    :param errors: ``(field or None, message)`` pairs; default one entry with ``message``.
    :param headers: extra response headers (e.g. ``WWW-Authenticate``).
    """

    def __init__(self, status: int, code: str, message: str, *,
                 errors: list[tuple[str | None, str]] | None = None, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None, close: bool = False) -> None:
        super().__init__(message)
        #: Close the connection after the answer (the request's body was not read to its end).
        self.close = close
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors if errors else [(None, message)]
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        items = []
        for name, text in self.errors:
            item: dict[str, Any] = {"message": text}
            if name:
                item["field"] = name
            items.append(item)
        return {"status": self.status, "error": self.code, "message": self.message, "errors": items, **self.extra}

    def response(self) -> web.Response:
        response = json_response(self.body(), status=self.status, headers=self.headers)
        if self.close:
            response.force_close()
        return response


def bad_request(message: str, field: str | None = None) -> ApiError:
    return ApiError(400, "bad_request", message, errors=[(field, message)])


def invalid(errors: list[tuple[str, str]]) -> ApiError:
    """422 listing every bad field."""
    pairs: list[tuple[str | None, str]] = [(name, text) for name, text in errors]
    first = "; ".join(f"{name}: {text}" for name, text in errors[:3])
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return ApiError(422, "validation_failed", first + more, errors=pairs)


# -- access ------------------------------------------------------------------------------------------


def access(level: str) -> Callable[[H], H]:
    """Declare who may call a handler: :data:`PUBLIC`, :data:`READ` or :data:`ADMIN` (the default)."""

    def mark(handler: H) -> H:
        handler.outdial_access = level  # type: ignore[attr-defined]
        return handler

    return mark


def query_params(*names: str) -> Callable[[H], H]:
    """Declare the query parameters an admin handler reads; any other one gets 422 (a typo such as
    ``?stauts=failed`` must not silently list everything)."""

    def mark(handler: H) -> H:
        handler.outdial_query = names  # type: ignore[attr-defined]
        return handler

    return mark


def check_query(request: web.Request) -> None:
    """422 naming every query parameter the route does not read."""
    allowed = getattr(request.match_info.handler, "outdial_query", ())
    unknown = sorted({k for k in request.query if k not in allowed})
    if unknown:
        known = f" (known: {', '.join(allowed)})" if allowed else " (this route takes none)"
        raise invalid([(k[:64] or "(empty name)", f"unknown query parameter{known}") for k in unknown])


def access_of(request: web.Request) -> str:
    handler = request.match_info.handler
    return str(getattr(handler, "outdial_access", ADMIN))


def read_token_for(admin_token: str | None) -> str | None:
    """The read-only token derived from ``ADMIN_TOKEN`` (HMAC-SHA256, hex); None when the admin token is unset.

    It opens the dashboard and ``/metrics`` but not the admin API, so a wall screen or a
    Prometheus server never holds a token that can change anything. ``outdial web --print-read-token``
    prints it.
    """
    if not admin_token:
        return None
    return hmac.new(admin_token.encode("utf-8"), _READ_TOKEN_CONTEXT, hashlib.sha256).hexdigest()


def same_token(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; False when either side is missing."""
    if not given or not expected:
        return False
    # A header's bytes that are not UTF-8 arrive as surrogate escapes: compared as they came, never an error.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _mac(key: str, context: bytes, message: str) -> str:
    return hmac.new(key.encode("utf-8"), context + message.encode("utf-8"), hashlib.sha256).hexdigest()


def new_admin_session(admin_token: str, now_s: float, *, max_age_s: int = ADMIN_SESSION_MAX_AGE_S) -> str:
    """A signed admin session value ``v1.<expiry s>.<session id>.<HMAC>``, keyed with ``ADMIN_TOKEN``.

    The signature and expiry are checked without shared state (rotating ``ADMIN_TOKEN`` ends every session); the
    session id must also be open in :class:`shared.stores.admin_sessions.AdminSessions`, where signing out closes it.
    The cookie never holds a token.
    """
    body = f"v1.{int(now_s) + max_age_s}.{secrets.token_hex(16)}"
    return f"{body}.{_mac(admin_token, _SESSION_CONTEXT, body)}"


def admin_session_valid(value: str | None, admin_token: str | None, now_s: float) -> bool:
    """True for an admin session signed with ``admin_token`` that has not expired (constant-time check)."""
    if not value or not admin_token or len(value) > 200:
        return False
    body, _, mac = value.rpartition(".")
    parts = body.split(".")
    if len(parts) != 3 or parts[0] != "v1" or not parts[1].isdigit():
        return False
    if not same_token(mac, _mac(admin_token, _SESSION_CONTEXT, body)):
        return False
    return int(parts[1]) > now_s


def admin_session_id(value: str) -> str:
    """The session id of a signed admin session value (its random part)."""
    return value.rpartition(".")[0].split(".")[2]


def csrf_token_for(session: str, admin_token: str) -> str:
    """The CSRF token of one admin session: derived from it, so it needs no storage and dies with it."""
    return _mac(admin_token, _CSRF_CONTEXT, session)


def admin_session(request: web.Request, admin_token: str | None) -> str | None:
    """The request's signed, unexpired admin session cookie, or None (whether its session is still open is the
    session store's answer: the access check asks it and leaves an open one under :data:`ADMIN_SESSION`)."""
    value = request.cookies.get(ADMIN_SESSION_COOKIE)
    return value if admin_session_valid(value, admin_token, time.time()) else None


def open_admin_session(request: web.Request) -> str | None:
    """The request's open admin session, as the access check found it; None without one."""
    return request.get(ADMIN_SESSION)


def csrf_ok(request: web.Request, admin_token: str | None) -> bool:
    """An open admin session and its CSRF token in :data:`CSRF_HEADER` (constant-time comparison)."""
    session = open_admin_session(request)
    if session is None or admin_token is None:
        return False
    return same_token(request.headers.get(CSRF_HEADER), csrf_token_for(session, admin_token))


def cross_site(request: web.Request) -> bool:
    """True when the browser says the request comes from another site: ``Sec-Fetch-Site`` other than
    ``same-origin``/``none`` or, from a browser that does not send it, an ``Origin`` naming another host. A request
    with neither (a script), or with ``Origin: null`` alone (sent by this site's own pages under
    ``Referrer-Policy: no-referrer``), is not judged here."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site.lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return False
    return urlsplit(origin).netloc.lower() != (request.host or "").lower()


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def unauthorized(admin_token: str | None) -> ApiError:
    if not admin_token:
        message = "ADMIN_TOKEN is not set on the server: the admin API, dashboard and metrics refuse every request"
    else:
        message = "missing or invalid token: send 'Authorization: Bearer <ADMIN_TOKEN>'"
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer realm="outdial"'})


# -- bodies ------------------------------------------------------------------------------------------


def too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the request body is larger than {limit} bytes")


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing (413) a declared or actual size above ``limit`` bytes before buffering it."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_tree(value: Any, path: str, forbid_dollar_keys: bool, depth: int = 0) -> None:
    """Refuse excessive nesting, ``$`` keys (when ``forbid_dollar_keys``) and any key or string that UTF-8 cannot
    encode (a lone surrogate written ``"\\ud800"``: valid JSON, but neither MongoDB nor a JSON answer can hold it),
    naming its JSON path."""
    if depth > MAX_JSON_DEPTH:
        raise bad_request(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            problem = unencodable(key)
            if problem:
                raise invalid([(printable(where)[:200], f"the name {problem}")])
            if forbid_dollar_keys and key.startswith("$"):
                shown = f"{path}.{key[:64]}" if path else key[:64]
                raise invalid([(shown, "keys starting with '$' are not allowed")])
            _check_tree(item, where, forbid_dollar_keys, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_tree(item, f"{path}[{index}]", forbid_dollar_keys, depth + 1)
    elif isinstance(value, str):
        problem = unencodable(value)
        if problem:
            raise invalid([(printable(path)[:200] or "body", problem)])


def parse_json(raw: bytes, *, forbid_dollar_keys: bool = True) -> Any:
    """Decode a JSON body: 400 for malformed JSON, NaN/Infinity or excessive nesting; 422 for ``$`` keys and for
    text UTF-8 cannot encode (``"\\ud800"``), naming the JSON path (``contacts[3].name``) before anything is written.

    :param forbid_dollar_keys: refuse any object key starting with ``$`` at any depth (admin bodies;
        such a key could never be stored safely). Default True.
    """
    if not raw.strip():
        raise bad_request("the request body is empty: a JSON object is expected")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad_request("the request body is not valid UTF-8") from None
    except RecursionError:
        raise bad_request(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise bad_request(f"malformed JSON: {exc}") from None
    _check_tree(value, "", forbid_dollar_keys)
    return value


def is_json(request: web.Request) -> bool:
    kind = request.content_type
    return kind == "application/json" or kind.endswith("+json")


async def read_json_object(request: web.Request, *, limit: int,
                           allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The body as a JSON object (415 for another content type; 422 naming unknown fields when ``allowed``).

    Handlers that validate further pass no ``allowed`` and add :func:`unknown_fields` to their own
    errors, so one answer lists every bad field.
    """
    if request.body_exists and request.headers.get("Content-Type") and not is_json(request):
        raise ApiError(415, "unsupported_media_type",
                       f"send application/json (got {request.content_type})")
    value = parse_json(await read_limited(request, limit))
    if not isinstance(value, dict):
        raise invalid([("body", f"must be a JSON object, got {json_type(value)}")])
    if allowed is not None:
        unknown = unknown_fields(value, allowed)
        if unknown:
            raise invalid(unknown)
    return value


def unknown_fields(body: dict[str, Any], allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(field, message)`` for every key of ``body`` not in ``allowed``."""
    return [(k[:64], f"unknown field (known fields: {', '.join(allowed)})") for k in sorted(body)
            if k not in allowed]


def json_type(value: Any) -> str:
    """The JSON name of a Python value's type (for messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -- answers -----------------------------------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(body), status=status, content_type="application/json",
                        headers={"Cache-Control": "no-store", **dict(headers or {})})


def iso(value: int | float | datetime | None) -> str | None:
    """An instant (integer ms since the epoch, or an aware datetime) as ISO-8601 UTC with milliseconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        moment = value.astimezone(UTC)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value / 1000, UTC)
    else:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def query_text(request: web.Request, name: str) -> str | None:
    """Query parameter ``name``; None when absent, 422 when present but empty."""
    raw = request.query.get(name)
    if raw is not None and raw == "":
        raise invalid([(name, "is empty: leave the parameter out instead")])
    return raw


def query_int(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    """Integer query parameter ``name`` in ``[low, high]`` (422 otherwise)."""
    raw = query_text(request, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid([(name, f"must be an integer, got {raw[:40]!r}")]) from None
    if not low <= value <= high:
        raise invalid([(name, f"must be between {low} and {high}, got {value}")])
    return value
