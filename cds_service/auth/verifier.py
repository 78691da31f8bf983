"""Verification of the EHR's bearer JWT ("Trusting CDS Clients", CDS Hooks 2.0).

Order of checks (the first failure wins and becomes ``AuthFailure.reason``):

1. ``Authorization: Bearer <jwt>`` present and well formed; token at most 8 KB.
2. JOSE header: ``alg`` in the allowlist (never ``none`` nor HS*), ``typ`` JWT when present,
   ``kid`` present, no ``crit``/``b64``, ``jku`` a string when present.
3. ``iss`` trusted and enabled; a ``jku`` header must be on that issuer's allowlist before anything
   is fetched.
4. Key by ``kid``: the issuer's pinned ``jwks_file`` first, then the token's (allowlisted) ``jku``,
   or, without a ``jku`` header, the issuer's only allowlisted jku when it has no ``jwks_file``.
5. Signature (PyJWT), then claims: ``aud`` is exactly the endpoint URL, ``exp``/``iat`` present,
   within the leeway, lifetime bounded; ``nbf`` honoured when present; ``tenant`` allowlisted
   when the issuer lists tenants; ``jti`` unseen (checked last, so a rejected token never uses up
   a jti). ``sub`` is not required (it is not part of CDS Hooks 2.0).

Nothing here logs or stores the token. Failures are logged with the reason code, iss, kid and jti.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from jwt import PyJWS
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidTokenError,
)

from cds_service.auth.errors import AuthFailure
from cds_service.auth.issuers import TrustedIssuer, load_trusted_issuers
from cds_service.auth.jwks import JwksCache
from cds_service.auth.keys import ASYMMETRIC_ALGORITHMS, PublicJwk
from cds_service.clock import system_clock
from cds_service.config import Settings

logger = logging.getLogger("cds_service.auth")

MAX_TOKEN_CHARS = 8192
MAX_CLAIM_CHARS = 1024  # iss, jti, kid, tenant: anything longer is not a real client
_LOGGED_CHARS = 200
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_TYP_VALUES = frozenset({"jwt", "application/jwt"})


@dataclass(frozen=True)
class VerifiedCaller:
    """Who called: the verified issuer, token id, signing key id and tenant (if any)."""

    iss: str
    jti: str
    kid: str
    tenant: str | None


@dataclass
class _Seen:
    """What is known about the token so far, for the failure log line."""

    iss: str | None = None
    kid: str | None = None
    jti: str | None = None


class JwtVerifier:
    """Verifies CDS Hooks client JWTs. Thread-safe; one instance per process is enough."""

    def __init__(
        self,
        *,
        issuers: Sequence[TrustedIssuer],
        algorithms: Sequence[str],
        leeway_seconds: int,
        max_lifetime_seconds: int,
        jwks_min_refresh_seconds: int,
        remember_jti: Callable[[str, str, datetime, datetime], bool],
        http: requests.Session,
        clock: Callable[[], datetime],
    ) -> None:
        allowed = tuple(dict.fromkeys(a for a in algorithms if a in ASYMMETRIC_ALGORITHMS))
        refused = sorted({a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS})
        if refused:
            logger.warning(
                "jwt algorithms ignored: only asymmetric signature algorithms are accepted",
                extra={"fields": {"ignored_algorithms": refused}},
            )
        if not allowed:
            raise ValueError(
                f"no usable JWT algorithm configured (got {list(algorithms)}); "
                f"choose from {sorted(ASYMMETRIC_ALGORITHMS)}"
            )
        if leeway_seconds < 0 or max_lifetime_seconds <= 0 or jwks_min_refresh_seconds < 0:
            raise ValueError("leeway and refresh interval must be >= 0, max lifetime > 0")
        by_iss: dict[str, TrustedIssuer] = {}
        for issuer in issuers:
            if issuer.iss in by_iss:
                raise ValueError(f"issuer {issuer.iss!r} given twice")
            by_iss[issuer.iss] = issuer
        self._issuers = by_iss
        self._algorithms = frozenset(allowed)
        self._leeway = int(leeway_seconds)
        self._max_lifetime = int(max_lifetime_seconds)
        self._remember_jti = remember_jti
        self._clock = clock
        self._jwks = JwksCache(http=http, clock=clock, min_refresh_seconds=jwks_min_refresh_seconds)
        self._jws = PyJWS()

    @property
    def algorithms(self) -> frozenset[str]:
        """The algorithms actually accepted (configured ones minus anything unsafe)."""
        return self._algorithms

    def verify(self, authorization_header: str | None, audience: str) -> VerifiedCaller:
        """Verify the raw ``Authorization`` header value for a call to the URL ``audience``.

        Raises AuthFailure (only) when the caller is not authenticated. An exception raised by
        ``remember_jti`` itself (the replay store is down) is not an authentication result and
        propagates unchanged, so the caller answers 5xx instead of accepting the token.
        """
        seen = _Seen()
        try:
            caller = self._verify(authorization_header, audience, seen)
        except AuthFailure as failure:
            logger.warning(
                "JWT rejected",
                extra={
                    "fields": {
                        "reason": failure.reason,
                        "iss": _loggable(seen.iss),
                        "kid": _loggable(seen.kid),
                        "jti": _loggable(seen.jti),
                    }
                },
            )
            raise
        logger.debug(
            "jwt accepted",
            extra={"fields": {"iss": caller.iss, "kid": caller.kid, "jti": caller.jti}},
        )
        return caller

    # -- the pipeline ---------------------------------------------------------------------------
    def _verify(self, header_value: str | None, audience: str, seen: _Seen) -> VerifiedCaller:
        token = _bearer_token(header_value)
        header, claims = _decode_unverified(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthFailure("alg_not_allowed")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYP_VALUES):
            raise AuthFailure("typ_invalid")
        kid = header.get("kid")
        if kid is None or kid == "":
            raise AuthFailure("kid_missing")
        if not _short_string(kid):
            raise AuthFailure("malformed_header")
        seen.kid = kid
        if "crit" in header or "b64" in header:
            raise AuthFailure("malformed_header")  # no JWS extension is understood here
        jku = header.get("jku")
        if jku is not None and not _short_string(jku):
            raise AuthFailure("malformed_header")

        iss = claims.get("iss")
        jti = claims.get("jti")
        if isinstance(jti, str):
            seen.jti = jti
        if iss is None:
            raise AuthFailure("missing_claim")
        if not _short_string(iss):
            raise AuthFailure("malformed_token")
        seen.iss = iss
        issuer = self._issuers.get(iss)
        if issuer is None or not issuer.enabled:
            raise AuthFailure("untrusted_issuer")
        if jku is not None and jku not in issuer.jku:
            raise AuthFailure("jku_not_allowed")

        keys = self._keys(issuer, kid, jku)
        self._check_signature(token, alg, keys)
        return self._check_claims(claims, issuer, kid, audience)

    def _keys(self, issuer: TrustedIssuer, kid: str, jku: str | None) -> tuple[PublicJwk, ...]:
        pinned = tuple(k for k in issuer.jwks or () if k.kid == kid)
        if pinned:
            return pinned
        if jku is None and issuer.jwks is None and len(issuer.jku) == 1:
            jku = issuer.jku[0]
        if jku is None:
            raise AuthFailure("unknown_kid")
        return self._jwks.keys_for(jku, kid)

    def _check_signature(self, token: str, alg: str, keys: tuple[PublicJwk, ...]) -> None:
        usable = [k for k in keys if k.fits(alg)]
        if not usable:
            raise AuthFailure("bad_signature")  # the key with this kid is not for this alg
        for jwk in usable:
            try:
                self._jws.decode_complete(
                    token,
                    key=jwk.key,
                    algorithms=[alg],
                    options={"verify_signature": True, "enforce_minimum_key_length": True},
                )
            except InvalidSignatureError:
                continue
            except (InvalidAlgorithmError, InvalidKeyError):
                continue
            except DecodeError:
                raise AuthFailure("malformed_token") from None
            except InvalidTokenError:
                raise AuthFailure("malformed_header") from None
            return
        raise AuthFailure("bad_signature")

    def _check_claims(
        self, claims: dict[str, Any], issuer: TrustedIssuer, kid: str, audience: str
    ) -> VerifiedCaller:
        for name in ("aud", "exp", "iat", "jti"):
            if name not in claims:
                raise AuthFailure("missing_claim")
        jti = claims["jti"]
        if not _short_string(jti):
            raise AuthFailure("malformed_token")
        exp = _numeric_date(claims["exp"])
        iat = _numeric_date(claims["iat"])
        nbf = _numeric_date(claims["nbf"]) if "nbf" in claims else None

        if not _audience_matches(claims["aud"], audience):
            raise AuthFailure("wrong_audience")

        now = self._clock()
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        now_ts = now.timestamp()
        if exp + self._leeway <= now_ts:
            raise AuthFailure("expired")
        if iat - self._leeway > now_ts or (nbf is not None and nbf - self._leeway > now_ts):
            raise AuthFailure("not_yet_valid")
        if exp < iat:
            raise AuthFailure("malformed_token")
        if exp - iat > self._max_lifetime:
            raise AuthFailure("lifetime_too_long")

        tenant = claims.get("tenant")
        if tenant is not None and not _short_string(tenant):
            raise AuthFailure("malformed_token")
        if issuer.tenants and tenant not in issuer.tenants:
            raise AuthFailure("tenant_not_allowed")

        # Keep the jti as long as the token could still be accepted (exp plus the leeway).
        expires_at = datetime.fromtimestamp(exp + self._leeway, UTC)
        if not self._remember_jti(issuer.iss, jti, expires_at, now):
            raise AuthFailure("replay")
        return VerifiedCaller(iss=issuer.iss, jti=jti, kid=kid, tenant=tenant)


# -- helpers --------------------------------------------------------------------------------------
def _bearer_token(header_value: str | None) -> str:
    if header_value is None:
        raise AuthFailure("missing_token")
    if not isinstance(header_value, str):
        raise AuthFailure("malformed_header")
    if not header_value.strip():
        raise AuthFailure("missing_token")
    parts = header_value.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthFailure("malformed_header")
    token = parts[1]
    if len(token) > MAX_TOKEN_CHARS or not _TOKEN_SHAPE.fullmatch(token):
        raise AuthFailure("malformed_token")
    return token


def _decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header_segment, payload_segment, _ = token.split(".")
    header = _json_segment(header_segment)
    if header is None:
        raise AuthFailure("malformed_header")
    claims = _json_segment(payload_segment)
    if claims is None:
        raise AuthFailure("malformed_token")
    return header, claims


def _json_segment(segment: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def _numeric_date(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthFailure("malformed_token")
    if value != value or value in (float("inf"), float("-inf")):
        raise AuthFailure("malformed_token")
    return float(value)


def _audience_matches(aud: Any, audience: str) -> bool:
    if not audience:
        return False
    if isinstance(aud, str):
        return aud == audience
    if isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        return audience in aud
    return False


def _short_string(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLAIM_CHARS


def _loggable(value: str | None) -> str | None:
    return None if value is None else value[:_LOGGED_CHARS]


def build_verifier(
    settings: Settings,
    *,
    remember_jti: Callable[[str, str, datetime, datetime], bool],
    http: requests.Session | None = None,
    clock: Callable[[], datetime] = system_clock,
) -> JwtVerifier:
    """A verifier wired from Settings: issuers file, algorithms, leeway, lifetime, refresh rate.

    Raises TrustedIssuersError when the issuers file is malformed (fail at start-up, not later).
    """
    return JwtVerifier(
        issuers=load_trusted_issuers(settings.trusted_issuers_file),
        algorithms=settings.jwt_algorithms,
        leeway_seconds=settings.jwt_leeway_seconds,
        max_lifetime_seconds=settings.jwt_max_lifetime_seconds,
        jwks_min_refresh_seconds=settings.jwks_min_refresh_seconds,
        remember_jti=remember_jti,
        http=http if http is not None else requests.Session(),
        clock=clock,
    )
