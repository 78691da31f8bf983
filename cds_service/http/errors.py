"""Every error is JSON: a FHIR OperationOutcome with a stable code, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import RequestRedirect

from cds_service.logs import log_event

log = logging.getLogger("cds_service.http")
ERROR_CODE_SYSTEM = "https://footdrop-cds.example.org/fhir/CodeSystem/error"
# Seconds a client should wait before retrying when the database is unavailable.
DATABASE_RETRY_AFTER_SECONDS = 5
ISSUE_TYPES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
               405: "not-supported", 412: "incomplete", 413: "too-long", 415: "not-supported",
               429: "throttled", 500: "exception", 503: "transient"}


def operation_outcome(
    status: int, code: str, message: str, expressions: list[str] | None = None,
    issues: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    issue: dict[str, Any] = {
        "severity": "error",
        "code": ISSUE_TYPES.get(status, "processing"),
        "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}], "text": message},
        "diagnostics": message,
    }
    if expressions:
        issue["expression"] = expressions
    return {"resourceType": "OperationOutcome", "issue": issues or [issue]}


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    body = operation_outcome(status, code, message, **extra)
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.before_request
    def no_routing_redirects() -> None:
        # Routing's redirects (merged slashes, a missing trailing slash) answer in HTML with a
        # Location built from the caller's Host header, and Flask returns them as they are:
        # they never reach an error handler. The service has no alternate spellings of a path,
        # so the path asked for does not exist.
        if isinstance(request.routing_exception, RequestRedirect):
            request.routing_exception = NotFound()

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        codes = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large",
                 415: "unsupported-media-type", 400: "bad-request"}
        messages = {
            404: "no such endpoint",
            405: "method not allowed on this endpoint",
            413: "request body is larger than the configured limit (CDS_MAX_BODY_MB)",
            415: "send the request as JSON (Content-Type: application/json)",
        }
        response = error_response(status, codes.get(status, "http-error"),
                                  messages.get(status, exc.name))
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(DBAPIError)
    def database_unavailable(exc: DBAPIError) -> Response:
        # The database is down, unreachable or locked. Feedback is never acknowledged without
        # being stored, and with CDS_AUTH=required the JWT replay check fails closed: both
        # answer 503 and the caller retries (feedback is idempotent).
        log_event(log, "database unavailable", logging.ERROR, path=request.path,
                  error=type(exc.orig).__name__ if exc.orig is not None else type(exc).__name__)
        g.log_fields = {**getattr(g, "log_fields", {}), "error": "database-unavailable"}
        response = error_response(
            503, "database-unavailable",
            "the service's database is unavailable; nothing was stored, retry later")
        response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log_event(log, "unhandled error", logging.ERROR, exc_info=True,
                  path=request.path, error=type(exc).__name__)
        return error_response(500, "internal-error", "the service failed to process the request")
