"""Structured logging: one JSON object per line, phone numbers and secrets masked.

Use ``log = get_logger(__name__)`` and ``log.info("event_name", extra={"job_id": ..., "phone": ...})``
or the shorthand ``event(log, "event_name", job_id=..., phone=...)``. Every string that reaches a
handler goes through :func:`redact`: E.164-looking numbers keep their country prefix and last two
digits, and the configured API key and admin token never appear.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

#: A number written with ``+`` (E.164 or formatted), or a bare run of 8-12 digits; dates, times,
#: decimals, millisecond timestamps (13 digits) and digits inside identifiers (a call id such as
#: ``call_481bc4c431864e0d``) are left alone.
_PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d|(?<![\w.:/-])\d{8,12}(?![\w.:/-])")
_SECRET_LIKE = re.compile(r"\b(key_[A-Za-z0-9]{6})[A-Za-z0-9_-]*")
_secrets: set[str] = set()

#: LogRecord attributes that are not user fields.
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def mask_phone(text: str) -> str:
    """``+56912345678`` -> ``+569*******78``: enough to tell numbers apart, not to dial one."""
    digits = [c for c in text if c.isdigit()]
    if len(digits) < 7:
        return text
    keep_head = 3 if text.startswith("+") else 2
    head = "".join(digits[:keep_head])
    tail = "".join(digits[-2:])
    return ("+" if text.startswith("+") else "") + head + "*" * (len(digits) - keep_head - 2) + tail


def register_secret(value: str | None) -> None:
    """Never print ``value`` (an API key, a token) in a log line."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    """Mask phone numbers and registered secrets in ``text``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, secret[:4] + "****")
    text = _SECRET_LIKE.sub(lambda m: m.group(1)[:4] + "****", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_clean(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, event, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = _clean(value)
        if record.exc_info:
            payload["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``ts level logger event k=v ...`` for humans; same redaction."""

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={_clean(v)}" for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
        )
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {redact(record.getMessage())} {extras}"
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line.rstrip()


class _Handler(logging.StreamHandler[Any]):
    """The handler :func:`configure_logging` installs (``_outdial``: replaced by the next call)."""

    _outdial = True


class _StderrHandler(_Handler):
    """The handler writing to whatever ``sys.stderr`` is when a line is written, as logging's own last-resort
    handler does: a thread that logs after a test harness put its captured stream back (and closed it) still
    writes to a live one."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def configure_logging(level: str = "INFO", fmt: str = "json", *, stream: Any = None, replace: bool = False) -> None:
    """Install the formatter on the root logger (idempotent).

    :param replace: also remove handlers others installed (the dramatiq CLI's), so every line has one format.
    """
    root = logging.getLogger()
    handler = _Handler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for old in [h for h in root.handlers if replace or getattr(h, "_outdial", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("pymongo", "urllib3", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def configure_from(config: Any, *, replace: bool = False) -> None:
    """Configure logging from a :class:`shared.config.Config` and register its secrets."""
    register_secret(config.retell_api_key)
    register_secret(config.admin_token)
    configure_logging(config.log_level, config.log_format, replace=replace)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def event(logger: logging.Logger, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log the event ``name`` with structured ``fields``."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra=fields)
