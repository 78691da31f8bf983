"""GET /metrics in the Prometheus text format (prometheus-client).

What is counted (label values are bounded: service ids and prefetch keys come from cards/, unknown
service ids are reported as ``unknown``):

- ``cds_http_requests_total{endpoint,service,status}`` and
  ``cds_http_request_duration_seconds{endpoint,service,status}`` (histogram) for every request;
- ``cds_cards_total{service,recommendation,indicator}``: cards returned;
- ``cds_fhir_fallback_calls_total{service,key}``: prefetch keys the service fetched itself from
  ``fhirServer``: every key of a call that succeeded, and the failed keys of a call that answered
  412 (the pipeline does not report the keys that were fetched in a call that then failed);
- ``cds_fhir_fallback_failures_total{service,key,reason}``: keys that could not be obtained and
  made a call answer 412 (reason ``no-fhir-server`` etc. count here but not as calls);
- ``cds_feedback_total{service,outcome}``: feedback entries received;
- ``cds_cards_snoozed_total{service,recommendation}``: cards hidden by a snooze;
- ``cds_snooze_returned_total{service,recommendation}``: snoozed critical cards shown again because
  of newer evidence;
- ``cds_snoozes_started_total{service,recommendation}``: overrides that started a snooze.
- ``cds_bookkeeping_skipped_total{service}``: hook calls answered with cards whose issued-card
  record could not be written (database unavailable).

Each app has its own ``CollectorRegistry`` (tests build several apps in one process). Under
gunicorn with several workers set ``PROMETHEUS_MULTIPROC_DIR`` to an empty, writable directory
(wiped at each start): every worker writes its values there and /metrics aggregates them all.
Disable the endpoint with ``CDS_METRICS=false``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# failure reasons decided before any request reaches the FHIR server
NOT_A_CALL = frozenset({"no-fhir-server", "unresolved-token", "fhir-server-not-https"})
disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
_ENDPOINTS = {
    "/cds-services": "discovery",
    "/cds-services/<service_id>": "service",
    "/cds-services/<service_id>/feedback": "feedback",
    "/healthz": "health",
    "/readyz": "readiness",
    "/metrics": "metrics",
}


class Metrics:
    def __init__(self, known_services: set[str]) -> None:
        self.known_services = known_services
        self.registry = CollectorRegistry(auto_describe=True)
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiproc_dir:
            os.makedirs(self.multiproc_dir, exist_ok=True)
        r = self.registry
        self.requests = Counter("cds_http_requests", "HTTP requests answered",
                                ["endpoint", "service", "status"], registry=r)
        self.latency = Histogram("cds_http_request_duration_seconds",
                                 "Time to answer an HTTP request",
                                 ["endpoint", "service", "status"], buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.cards = Counter("cds_cards", "Cards returned, per recommendation id",
                             ["service", "recommendation", "indicator"], registry=r)
        self.fallback_calls = Counter(
            "cds_fhir_fallback_calls",
            "Prefetch keys the service fetched itself from fhirServer (success or failure)",
            ["service", "key"], registry=r)
        self.fallback_failures = Counter(
            "cds_fhir_fallback_failures",
            "Prefetch keys that could not be obtained, so the call answered 412",
            ["service", "key", "reason"], registry=r)
        self.feedback = Counter("cds_feedback", "Feedback entries received",
                                ["service", "outcome"], registry=r)
        self.snoozed = Counter("cds_cards_snoozed", "Cards hidden by a snooze",
                               ["service", "recommendation"], registry=r)
        self.snooze_returned = Counter(
            "cds_snooze_returned",
            "Snoozed critical cards shown again because of evidence newer than the override",
            ["service", "recommendation"], registry=r)
        self.snoozes_started = Counter("cds_snoozes_started", "Overrides that started a snooze",
                                       ["service", "recommendation"], registry=r)
        self.bookkeeping_skipped = Counter(
            "cds_bookkeeping_skipped",
            "Hook calls answered whose issued cards could not be recorded (database unavailable)",
            ["service"], registry=r)

    def service_label(self, service_id: str | None) -> str:
        if not service_id:
            return ""
        return service_id if service_id in self.known_services else "unknown"

    # -- listener for the events routes.py emits -------------------------------------------------
    def __call__(self, event: str, service_id: str, payload: Any) -> None:
        service = self.service_label(service_id)
        if event == "hook_result":
            for rendered in payload.cards:
                self.cards.labels(service, rendered.recommendation_id,
                                  rendered.card.get("indicator", "")).inc()
            for key in payload.fetched_keys:
                self.fallback_calls.labels(service, key).inc()
            for rec_id in payload.snoozed:
                self.snoozed.labels(service, rec_id).inc()
            for rec_id in payload.snooze_returned:
                self.snooze_returned.labels(service, rec_id).inc()
            if payload.bookkeeping_skipped:
                self.bookkeeping_skipped.labels(service).inc()
        elif event == "snooze_started":
            for rec_id in payload:
                self.snoozes_started.labels(service, rec_id).inc()
        elif event == "prefetch_failed":
            reasons = (getattr(g, "log_fields", None) or {}).get("failed_keys") or {}
            for key in payload:
                reason = str(reasons.get(key, "unknown"))
                if reason not in NOT_A_CALL:
                    self.fallback_calls.labels(service, key).inc()
                self.fallback_failures.labels(service, key, reason).inc()
        elif event == "feedback":
            for entry in payload:
                self.feedback.labels(service, entry.outcome).inc()

    # -- exposition ------------------------------------------------------------------------------
    def exposition(self) -> bytes:
        if self.multiproc_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiproc_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)


def _endpoint(rule: str | None) -> str:
    if rule is None:
        return "unmatched"
    if rule in _ENDPOINTS:
        return _ENDPOINTS[rule]
    return "preview" if rule.startswith("/preview") else "other"


def init_app(app: Flask) -> None:
    runtime = app.extensions["cds"]
    if not runtime.settings.metrics_enabled:
        return
    metrics = Metrics(set(runtime.knowledge.services))
    app.extensions["cds_metrics"] = metrics
    app.extensions.setdefault("cds_listeners", []).append(metrics)

    @app.after_request
    def count_request(response: Response) -> Response:
        if request.method == "OPTIONS":
            return response
        started = getattr(g, "started", None)  # set by routes.py's before_request
        rule = request.url_rule.rule if request.url_rule is not None else None
        service = metrics.service_label((request.view_args or {}).get("service_id"))
        labels = (_endpoint(rule), service, str(response.status_code))
        metrics.requests.labels(*labels).inc()
        if started is not None:
            metrics.latency.labels(*labels).observe(max(0.0, time.perf_counter() - started))
        return response

    def metrics_endpoint() -> Response:
        data = current_app.extensions["cds_metrics"].exposition()
        return Response(data, mimetype=None, content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics_endpoint, methods=["GET"])
