"""Headers every HTML page the service serves (preview, evidence, SMART app) carries."""

from __future__ import annotations

from flask import Response


def harden_page(response: Response, content_security_policy: str) -> Response:
    """A strict CSP (no CDN, nothing inline), no MIME sniffing, and no Referer: the SMART app's
    launch and redirect URLs carry ``iss``/``launch`` and ``code``/``state``."""
    response.headers["Content-Security-Policy"] = content_security_policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
