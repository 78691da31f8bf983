"""Structured JSON-lines logging.

Log calls pass only whitelisted, non-clinical fields (ids we generate, service ids, statuses,
durations, counts, reason codes). Patient data, access tokens and JWTs are never handed to a
logger; as a second line of defence the formatter masks anything that looks like a bearer token
or a JWT.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

_JWT_LIKE = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_BEARER = re.compile(r"(?i)bearer\s+[\w.~+/=-]+")


def scrub(text: str) -> str:
    return _BEARER.sub("Bearer [redacted]", _JWT_LIKE.sub("[redacted-jwt]", text))


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry[key] = scrub(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: messages and tracebacks can quote request content.
            entry["exception"] = record.exc_info[0].__name__
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_cds_json", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._cds_json = True  # type: ignore[attr-defined]
        handler.setFormatter(JsonLineFormatter())
        root.addHandler(handler)
    root.setLevel(level)
    # Libraries that would log URLs with query strings (patient ids) or headers stay quiet.
    for noisy in ("urllib3", "requests", "werkzeug", "alembic", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    *,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    logger.log(level, event, exc_info=exc_info, extra={"fields": fields})
