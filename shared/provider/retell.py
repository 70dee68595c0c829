"""The Retell AI client: blocking, on one pooled ``urllib3.PoolManager``, safe to share between threads.

:class:`RetellClient` speaks the five endpoints a dialer needs (docs/retell.md lists paths,
bodies and status codes). Failures raise the provider branch of :mod:`shared.errors`; only
idempotent requests (get, list, concurrency, stop) are retried here, with jittered exponential
backoff that honours ``retry-after``.
A create carries an ``idempotency_key`` (outdial sends the attempt id): Retell answers a repeated key
within an hour with the call the first request created, without dialing again. So an ambiguous
create (timeout, reset, 408/409/5xx, unreadable answer) is sent again with the same key, a bounded
number of times, each send preceded by the caller's check (the fence and the calling window). When
it stays ambiguous it raises :class:`~shared.errors.CreateOutcomeUnknown`, and the caller sends it
again later with the same key, or, past the key's hour, looks it up with
:meth:`RetellClient.find_calls_by_metadata`. Without a key a create is sent exactly once.

Dramatiq actors are plain threads of processes dramatiq forks: one client serves every thread of a
process, and a forked child opens its own connections on first use (never the parent's sockets).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

from shared.config import Config
from shared.domain.backoff import capped_exponential
from shared.errors import (
    AgentNotFound,
    CallerIdRejected,
    CallNotFound,
    CreateOutcomeUnknown,
    DialAborted,
    InvalidDestination,
    PaymentRequired,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from shared.logs import event, get_logger, mask_phone
from shared.metrics import PROVIDER_ERRORS, PROVIDER_REQUESTS

if TYPE_CHECKING:
    from urllib3.connectionpool import ConnectionPool

log = get_logger(__name__)

__all__ = [
    "CALL_STATUSES",
    "DISCONNECTION_REASONS",
    "FINAL_CALL_STATUSES",
    "Call",
    "CallPage",
    "Concurrency",
    "RetellClient",
    "build_create_body",
    "error_from_response",
    "to_dynamic_variables",
]

#: Port the local simulator listens on by default, and where the client looks when ``RETELL_BASE_URL`` is unset.
DEFAULT_SIMULATOR_PORT = 8090
#: Base URL used when ``RETELL_BASE_URL`` is unset (the local simulator).
DEFAULT_SIMULATOR_URL = f"http://127.0.0.1:{DEFAULT_SIMULATOR_PORT}"
#: Whole-request timeout of get/list/stop/concurrency, seconds.
DEFAULT_TIMEOUT_S = 20.0
#: Time allowed to open a TCP/TLS connection, seconds (a connect that times out sent nothing).
DEFAULT_CONNECT_TIMEOUT_S = 5.0
#: Automatic retries of an idempotent request (so at most 3 sends).
DEFAULT_MAX_RETRIES = 2
#: Sends of one create with an idempotency key while its outcome stays ambiguous.
DEFAULT_CREATE_SENDS = 3
#: How long Retell honours an idempotency key (one hour), real seconds.
IDEMPOTENCY_WINDOW_S = 3600.0
#: First backoff, seconds; doubles each retry, with jitter, capped by DEFAULT_BACKOFF_MAX_S.
DEFAULT_BACKOFF_BASE_S = 0.5
#: Longest backoff between two sends, seconds (Retell's SDK: 0.5 to 8 s).
DEFAULT_BACKOFF_MAX_S = 8.0
#: A ``retry-after`` longer than this is not waited for here: the error goes to the caller, seconds.
DEFAULT_MAX_RETRY_AFTER_S = 30.0
#: Connections to the provider one client keeps open for reuse.
DEFAULT_MAX_CONNECTIONS = 100
#: Page size used by :meth:`RetellClient.find_calls_by_metadata`.
DEFAULT_PAGE_LIMIT = 200
#: Pages read at most by :meth:`RetellClient.find_calls_by_metadata` before giving up loudly.
DEFAULT_MAX_PAGES = 50

#: Retell's bounds for ``agent_override.agent.ring_duration_ms`` (default 30 000).
RING_DURATION_MS_RANGE = (5_000, 300_000)
#: Retell's bounds for ``agent_override.agent.max_call_duration_ms`` (default 3 600 000).
MAX_CALL_DURATION_MS_RANGE = (60_000, 7_200_000)

#: Every ``call_status`` Retell documents. Others may appear: parsing keeps them as strings.
CALL_STATUSES = frozenset({"registered", "not_connected", "ongoing", "ended", "error"})
#: Statuses after which a call never changes again.
FINAL_CALL_STATUSES = frozenset({"not_connected", "ended", "error"})
#: ``disconnection_reason`` values of the current API, plus ``machine_detected`` of older versions.
DISCONNECTION_REASONS = frozenset({
    "user_hangup", "agent_hangup", "call_transfer", "voicemail_reached", "ivr_reached", "inactivity",
    "max_duration_reached", "concurrency_limit_reached", "no_concurrency_fallback", "no_valid_payment",
    "scam_detected", "dial_busy", "dial_failed", "dial_no_answer", "invalid_destination",
    "telephony_provider_permission_denied", "telephony_provider_unavailable", "sip_routing_error",
    "marked_as_spam", "user_declined", "error_llm_websocket_open", "error_llm_websocket_lost_connection",
    "error_llm_websocket_runtime", "error_llm_websocket_corrupt_payload", "error_no_audio_received",
    "error_asr", "error_retell", "error_unknown", "error_user_not_joined", "registered_call_timeout",
    "transfer_bridged", "transfer_cancelled", "manual_stopped", "call_take_over", "machine_detected",
})

CREATE_PATH = "/v2/create-phone-call"
GET_PATH = "/v2/get-call/{call_id}"
STOP_PATH = "/v2/stop-call/{call_id}"
LIST_PATH = "/v3/list-calls"
CONCURRENCY_PATH = "/get-concurrency"

#: Words in a 400/422 message of stop-call meaning the call had already finished.
_NOT_ONGOING_HINTS = ("already ended", "not ongoing", "has ended", "not active", "already finished")


# -- parsed answers -------------------------------------------------------------------------------

def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except (ValueError, OverflowError):  # "inf", "nan" or garbage: not a number the provider means
            return None
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass(frozen=True, kw_only=True)
class Call:
    """A phone call as the provider reports it. Unknown enum values are kept as plain strings.

    Timestamps are integer milliseconds since the epoch (on the provider's clock; the simulator
    uses the shared clock). ``raw`` is the whole object as received.
    """

    call_id: str
    call_status: str
    call_type: str = "phone_call"
    direction: str | None = None
    agent_id: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    disconnection_reason: str | None = None
    start_timestamp_ms: int | None = None
    end_timestamp_ms: int | None = None
    duration_ms: int | None = None
    call_analysis: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: Any) -> Call:
        """Parse a call object. Raises ``ValueError`` only when it has no ``call_id``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a call must be a JSON object, got {type(data).__name__}")
        call_id = _str_or_none(data.get("call_id"))
        if call_id is None:
            raise ValueError("the call object has no call_id")
        start = _int_or_none(data.get("start_timestamp"))
        end = _int_or_none(data.get("end_timestamp"))
        duration = _int_or_none(data.get("duration_ms"))
        if duration is None and start is not None and end is not None:
            duration = max(0, end - start)
        return cls(
            call_id=call_id,
            call_status=_str_or_none(data.get("call_status")) or "unknown",
            call_type=_str_or_none(data.get("call_type")) or "phone_call",
            direction=_str_or_none(data.get("direction")),
            agent_id=_str_or_none(data.get("agent_id")),
            from_number=_str_or_none(data.get("from_number")),
            to_number=_str_or_none(data.get("to_number")),
            disconnection_reason=_str_or_none(data.get("disconnection_reason")),
            start_timestamp_ms=start,
            end_timestamp_ms=end,
            duration_ms=duration,
            call_analysis=_dict(data.get("call_analysis")),
            metadata=_dict(data.get("metadata")),
            raw=dict(data),
        )

    @property
    def is_final(self) -> bool:
        """The call will not change any more (an unknown status counts as final once it has an end)."""
        if self.call_status in FINAL_CALL_STATUSES:
            return True
        return self.call_status not in CALL_STATUSES and self.end_timestamp_ms is not None

    @property
    def connected(self) -> bool:
        """Someone (or a machine) picked up: the call has a start or is ongoing."""
        return self.start_timestamp_ms is not None or self.call_status == "ongoing"

    @property
    def in_voicemail(self) -> bool:
        return bool(self.call_analysis.get("in_voicemail")) or self.disconnection_reason == "voicemail_reached"

    @property
    def reason_is_known(self) -> bool:
        """Whether ``disconnection_reason`` is one this code was written against."""
        return self.disconnection_reason in DISCONNECTION_REASONS


@dataclass(frozen=True, kw_only=True)
class CallPage:
    """One page of ``POST /v3/list-calls``; pass ``pagination_key`` back for the next one."""

    items: list[Call]
    has_more: bool
    pagination_key: str | None = None
    total: int | None = None


@dataclass(frozen=True, kw_only=True)
class Concurrency:
    """``GET /get-concurrency``: calls in progress and the workspace limit."""

    current: int | None
    limit: int | None
    base: int | None = None
    purchased: int | None = None
    burst_enabled: bool = False
    burst_limit: int | None = None
    reserved_inbound: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: Any) -> Concurrency:
        data = _dict(data)
        return cls(
            current=_int_or_none(data.get("current_concurrency")),
            limit=_int_or_none(data.get("concurrency_limit")),
            base=_int_or_none(data.get("base_concurrency")),
            purchased=_int_or_none(data.get("purchased_concurrency")),
            burst_enabled=data.get("concurrency_burst_enabled") is True,
            burst_limit=_int_or_none(data.get("concurrency_burst_limit")),
            reserved_inbound=_int_or_none(data.get("reserved_inbound_concurrency")),
            raw=data,
        )

    @property
    def available_outbound(self) -> int | None:
        """Outbound calls that may start now (limit - reserved inbound - current), None if unknown."""
        if self.limit is None or self.current is None:
            return None
        return max(0, self.limit - (self.reserved_inbound or 0) - self.current)


# -- pure request/response mapping ------------------------------------------------------------

def to_dynamic_variables(variables: Mapping[str, Any] | None) -> dict[str, str]:
    """Contact variables as Retell wants them: string keys and string values.

    None becomes ``""``, booleans ``"true"``/``"false"``, numbers their decimal text, lists and
    objects their compact JSON. Raises ``ValueError`` naming a non-string key.
    """
    out: dict[str, str] = {}
    for key, value in (variables or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"dynamic variable names must be non-empty strings, got {key!r}")
        if value is None:
            out[key] = ""
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = str(value)
        else:
            out[key] = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return out


def _seconds_to_ms(name: str, seconds: float, bounds: tuple[int, int]) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise ValueError(f"{name} must be a number of seconds, got {seconds!r}")
    ms = round(seconds * 1000)
    clamped = min(max(ms, bounds[0]), bounds[1])
    if clamped != ms:
        event(log, "provider_override_clamped", field=name, requested_ms=ms, sent_ms=clamped)
    return clamped


def build_create_body(*, from_number: str | None, to_number: str, agent_id: str | None = None,
                      dynamic_variables: Mapping[str, Any] | None = None, metadata: Mapping[str, Any] | None = None,
                      ring_timeout_s: float | None = None, max_call_duration_s: float | None = None,
                      agent_override: Mapping[str, Any] | None = None,
                      idempotency_key: str | None = None) -> dict[str, Any]:
    """The JSON body of ``POST /v2/create-phone-call`` for outdial's call settings.

    :param from_number: caller id, E.164 (None, or an empty string, is refused with a ValueError).
    :param to_number: number to dial, E.164.
    :param agent_id: sent as ``override_agent_id``; None uses the from-number's agent.
    :param dynamic_variables: sent as ``retell_llm_dynamic_variables`` (see :func:`to_dynamic_variables`).
    :param metadata: any JSON object, echoed back on the call (outdial puts the job id and attempt in it).
    :param ring_timeout_s: seconds; sent as ``agent_override.agent.ring_duration_ms``, clamped to 5-300 s.
    :param max_call_duration_s: seconds; sent as ``agent_override.agent.max_call_duration_ms``, clamped to 60-7200 s.
    :param agent_override: further ``agent_override`` content, merged under the two fields above.
    :param idempotency_key: the same key within an hour gets the first request's call, never a second one.
    """
    for name, value in (("from_number", from_number), ("to_number", to_number)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty E.164 string, got {value!r}")
    body: dict[str, Any] = {"from_number": from_number, "to_number": to_number}
    if idempotency_key:
        body["idempotency_key"] = str(idempotency_key)
    if agent_id:
        body["override_agent_id"] = agent_id
    if dynamic_variables:
        body["retell_llm_dynamic_variables"] = to_dynamic_variables(dynamic_variables)
    if metadata:
        if not isinstance(metadata, Mapping):
            raise ValueError(f"metadata must be an object, got {type(metadata).__name__}")
        body["metadata"] = dict(metadata)
    override: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (agent_override or {}).items()}
    agent: dict[str, Any] = dict(override.get("agent") or {})
    if ring_timeout_s is not None:
        agent["ring_duration_ms"] = _seconds_to_ms("ring_timeout_s", ring_timeout_s, RING_DURATION_MS_RANGE)
    if max_call_duration_s is not None:
        agent["max_call_duration_ms"] = _seconds_to_ms(
            "max_call_duration_s", max_call_duration_s, MAX_CALL_DURATION_MS_RANGE)
    if agent:
        override["agent"] = agent
    if override:
        body["agent_override"] = override
    return body


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (preferred) or ``retry-after`` (seconds or HTTP date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            value = float(raw_ms) / 1000
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())  # an HTTP date is real time by definition


def _error_message(text: str) -> str:
    try:
        data = json.loads(text) if text else None
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        for key in ("message", "error", "detail"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value
    text = text.strip()
    return text[:300] if text else "(no message)"


def error_from_response(status: int, text: str, headers: Mapping[str, str], *, endpoint: str) -> ProviderError:
    """The error an unsuccessful answer means (pure; tests call it directly).

    :param status: HTTP status (>= 300).
    :param text: response body; Retell sends ``{"status": "error", "message": ...}``.
    :param headers: response headers (``retry-after`` / ``retry-after-ms`` for 429).
    :param endpoint: ``create_phone_call``, ``get_call``, ``stop_call``, ``list_calls`` or ``get_concurrency``.
    """
    message = _error_message(text)
    if status == 401:
        return ProviderAuthError(message, status=status, endpoint=endpoint)
    if status == 402:
        return PaymentRequired(message, status=status, endpoint=endpoint)
    if status == 429:
        return RateLimited(message, status=status, endpoint=endpoint, retry_after_s=parse_retry_after(headers))
    call_scoped = endpoint in ("get_call", "stop_call")
    if call_scoped and (status == 404 or (status == 422 and "not found" in message.lower())):
        return CallNotFound(message, status=status, endpoint=endpoint)
    if endpoint == "create_phone_call" and (status in (408, 409) or status >= 500):
        # The backend may have created the call before failing, timing out or answering for a gateway.
        return CreateOutcomeUnknown(message, status=status)
    if status in (408, 504):
        return ProviderTimeout(message, status=status, endpoint=endpoint)
    if status == 409 or status >= 500:
        return ProviderUnavailable(message, status=status, endpoint=endpoint)
    if endpoint == "create_phone_call":
        return _refused_create(message, status)
    return ProviderRejected(message, status=status, endpoint=endpoint)


def _refused_create(message: str, status: int) -> ProviderRejected:
    """A 4xx answer to a create, by what it names: the caller id, the agent, the destination, or else."""
    text = message.lower()
    if "from_number" in text or "from number" in text or "caller id" in text:
        return CallerIdRejected(message, status=status, endpoint="create_phone_call")
    if "agent" in text:
        return AgentNotFound(message, status=status, endpoint="create_phone_call")
    if "to_number" in text or "to number" in text or "invalid destination" in text:
        return InvalidDestination(message, status=status, endpoint="create_phone_call")
    return ProviderRejected(message, status=status, endpoint="create_phone_call")


def _backoff_s(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Jittered exponential backoff before retry number ``attempt`` (0-based): 75-100% of base*2^n, capped."""
    return capped_exponential(attempt, base=base_s, cap=max_s, jitter=lambda: 1 - 0.25 * rng.random())


# -- the client -----------------------------------------------------------------------------------

class _DeadlinePassed(ReadTimeoutError):
    """The whole exchange outlasted its timeout (handled as a read timeout)."""

    def __init__(self) -> None:
        # No pool: urllib3 builds its own errors without one too (see their ``__reduce__``).
        super().__init__(cast("ConnectionPool", None), None, "the answer did not end before the deadline")


def _read_until(resp: urllib3.BaseHTTPResponse, deadline: float) -> bytes:
    """The body of ``resp`` (read with ``preload_content=False``), read before ``deadline`` (``time.monotonic``).

    Each read waits at most the time left; past the deadline the connection is closed (never reused with an
    answer half read) and :class:`_DeadlinePassed` is raised. The connection goes back to the pool otherwise.
    """
    parts: list[bytes] = []
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _DeadlinePassed()
            sock = getattr(getattr(resp, "connection", None), "sock", None)
            if sock is not None:
                sock.settimeout(left)
            part = resp.read1(65536)
            if not part:
                return b"".join(parts)
            parts.append(part)
    except BaseException:
        resp.close()
        raise
    finally:
        resp.release_conn()


class RetellClient:
    """Blocking Retell client; one per process, shared by its threads (every method is thread-safe).

    Requests go through one ``urllib3.PoolManager`` that keeps connections open for reuse. The pool
    belongs to the process that opened it: after a fork the child opens its own on first use and
    leaves the parent's sockets alone (closing them in the child would break the parent's).

    :param config: supplies ``retell_base_url`` (None: the local simulator at :data:`DEFAULT_SIMULATOR_URL`)
        and ``retell_api_key``.
    :param base_url: overrides the config's base URL.
    :param api_key: overrides the config's API key.
    :param timeout_s: whole-request timeout of idempotent requests, seconds; default 20.
    :param create_timeout_s: whole-request timeout of one create-phone-call send, seconds; default
        ``RETELL_CREATE_TIMEOUT_S`` (20).
    :param connect_timeout_s: connection set-up timeout, seconds; default 5.
    :param max_retries: automatic retries of idempotent requests; default 2.
    :param backoff_base_s: first backoff, seconds; default 0.5. ``backoff_max_s``: cap, default 8.
    :param max_retry_after_s: a longer ``retry-after`` is not waited for, the error is raised; default 30.
    :param max_connections: connections kept open for reuse; default 100.
    :param rng: randomness for the jitter (tests pass a seeded one).
    """

    def __init__(self, config: Config, *, base_url: str | None = None, api_key: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, create_timeout_s: float | None = None,
                 connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_base_s: float = DEFAULT_BACKOFF_BASE_S, backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
                 max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS, rng: random.Random | None = None) -> None:
        self.base_url = (base_url or config.retell_base_url or DEFAULT_SIMULATOR_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else config.retell_api_key
        self.timeout_s = timeout_s
        self.create_timeout_s = create_timeout_s if create_timeout_s is not None else config.retell_create_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_after_s = max_retry_after_s
        self.max_connections = max_connections
        self._rng = rng or random.Random()
        self._headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json",
                         "User-Agent": "outdial"}
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        #: Pools by the pid that opened them. A forked child adds its own; the parent's stays referenced,
        #: so it is never garbage-collected (which would close its sockets) in the child.
        self._pools: dict[int, urllib3.PoolManager] = {}

    def __enter__(self) -> RetellClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pool(self) -> urllib3.PoolManager:
        """This process's pool, opened on first use (no lock: a pool lost to a race is simply unused)."""
        pid = os.getpid()
        pool = self._pools.get(pid)
        if pool is None:
            pool = self._pools.setdefault(pid, urllib3.PoolManager(num_pools=4, maxsize=self.max_connections,
                                                                   block=False, retries=False))
        return pool

    def close(self) -> None:
        """Close this process's connections (idempotent; the next request opens new ones)."""
        pool = self._pools.pop(os.getpid(), None)
        if pool is not None:
            pool.clear()

    # -- transport ---------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, endpoint: str, body: Any = None, timeout_s: float,
              to_number: str | None = None, metadata: Mapping[str, Any] | None = None
              ) -> tuple[int, str, Mapping[str, str]]:
        """One HTTP exchange, ended ``timeout_s`` after it started whatever the server does. Transport failures
        raise; for a create, a failure after sending is ambiguous.

        urllib3's ``Timeout(total=...)`` bounds each wait for the socket, not the exchange: an answer that
        trickles in resets it with every byte. So the body is read here a piece at a time, each read given only
        the time left before the deadline (a monotonic instant); past it the request is abandoned (its
        connection closed) and fails as a read timeout does.
        """
        creating = endpoint == "create_phone_call"
        pool = self._pool()
        PROVIDER_REQUESTS.labels(endpoint).inc()
        data = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        headers = self._json_headers if data is not None else self._headers
        deadline = time.monotonic() + timeout_s
        timeout = urllib3.Timeout(total=timeout_s, connect=min(self.connect_timeout_s, timeout_s))
        try:
            resp = pool.request(method, self.base_url + path, body=data, headers=headers, timeout=timeout,
                                retries=False, redirect=False, preload_content=False)
            return resp.status, _read_until(resp, deadline).decode("utf-8", errors="replace"), resp.headers
        except NewConnectionError as exc:  # nothing was sent (a subclass of ConnectTimeoutError: first)
            raise ProviderUnavailable(f"cannot connect to {self.base_url}: {exc}", endpoint=endpoint) from None
        except ConnectTimeoutError:  # nothing was sent
            raise ProviderTimeout(f"no connection within {self.connect_timeout_s} s", endpoint=endpoint) from None
        except ReadTimeoutError:
            message = f"no answer within {timeout_s} s"
            if creating:
                raise CreateOutcomeUnknown(message, to_number=to_number, metadata=dict(metadata or {})) from None
            raise ProviderTimeout(message, endpoint=endpoint) from None
        except (HTTPError, OSError) as exc:
            message = f"connection lost: {type(exc).__name__}: {exc}"
            if creating:
                raise CreateOutcomeUnknown(message, to_number=to_number, metadata=dict(metadata or {})) from None
            raise ProviderUnavailable(message, endpoint=endpoint) from None

    def _exchange(self, method: str, path: str, *, endpoint: str, body: Any = None,
                  idempotent: bool, timeout_s: float, **context: Any) -> tuple[int, str]:
        """Send, map errors, retry idempotent requests. Returns ``(status, text)`` of a 2xx answer."""
        attempt = 0
        while True:
            should_retry: str | None = None
            try:
                status, text, headers = self._send(method, path, endpoint=endpoint, body=body,
                                                   timeout_s=timeout_s, **context)
                if status < 300:
                    return status, text
                should_retry = headers.get("x-should-retry")
                error = error_from_response(status, text, headers, endpoint=endpoint)
                if isinstance(error, CreateOutcomeUnknown):
                    error.to_number = context.get("to_number")
                    error.metadata = dict(context.get("metadata") or {})
                raise error
            except ProviderError as exc:
                delay = self._retry_delay(exc, attempt) if idempotent and should_retry != "false" else None
                self._record_failure(exc, attempt=attempt, will_retry=delay is not None, **context)
                if delay is None:
                    raise
            time.sleep(delay)
            attempt += 1

    def _retry_delay(self, exc: ProviderError, attempt: int) -> float | None:
        """Seconds before resending, or None to give up now."""
        if not exc.retryable or attempt >= self.max_retries:
            return None
        if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
            if exc.retry_after_s > self.max_retry_after_s:
                return None
            return exc.retry_after_s + self._rng.uniform(0, 0.1 * max(exc.retry_after_s, 0.1))
        return _backoff_s(attempt, base_s=self.backoff_base_s, max_s=self.backoff_max_s, rng=self._rng)

    def _record_failure(self, exc: ProviderError, *, attempt: int, will_retry: bool, **context: Any) -> None:
        PROVIDER_ERRORS.labels(exc.kind).inc()
        fields: dict[str, Any] = {"endpoint": exc.endpoint, "status": exc.status, "kind": exc.kind,
                                  "attempt": attempt, "will_retry": will_retry, "error": exc.message[:300]}
        if context.get("to_number"):
            fields["to_number"] = mask_phone(context["to_number"])
        event(log, "provider_request_failed", level=logging.INFO if will_retry else logging.WARNING, **fields)

    # -- endpoints ---------------------------------------------------------------------------------

    def create_phone_call(self, *, from_number: str | None, to_number: str, agent_id: str | None = None,
                          dynamic_variables: Mapping[str, Any] | None = None,
                          metadata: Mapping[str, Any] | None = None, ring_timeout_s: float | None = None,
                          max_call_duration_s: float | None = None,
                          agent_override: Mapping[str, Any] | None = None,
                          idempotency_key: str | None = None,
                          precheck: Callable[[], None] | None = None,
                          max_sends: int = DEFAULT_CREATE_SENDS) -> Call:
        """``POST /v2/create-phone-call`` (201). Parameters: see :func:`build_create_body`.

        :param idempotency_key: with a key, an ambiguous answer (timeout, connection reset, 408/409/5xx,
            unreadable 2xx body) is sent again with the same key, at most ``max_sends`` sends in all, with
            backoff; without one the create is sent once.
        :param precheck: called right before every send; it raises :class:`~shared.errors.DialAborted` to
            stop. Before the first send that propagates (nothing was sent); before a later one the outcome
            of the earlier sends is unknown, so it becomes :class:`~shared.errors.CreateOutcomeUnknown`.

        Raises :class:`~shared.errors.CreateOutcomeUnknown` when the call may exist and this client could
        not find out: send it again later with the same key (or look it up) before ever dialing anew.
        """
        body = build_create_body(from_number=from_number, to_number=to_number, agent_id=agent_id,
                                 dynamic_variables=dynamic_variables, metadata=metadata,
                                 ring_timeout_s=ring_timeout_s, max_call_duration_s=max_call_duration_s,
                                 agent_override=agent_override, idempotency_key=idempotency_key)
        meta = dict(metadata or {})   # carried by every CreateOutcomeUnknown, with the number
        sends = max(1, max_sends) if idempotency_key else 1
        ambiguous: CreateOutcomeUnknown | None = None
        for send in range(sends):
            if send:
                time.sleep(_backoff_s(send - 1, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                                      rng=self._rng))
            if precheck is not None:
                try:
                    precheck()
                except DialAborted as exc:
                    if ambiguous is None:
                        raise
                    raise CreateOutcomeUnknown(f"{ambiguous.message}; not sent again: {exc.reason}",
                                               status=ambiguous.status, to_number=to_number,
                                               metadata=meta) from None
            try:
                _, text = self._exchange("POST", CREATE_PATH, endpoint="create_phone_call", body=body,
                                         idempotent=False, timeout_s=self.create_timeout_s, to_number=to_number,
                                         metadata=meta)
                return Call.from_api(json.loads(text))
            except ValueError as exc:
                ambiguous = CreateOutcomeUnknown(f"unreadable create answer: {exc}", to_number=to_number,
                                                 metadata=meta)
            except CreateOutcomeUnknown as exc:
                ambiguous = exc
                continue
            except ProviderError:
                if ambiguous is not None:
                    # A refusal of this send says nothing of an earlier one, which may have created the call.
                    continue
                raise
            self._record_failure(ambiguous, attempt=send, will_retry=send + 1 < sends, to_number=to_number)
        assert ambiguous is not None
        raise ambiguous

    def _parse_call(self, text: str, endpoint: str) -> Call:
        try:
            return Call.from_api(json.loads(text))
        except ValueError as exc:
            raise ProviderUnavailable(f"unreadable call object: {exc}", endpoint=endpoint) from None

    def get_call(self, call_id: str) -> Call:
        """``GET /v2/get-call/{call_id}`` (200). Raises :class:`~shared.errors.CallNotFound` for an unknown id."""
        _check_call_id(call_id)
        _, text = self._exchange("GET", GET_PATH.format(call_id=call_id), endpoint="get_call",
                                 idempotent=True, timeout_s=self.timeout_s)
        return self._parse_call(text, "get_call")

    def stop_call(self, call_id: str) -> bool:
        """``POST /v2/stop-call/{call_id}`` (204): end an ongoing or ringing call.

        Returns True when the provider accepted the stop, False when it answered that the call had
        already ended (a 400/422 saying so; also what a retried stop that had succeeded sees).
        Raises :class:`~shared.errors.CallNotFound` for an unknown id.
        """
        _check_call_id(call_id)
        try:
            self._exchange("POST", STOP_PATH.format(call_id=call_id), endpoint="stop_call",
                           idempotent=True, timeout_s=self.timeout_s)
        except ProviderRejected as exc:
            if exc.status in (400, 409, 422) and any(h in exc.message.lower() for h in _NOT_ONGOING_HINTS):
                return False
            raise
        return True

    def list_calls(self, *, filter_criteria: Mapping[str, Any] | None = None, limit: int | None = None,
                   pagination_key: str | None = None, sort_order: str | None = None, skip: int | None = None,
                   include_total: bool = False) -> CallPage:
        """``POST /v3/list-calls`` (200): one page.

        :param filter_criteria: Retell's v3 filter object, e.g.
            ``{"to_number": {"type": "string", "op": "eq", "value": "+1..."}}`` (all conditions ANDed).
        :param limit: page size (server default when None).
        :param pagination_key: the previous page's ``pagination_key``.
        :param sort_order: ``"ascending"`` or ``"descending"`` (by start timestamp).
        :param skip: records to skip.
        :param include_total: ask for ``total`` (costs the provider an extra query).
        """
        body: dict[str, Any] = {}
        if filter_criteria:
            body["filter_criteria"] = dict(filter_criteria)
        if limit is not None:
            body["limit"] = int(limit)
        if pagination_key:
            body["pagination_key"] = pagination_key
        if sort_order is not None:
            if sort_order not in ("ascending", "descending"):
                raise ValueError(f"sort_order must be 'ascending' or 'descending', got {sort_order!r}")
            body["sort_order"] = sort_order
        if skip is not None:
            body["skip"] = int(skip)
        if include_total:
            body["include_total"] = True
        _, text = self._exchange("POST", LIST_PATH, endpoint="list_calls", body=body, idempotent=True,
                                 timeout_s=self.timeout_s)
        try:
            data = json.loads(text)
            if isinstance(data, list):  # the legacy v2 shape: a bare array
                data = {"items": data, "has_more": False}
            items = [Call.from_api(item) for item in data.get("items") or []]
        except (ValueError, AttributeError) as exc:
            raise ProviderUnavailable(f"unreadable list answer: {exc}", endpoint="list_calls") from None
        return CallPage(items=items, has_more=data.get("has_more") is True,
                        pagination_key=_str_or_none(data.get("pagination_key")), total=_int_or_none(data.get("total")))

    def iter_calls(self, *, filter_criteria: Mapping[str, Any] | None = None,
                   page_limit: int = DEFAULT_PAGE_LIMIT, sort_order: str | None = None,
                   max_pages: int | None = None) -> Iterator[Call]:
        """Every call matching ``filter_criteria``, page after page. Raises if ``max_pages`` is exceeded."""
        key: str | None = None
        pages = 0
        while True:
            page = self.list_calls(filter_criteria=filter_criteria, limit=page_limit, pagination_key=key,
                                   sort_order=sort_order)
            pages += 1
            yield from page.items
            if not page.has_more or not page.pagination_key or not page.items:
                return
            if max_pages is not None and pages >= max_pages:
                raise ProviderError(f"more than {max_pages} pages of {page_limit} calls; refusing to guess",
                                    endpoint="list_calls")
            key = page.pagination_key

    def find_calls_by_metadata(self, to_number: str, key: str, value: Any, *, since_ms: int | None = None,
                               page_limit: int = DEFAULT_PAGE_LIMIT,
                               max_pages: int = DEFAULT_MAX_PAGES) -> list[Call]:
        """Calls to ``to_number`` whose ``metadata[key] == value``: how an ambiguous create is reconciled.

        The provider filters by ``to_number``; the metadata match is done here, so it does not depend
        on how the provider compares metadata values. Reads every page (raises
        :class:`~shared.errors.ProviderError` past ``max_pages`` rather than answering "none" wrongly).

        :param since_ms: drop calls that started before this instant (ms); calls with no start yet are kept.
        """
        criteria = {"to_number": {"type": "string", "op": "eq", "value": to_number}}
        found: list[Call] = []
        for call in self.iter_calls(filter_criteria=criteria, page_limit=page_limit, max_pages=max_pages):
            if call.metadata.get(key) != value:
                continue
            if since_ms is not None and call.start_timestamp_ms is not None and call.start_timestamp_ms < since_ms:
                continue
            found.append(call)
        return found

    def get_concurrency(self) -> Concurrency:
        """``GET /get-concurrency`` (200)."""
        _, text = self._exchange("GET", CONCURRENCY_PATH, endpoint="get_concurrency", idempotent=True,
                                 timeout_s=self.timeout_s)
        try:
            return Concurrency.from_api(json.loads(text))
        except ValueError as exc:
            raise ProviderUnavailable(f"unreadable concurrency answer: {exc}", endpoint="get_concurrency") from None


def _check_call_id(call_id: str) -> None:
    if not isinstance(call_id, str) or not call_id or "/" in call_id:
        raise ValueError(f"call_id must be a non-empty string without '/', got {call_id!r}")
