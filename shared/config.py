"""One configuration object, read once from the environment.

Every variable is optional; the defaults are the embedded development setup. A malformed
value stops start-up with :class:`ConfigError`, whose message names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytz
from pymongo.errors import ConfigurationError, InvalidURI
from pymongo.uri_parser import parse_uri

from shared.errors import ConfigError

T = TypeVar("T")

#: Redis used when ``REDIS_URL`` is unset (the machine's own server; ``outdial services`` starts one otherwise).
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Default MongoDB database name.
DEFAULT_MONGODB_DB = "outdial"
#: Retell's production API.
RETELL_PRODUCTION_URL = "https://api.retellai.com"
#: API key used with the local simulator when ``RETELL_API_KEY`` is unset.
DEFAULT_DEV_API_KEY = "key_outdial_dev"
#: The original worker's defaults (``MAX_TRIES``, ``RETRY_DELAY_MINUTES``, ``CALL_MAX_DURATION_MINUTES``).
DEFAULT_MAX_TRIES = 3
DEFAULT_RETRY_DELAY_MINUTES = 30.0
DEFAULT_CALL_MAX_DURATION_MINUTES = 10.0
#: Ring time before an unanswered call is given up, seconds.
DEFAULT_RING_TIMEOUT_SECONDS = 30
#: With webhooks, seconds after a call's ring timeout at which a call still not ended is polled.
DEFAULT_PIPELINE_SAFETY_POLL_S = 60.0
#: Real seconds after a conversation ends during which its post-call analysis is still looked for.
DEFAULT_PIPELINE_ANALYSIS_WAIT_S = 600.0
#: Real seconds between two results sweeps (one process of all runs each).
DEFAULT_RESULTS_SWEEP_S = 5.0
#: Days an attempt is kept for the contact log (Chile's collection law asks for two years).
DEFAULT_CONTACT_LOG_RETENTION_DAYS = 730
#: Calling-window zone when a batch names none.
DEFAULT_TIMEZONE = "America/Santiago"
#: Region assumed for phone numbers written without a country code.
DEFAULT_PHONE_REGION = "CL"
#: Provider concurrency slots per account when the account sets none (Retell's pay-as-you-go default).
DEFAULT_CONCURRENCY_LIMIT = 20
#: Batch cache time to live, seconds.
DEFAULT_BATCH_CACHE_TTL = 300.0
#: Oldest a batch's counts (and the rest the admin API computes from its jobs) may be when read, real seconds.
DEFAULT_BATCH_COUNTS_MAX_AGE_S = 2.0
#: Longest a webhook body may take to arrive at the web dyno, real seconds (then 408 and its read slot is freed).
DEFAULT_WEBHOOK_READ_TIMEOUT_S = 5.0
#: Real seconds a job held by a dead process waits before the scheduler recovers it.
DEFAULT_PIPELINE_LEASE_S = 60.0
#: Real seconds before a calling window closes in which no call is started: a dial decided inside the window
#: reaches the provider some milliseconds later (p99 about 0.15 s measured under load), and must still be
#: inside it. On a clock sped up thousands of times this is hours of simulated time: lower it there.
DEFAULT_PIPELINE_DIAL_GUARD_S = 0.5
#: Free retries (provider faults that do not spend an attempt) in a row before the round fails.
DEFAULT_PIPELINE_MAX_FREE_RETRIES = 10
#: Whole-request timeout of one create-phone-call request, real seconds.
DEFAULT_RETELL_CREATE_TIMEOUT_S = 20.0
#: The largest uncertainty of the shared (Redis) time a process may dial with, milliseconds.
DEFAULT_PIPELINE_MAX_SKEW_MS = 2000
#: Real seconds a dial needs beyond one create request: its writes before the send and the margin of the
#: fence (the lease must still hold when the create's answer is due).
DIAL_LEASE_MARGIN_S = 2.0
#: Web dyno port (Heroku sets ``PORT``).
DEFAULT_PORT = 8000


def parse_int(raw: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``raw`` as an integer within the bounds; ``ValueError`` saying what is wrong (also for command lines)."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"must be <= {maximum}, got {value}")
    return value


def parse_float(raw: str, *, positive: bool = False, minimum: float | None = None) -> float:
    """``raw`` as a finite number within the bounds; ``ValueError`` saying what is wrong."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {raw!r}")
    if positive and value <= 0:
        raise ValueError(f"must be > 0, got {raw!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum}, got {raw!r}")
    return value


def _parse_mongodb_uri(raw: str) -> str:
    try:
        parse_uri(raw)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        raise ValueError(f"not a MongoDB URI ({exc})") from None
    return raw


def _parse_redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"must start with redis://, rediss:// or unix://, got {raw!r}")
    try:
        import redis

        redis.connection.parse_url(raw)
    except ValueError as exc:
        raise ValueError(f"not a Redis URL ({exc})") from None
    return raw


def _parse_http_url(raw: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http:// or https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _parse_e164(raw: str) -> str:
    from shared.domain.phones import InvalidPhone, normalize_phone
    from shared.logs import mask_phone

    text = raw.strip()
    if not text.startswith("+"):
        raise ValueError(f"must be an E.164 number with its country code (+ then digits, e.g. +14155550100), "
                         f"got {mask_phone(text)!r}")
    try:
        return normalize_phone(text, "ZZ")
    except InvalidPhone as exc:
        raise ValueError(f"not a dialable E.164 number ({exc.reason}), got {mask_phone(text)!r}") from None


def parse_instant(raw: str) -> datetime:
    """An ISO-8601 instant with its offset (``Z`` for UTC), as an aware UTC datetime; ValueError otherwise."""
    text = raw.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"expected an ISO-8601 instant such as 2026-03-07T15:00:00Z, got {raw!r}") from None
    if value.tzinfo is None:
        raise ValueError(f"the instant needs a UTC offset or Z, got {raw!r}")
    return value.astimezone(UTC)


def _parse_timezone(raw: str) -> str:
    try:
        pytz.timezone(raw)
    except pytz.UnknownTimeZoneError:
        raise ValueError(f"unknown IANA time zone {raw!r}") from None
    return raw


def _parse_region(raw: str) -> str:
    import phonenumbers

    region = raw.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region code {raw!r} (ISO 3166 alpha-2, e.g. CL)")
    return region


def _parse_flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false (1/0, yes/no, on/off), got {raw!r}")


def _parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _parse_log_level(raw: str) -> str:
    value = raw.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return value


def _var(name: str, parse: Callable[[str], Any], default: Any = None, doc: str = "") -> Any:
    return field(default=default, metadata={"env": name, "parse": parse, "doc": doc})


@dataclass(frozen=True, kw_only=True)
class Config:
    """Process configuration. Build it with :func:`load_config`; every field names its variable."""

    mongodb_uri: str | None = _var("MONGODB_URI", _parse_mongodb_uri, doc="MongoDB URI; unset: embedded nx-27017")
    mongodb_db: str = _var("MONGODB_DB", str.strip, DEFAULT_MONGODB_DB, "database name")
    redis_url: str | None = _var(
        "REDIS_URL", _parse_redis_url, doc="Redis URL; unset: 127.0.0.1:6379 if it answers, else bundled redis-server"
    )
    retell_base_url: str | None = _var(
        "RETELL_BASE_URL", _parse_http_url, doc=f"provider API ({RETELL_PRODUCTION_URL}); unset: the local simulator"
    )
    retell_api_key: str = _var(
        "RETELL_API_KEY", str.strip, DEFAULT_DEV_API_KEY, "provider API key, also the webhook key"
    )
    retell_agent_id: str | None = _var("RETELL_AGENT_ID", str.strip, doc="agent used when a batch names none")
    retell_create_timeout_s: float = _var(
        "RETELL_CREATE_TIMEOUT_S", lambda raw: parse_float(raw, positive=True), DEFAULT_RETELL_CREATE_TIMEOUT_S,
        "real seconds one create-phone-call request may take (an ambiguous one is sent again with the same key)",
    )
    call_from_number: str | None = _var("CALL_FROM_NUMBER", _parse_e164,
                                        doc="caller id (E.164) used when a batch names none")
    max_tries: int = _var(
        "MAX_TRIES", lambda raw: parse_int(raw, minimum=1, maximum=100), DEFAULT_MAX_TRIES, "default max_attempts"
    )
    retry_delay_minutes: float = _var(
        "RETRY_DELAY_MINUTES",
        lambda raw: parse_float(raw, minimum=0),
        DEFAULT_RETRY_DELAY_MINUTES,
        "default delay after a failed round",
    )
    call_max_duration_minutes: float = _var(
        "CALL_MAX_DURATION_MINUTES",
        lambda raw: parse_float(raw, positive=True),
        DEFAULT_CALL_MAX_DURATION_MINUTES,
        "default max_call_duration",
    )
    ring_timeout_seconds: int = _var(
        "RING_TIMEOUT_SECONDS",
        lambda raw: parse_int(raw, minimum=5, maximum=300),
        DEFAULT_RING_TIMEOUT_SECONDS,
        "default ring_timeout",
    )
    default_timezone: str = _var("DEFAULT_TIMEZONE", _parse_timezone, DEFAULT_TIMEZONE, "default calling-window zone")
    phone_default_region: str = _var(
        "PHONE_DEFAULT_REGION", _parse_region, DEFAULT_PHONE_REGION, "region for numbers without +country code"
    )
    default_concurrency_limit: int = _var(
        "DEFAULT_CONCURRENCY_LIMIT",
        lambda raw: parse_int(raw, minimum=1, maximum=100_000),
        DEFAULT_CONCURRENCY_LIMIT,
        "provider slots per account",
    )
    batch_cache_ttl: float = _var(
        "BATCH_CACHE_TTL", lambda raw: parse_float(raw, minimum=0), DEFAULT_BATCH_CACHE_TTL, "batch cache TTL, seconds"
    )
    batch_counts_max_age_s: float = _var(
        "BATCH_COUNTS_MAX_AGE_S", lambda raw: parse_float(raw, minimum=0), DEFAULT_BATCH_COUNTS_MAX_AGE_S,
        "oldest a batch's counts in GET /batches/{id} may be, real seconds (0: counted on every read)",
    )
    webhook_read_timeout_s: float = _var(
        "WEBHOOK_READ_TIMEOUT_S", lambda raw: parse_float(raw, positive=True), DEFAULT_WEBHOOK_READ_TIMEOUT_S,
        "longest a webhook body may take to arrive, real seconds (then 408, and its read slot is freed)",
    )
    pipeline_lease_s: float = _var(
        "PIPELINE_LEASE_S", lambda raw: parse_float(raw, minimum=1), DEFAULT_PIPELINE_LEASE_S,
        "real seconds a dead process's job waits before recovery (x 1.5 must exceed RETELL_CREATE_TIMEOUT_S + 2)",
    )
    pipeline_max_free_retries: int = _var(
        "PIPELINE_MAX_FREE_RETRIES", lambda raw: parse_int(raw, minimum=0, maximum=1000),
        DEFAULT_PIPELINE_MAX_FREE_RETRIES,
        "provider faults in a row (concurrency, 429, 5xx before dialing) retried without spending an attempt",
    )
    pipeline_free_retry_base_s: float = _var(
        "PIPELINE_FREE_RETRY_BASE_S", lambda raw: parse_float(raw, positive=True), 5.0,
        "first wait of a free retry, real seconds; it doubles up to 10 minutes, with jitter",
    )
    retell_concurrency_limit: int | None = _var(
        "RETELL_CONCURRENCY_LIMIT", lambda raw: parse_int(raw, minimum=1, maximum=100_000),
        doc="calls in flight across every account (one Retell workspace); unset: read from Retell's get-concurrency",
    )
    pipeline_max_skew_ms: int = _var(
        "PIPELINE_MAX_SKEW_MS", lambda raw: parse_int(raw, minimum=1, maximum=600_000), DEFAULT_PIPELINE_MAX_SKEW_MS,
        "largest uncertainty of the shared (Redis) time with which a process still dials, ms",
    )
    pipeline_dial_guard_s: float = _var(
        "PIPELINE_DIAL_GUARD_S", lambda raw: parse_float(raw, minimum=0), DEFAULT_PIPELINE_DIAL_GUARD_S,
        "real seconds before a window closes in which no call starts (covers the dial reaching the provider)",
    )
    retell_webhooks: bool = _var(
        "RETELL_WEBHOOKS", _parse_flag, False,
        "Retell sends call webhooks to the web dyno: a call's end comes by webhook and polls are a late safety net "
        "(the first PIPELINE_SAFETY_POLL_S after the ring timeout); unset: calls are polled at their likely end",
    )
    pipeline_safety_poll_s: float = _var(
        "PIPELINE_SAFETY_POLL_S", lambda raw: parse_float(raw, minimum=1), DEFAULT_PIPELINE_SAFETY_POLL_S,
        "with RETELL_WEBHOOKS, seconds after a call's ring timeout at which a call no webhook ended is polled",
    )
    pipeline_analysis_wait_s: float = _var(
        "PIPELINE_ANALYSIS_WAIT_S", lambda raw: parse_float(raw, minimum=1), DEFAULT_PIPELINE_ANALYSIS_WAIT_S,
        "real seconds after a conversation ends during which its post-call analysis is still looked for",
    )
    results_sweep_s: float = _var(
        "RESULTS_SWEEP_S", lambda raw: parse_float(raw, minimum=0.1), DEFAULT_RESULTS_SWEEP_S,
        "real seconds between two results sweeps (analyses into contacts' results, result webhook events), one "
        "process of all",
    )
    contact_log_retention_days: int = _var(
        "CONTACT_LOG_RETENTION_DAYS", lambda raw: parse_int(raw, minimum=1, maximum=36_500),
        DEFAULT_CONTACT_LOG_RETENTION_DAYS, "days every attempt is kept for the contact log (then deleted)",
    )
    result_webhooks_allow_private: bool = _var(
        "RESULT_WEBHOOKS_ALLOW_PRIVATE", _parse_flag, False,
        "result webhooks may target loopback and private addresses, over http too (development, a private network)",
    )
    admin_token: str | None = _var("ADMIN_TOKEN", str.strip, doc="admin API bearer token; unset: API refuses all")
    port: int = _var("PORT", lambda raw: parse_int(raw, minimum=1, maximum=65535), DEFAULT_PORT, "web dyno port")
    clock_start: datetime | None = _var("OUTDIAL_CLOCK_START", parse_instant, doc="instant the shared clock starts at")
    clock_speed: float = _var(
        "OUTDIAL_CLOCK_SPEED", lambda raw: parse_float(raw, positive=True), 1.0, "shared clock speed factor"
    )
    clock_anchor: float | None = _var(
        "OUTDIAL_CLOCK_ANCHOR", lambda raw: parse_float(raw, positive=True), doc="real Unix time the clock read START"
    )
    lang: str = _var("OUTDIAL_LANG", _parse_choice("en", "es"), "en", "language of reasons (en or es)")
    log_level: str = _var("LOG_LEVEL", _parse_log_level, "INFO", "log level")
    log_format: str = _var("LOG_FORMAT", _parse_choice("json", "text"), "json", "json lines or text")

    @property
    def retell_is_production(self) -> bool:
        """Whether ``RETELL_BASE_URL`` is Retell's own API."""
        from urllib.parse import urlsplit

        return bool(self.retell_base_url) and urlsplit(self.retell_base_url).hostname == \
            urlsplit(RETELL_PRODUCTION_URL).hostname

    @property
    def dialing_lease_s(self) -> float:
        """Real seconds a ``dialing`` job is leased: the time its create may take before recovery looks."""
        return self.pipeline_lease_s * 1.5

    def check_deployment(self) -> None:
        """Refuse settings that are valid one by one but unsafe together (each process calls it at start).

        Raises :class:`ConfigError` naming the variables: Retell's own API with the public development key
        (anyone could forge webhooks signed with it), or a dialing lease too short for one create request.
        """
        problems = []
        if self.retell_is_production and self.retell_api_key in ("", DEFAULT_DEV_API_KEY):
            problems.append(f"RETELL_API_KEY: must be your Retell API key when RETELL_BASE_URL is "
                            f"{RETELL_PRODUCTION_URL} (unset, it is the public development key)")
        if self.dialing_lease_s < self.retell_create_timeout_s + DIAL_LEASE_MARGIN_S:
            problems.append(f"PIPELINE_LEASE_S: x 1.5 = {self.dialing_lease_s:g} s must cover one create request "
                            f"(RETELL_CREATE_TIMEOUT_S = {self.retell_create_timeout_s:g} s) plus "
                            f"{DIAL_LEASE_MARGIN_S:g} s")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))

    def with_overrides(self, **changes: Any) -> Config:
        from dataclasses import replace

        return replace(self, **changes)


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Read every variable of :class:`Config` from ``env`` (default ``os.environ``).

    Empty values count as unset. Raises :class:`ConfigError` naming every malformed variable.
    """
    source = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    for f in fields(Config):
        name = f.metadata["env"]
        raw = source.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Config(**values)


def describe_variables() -> list[tuple[str, str, str]]:
    """``(variable, default, meaning)`` for every setting, for ``outdial config`` and the README."""
    rows = []
    for f in fields(Config):
        default = "" if f.default is None else str(f.default)
        rows.append((f.metadata["env"], default, f.metadata["doc"]))
    return rows


_config: Config | None = None


def get_config() -> Config:
    """The process's configuration, read from the environment on first use."""
    global _config
    if _config is None:
        _config = load_config()
    return _config


def set_config(config: Config | None) -> None:
    """Replace the process's configuration (tests, or a command that resolved embedded services)."""
    global _config
    _config = config


@contextmanager
def use_config(config: Config | None) -> Iterator[Config | None]:
    """Make ``config`` the process's configuration inside the block (None: read from the environment on first
    use), then put back the one before it. Blocks nest: each restores what it found."""
    global _config
    previous = _config
    _config = config
    try:
        yield config
    finally:
        _config = previous
