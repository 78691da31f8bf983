"""Verification of the EHR's JWT (CDS Hooks 2.0 "Trusting CDS Clients"; checklist S-1..S-11)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.auth import (
    AuthFailure,
    JwtVerifier,
    TrustedIssuer,
    TrustedIssuersError,
    VerifiedCaller,
    load_trusted_issuers,
)
from cds_service.auth.keys import parse_jwks
from cds_service.config import DEFAULT_ISSUERS_FILE

ISS = "https://ehr.example.org"
JKU = "https://ehr.example.org/.well-known/jwks.json"
REMOTE_ISS = "https://remote-ehr.example.org"
REMOTE_JKU = "https://remote-ehr.example.org/jwks.json"
TENANT_ISS = "https://multi-tenant.example.org"
DISABLED_ISS = "https://disabled.example.org"
UNLISTED_JKU = "https://attacker.example.net/jwks.json"
BASE = "https://cds.example.org"
AUD = f"{BASE}/cds-services/foot-drop-patient-view"
NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
LEEWAY = 60
MAX_LIFETIME = 3600
MIN_REFRESH = 60


# -- fixtures -------------------------------------------------------------------------------------
@dataclass
class FakeClock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class MemoryReplay:
    seen: set[tuple[str, str]] = field(default_factory=set)
    calls: list[tuple[str, str, datetime, datetime]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, issuer: str, jti: str, expires_at: datetime, now: datetime) -> bool:
        with self.lock:
            self.calls.append((issuer, jti, expires_at, now))
            if (issuer, jti) in self.seen:
                return False
            self.seen.add((issuer, jti))
            return True


@pytest.fixture(scope="module")
def es_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_es_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    jwk = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def replay() -> MemoryReplay:
    return MemoryReplay()


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def issuers(es_key, rsa_key) -> list[TrustedIssuer]:
    pinned = parse_jwks(
        jwks(public_jwk(es_key, "es-1", "ES384"), public_jwk(rsa_key, "rs-1", "RS384")),
        strict=True,
    )
    return [
        TrustedIssuer(iss=ISS, jku=(JKU,), jwks=pinned),
        TrustedIssuer(iss=REMOTE_ISS, jku=(REMOTE_JKU,), jwks=None),
        TrustedIssuer(iss=TENANT_ISS, jwks=pinned, tenants=("tenant-a", "tenant-b")),
        TrustedIssuer(iss=DISABLED_ISS, jwks=pinned, enabled=False),
    ]


@pytest.fixture
def make_verifier(issuers, clock, replay) -> Callable[..., JwtVerifier]:
    def build(**overrides: Any) -> JwtVerifier:
        options: dict[str, Any] = {
            "issuers": issuers,
            "algorithms": ("ES384", "RS384"),
            "leeway_seconds": LEEWAY,
            "max_lifetime_seconds": MAX_LIFETIME,
            "jwks_min_refresh_seconds": MIN_REFRESH,
            "remember_jti": replay,
            "http": requests.Session(),
            "clock": clock,
        }
        options.update(overrides)
        return JwtVerifier(**options)

    return build


@pytest.fixture
def verifier(make_verifier) -> JwtVerifier:
    return make_verifier()


_jti_counter = iter(range(10**9))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(NOW.timestamp())
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
        "jti": f"jti-{next(_jti_counter)}",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def sign(
    key: Any,
    payload: dict[str, Any] | None = None,
    *,
    alg: str = "ES384",
    kid: str | None = "es-1",
    **headers: Any,
) -> str:
    header: dict[str, Any] = {"typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    header.update(headers)
    return jwt.encode(payload or claims(), key, algorithm=alg, headers=header)


def bearer(token: str) -> str:
    return f"Bearer {token}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: Any, payload: Any, signature: bytes = b"") -> str:
    h = b64(json.dumps(header).encode())
    p = b64(json.dumps(payload).encode())
    return f"{h}.{p}.{b64(signature)}"


def failure(verifier: JwtVerifier, header: str | None, audience: str = AUD) -> str:
    with pytest.raises(AuthFailure) as info:
        verifier.verify(header, audience)
    return info.value.reason


# -- valid tokens ---------------------------------------------------------------------------------
def test_valid_es384(verifier, es_key, replay):
    payload = claims()
    caller = verifier.verify(bearer(sign(es_key, payload)), AUD)
    assert caller == VerifiedCaller(iss=ISS, jti=payload["jti"], kid="es-1", tenant=None)
    ((iss, jti, expires_at, now),) = replay.calls
    assert (iss, jti, now) == (ISS, payload["jti"], NOW)
    assert expires_at == datetime.fromtimestamp(payload["exp"] + LEEWAY, UTC)


def test_valid_rs384(verifier, rsa_key):
    caller = verifier.verify(bearer(sign(rsa_key, alg="RS384", kid="rs-1")), AUD)
    assert caller.kid == "rs-1" and caller.iss == ISS


def test_token_without_sub_is_accepted(verifier, es_key):
    payload = claims()
    assert "sub" not in payload
    assert verifier.verify(bearer(sign(es_key, payload)), AUD).iss == ISS


def test_array_audience_is_accepted(verifier, es_key):
    token = sign(es_key, claims(aud=["https://other.example.org/x", AUD]))
    assert verifier.verify(bearer(token), AUD).iss == ISS


def test_scheme_is_case_insensitive_and_nbf_in_past_is_fine(verifier, es_key):
    nbf = int(NOW.timestamp()) - 300  # Epic sends nbf about five minutes before iat
    assert verifier.verify(f"bearer {sign(es_key, claims(nbf=nbf))}", AUD).iss == ISS


def test_typ_may_be_absent(verifier, es_key):
    token = jwt.encode(claims(), es_key, algorithm="ES384", headers={"kid": "es-1", "typ": None})
    assert "typ" not in jwt.get_unverified_header(token)
    assert verifier.verify(bearer(token), AUD).kid == "es-1"


@pytest.mark.parametrize("typ", ["jwt", "application/jwt"])
def test_typ_variants_of_jwt_are_accepted(verifier, es_key, typ):
    assert verifier.verify(bearer(sign(es_key, typ=typ)), AUD).kid == "es-1"


# -- algorithms -----------------------------------------------------------------------------------
def test_alg_none_is_refused(verifier):
    token = raw_token({"alg": "none", "typ": "JWT", "kid": "es-1"}, claims())
    assert failure(verifier, bearer(token)) == "alg_not_allowed"


def _hs256_with_public_pem(key: Any) -> str:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rs-1"}).encode())
    payload = b64(json.dumps(claims()).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def test_hs256_signed_with_public_key_pem_is_refused(verifier, rsa_key):
    assert failure(verifier, bearer(_hs256_with_public_pem(rsa_key))) == "alg_not_allowed"


def test_hs256_refused_even_when_configured(make_verifier, rsa_key, caplog):
    with caplog.at_level(logging.WARNING, logger="cds_service.auth"):
        verifier = make_verifier(algorithms=("HS256", "none", "ES384", "RS384"))
    assert verifier.algorithms == frozenset({"ES384", "RS384"})
    assert any("ignored" in r.getMessage() for r in caplog.records)
    assert failure(verifier, bearer(_hs256_with_public_pem(rsa_key))) == "alg_not_allowed"
    token = raw_token({"alg": "none", "typ": "JWT", "kid": "es-1"}, claims())
    assert failure(verifier, bearer(token)) == "alg_not_allowed"


def test_only_symmetric_algorithms_configured_fails_at_construction(make_verifier):
    with pytest.raises(ValueError, match="no usable JWT algorithm"):
        make_verifier(algorithms=("HS256", "none"))


def test_algorithm_outside_configured_allowlist(make_verifier, rsa_key):
    verifier = make_verifier(algorithms=("ES384",))
    assert failure(verifier, bearer(sign(rsa_key, alg="RS384", kid="rs-1"))) == "alg_not_allowed"


def test_alg_and_key_type_mismatch_is_bad_signature(verifier, rsa_key):
    # RS384 token naming the EC key's kid: the key cannot verify RS384.
    assert failure(verifier, bearer(sign(rsa_key, alg="RS384", kid="es-1"))) == "bad_signature"


def test_signature_by_another_key_is_refused(verifier, other_es_key):
    assert failure(verifier, bearer(sign(other_es_key))) == "bad_signature"


def test_tampered_payload_is_refused(verifier, es_key):
    token = sign(es_key)
    header, _, signature = token.split(".")
    forged = b64(json.dumps(claims(jti="forged")).encode())
    assert failure(verifier, bearer(f"{header}.{forged}.{signature}")) == "bad_signature"


# -- JOSE header ----------------------------------------------------------------------------------
def test_missing_kid(verifier, es_key):
    assert failure(verifier, bearer(sign(es_key, kid=None))) == "kid_missing"


def test_typ_other_than_jwt(verifier, es_key):
    assert failure(verifier, bearer(sign(es_key, typ="at+jwt"))) == "typ_invalid"


def test_crit_header_is_refused(verifier, es_key):
    assert failure(verifier, bearer(sign(es_key, crit=["exp"]))) == "malformed_header"


# -- issuers --------------------------------------------------------------------------------------
def test_unknown_issuer(verifier, es_key):
    token = sign(es_key, claims(iss="https://unknown.example.org"))
    assert failure(verifier, bearer(token)) == "untrusted_issuer"


def test_disabled_issuer(verifier, es_key):
    assert failure(verifier, bearer(sign(es_key, claims(iss=DISABLED_ISS)))) == "untrusted_issuer"


def test_missing_iss(verifier, es_key):
    assert failure(verifier, bearer(sign(es_key, claims(iss=_DROP)))) == "missing_claim"


# -- jku and the JWKS cache -----------------------------------------------------------------------
def test_unlisted_jku_is_refused_without_any_request(verifier, es_key, rsps):
    rsps.get(UNLISTED_JKU, json=jwks(public_jwk(es_key, "es-1", "ES384")))
    token = sign(es_key, kid="attacker-kid", jku=UNLISTED_JKU)
    assert failure(verifier, bearer(token)) == "jku_not_allowed"
    # Even a jku listed for another issuer is not allowed for this one.
    token = sign(es_key, kid="attacker-kid", jku=REMOTE_JKU)
    assert failure(verifier, bearer(token)) == "jku_not_allowed"
    assert len(rsps.calls) == 0


def test_listed_jku_is_fetched_once_and_cached(verifier, es_key, rsps):
    rsps.get(REMOTE_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))
    for _ in range(3):
        token = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU)
        assert verifier.verify(bearer(token), AUD).iss == REMOTE_ISS
    # Without a jku header the issuer's only allowlisted jku is used: still cached.
    token = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1")
    assert verifier.verify(bearer(token), AUD).kid == "remote-1"
    assert len(rsps.calls) == 1
    assert rsps.calls[0].request.headers["Accept"].startswith("application/jwk-set+json")


def test_pinned_key_is_used_before_the_jku(verifier, es_key, rsps):
    token = sign(es_key, kid="es-1", jku=JKU)
    assert verifier.verify(bearer(token), AUD).kid == "es-1"
    assert len(rsps.calls) == 0


def test_unknown_kid_refetches_at_a_bounded_rate(verifier, es_key, other_es_key, rsps, clock):
    first = rsps.get(REMOTE_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))

    def remote(key: Any, kid: str) -> str:
        return bearer(sign(key, claims(iss=REMOTE_ISS), kid=kid, jku=REMOTE_JKU))

    assert verifier.verify(remote(es_key, "remote-1"), AUD).kid == "remote-1"
    assert first.call_count == 1

    clock.advance(MIN_REFRESH + 1)
    # The key set rotates: a new kid appears.
    rsps.replace(
        responses.GET,
        REMOTE_JKU,
        json=jwks(public_jwk(es_key, "remote-1", "ES384"), public_jwk(other_es_key, "k2", "ES384")),
    )
    assert verifier.verify(remote(other_es_key, "k2"), AUD).kid == "k2"
    assert len(rsps.calls) == 2

    # An unknown kid right after: one refetch is allowed only once per interval.
    clock.advance(1)
    assert failure(verifier, remote(other_es_key, "nope-1")) == "unknown_kid"
    assert failure(verifier, remote(other_es_key, "nope-2")) == "unknown_kid"
    assert len(rsps.calls) == 2

    clock.advance(MIN_REFRESH)
    assert failure(verifier, remote(other_es_key, "nope-3")) == "unknown_kid"
    assert len(rsps.calls) == 3
    # Known keys keep working from the cache meanwhile.
    assert verifier.verify(remote(es_key, "remote-1"), AUD).kid == "remote-1"
    assert len(rsps.calls) == 3


def test_first_unknown_kid_triggers_one_refetch(verifier, es_key, rsps, clock):
    rsps.get(REMOTE_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))
    ok = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU)
    verifier.verify(bearer(ok), AUD)
    clock.advance(MIN_REFRESH)
    unknown = sign(es_key, claims(iss=REMOTE_ISS), kid="unknown", jku=REMOTE_JKU)
    assert failure(verifier, bearer(unknown)) == "unknown_kid"
    assert len(rsps.calls) == 2
    unknown = sign(es_key, claims(iss=REMOTE_ISS), kid="unknown-2", jku=REMOTE_JKU)
    assert failure(verifier, bearer(unknown)) == "unknown_kid"
    assert len(rsps.calls) == 2


def test_unknown_kid_without_remote_source(verifier, es_key, rsps):
    assert failure(verifier, bearer(sign(es_key, kid="not-pinned"))) == "unknown_kid"
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    "response",
    [
        {"status": 500, "json": {"error": "boom"}},
        {"status": 200, "body": "{not json", "content_type": "application/json"},
        {"status": 200, "json": {"no_keys": []}},
        {"status": 200, "json": {"keys": "not-a-list"}},
        {"status": 200, "body": "<html></html>", "content_type": "text/html"},
        {"status": 200, "json": {"keys": [], "padding": "x" * (300 * 1024)}},
        {"status": 302, "headers": {"Location": UNLISTED_JKU}},
        {"body": requests.ConnectionError("refused")},
        {"body": requests.Timeout("slow")},
    ],
    ids=[
        "500",
        "invalid-json",
        "no-keys",
        "keys-not-list",
        "html",
        "too-large",
        "redirect",
        "connection-error",
        "timeout",
    ],
)
def test_jwks_endpoint_failures(verifier, es_key, rsps, response):
    rsps.add(responses.GET, REMOTE_JKU, **response)
    rsps.get(UNLISTED_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))
    token = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU)
    assert failure(verifier, bearer(token)) == "jwks_unavailable"
    assert [c.request.url for c in rsps.calls] == [REMOTE_JKU]  # no redirect followed


def test_jwks_outage_is_retried_only_after_the_interval(verifier, es_key, rsps, clock):
    rsps.get(REMOTE_JKU, status=503)
    token = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU)
    assert failure(verifier, bearer(token)) == "jwks_unavailable"
    token = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU)
    assert failure(verifier, bearer(token)) == "jwks_unavailable"
    assert len(rsps.calls) == 1
    clock.advance(MIN_REFRESH)
    rsps.replace(responses.GET, REMOTE_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))
    assert verifier.verify(bearer(token), AUD).iss == REMOTE_ISS
    assert len(rsps.calls) == 2


def test_cached_set_is_refreshed_when_old_so_revoked_keys_stop_working(
    verifier, es_key, other_es_key, rsps, clock
):
    rsps.get(REMOTE_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))

    def token() -> str:
        now = int(clock.now.timestamp())
        payload = claims(iss=REMOTE_ISS, iat=now, exp=now + 300)
        return bearer(sign(es_key, payload, kid="remote-1", jku=REMOTE_JKU))

    verifier.verify(token(), AUD)
    clock.advance(1800)
    verifier.verify(token(), AUD)
    assert len(rsps.calls) == 1
    clock.advance(1801)  # older than an hour: refreshed before use; remote-1 was revoked
    rsps.replace(responses.GET, REMOTE_JKU, json=jwks(public_jwk(other_es_key, "k2", "ES384")))
    assert failure(verifier, token()) == "unknown_kid"
    assert len(rsps.calls) == 2


def test_old_set_is_kept_when_its_refresh_fails(verifier, es_key, rsps, clock):
    rsps.get(REMOTE_JKU, json=jwks(public_jwk(es_key, "remote-1", "ES384")))

    def token() -> str:
        now = int(clock.now.timestamp())
        payload = claims(iss=REMOTE_ISS, iat=now, exp=now + 300)
        return bearer(sign(es_key, payload, kid="remote-1", jku=REMOTE_JKU))

    verifier.verify(token(), AUD)
    clock.advance(3601)
    rsps.replace(responses.GET, REMOTE_JKU, status=503)
    assert verifier.verify(token(), AUD).kid == "remote-1"
    assert len(rsps.calls) == 2


def test_remote_set_skips_unusable_keys(verifier, es_key, rsps):
    rsps.get(
        REMOTE_JKU,
        json=jwks(
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            public_jwk(es_key, "remote-1", "ES384"),
        ),
    )
    token = sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU)
    assert verifier.verify(bearer(token), AUD).kid == "remote-1"
    hmac_token = sign(es_key, claims(iss=REMOTE_ISS), kid="hmac", jku=REMOTE_JKU)
    assert failure(verifier, bearer(hmac_token)) == "unknown_kid"


def test_concurrent_requests_share_one_fetch(verifier, es_key, rsps):
    body = json.dumps(jwks(public_jwk(es_key, "remote-1", "ES384")))

    def slow_jwks(request: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(0.2)  # every thread arrives while the first fetch is in flight
        return 200, {"Content-Type": "application/json"}, body

    rsps.add_callback(responses.GET, REMOTE_JKU, callback=slow_jwks)
    tokens = [
        bearer(sign(es_key, claims(iss=REMOTE_ISS), kid="remote-1", jku=REMOTE_JKU))
        for _ in range(8)
    ]
    results: list[Any] = []
    barrier = threading.Barrier(len(tokens))

    def worker(token: str) -> None:
        barrier.wait()
        try:
            results.append(verifier.verify(token, AUD))
        except AuthFailure as exc:  # pragma: no cover - reported by the assert below
            results.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, VerifiedCaller) for r in results), results
    assert len(results) == 8
    assert len(rsps.calls) == 1


# -- audience -------------------------------------------------------------------------------------
def test_wrong_audience(verifier, es_key):
    token = sign(es_key, claims(aud="https://evil.example.org/cds-services/foot-drop-patient-view"))
    assert failure(verifier, bearer(token)) == "wrong_audience"


@pytest.mark.parametrize(
    "called",
    [f"{BASE}/cds-services", f"{AUD}/feedback", f"{BASE}/cds-services/foot-drop-order-select"],
)
def test_audience_of_another_endpoint(verifier, es_key, called):
    assert failure(verifier, bearer(sign(es_key)), audience=called) == "wrong_audience"


@pytest.mark.parametrize("aud", [AUD + "/", AUD.upper(), [], [1, 2], 42, {"url": AUD}])
def test_audience_must_match_exactly(verifier, es_key, aud):
    assert failure(verifier, bearer(sign(es_key, claims(aud=aud)))) == "wrong_audience"


# -- time -----------------------------------------------------------------------------------------
def test_expired_beyond_leeway(verifier, es_key, clock):
    token = sign(es_key)
    clock.advance(300 + LEEWAY + 1)
    assert failure(verifier, bearer(token)) == "expired"


def test_expired_within_leeway_is_accepted(verifier, es_key, clock):
    token = sign(es_key)
    clock.advance(300 + LEEWAY - 5)
    assert verifier.verify(bearer(token), AUD).iss == ISS


def test_iat_in_future_beyond_leeway(verifier, es_key):
    now = int(NOW.timestamp())
    token = sign(es_key, claims(iat=now + LEEWAY + 10, exp=now + LEEWAY + 300))
    assert failure(verifier, bearer(token)) == "not_yet_valid"


def test_iat_in_future_within_leeway_is_accepted(verifier, es_key):
    now = int(NOW.timestamp())
    token = sign(es_key, claims(iat=now + LEEWAY - 10, exp=now + 300))
    assert verifier.verify(bearer(token), AUD).iss == ISS


def test_nbf_in_future_beyond_leeway(verifier, es_key):
    now = int(NOW.timestamp())
    assert failure(verifier, bearer(sign(es_key, claims(nbf=now + 600)))) == "not_yet_valid"


def test_lifetime_too_long(verifier, es_key):
    now = int(NOW.timestamp())
    token = sign(es_key, claims(iat=now, exp=now + MAX_LIFETIME + 1))
    assert failure(verifier, bearer(token)) == "lifetime_too_long"


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_missing_required_claim(verifier, es_key, claim):
    assert failure(verifier, bearer(sign(es_key, claims(**{claim: _DROP})))) == "missing_claim"


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": "soon"},
        {"iat": True},
        {"jti": 12},
        {"jti": ""},
        {"tenant": ["a"]},
        {"exp": int(NOW.timestamp()) - 10},
    ],
    ids=["exp-string", "iat-bool", "jti-int", "jti-empty", "tenant-list", "exp-before-iat"],
)
def test_claims_of_the_wrong_type(verifier, es_key, overrides):
    assert failure(verifier, bearer(sign(es_key, claims(**overrides)))) == "malformed_token"


# -- replay ---------------------------------------------------------------------------------------
def test_replay_is_refused(verifier, es_key):
    token = bearer(sign(es_key))
    verifier.verify(token, AUD)
    assert failure(verifier, token) == "replay"


def test_same_jti_from_two_issuers_is_not_a_replay(verifier, es_key):
    verifier.verify(bearer(sign(es_key, claims(jti="shared"))), AUD)
    token = sign(es_key, claims(iss=TENANT_ISS, jti="shared", tenant="tenant-a"))
    assert verifier.verify(bearer(token), AUD).iss == TENANT_ISS


def test_rejected_token_does_not_use_up_its_jti(verifier, es_key, replay):
    failure(verifier, bearer(sign(es_key, claims(jti="j-1"))), audience=f"{BASE}/cds-services")
    assert replay.calls == []
    assert verifier.verify(bearer(sign(es_key, claims(jti="j-1"))), AUD).jti == "j-1"


def test_replay_caught_across_verifiers_sharing_the_database(make_verifier, es_key, tmp_path):
    from cds_service.storage.db import Database

    db = Database(f"sqlite:///{tmp_path / 'auth.sqlite3'}")
    db.migrate()
    try:
        worker_a = make_verifier(remember_jti=db.remember_jti)
        worker_b = make_verifier(remember_jti=Database(db.url).remember_jti)
        token = bearer(sign(es_key))
        assert worker_a.verify(token, AUD).iss == ISS
        assert failure(worker_b, token) == "replay"
        assert failure(worker_a, token) == "replay"
    finally:
        db.dispose()


# -- tenants --------------------------------------------------------------------------------------
def test_tenant_allowed(verifier, es_key):
    token = sign(es_key, claims(iss=TENANT_ISS, tenant="tenant-b"))
    assert verifier.verify(bearer(token), AUD).tenant == "tenant-b"


@pytest.mark.parametrize("tenant", ["tenant-z", _DROP])
def test_tenant_not_allowed(verifier, es_key, tenant):
    token = sign(es_key, claims(iss=TENANT_ISS, tenant=tenant))
    assert failure(verifier, bearer(token)) == "tenant_not_allowed"


def test_tenant_passed_through_when_issuer_lists_none(verifier, es_key):
    assert verifier.verify(bearer(sign(es_key, claims(tenant="t-1"))), AUD).tenant == "t-1"


# -- malformed input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("   ", "missing_token"),
        ("Bearer", "malformed_header"),
        ("Bearer ", "malformed_header"),
        ("Basic x", "malformed_header"),
        ("Basic dXNlcjpwYXNz", "malformed_header"),
        ("garbage", "malformed_header"),
        ("Bearer a b", "malformed_header"),
        ("Bearer garbage", "malformed_token"),
        ("Bearer a.b", "malformed_token"),
        ("Bearer a.b.c.d", "malformed_token"),
        ("Bearer !!!.???.***", "malformed_token"),
        ("Bearer a.b.c", "malformed_header"),
        ("Bearer " + "A" * 10240 + ".B.C", "malformed_token"),
    ],
)
def test_malformed_authorization_header(verifier, header, reason):
    assert failure(verifier, header) == reason


def test_ten_kilobyte_token(verifier, es_key):
    token = sign(es_key, claims(padding="x" * 10240))
    assert len(token) > 10240
    assert failure(verifier, bearer(token)) == "malformed_token"


@pytest.mark.parametrize(
    ("header", "payload", "reason"),
    [
        (["not", "an", "object"], {}, "malformed_header"),
        ({"alg": "ES384", "kid": "es-1"}, ["list"], "malformed_token"),
        ({"alg": "ES384", "kid": "es-1"}, 42, "malformed_token"),
        ({"alg": ["ES384"], "kid": "es-1"}, {}, "alg_not_allowed"),
        ({"kid": "es-1"}, {}, "alg_not_allowed"),
        ({"alg": "ES384", "kid": 7}, {}, "malformed_header"),
        ({"alg": "ES384", "kid": "es-1", "typ": 1}, {}, "typ_invalid"),
        ({"alg": "ES384", "kid": "es-1", "jku": 1}, {"iss": ISS}, "malformed_header"),
        ({"alg": "ES384", "kid": "es-1"}, {"iss": 1}, "malformed_token"),
        ({"alg": "ES384", "kid": "es-1"}, {"iss": ISS}, "bad_signature"),
    ],
)
def test_hostile_tokens_raise_only_auth_failure(verifier, header, payload, reason):
    token = raw_token(header, payload, b"\x00" * 96)
    assert failure(verifier, bearer(token)) == reason


def test_duplicate_json_members_are_refused(verifier):
    header = b64(b'{"alg":"ES384","kid":"es-1","alg":"none"}')
    payload = b64(json.dumps(claims()).encode())
    assert failure(verifier, bearer(f"{header}.{payload}.AAAA")) == "malformed_header"


# -- logging --------------------------------------------------------------------------------------
def test_failures_log_reason_iss_kid_jti_but_never_the_token(verifier, es_key, caplog):
    payload = claims()
    token = sign(es_key, payload)
    with caplog.at_level(logging.DEBUG, logger="cds_service.auth"):
        verifier.verify(bearer(token), AUD)
        failure(verifier, bearer(token))
    rejected = [r for r in caplog.records if r.getMessage() == "JWT rejected"]
    assert len(rejected) == 1
    assert rejected[0].fields == {
        "reason": "replay",
        "iss": ISS,
        "kid": "es-1",
        "jti": payload["jti"],
    }
    for record in caplog.records:
        text = record.getMessage() + json.dumps(getattr(record, "fields", {}), default=str)
        assert token not in text
        assert token.split(".")[2] not in text


# -- the trusted-issuers file ---------------------------------------------------------------------
def test_shipped_issuers_file_loads_and_everything_is_disabled():
    issuers = load_trusted_issuers(DEFAULT_ISSUERS_FILE)
    by_iss = {i.iss: i for i in issuers}
    assert set(by_iss) >= {
        "https://sandbox.cds-hooks.org",
        "https://cds-hooks.cerner.com",
        "https://fhir.example-hospital.org/api/FHIR/R4",
    }
    assert all(not i.enabled for i in issuers)
    sandbox = by_iss["https://sandbox.cds-hooks.org"]
    assert sandbox.jku == ("https://sandbox.cds-hooks.org/.well-known/jwks.json",)
    assert sandbox.jwks is not None
    (key,) = sandbox.jwks
    assert key.kid == "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    assert key.fits("ES384") and key.curve == "P-384"
    assert by_iss["https://cds-hooks.cerner.com"].jku == ("https://authorization.cerner.com/jwk",)


def test_shipped_issuers_trust_nothing_until_enabled(es_key, replay, clock):
    verifier = JwtVerifier(
        issuers=load_trusted_issuers(DEFAULT_ISSUERS_FILE),
        algorithms=("ES384", "RS384"),
        leeway_seconds=LEEWAY,
        max_lifetime_seconds=MAX_LIFETIME,
        jwks_min_refresh_seconds=MIN_REFRESH,
        remember_jti=replay,
        http=requests.Session(),
        clock=clock,
    )
    token = sign(
        es_key,
        claims(iss="https://sandbox.cds-hooks.org"),
        kid="44823f3d-0b01-4a6c-a80e-b9d3e8a7226f",
        jku="https://sandbox.cds-hooks.org/.well-known/jwks.json",
    )
    assert failure(verifier, bearer(token)) == "untrusted_issuer"


def write_jwks_file(directory: Path, key: Any, name: str = "ehr-jwks.json") -> Path:
    keys_dir = directory / "keys"
    keys_dir.mkdir(exist_ok=True)
    path = keys_dir / name
    path.write_text(json.dumps(jwks(public_jwk(key, "es-1", "ES384"))))
    return path


def test_loader_reads_yaml_with_relative_jwks_file(tmp_path, es_key):
    write_jwks_file(tmp_path, es_key)
    config = tmp_path / "issuers.yaml"
    config.write_text(
        "issuers:\n"
        "  - iss: https://ehr.example.org\n"
        "    jku: [https://ehr.example.org/.well-known/jwks.json, http://127.0.0.1:9999/jwks]\n"
        "    jwks_file: keys/ehr-jwks.json\n"
        "    tenants: [tenant-a]\n"
        "  - iss: https://other.example.org\n"
        "    jku: [http://localhost:8000/jwks.json]\n"
        "    enabled: false\n"
    )
    first, second = load_trusted_issuers(config)
    assert first.iss == ISS and first.enabled and first.tenants == ("tenant-a",)
    assert first.jku == (JKU, "http://127.0.0.1:9999/jwks")
    assert first.jwks is not None and first.jwks[0].kid == "es-1"
    assert second.jwks is None and not second.enabled


def test_loader_reads_json(tmp_path, es_key):
    write_jwks_file(tmp_path, es_key)
    config = tmp_path / "issuers.json"
    config.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks_file": "keys/ehr-jwks.json"}]}))
    (issuer,) = load_trusted_issuers(config)
    assert issuer.jku == () and issuer.jwks is not None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("issuers: [\n  - iss: x", "not valid YAML"),
        ("- just a list", "top level"),
        ("issuers: []\nextra: 1", "unknown top-level keys"),
        ("issuers: {iss: x}", "must be a list"),
        (
            "issuers:\n  - iss: https://a.example\n    jku: [https://a.example/j]\n    algs: [x]",
            "unknown keys",
        ),
        ("issuers:\n  - jku: [https://a.example/j]", "'iss'"),
        ("issuers:\n  - iss: https://a.example\n    jku: [http://a.example/jwks]", "https"),
        ("issuers:\n  - iss: https://a.example\n    jku: [http://10.0.0.1/jwks]", "https"),
        ("issuers:\n  - iss: https://a.example\n    jku: [ftp://a.example/jwks]", "https"),
        ("issuers:\n  - iss: https://a.example\n    jku: [/relative/jwks]", "absolute"),
        ("issuers:\n  - iss: https://a.example\n    jku: https://a.example/j", "list"),
        (
            "issuers:\n  - iss: https://a.example\n    jwks_file: keys/missing.json",
            "does not exist",
        ),
        ("issuers:\n  - iss: https://a.example", "no key source"),
        (
            "issuers:\n  - iss: https://a.example\n    jku: [https://a.example/j]\n"
            "    enabled: 'no'",
            "'enabled'",
        ),
        (
            "issuers:\n  - iss: https://a.example\n    jku: [https://a.example/j]\n    tenants: a",
            "'tenants'",
        ),
        (
            "issuers:\n  - {iss: https://a.example, jku: [https://a.example/j]}\n"
            "  - {iss: https://a.example, jku: [https://a.example/k]}",
            "twice",
        ),
    ],
)
def test_loader_fails_loudly(tmp_path, text, message):
    config = tmp_path / "issuers.yaml"
    config.write_text(text)
    with pytest.raises(TrustedIssuersError, match=message):
        load_trusted_issuers(config)


def test_loader_refuses_private_key_in_jwks_file(tmp_path, es_key):
    private = ECAlgorithm.to_jwk(es_key, as_dict=True)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "k.json").write_text(json.dumps(jwks({**private, "kid": "es-1"})))
    config = tmp_path / "issuers.yaml"
    config.write_text("issuers:\n  - iss: https://a.example\n    jwks_file: keys/k.json\n")
    with pytest.raises(TrustedIssuersError, match="private key material"):
        load_trusted_issuers(config)


@pytest.mark.parametrize(
    "document",
    [{"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}, {"keys": []}, {"nokeys": 1}, []],
)
def test_loader_refuses_unusable_jwks_file(tmp_path, document):
    (tmp_path / "k.json").write_text(json.dumps(document))
    config = tmp_path / "issuers.yaml"
    config.write_text("issuers:\n  - iss: https://a.example\n    jwks_file: k.json\n")
    with pytest.raises(TrustedIssuersError):
        load_trusted_issuers(config)


def test_loader_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(TrustedIssuersError, match="cannot read"):
        load_trusted_issuers(tmp_path / "absent.yaml")
    other = tmp_path / "issuers.toml"
    other.write_text("")
    with pytest.raises(TrustedIssuersError, match=r"\.yaml"):
        load_trusted_issuers(other)


def test_build_verifier_from_settings(tmp_path, es_key, replay, clock):
    from cds_service.auth import build_verifier
    from cds_service.config import Settings

    write_jwks_file(tmp_path, es_key)
    config = tmp_path / "issuers.yaml"
    config.write_text(f"issuers:\n  - iss: {ISS}\n    jwks_file: keys/ehr-jwks.json\n")
    settings = Settings.from_mapping(
        {"trusted_issuers_file": config, "jwt_algorithms": ("ES384",), "jwt_leeway_seconds": 5}
    )
    verifier = build_verifier(settings, remember_jti=replay, clock=clock)
    assert verifier.algorithms == frozenset({"ES384"})
    assert verifier.verify(bearer(sign(es_key)), AUD).iss == ISS
