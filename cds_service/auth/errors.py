"""The one exception the verifier raises, with a stable reason code per failed check."""

from __future__ import annotations

from typing import Literal, get_args

AuthReason = Literal[
    "missing_token",  # no Authorization header, or an empty one
    "malformed_header",  # not "Bearer <token>", or a JOSE header we refuse (crit, b64, bad jku)
    "malformed_token",  # not three base64url JSON segments, too long, or claims of the wrong type
    "alg_not_allowed",  # alg not in the allowlist; none and HS* are never allowed
    "typ_invalid",  # typ present but not JWT
    "kid_missing",  # no kid in the JOSE header
    "untrusted_issuer",  # iss not configured, or configured with enabled: false
    "jku_not_allowed",  # jku not on the issuer's allowlist (nothing is fetched)
    "jwks_unavailable",  # the JWK Set could not be fetched or parsed
    "unknown_kid",  # no usable key with that kid for this issuer
    "bad_signature",  # signature does not verify, or the key does not fit the alg
    "wrong_audience",  # aud is not the exact URL of the endpoint called
    "expired",  # exp passed (beyond the leeway)
    "not_yet_valid",  # iat or nbf in the future (beyond the leeway)
    "lifetime_too_long",  # exp - iat above the configured maximum
    "missing_claim",  # iss, aud, exp, iat or jti absent
    "replay",  # jti seen before for this issuer
    "tenant_not_allowed",  # issuer lists tenants and the token's tenant is not one of them
]

REASONS: frozenset[str] = frozenset(get_args(AuthReason))


class AuthFailure(Exception):
    """The caller is not authenticated. ``reason`` is a stable code for logs and metrics only.

    The HTTP layer answers 401 without telling the caller the reason.
    """

    reason: str

    def __init__(self, reason: AuthReason) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown auth failure reason: {reason!r}")
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"AuthFailure({self.reason!r})"
