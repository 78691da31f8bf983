"""Routes: discovery, service calls, feedback, health. Thin: decode, delegate, encode."""

from __future__ import annotations

import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, UnsupportedMediaType

from cds_service import deadline
from cds_service.fhir.selective import MalformedJSON, decode_hook_body
from cds_service.http.errors import error_response, operation_outcome
from cds_service.logs import current_request_id, log_event
from cds_service.pipeline import PrefetchUnavailable
from cds_service.runtime import Runtime
from cds_service.storage.db import FeedbackEntry
from cds_service.validation.request import RequestError, check

bp = Blueprint("cds", __name__)
log = logging.getLogger("cds_service.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# RFC 3339 section 5.6 date-time, which CDS Hooks 2.0 requires for outcomeTimestamp. Checked
# before parsing because datetime.fromisoformat also takes other ISO 8601 forms (week dates,
# basic format, a space or any other character as separator, no seconds). ASCII digits only
# ([0-9], not \d, which matches any Unicode digit); the ABNF is case-insensitive, so "t" and
# "z" are accepted as RFC 3339 allows. Used with fullmatch: "$" would let a final "\n" through.
_RFC3339_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def runtime() -> Runtime:
    return current_app.extensions["cds"]


def read_body() -> bytes | bytearray:
    """The request body, refused with a clear 4xx when it is not JSON or cannot be read."""
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise UnsupportedMediaType()
    try:
        length = request.content_length
        if length is not None:
            raw: bytes | bytearray = _read_exactly(length)
        else:
            raw = request.get_data(cache=False)
    except HTTPException:
        raise
    except Exception as exc:  # the server's body reader refused the framing (a bad chunk size)
        raise RequestError(400, "unreadable-body",
                           "the request body could not be read: malformed framing") from exc
    limit = request.max_content_length
    if limit is not None and request.content_length is None and len(raw) >= limit:
        # A chunked body is cut at the limit by Werkzeug without an error: if it filled the
        # limit, it did not fit (one of exactly the limit is refused too: it cannot be told
        # apart without reading past the limit).
        raise RequestEntityTooLarge()
    if not raw or raw.isspace():  # not raw.strip(): that would copy a large body
        raise RequestError(400, "invalid-json", "request body is empty")
    return raw


_READ_STEP = 256 * 1024


def _read_exactly(length: int) -> bytearray:
    """Read a body of known length into one buffer: reading it in chunks and joining them (what
    ``get_data`` does) holds the body twice at its peak. Steps are bounded because gunicorn's
    body reader buffers and copies whatever one read asks for. ``request.stream`` refuses a body
    over MAX_CONTENT_LENGTH with 413 before anything is read."""
    stream = request.stream
    buffer = bytearray(length)
    filled = 0
    with memoryview(buffer) as view:
        while filled < length:
            count = stream.readinto(view[filled:filled + _READ_STEP])
            if not count:
                break
            filled += count
    if filled < length:
        del buffer[filled:]  # a client that stopped early: the decoder will say what is wrong
    return buffer


def json_body() -> Any:
    try:
        return orjson.loads(read_body())
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "invalid-json", "request body is not valid JSON") from exc


def hook_body() -> Any:
    """A hook request's body, its prefetch Bundles as skeletons (``fhir/selective.py``): most
    of a large chart is never built as Python objects."""
    try:
        return decode_hook_body(read_body())
    except MalformedJSON as exc:
        raise RequestError(400, "invalid-json", "request body is not valid JSON") from exc


@bp.get("/cds-services")
def discovery() -> Response:
    services = [s.discovery() for s in runtime().knowledge.services.values()]
    return jsonify({"services": services})


@bp.post("/cds-services/<service_id>")
def call_service(service_id: str) -> Response:
    rt = runtime()
    rt.pipeline.service(service_id)  # 404 before reading the body
    g.log_fields["service"] = service_id
    body = hook_body()
    if isinstance(body, dict) and isinstance(body.get("hook"), str):
        g.log_fields["hook"] = body["hook"][:64]
    try:
        result = rt.pipeline.call(service_id, body)
    except MalformedJSON as exc:  # a resource orjson refuses although msgspec took it
        raise RequestError(400, "invalid-json", "request body is not valid JSON") from exc
    except deadline.BudgetExceeded as exc:
        raise RequestError(
            413, "request-too-complex",
            "the request holds more data or free text than the service can evaluate within "
            "CDS_COMPUTE_BUDGET_SECONDS",
        ) from exc
    except PrefetchUnavailable as exc:
        keys = [f.key for f in exc.failures]
        g.log_fields["failed_keys"] = {f.key: f.reason for f in exc.failures}
        issues = [
            operation_outcome(412, "prefetch-unavailable",
                              f"prefetch key '{f.key}' could not be obtained ({f.reason})",
                              expressions=[f"prefetch.{f.key}"])["issue"][0]
            for f in exc.failures
        ]
        response = jsonify(operation_outcome(412, "prefetch-unavailable", "", issues=issues))
        response.status_code = 412
        g.log_fields["missing"] = keys
        _notify("prefetch_failed", service_id, keys)
        return response
    if result.snoozed or result.snooze_returned:
        g.log_fields.update(snoozed=result.snoozed, snooze_returned=result.snooze_returned)
    if result.bookkeeping_skipped:
        g.log_fields["bookkeeping_skipped"] = True
    g.log_fields.update(
        cards=[c.recommendation_id for c in result.cards],
        timings_ms=result.timings_ms,
        counts=result.counts,
        fetched_keys=result.fetched_keys,
    )
    _notify("hook_result", service_id, result)
    return jsonify(result.body)


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    rt = runtime()
    rt.pipeline.service(service_id)
    g.log_fields["service"] = service_id
    body = json_body()
    check("feedback.schema.json", body)
    entries = []
    for i, item in enumerate(body["feedback"]):
        timestamp = _parse_rfc3339(item["outcomeTimestamp"])
        if timestamp is None:
            raise RequestError(400, "invalid-request",
                               f"feedback.{i}.outcomeTimestamp: not an RFC 3339 date-time "
                               "(e.g. 2026-01-31T10:15:00Z or 2026-01-31T11:15:00.5+01:00)")
        reason = (item.get("overrideReason") or {}).get("reason") or {}
        entries.append(
            FeedbackEntry(
                service_id=service_id,
                card_uuid=item["card"],
                outcome=item["outcome"],
                accepted_suggestions=tuple(s["id"] for s in item.get("acceptedSuggestions", ())),
                override_reason_system=reason.get("system"),
                override_reason_code=reason.get("code"),
                override_comment=(item.get("overrideReason") or {}).get("userComment"),
                outcome_timestamp=timestamp,
            )
        )
    stored = rt.database.store_feedback(entries, datetime.now(UTC))
    g.log_fields.update(feedback_received=len(entries), feedback_stored=stored)
    snoozer = rt.pipeline.snoozer
    if snoozer is not None:
        try:
            snoozed = snoozer.record_from_feedback(entries, rt.clock())
        except Exception:  # the feedback is stored; a snooze not started only shows the card
            log_event(log, "could not start snoozes", logging.ERROR, exc_info=True)
            snoozed = []
        if snoozed:
            g.log_fields["snoozes_started"] = snoozed
            _notify("snooze_started", service_id, snoozed)
    _notify("feedback", service_id, entries)
    return jsonify({"received": len(entries), "stored": stored})


@bp.get("/healthz")
def healthz() -> Response:
    rt = runtime()
    return jsonify({"status": "ok", "recommendations": len(rt.knowledge.recommendations)})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the database answers and the knowledge is loaded. A load balancer or
    Kubernetes takes an instance that is not ready out of rotation; /healthz stays liveness
    (a database outage must not get every instance restarted)."""
    rt = runtime()
    checks: dict[str, str] = {}
    try:
        rt.database.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = "unavailable"
        g.log_fields["database_error"] = type(exc).__name__
    knowledge = rt.knowledge
    checks["knowledge"] = "ok" if knowledge.services and knowledge.recommendations else "missing"
    ready = all(v == "ok" for v in checks.values())
    response = jsonify({"status": "ready" if ready else "not-ready", **checks})
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = "5"
    return response


def _parse_rfc3339(value: str) -> datetime | None:
    """The instant as UTC, or None when ``value`` is not an RFC 3339 date-time that names a real
    instant the database can store (month 13, 24:00, a leap second :60, before year 1 in UTC)."""
    if not _RFC3339_DATE_TIME.fullmatch(value):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        return None


def _notify(event: str, service_id: str, payload: Any) -> None:
    for listener in current_app.extensions.get("cds_listeners", ()):
        listener(event, service_id, payload)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        g.log_fields["error"] = exc.code
        return error_response(exc.status, exc.code, exc.message)

    @app.before_request
    def start_request() -> None:
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        current_request_id.set(g.request_id)
        g.log_fields = {}

    @app.teardown_request
    def forget_request_id(_exc: BaseException | None) -> None:
        current_request_id.set(None)

    @app.after_request
    def finish_request(response: Response) -> Response:
        started = getattr(g, "started", None)
        duration = round((time.perf_counter() - started) * 1000, 2) if started else None
        response.headers["X-Request-Id"] = getattr(g, "request_id", "")
        if request.method != "OPTIONS":
            log_event(log, "request", request_id=getattr(g, "request_id", None),
                      method=request.method, path=request.url_rule.rule if request.url_rule
                      else "(unmatched)", status=response.status_code, duration_ms=duration,
                      **getattr(g, "log_fields", {}))
        return response
