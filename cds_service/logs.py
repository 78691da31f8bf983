"""Structured JSON-lines logging.

Log calls pass only whitelisted, non-clinical fields (ids we generate, service ids, statuses,
durations, counts, reason codes). Patient data, access tokens and JWTs are never handed to a
logger; as a second line of defence the formatter masks anything that looks like a bearer token
or a JWT, at any depth of the structured fields.

Libraries log what they like: urllib3 warns with the full URL of a FHIR request (whose path and
query name the patient) when a server sends a malformed header, and logs every request line at
DEBUG. Their records are rewritten at the source (a filter on each library logger, so every
handler sees the redacted text) with URL paths, queries and request lines removed, and the JSON
formatter does the same for any other non-``cds_service`` logger.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

_JWT_LIKE = re.compile(r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*")
_BEARER = re.compile(r"(?i)bearer\s+[\w.~+/=-]+")


# scheme://host[:port] is kept (which server); the path, query and fragment are dropped
_URL = re.compile(r"(?i)\b(https?://[^/\s'\"?#]+)[/?#][^\s'\")\]]*")
_REQUEST_LINE = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) /[^\s\"']*")
THIRD_PARTY_LOGGERS = (
    "urllib3", "urllib3.connection", "urllib3.connectionpool", "urllib3.response",
    "urllib3.poolmanager", "urllib3.util.retry", "requests", "werkzeug", "flask_cors",
    "flask_cors.core", "flask_cors.extension", "gunicorn.error", "gunicorn.access",
)


def scrub(text: str) -> str:
    return _BEARER.sub("Bearer [redacted]", _JWT_LIKE.sub("[redacted-jwt]", text))


def redact_urls(text: str) -> str:
    return _REQUEST_LINE.sub(r"\1 [path redacted]", _URL.sub(r"\1/[redacted]", text))


class RedactLibraryRecord(logging.Filter):
    """Rewrites a library's record in place: message formatted, URLs and tokens removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a library's own bad format string: keep what can be shown
            message = str(record.msg)
        record.msg = scrub(redact_urls(message))
        record.args = ()
        return True


def _scrub_value(value: Any, depth: int = 0) -> Any:
    """Mask tokens in strings at any depth of a structured field (lists, dicts, their keys)."""
    if isinstance(value, str):
        return scrub(value)
    if depth >= 8:
        return value if isinstance(value, int | float | bool) or value is None else "[deep]"
    if isinstance(value, dict):
        return {scrub(str(k)): _scrub_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v, depth + 1) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))  # anything else is logged by its str(): mask that too


# The id of the HTTP request being handled (set by the HTTP layer): every line logged while
# handling it carries it, so a warning from deep in the pipeline can be matched to its request.
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": scrub(message if record.name.startswith("cds_service")
                           else redact_urls(message)),
        }
        request_id = getattr(record, "request_id", None) or current_request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry[key] = _scrub_value(value)
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
    for name in THIRD_PARTY_LOGGERS:
        library = logging.getLogger(name)
        if not any(isinstance(f, RedactLibraryRecord) for f in library.filters):
            library.addFilter(RedactLibraryRecord())


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    *,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    logger.log(level, event, exc_info=exc_info,
               extra={"fields": fields, "request_id": current_request_id.get()})
