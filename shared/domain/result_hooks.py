"""Signed result webhooks to the operator's system, as plain rules: the events and their bodies, the signature,
which targets may be sent to, and when a failed delivery is tried again. No I/O: the DNS look-up of a target is
passed in as a function.

Three event types: ``contact.final`` (a contact reached its final state and its last conversation's analysis is
in, or the wait for it ended), ``call.ended`` (an attempt ended with a call) and ``call.analyzed`` (an attempt's
post-call analysis was recorded). An event's id is a function of its type and of the job or attempt it is about
(:func:`event_id`), so writing it twice writes it once. Its body (:func:`event_body`) is the exact JSON text that
is signed and sent, kept with the event so every retry sends the same bytes.

The signature (:func:`signature_header`): ``Outdial-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed by the secret>``; :func:`verify_signature` is what a receiver runs.

Targets (:func:`check_url`, :func:`check_address`, :func:`resolve_target`): ``https://`` only, to public
addresses only, unless private targets are allowed (``RESULT_WEBHOOKS_ALLOW_PRIVATE``), which also admits
``http://``, loopback, private and link-local addresses. Every address a host name resolves to must pass, and the
delivery connects to the address that was checked.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shared.domain.backoff import capped_exponential
from shared.domain.results import contact_result, read_analysis

#: The event types, in the order they are documented.
CONTACT_FINAL = "contact.final"
CALL_ENDED = "call.ended"
CALL_ANALYZED = "call.analyzed"
EVENT_TYPES = (CONTACT_FINAL, CALL_ENDED, CALL_ANALYZED)

#: Shortest and longest secret accepted, characters.
SECRET_MIN = 16
SECRET_MAX = 256
#: Longest URL accepted, characters.
URL_MAX = 2000

#: Delivery states of an event.
PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
DELIVERY_STATES = (PENDING, DELIVERED, DEAD)

#: A delivery's whole request may take this long, real seconds.
DELIVERY_TIMEOUT_S = 10.0
#: First wait after a failed delivery, real seconds (doubling from there).
RETRY_BASE_S = 10.0
#: Longest wait between two deliveries of one event, real seconds.
RETRY_CAP_S = 3600.0
#: How long an event is tried, from its creation (or from a redelivery asked by hand), ms of the shared clock.
DELIVERY_WINDOW_MS = 24 * 3600 * 1000

#: Headers of every delivery.
SIGNATURE_HEADER = "Outdial-Signature"
EVENT_ID_HEADER = "Outdial-Event-Id"
USER_AGENT = "outdial"

#: Fields of a job or attempt shown in every event about it.
_IDS = ("job_id", "batch_id", "account_id", "external_id")
#: Instants of an attempt shown as ISO-8601.
_ATTEMPT_INSTANTS = ("started_at", "ended_at")


class TargetRefused(ValueError):
    """A webhook URL, or an address it resolves to, that may not be sent to; ``str()`` says why."""


# -- events ------------------------------------------------------------------------------------------------------


def event_id(kind: str, subject_id: str) -> str:
    """``evt_`` + the first 24 hex characters of sha256 of ``"<type>|<job or attempt id>"``: the same event always
    gets the same id."""
    return "evt_" + hashlib.sha256(f"{kind}|{subject_id}".encode()).hexdigest()[:24]


def iso(ms: int | float | None) -> str | None:
    """An instant (integer ms since the epoch) as ISO-8601 UTC with milliseconds (``...Z``); None stays None."""
    if ms is None or isinstance(ms, bool) or not isinstance(ms, int | float) or not math.isfinite(ms):
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def contact_final_data(job: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` of ``contact.final``: :func:`shared.domain.results.contact_result` with its instants as ISO-8601,
    plus the job's ids and the contact's ``external_id`` and ``name``."""
    contact = job.get("contact") or {}
    result = contact_result(job)
    for name in ("last_call_at", "callback_at", "finished_at"):
        result[name] = iso(result.get(name))
    return {"job_id": job.get("_id"), "batch_id": job.get("batch_id"), "account_id": job.get("account_id"),
            "external_id": contact.get("external_id"), "name": contact.get("name"), **result}


def _attempt_ids(attempt: Mapping[str, Any]) -> dict[str, Any]:
    return {"attempt_id": attempt.get("_id"), **{name: attempt.get(name) for name in _IDS},
            "call_id": attempt.get("call_id"), "to_number": attempt.get("to_number")}


def call_ended_data(attempt: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` of ``call.ended``: the attempt's ids, the number called, outcome, start and end, seconds talked and
    the charge (in the account's storage unit)."""
    duration = attempt.get("duration_ms")
    return {**_attempt_ids(attempt), "outcome": attempt.get("outcome"),
            **{name: iso(attempt.get(name)) for name in _ATTEMPT_INSTANTS},
            "duration_s": round(int(duration) / 1000, 1) if isinstance(duration, int | float) else None,
            "charge": attempt.get("charge")}


def call_analyzed_data(attempt: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` of ``call.analyzed``: the attempt's ids, the kept analysis, the recording's URL and the provider's
    own cost of the call (its cents)."""
    return {**_attempt_ids(attempt), "analysis": read_analysis(attempt.get("analysis")),
            "recording_url": attempt.get("recording_url"), "call_cost": attempt.get("call_cost")}


def event_body(evt_id: str, kind: str, created_at_ms: int, data: Mapping[str, Any]) -> str:
    """The JSON text of an event: ``{"id", "type", "created_at", "data"}`` (compact, UTF-8 kept as is)."""
    return json.dumps({"id": evt_id, "type": kind, "created_at": iso(created_at_ms), "data": dict(data)},
                      ensure_ascii=False, separators=(",", ":"), default=str)


def analysis_awaited(job: Mapping[str, Any], now_ms: int, wait_ms: int) -> bool:
    """Whether a final job's ``contact.final`` still waits for its last conversation's analysis: the analysis is
    pending (``result.analysis_pending``) and ``wait_ms`` have not passed since the job became final."""
    result = job.get("result") or {}
    if not result.get("analysis_pending"):
        return False
    finished = job.get("finished_at")
    if not isinstance(finished, int | float):
        return False
    return now_ms < finished + wait_ms


def subscribed(webhook: Mapping[str, Any] | None, kind: str) -> bool:
    """Whether an account's stored ``result_webhook`` asks for events of ``kind``."""
    if not webhook or not webhook.get("url"):
        return False
    events = webhook.get("events")
    return kind in (EVENT_TYPES if events is None else events)


# -- the signature -------------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes | str) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed by ``secret`` (UTF-8)."""
    raw = body.encode() if isinstance(body, str) else body
    return hmac.new(secret.encode(), str(int(timestamp)).encode() + b"." + raw, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes | str) -> str:
    """The ``Outdial-Signature`` value of a send at ``timestamp`` (Unix seconds): ``t=<t>,v1=<hex>``."""
    return f"t={int(timestamp)},v1={sign(secret, timestamp, body)}"


def verify_signature(secret: str, header: str | None, body: bytes | str, *, now_s: float | None = None,
                     tolerance_s: float = 300.0) -> bool:
    """Whether ``header`` (an ``Outdial-Signature`` value) signs ``body`` with ``secret``; with ``now_s``, also that
    its timestamp is within ``tolerance_s`` of it (a replayed old delivery is refused)."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stamp, given = parts.get("t", ""), parts.get("v1", "")
    if not stamp.isdigit() or not given:
        return False
    if now_s is not None and abs(now_s - int(stamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(stamp), body), given)


# -- targets -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: the URL's parts and, once resolved and checked, the address to connect to.

    :param scheme: ``https`` (or ``http`` where private targets are allowed).
    :param host: the host name as written (lower case; an IPv6 address without brackets).
    :param port: the port (443 / 80 when the URL names none).
    :param path: path and query, at least ``/``.
    :param address: the checked IP address the delivery connects to (None until resolved).
    """

    scheme: str
    host: str
    port: int
    path: str
    address: str | None = None

    @property
    def host_header(self) -> str:
        """The ``Host`` header: the host (bracketed when IPv6) and the port unless it is the scheme's default."""
        name = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return name if self.port == default else f"{name}:{self.port}"


def check_url(url: object, *, allow_private: bool) -> Target:
    """The target a webhook URL names, or :class:`TargetRefused` saying why it may not be one.

    ``https://`` with a host; no user or password, no fragment. With ``allow_private``, ``http://`` too. A host
    written as an IP address is checked here (:func:`check_address`); a name is checked once resolved.
    """
    if not isinstance(url, str) or not url.strip():
        raise TargetRefused("must be a URL such as https://example.com/outdial")
    text = url.strip()
    if len(text) > URL_MAX:
        raise TargetRefused(f"is longer than {URL_MAX} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in text):
        raise TargetRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(text)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise TargetRefused(f"is not a valid URL ({exc})") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme.lower() not in schemes:
        if parts.scheme.lower() == "http":
            raise TargetRefused("must use https:// (http:// only where RESULT_WEBHOOKS_ALLOW_PRIVATE is set)")
        raise TargetRefused(f"must be an https:// URL, got scheme {parts.scheme[:20]!r}")
    if not host:
        raise TargetRefused("has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("must not hold a user name or password (the signature authenticates deliveries)")
    if parts.fragment:
        raise TargetRefused("must not have a #fragment")
    scheme = parts.scheme.lower()
    target = Target(scheme=scheme, host=host.lower().rstrip("."), port=port or (443 if scheme == "https" else 80),
                    path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    if not target.host:
        raise TargetRefused("has no host")
    if _ip(target.host) is not None:
        check_address(target.host, allow_private=allow_private)
    return target


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why a delivery may not connect to ``address`` (None: it may).

    Without ``allow_private`` only global addresses (:attr:`ipaddress.IPv4Address.is_global`) pass, and never a
    multicast, reserved or unspecified one; an IPv4 address mapped, translated or tunnelled in IPv6 is judged as
    that IPv4 address. With it, loopback, private and link-local addresses pass too (never multicast, unspecified).
    """
    ip = _ip(address)
    if ip is None:
        return f"{address[:60]!r} is not an IP address"
    inner = _embedded_v4(ip)
    if inner is not None and inner != ip:
        problem = address_problem(str(inner), allow_private=allow_private)
        if problem is not None:
            return problem
    if ip.is_unspecified:
        return f"{ip} is an unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if allow_private:
        return None
    for flag, what in (("is_loopback", "a loopback"), ("is_private", "a private"), ("is_link_local", "a link-local"),
                       ("is_reserved", "a reserved")):
        if getattr(ip, flag):
            return f"{ip} is {what} address (private targets are refused unless RESULT_WEBHOOKS_ALLOW_PRIVATE is set)"
    if not ip.is_global:
        return f"{ip} is not a public address (private targets are refused unless RESULT_WEBHOOKS_ALLOW_PRIVATE is set)"
    return None


def _embedded_v4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped ``::ffff:a.b.c.d``, 6to4, Teredo's client, NAT64), else None."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in ipaddress.IPv6Network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def check_address(address: str, *, allow_private: bool) -> str:
    """``address`` when a delivery may connect to it, else :class:`TargetRefused`."""
    problem = address_problem(address, allow_private=allow_private)
    if problem is not None:
        raise TargetRefused(problem)
    return address


#: A host's addresses: ``resolve(host, port)`` -> every IP address the name resolves to (an error or an empty list:
#: it does not resolve).
Resolver = Callable[[str, int], Sequence[str]]


def resolve_target(url: object, *, allow_private: bool, resolve: Resolver) -> Target:
    """The target of ``url`` with the address to connect to: the URL is checked (:func:`check_url`), its host
    resolved with ``resolve`` and every address it resolves to checked; the first one is the one to use.

    :raises TargetRefused: the URL, the look-up or any address is refused.
    """
    target = check_url(url, allow_private=allow_private)
    if _ip(target.host) is not None:
        return Target(target.scheme, target.host, target.port, target.path, target.host.split("%", 1)[0])
    try:
        found = list(dict.fromkeys(resolve(target.host, target.port)))
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"host {target.host[:100]!r} does not resolve ({type(exc).__name__})") from None
    if not found:
        raise TargetRefused(f"host {target.host[:100]!r} does not resolve")
    for address in found:
        problem = address_problem(address, allow_private=allow_private)
        if problem is not None:
            raise TargetRefused(f"host {target.host[:100]!r} resolves to {problem}")
    return Target(target.scheme, target.host, target.port, target.path, found[0].split("%", 1)[0])


# -- retries -------------------------------------------------------------------------------------------------------


def retry_wait_s(attempts: int, *, jitter: Callable[[], float] | None = None) -> float:
    """Real seconds before the next delivery after ``attempts`` failed ones (1, 2, ...): 10 s doubling to one hour,
    times ``jitter``'s factor when given."""
    return capped_exponential(max(0, attempts - 1), base=RETRY_BASE_S, cap=RETRY_CAP_S, jitter=jitter)


def next_delivery_at(*, now_ms: int, wait_ms: int, expires_at_ms: int) -> int | None:
    """When to deliver again after a failure at ``now_ms`` with a wait of ``wait_ms`` (ms of the shared clock); the
    last try is made at ``expires_at_ms`` (the end of the event's 24 hours), and None once that has passed: the
    event is dead."""
    if now_ms >= expires_at_ms:
        return None
    return min(now_ms + max(0, int(wait_ms)), expires_at_ms)
