"""Authentication of CDS clients: verifying the EHR's bearer JWT (CDS Hooks 2.0, "Trusting CDS
Clients"). See docs/auth.md.

Usage::

    verifier = build_verifier(settings, remember_jti=db.remember_jti)
    try:
        caller = verifier.verify(request.headers.get("Authorization"), audience=endpoint_url)
    except AuthFailure:
        ...  # 401, no detail
"""

from cds_service.auth.errors import REASONS, AuthFailure, AuthReason
from cds_service.auth.issuers import TrustedIssuer, TrustedIssuersError, load_trusted_issuers
from cds_service.auth.keys import PublicJwk
from cds_service.auth.verifier import JwtVerifier, VerifiedCaller, build_verifier

__all__ = [
    "REASONS",
    "AuthFailure",
    "AuthReason",
    "JwtVerifier",
    "PublicJwk",
    "TrustedIssuer",
    "TrustedIssuersError",
    "VerifiedCaller",
    "build_verifier",
    "load_trusted_issuers",
]
