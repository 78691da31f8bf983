"""JWT trust at the HTTP boundary (CDS_AUTH=required): discovery, service and feedback calls.

The verifier itself is unit-tested in tests/auth; here we check what the EHR and the operator see:
401 + WWW-Authenticate + CORS with a body that names no check, aud bound to CDS_PUBLIC_BASE_URL
(never the Host header), replay caught across workers sharing one database, preflight without a
token, and a log that names the failed check but never holds the token. Plus the serve bind rule.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging

import pytest
from cryptography.hazmat.primitives import serialization

from cds_service import create_app
from cds_service.__main__ import check_bind_allowed, main
from cds_service.auth import REASONS
from cds_service.clock import fixed_clock
from cds_service.config import Settings, SettingsError
from cds_service.fixtures import iter_fixtures
from tests.conftest import NOW
from tests.security.conftest import (
    BASE,
    DISCOVERY_AUD,
    FEEDBACK_AUD,
    PV,
    SERVICE_AUD,
    claims,
)

ORIGIN = "https://sandbox.cds-hooks.org"
FEEDBACK = {"feedback": [{"card": "3f2d8c1e-7a44-4b0e-9a8e-1c2b3d4e5f60", "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-20T11:59:00Z"}]}


def hook_request() -> dict:
    fixture = next(f for f in iter_fixtures(NOW) if f.hook == "patient-view")
    return fixture.request


ENDPOINTS = {
    "discovery": ("GET", "/cds-services", DISCOVERY_AUD),
    "service": ("POST", f"/cds-services/{PV}", SERVICE_AUD),
    "feedback": ("POST", f"/cds-services/{PV}/feedback", FEEDBACK_AUD),
}


def call(client, endpoint: str, token: str | None = None, *, authorization: str | None = None,
         headers: dict | None = None):
    method, path, _ = ENDPOINTS[endpoint]
    sent = {"Origin": ORIGIN, **(headers or {})}
    if authorization is not None:
        sent["Authorization"] = authorization
    elif token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if method == "GET":
        return client.get(path, headers=sent)
    body = FEEDBACK if endpoint == "feedback" else hook_request()
    return client.post(path, json=body, headers=sent)


def assert_unauthorized(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    assert "WWW-Authenticate" in response.headers.get("Access-Control-Expose-Headers", "")
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    text = response.get_data(as_text=True)
    for reason in REASONS:
        assert reason not in text, f"401 body names the check {reason!r}"
    for word in ("aud", "exp", "iat", "jti", "signature", "issuer", "kid", "replay", "expired"):
        assert word not in text.lower().replace("unauthorized", ""), word


# -- 401 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_no_token_is_401_everywhere(client, endpoint):
    assert_unauthorized(call(client, endpoint))


def hs256_with_public_key(keys, aud: str) -> str:
    """The classic confusion attack: HMAC-signed with the issuer's public key as the secret."""
    pem = keys.es.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "es-1"}).encode())
    payload = b64url(json.dumps(claims(aud)).encode())
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bad_tokens(make_token, keys, aud: str) -> dict[str, str]:
    """Authorization header values that must all fail, keyed by the reason the log should give."""
    now = int(NOW.timestamp())
    none_header = b64url(json.dumps({"alg": "none", "kid": "es-1"}).encode())
    unsigned = f"{none_header}.{b64url(json.dumps(claims(aud)).encode())}."
    return {
        "empty bearer (malformed_header)": "Bearer ",
        "malformed_header": "Basic dXNlcjpwYXNz",
        "malformed_token": "Bearer not-a-jwt",
        "expired": "Bearer " + make_token(aud, iat=now - 900, exp=now - 600),
        "not_yet_valid": "Bearer " + make_token(aud, iat=now + 900, exp=now + 1000),
        "wrong_audience": "Bearer " + make_token("https://cds.example.org/elsewhere"),
        "untrusted_issuer": "Bearer " + make_token(aud, iss="https://other-ehr.example.test"),
        "bad_signature": "Bearer " + make_token(aud, key=keys.stranger),
        "unknown_kid": "Bearer " + make_token(aud, kid="nope"),
        "alg_not_allowed": "Bearer " + unsigned,
        "hs256 (alg_not_allowed)": "Bearer " + hs256_with_public_key(keys, aud),
        "missing_claim": "Bearer " + make_token(aud, jti=None),
        "lifetime_too_long": "Bearer " + make_token(aud, exp=now + 7200),
    }


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_bad_tokens_are_401_with_one_indistinct_body(client, make_token, keys, endpoint,
                                                      captured_logs):
    aud = ENDPOINTS[endpoint][2]
    bodies = set()
    for expected_reason, header in bad_tokens(make_token, keys, aud).items():
        response = call(client, endpoint, authorization=header)
        assert_unauthorized(response)
        bodies.add(response.get_data())
        if expected_reason in REASONS:
            rejected = [line for line in captured_logs.lines() if line["event"] == "JWT rejected"]
            assert rejected[-1]["reason"] == expected_reason, (expected_reason, rejected[-1])
    assert len(bodies) == 1, "401 bodies differ, so they tell the caller which check failed"
    assert bodies == {call(client, endpoint).get_data()}


def test_unknown_service_without_token_is_401_not_404(client):
    """Unauthenticated callers cannot enumerate service ids."""
    response = client.post("/cds-services/no-such-service", json={}, headers={"Origin": ORIGIN})
    assert_unauthorized(response)
    assert_unauthorized(client.get("/cds-services/", headers={"Origin": ORIGIN}))


@pytest.mark.parametrize("path", [
    "//cds-services", "/cds-services/", "/./cds-services", "/cds-services/.", "/%63ds-services",
    f"/cds-services//{PV}", f"/cds-services/{PV}/../{PV}", f"/cds-services/{PV}//feedback",
    f"/cds-services/{PV}/feedback/",
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_no_spelling_of_a_path_reaches_an_endpoint_without_a_token(client, path, method):
    response = client.open(path, method=method, json=FEEDBACK)
    assert response.status_code in (401, 404, 405), response.status_code
    assert "services" not in response.get_json() and "received" not in response.get_json()


# -- 200 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["ES384", "RS384"])
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_valid_token_with_exact_endpoint_aud_is_accepted(client, make_token, endpoint, alg):
    aud = ENDPOINTS[endpoint][2]
    response = call(client, endpoint, make_token(aud, alg=alg))
    assert response.status_code == 200, response.get_json()
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)


def test_array_aud_containing_the_endpoint_is_accepted(client, make_token):
    token = make_token(["https://other.example.org/x", SERVICE_AUD])
    assert call(client, "service", token).status_code == 200


@pytest.mark.parametrize(
    ("endpoint", "aud"),
    [
        ("service", DISCOVERY_AUD),  # the discovery URL used on a service
        ("feedback", SERVICE_AUD),  # the service URL used on its feedback endpoint
        ("discovery", SERVICE_AUD),
        ("service", SERVICE_AUD + "/"),  # trailing slash is a different URL
        ("service", SERVICE_AUD.replace("https://", "http://")),
        ("service", f"{BASE}/cds-services/foot-drop-order-select"),  # another service
    ],
)
def test_token_for_another_endpoint_is_refused(client, make_token, endpoint, aud, captured_logs):
    assert_unauthorized(call(client, endpoint, make_token(aud)))
    rejected = [line for line in captured_logs.lines() if line["event"] == "JWT rejected"]
    assert [line["reason"] for line in rejected] == ["wrong_audience"]


# -- aud comes from CDS_PUBLIC_BASE_URL, never from the request -----------------------------------
SPOOFED = {"Host": "evil.example.net", "X-Forwarded-Host": "evil.example.net",
           "X-Forwarded-Proto": "http", "X-Forwarded-Prefix": "/x", "Forwarded": "host=evil"}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_host_header_does_not_change_the_audience(client, make_token, endpoint):
    _method, path, aud = ENDPOINTS[endpoint]
    spoofed_aud = f"http://evil.example.net{path}"
    assert_unauthorized(call(client, endpoint, make_token(spoofed_aud), headers=SPOOFED))
    # the request as seen on the wire: http://localhost/... ; that is not the audience either
    assert_unauthorized(call(client, endpoint, make_token(f"http://localhost{path}")))
    ok = call(client, endpoint, make_token(aud), headers=SPOOFED)
    assert ok.status_code == 200


# -- replay across workers ------------------------------------------------------------------------
def test_replay_is_caught_by_another_worker_sharing_the_database(tmp_path, settings_overrides,
                                                                  make_token, captured_logs):
    config = {"database_url": f"sqlite:///{tmp_path / 'shared.sqlite3'}", **settings_overrides}
    worker_a = create_app(config, clock=fixed_clock(NOW)).test_client()
    worker_b = create_app(config, clock=fixed_clock(NOW), migrate=False).test_client()
    token = make_token(SERVICE_AUD)
    assert call(worker_a, "service", token).status_code == 200
    assert_unauthorized(call(worker_b, "service", token))
    assert_unauthorized(call(worker_a, "service", token))
    reasons = [line["reason"] for line in captured_logs.lines() if line["event"] == "JWT rejected"]
    assert reasons == ["replay", "replay"]
    # a fresh token is fine on either worker
    assert call(worker_b, "service", make_token(SERVICE_AUD)).status_code == 200


def test_a_refused_token_does_not_use_up_its_jti(client, make_token):
    token_wrong_aud = make_token(DISCOVERY_AUD, jti="shared-jti")
    assert_unauthorized(call(client, "service", token_wrong_aud))
    assert call(client, "discovery", token_wrong_aud).status_code == 200


# -- preflight ------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_preflight_needs_no_token(client, endpoint):
    method, path, _ = ENDPOINTS[endpoint]
    response = client.options(path, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert response.status_code in (200, 204)
    assert response.headers["Access-Control-Allow-Origin"] in ("*", ORIGIN)
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert method in response.headers["Access-Control-Allow-Methods"]
    assert "WWW-Authenticate" not in response.headers


# -- logs -----------------------------------------------------------------------------------------
def test_log_names_the_failed_check_and_never_the_token(client, make_token, keys, captured_logs):
    tokens = {
        "wrong_audience": make_token(DISCOVERY_AUD),
        "bad_signature": make_token(SERVICE_AUD, key=keys.stranger),
        "expired": make_token(SERVICE_AUD, iat=int(NOW.timestamp()) - 900,
                              exp=int(NOW.timestamp()) - 600),
    }
    good = make_token(SERVICE_AUD)
    for reason, token in tokens.items():
        assert_unauthorized(call(client, "service", token))
        line = [x for x in captured_logs.lines() if x["event"] == "JWT rejected"][-1]
        assert line["reason"] == reason
        assert line["level"] == "warning"
    assert call(client, "service", good).status_code == 200
    request_lines = [x for x in captured_logs.lines() if x["event"] == "request"]
    assert [x.get("auth_failure") for x in request_lines] == [*tokens, None]
    for text in (captured_logs.text, captured_logs.raw_text()):
        for token in [*tokens.values(), good]:
            for part in token.split("."):
                assert part not in text, "a token (or a segment of one) reached the log"
        assert "eyJ" not in text


# -- the serve bind rule --------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "cds.example.org"])
def test_implicit_off_refuses_a_non_loopback_address(host):
    with pytest.raises(SettingsError, match="CDS_AUTH"):
        check_bind_allowed(Settings.from_env({}), host)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_implicit_off_allows_loopback(host):
    check_bind_allowed(Settings.from_env({}), host)


def test_explicit_off_or_required_may_listen_anywhere(issuers_file):
    check_bind_allowed(Settings.from_env({"CDS_AUTH": "off"}), "0.0.0.0")
    required = Settings.from_env({"CDS_AUTH": "required",
                                  "CDS_TRUSTED_ISSUERS_FILE": str(issuers_file)})
    check_bind_allowed(required, "0.0.0.0")


def test_serve_exits_before_listening_when_the_bind_is_refused(monkeypatch, capsys):
    monkeypatch.delenv("CDS_AUTH", raising=False)
    monkeypatch.setenv("CDS_DATABASE_URL", "sqlite:///:memory:")
    assert main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to listen on 0.0.0.0" in capsys.readouterr().err


def test_auth_off_logs_a_warning_at_start(tmp_path, captured_logs):
    create_app({"database_url": f"sqlite:///{tmp_path / 'off.sqlite3'}", "auth": "off"})
    warnings = [x for x in captured_logs.lines() if x["level"] == "warning"]
    assert any("JWT verification is OFF" in x["event"] for x in warnings)


def test_auth_required_logs_no_such_warning(tmp_path, settings_overrides, captured_logs):
    create_app({"database_url": f"sqlite:///{tmp_path / 'on.sqlite3'}", **settings_overrides})
    assert not any("OFF" in x["event"] for x in captured_logs.lines())
    assert any(x["event"] == "service ready" and x.get("auth") == "required"
               for x in captured_logs.lines())
    assert logging.getLogger().level <= logging.INFO


def test_docs_show_the_rejection_log_line_the_service_writes(client, make_token, captured_logs):
    """docs/auth.md quotes a real "JWT rejected" line: same members, level and logger."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "auth.md").read_text(encoding="utf-8")
    documented = json.loads(next(line for line in docs.splitlines()
                                 if line.startswith("{") and '"JWT rejected"' in line))
    assert_unauthorized(call(client, "service", make_token(DISCOVERY_AUD),
                             headers={"X-Request-Id": "req-7"}))
    real = next(line for line in captured_logs.lines() if line["event"] == "JWT rejected")
    assert set(real) == set(documented)
    assert {k: real[k] for k in ("level", "logger", "event", "request_id")} == {
        k: documented[k] for k in ("level", "logger", "event", "request_id")}
