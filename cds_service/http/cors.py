"""CORS for browser clients (the CDS Hooks sandbox): preflight and headers on every response,
errors included. Flask-Cors does the work; origins come from CDS_CORS_ORIGINS."""

from __future__ import annotations

from flask import Flask, Response
from flask_cors import CORS

from cds_service.config import Settings


def init_app(app: Flask, settings: Settings) -> None:
    origins = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
    CORS(
        app,
        resources={r"/*": {"origins": origins}},
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-Id"],
        expose_headers=["X-Request-Id", "WWW-Authenticate"],
        supports_credentials=False,
        max_age=600,
        always_send=True,
    )
    if origins != "*":
        # The allow header depends on the caller's Origin (Flask-Cors adds Vary only when more
        # than one origin is listed), so no shared cache may replay one origin's answer to another.
        @app.after_request
        def vary_on_origin(response: Response) -> Response:
            response.vary.add("Origin")
            return response
