"""Foot-drop clinical decision support, served over CDS Hooks 2.0."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import requests
from flask import Flask

from cds_service.clock import Clock, system_clock
from cds_service.config import Settings
from cds_service.fhir.record import warm_models
from cds_service.knowledge.loader import load_knowledge
from cds_service.logs import configure_logging, log_event
from cds_service.runtime import Runtime
from cds_service.storage.db import Database

__version__ = "0.1.0"
log = logging.getLogger("cds_service")


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    clock: Clock | None = None,
    session_factory: Callable[[Settings], requests.Session] | None = None,
    migrate: bool = True,
) -> Flask:
    """Build the WSGI app. ``test_config`` replaces the environment (tests stay hermetic)."""
    settings = (
        Settings.from_mapping(test_config) if test_config is not None else Settings.from_env()
    )
    configure_logging(settings.log_level)
    knowledge = load_knowledge(settings.cards_dir)
    warm_models()
    database = Database(settings.database_url)
    if migrate:
        database.migrate()

    runtime = Runtime(settings=settings, knowledge=knowledge, database=database,
                      clock=clock or system_clock, session_factory=session_factory)
    if settings.auth == "required":
        from cds_service.http.auth import verifier_for

        runtime.verifier = verifier_for(settings, database, runtime.clock)
    elif settings.auth == "off":
        log_event(log, "JWT verification is OFF: any caller is trusted (local use only)",
                  logging.WARNING)

    app = Flask(__name__)
    # No redirects from routing: Werkzeug would answer "//x" (merged slashes) with a 308 whose
    # Location is built from the caller's Host header, an open redirect in HTML. Set before any
    # blueprint registers. Strict slashes stay on: no rule ends in "/", so "/healthz/" stays a
    # 404 as before, and errors.py turns any redirect routing still raises into a JSON 404.
    app.url_map.merge_slashes = False
    from cds_service.http.json_provider import OrjsonProvider

    app.json = OrjsonProvider(app)
    app.config.update(MAX_CONTENT_LENGTH=int(settings.max_body_mb * 1024 * 1024))
    app.extensions["cds"] = runtime

    from cds_service.http import auth, cors, errors, evidence, routes

    errors.register_error_handlers(app)
    routes.init_app(app)
    auth.init_app(app)
    cors.init_app(app, settings)
    evidence.init_app(app)
    for module in ("cds_service.http.metrics", "cds_service.http.preview",
                   "cds_service.http.smart_app"):
        _init_optional(app, module)
    log_event(log, "service ready", recommendations=len(knowledge.recommendations),
              valuesets=len(knowledge.valuesets), auth=settings.auth)
    return app


def _init_optional(app: Flask, module_name: str) -> None:
    """Endpoints that live in their own module (metrics, preview) register if present."""
    import importlib.util

    if importlib.util.find_spec(module_name) is not None:
        importlib.import_module(module_name).init_app(app)
