"""CORS for browser clients such as the CDS Hooks sandbox (checklist S-10, section 11 item 1)."""

from __future__ import annotations

import pytest

from tests.http import builders as b

SANDBOX = "https://sandbox.cds-hooks.org"
PREFLIGHT = {
    "Origin": SANDBOX,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}
ENDPOINTS = [
    "/cds-services",
    "/cds-services/foot-drop-patient-view",
    "/cds-services/foot-drop-order-select",
    "/cds-services/foot-drop-patient-view/feedback",
]


def listed(header):
    return {item.strip().lower() for item in (header or "").split(",")}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_preflight_is_answered(client, path):
    response = client.options(path, headers=PREFLIGHT)
    assert 200 <= response.status_code < 300
    assert response.headers["Access-Control-Allow-Origin"] in ("*", SANDBOX)
    assert {"post"} <= listed(response.headers["Access-Control-Allow-Methods"])
    assert {"authorization", "content-type"} <= listed(
        response.headers["Access-Control-Allow-Headers"])


def test_preflight_for_discovery_get(client):
    headers = {**PREFLIGHT, "Access-Control-Request-Method": "GET"}
    response = client.options("/cds-services", headers=headers)
    assert {"get"} <= listed(response.headers["Access-Control-Allow-Methods"])


def error_responses(client):
    bad_json = client.post("/cds-services/foot-drop-patient-view", data=b"{",
                           content_type="application/json", headers={"Origin": SANDBOX})
    unknown = client.post("/cds-services/nope", json=b.patient_view(),
                          headers={"Origin": SANDBOX})
    wrong_method = client.get("/cds-services/foot-drop-patient-view",
                              headers={"Origin": SANDBOX})
    no_data = client.post("/cds-services/foot-drop-patient-view",
                          json=b.without_prefetch(b.patient_view()), headers={"Origin": SANDBOX})
    return {400: bad_json, 404: unknown, 405: wrong_method, 412: no_data}


def test_errors_carry_the_allow_origin_header(client):
    for status, response in error_responses(client).items():
        assert response.status_code == status
        assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX), status


def test_internal_error_carries_the_allow_origin_header(app, client, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["cds"].pipeline, "call", broken)
    response = client.post("/cds-services/foot-drop-patient-view", json=b.patient_view(),
                           headers={"Origin": SANDBOX})
    assert response.status_code == 500
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert "boom" not in response.get_data(as_text=True)
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)


def test_success_responses_carry_the_allow_origin_header(client):
    for response in (
        client.get("/cds-services", headers={"Origin": SANDBOX}),
        client.post("/cds-services/foot-drop-patient-view", json=b.patient_view(),
                    headers={"Origin": SANDBOX}),
    ):
        assert response.status_code == 200
        assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": (SANDBOX,)}])
def test_configured_origins_only(client):
    allowed = client.options("/cds-services/foot-drop-patient-view", headers=PREFLIGHT)
    assert allowed.headers["Access-Control-Allow-Origin"] == SANDBOX
    for origin in ("https://evil.example.net", "https://sandbox.cds-hooks.org.evil.net"):
        preflight = client.options("/cds-services/foot-drop-patient-view",
                                   headers={**PREFLIGHT, "Origin": origin})
        assert "Access-Control-Allow-Origin" not in preflight.headers, origin
        post = client.post("/cds-services/foot-drop-patient-view", json=b.patient_view(),
                           headers={"Origin": origin})
        assert "Access-Control-Allow-Origin" not in post.headers, origin


@pytest.mark.parametrize("settings_overrides", [{"cors_origins": (SANDBOX,)}])
def test_configured_origin_gets_the_header_on_errors(client):
    response = client.post("/cds-services/nope", json={}, headers={"Origin": SANDBOX})
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert "origin" in listed(response.headers.get("Vary"))


def test_cors_origins_from_the_environment(tmp_path, monkeypatch):
    from cds_service import create_app

    monkeypatch.setenv("CDS_CORS_ORIGINS", SANDBOX)
    monkeypatch.setenv("CDS_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    client = create_app().test_client()
    assert client.get("/cds-services", headers={"Origin": SANDBOX}).headers[
        "Access-Control-Allow-Origin"] == SANDBOX
    assert "Access-Control-Allow-Origin" not in client.get(
        "/cds-services", headers={"Origin": "https://other.example.org"}).headers


@pytest.mark.parametrize("settings_overrides", [{"auth": "required"}])
def test_preflight_needs_no_jwt_and_401_carries_the_allow_origin_header(client):
    for path in ENDPOINTS:
        preflight = client.options(path, headers=PREFLIGHT)
        assert 200 <= preflight.status_code < 300, path
        assert "Access-Control-Allow-Origin" in preflight.headers
    response = client.post("/cds-services/foot-drop-patient-view", json=b.patient_view(),
                           headers={"Origin": SANDBOX})
    assert response.status_code == 401
    assert response.headers.get("Access-Control-Allow-Origin") in ("*", SANDBOX)
    assert "www-authenticate" in listed(response.headers["Access-Control-Expose-Headers"])
