"""JWT trust at the HTTP boundary: every discovery, service and feedback call, when required."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, g, request

from cds_service.clock import Clock
from cds_service.config import Settings
from cds_service.http.errors import error_response
from cds_service.storage.db import Database

log = logging.getLogger("cds_service.auth")
PROTECTED_PREFIX = "/cds-services"


def verifier_for(settings: Settings, database: Database, clock: Clock) -> object:
    import requests

    from cds_service.auth import build_verifier

    session = requests.Session()
    session.trust_env = False
    return build_verifier(settings, remember_jti=database.remember_jti, http=session, clock=clock)


def init_app(app: Flask) -> None:
    @app.before_request
    def require_jwt() -> Response | None:
        runtime = current_app.extensions["cds"]
        if runtime.verifier is None or request.method == "OPTIONS":
            return None
        rule = request.url_rule.rule if request.url_rule is not None else ""
        if not (request.path.startswith(PROTECTED_PREFIX) or rule.startswith(PROTECTED_PREFIX)):
            return None  # by path *and* by route: no spelling of a path reaches a service unchecked
        from cds_service.auth import AuthFailure

        audience = runtime.settings.public_base_url + request.path
        try:
            caller = runtime.verifier.verify(request.headers.get("Authorization"), audience)
        except AuthFailure as failure:
            g.log_fields = {**getattr(g, "log_fields", {}), "auth_failure": failure.reason}
            response = error_response(401, "unauthorized", "authentication failed")
            response.headers["WWW-Authenticate"] = (
                'Bearer realm="cds-services", error="invalid_token"'
            )
            return response
        g.log_fields = {**getattr(g, "log_fields", {}), "iss": caller.iss,
                        "tenant": caller.tenant}
        return None
