"""The foot-drop timeline, a SMART on FHIR app, served at /app/.

- ``GET  /app/`` and ``/app/launch.html`` and their assets: the built app (``app/dist``, made by
  ``npm run build`` in ``app/``; ``make app``).
- ``GET  /app/api/config``: the SMART client id and scopes, and the FHIR queries the app runs
  (the patient-view service's own prefetch templates, so the app reads what a hook call reads).
- ``POST /app/api/evaluate``: ``{"patientId": ..., "resources": [...]}`` (what the app read with
  the user's token) -> ``{"timeline": ..., "cards": [...]}``, computed by the same pipeline as
  a patient-view call. The service never fetches FHIR for the app and stores nothing.

Every answer carries a strict CSP (scripts and styles from this origin only, connections to this
origin plus CDS_SMART_CONNECT_SRC, framing by CDS_SMART_FRAME_ANCESTORS). Off with
CDS_SMART_APP=false.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, send_from_directory
from werkzeug.exceptions import NotFound

from cds_service import deadline
from cds_service.http.errors import error_response
from cds_service.http.page_headers import harden_page
from cds_service.http.preview import render_markdown
from cds_service.http.routes import json_body
from cds_service.render.timeline import build_timeline, load_spec
from cds_service.runtime import Runtime
from cds_service.validation.request import RequestError

bp = Blueprint("smart_app", __name__)
PATIENT_VIEW = "patient-view"
MAX_RESOURCES = 20_000
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
EHR_LAUNCH_SCOPE = "launch openid fhirUser patient/*.read"
STANDALONE_LAUNCH_SCOPE = "launch/patient openid fhirUser patient/*.read"
ASSETS = frozenset({"index.html", "launch.html", "launch.js", "timeline.js", "timeline.css",
                    "launch.js.LEGAL.txt", "timeline.js.LEGAL.txt"})


def runtime() -> Runtime:
    return current_app.extensions["cds"]


def content_security_policy() -> str:
    settings = runtime().settings
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' {settings.smart_connect_src}; base-uri 'none'; "
            f"form-action 'none'; frame-ancestors {settings.smart_frame_ancestors}")


def _secure(response: Response) -> Response:
    return harden_page(response, content_security_policy())


def _app_dir() -> Path:
    return Path(runtime().settings.smart_app_dir)


@bp.get("/app/")
@bp.get("/app/<name>")
def asset(name: str = "index.html") -> Response:
    if name not in ASSETS:
        raise NotFound()
    folder = _app_dir()
    if not (folder / name).is_file():
        return _secure(error_response(
            503, "app-not-built",
            "the SMART app is not built: run `make app` (npm ci and npm run build in app/)"))
    response = send_from_directory(folder, name, max_age=0)
    return _secure(response)


def _patient_view_queries() -> list[dict[str, Any]]:
    rt = runtime()
    service = next((s for s in rt.knowledge.services.values() if s.hook == PATIENT_VIEW), None)
    if service is None:
        return []
    return [
        {"key": spec.key, "query": spec.template, "required": spec.on_failure == "fail"}
        for spec in service.prefetch
        if not spec.template.startswith("Patient/")  # the app reads the Patient itself
    ]


@bp.get("/app/api/config")
def config() -> Response:
    settings = runtime().settings
    response = jsonify({
        "clientId": settings.smart_client_id,
        "ehrLaunchScope": EHR_LAUNCH_SCOPE,
        "standaloneLaunchScope": STANDALONE_LAUNCH_SCOPE,
        "queries": _patient_view_queries(),
    })
    return _secure(response)


def _parse_evaluate(body: Any) -> tuple[str, list[Any]]:
    if not isinstance(body, dict):
        raise RequestError(400, "invalid-request", 'send {"patientId": ..., "resources": [...]}')
    patient_id = body.get("patientId")
    if not isinstance(patient_id, str) or not _FHIR_ID.fullmatch(patient_id):
        raise RequestError(400, "invalid-request", "patientId: a FHIR id is required")
    resources = body.get("resources")
    if not isinstance(resources, list):
        raise RequestError(400, "invalid-request",
                           "resources: a list of FHIR resources is required")
    if len(resources) > MAX_RESOURCES:
        raise RequestError(413, "too-many-resources",
                           f"resources: at most {MAX_RESOURCES} resources per call")
    if not all(isinstance(r, dict) for r in resources):
        raise RequestError(400, "invalid-request", "resources: every item must be a JSON object")
    return patient_id, resources


def card_for_app(card: dict[str, Any]) -> dict[str, Any]:
    source = card.get("source", {})
    return {
        "uuid": card["uuid"],
        "summary": card["summary"],
        "indicator": card["indicator"],
        "detailHtml": render_markdown(card.get("detail", "")),
        "recommendation": source.get("topic", {}).get("code"),
        "source": {"label": source.get("label"), "url": source.get("url")},
    }


@bp.post("/app/api/evaluate")
def evaluate() -> Response:
    rt = runtime()
    try:
        patient_id, resources = _parse_evaluate(json_body())
    except RequestError as exc:
        return _secure(error_response(exc.status, exc.code, exc.message))
    try:
        facts, rendered = rt.pipeline.patient_view_from_resources(patient_id, resources)
    except deadline.BudgetExceeded:
        return _secure(error_response(
            413, "request-too-complex",
            "the record holds more data than the service can evaluate within "
            "CDS_COMPUTE_BUDGET_SECONDS"))
    g.log_fields.update(app_resources=len(resources),
                        cards=[r.recommendation_id for r in rendered])
    timeline = build_timeline(facts, load_spec(rt.settings.cards_dir))
    response = jsonify({"timeline": timeline, "cards": [card_for_app(r.card) for r in rendered]})
    response.headers["Cache-Control"] = "no-store"
    return _secure(response)


def init_app(app: Flask) -> None:
    if not app.extensions["cds"].settings.smart_app_enabled:
        return
    app.register_blueprint(bp)
