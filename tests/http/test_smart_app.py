"""The SMART timeline app's routes: assets under a strict CSP, its config, and /app/api/evaluate
answering with the same cards a patient-view hook call gives for the same data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cds_service.fhir.record import iter_resources
from cds_service.fixtures import FIXTURES_DIR, load_fixture
from tests.conftest import NOW

PROGRESSIVE = FIXTURES_DIR / "patient-view" / "fires-urgent-progressive-weakness-3minus.json"
SERVICE = "foot-drop-patient-view"


def fixture_request(path: Path) -> dict[str, Any]:
    return load_fixture(path, NOW).request


def resources_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(r) for value in request["prefetch"].values() for r in iter_resources(value)]


def message_of(response) -> str:
    return response.get_json()["issue"][0]["diagnostics"]


def evaluate(client, body: Any):
    return client.post("/app/api/evaluate", json=body)


def test_app_shows_the_same_cards_as_the_hook_call_with_grades_and_red_flag(client, call_service):
    request = fixture_request(PROGRESSIVE)
    hook_cards = call_service(SERVICE, request).get_json()["cards"]

    response = evaluate(client, {"patientId": request["context"]["patientId"],
                                 "resources": resources_of(request)})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert [c["recommendation"] for c in body["cards"]] == [
        c["source"]["topic"]["code"] for c in hook_cards]
    assert [c["summary"] for c in body["cards"]] == [c["summary"] for c in hook_cards]
    assert body["cards"][0]["indicator"] == "critical"
    assert "<strong>Do now:</strong>" in body["cards"][0]["detailHtml"]  # evidence: card links
    timeline = body["timeline"]
    left = next(s for s in timeline["grades"] if s["id"] == "ankle-dorsiflexion-strength:left")
    assert [(p["date"], p["recordedAs"]) for p in left["points"]] == [
        ("2026-11-14", "4/5"), ("2026-11-18", "3-/5")]
    assert [(f["name"], f["date"]) for f in timeline["redFlags"]] == [
        ("progressive weakness", "2026-11-18")]
    assert timeline["asOf"] == "2026-11-20"
    assert timeline["footDrop"]["course"] == "worsening"


def test_every_patient_view_card_links_to_the_timeline_app(call_service):
    cards = call_service(SERVICE, fixture_request(PROGRESSIVE)).get_json()["cards"]
    assert cards
    for card in cards:
        smart = [link for link in card["links"] if link["type"] == "smart"]
        assert smart == [{"label": "Open foot-drop timeline",
                          "url": "http://127.0.0.1:8080/app/launch.html", "type": "smart"}]


@pytest.mark.parametrize("settings_overrides", [{"public_base_url": "https://cds.example.org/"}])
def test_timeline_link_uses_the_public_base_url(call_service):
    cards = call_service(SERVICE, fixture_request(PROGRESSIVE)).get_json()["cards"]
    assert {link["url"] for c in cards for link in c["links"] if link["type"] == "smart"} == {
        "https://cds.example.org/app/launch.html"}


def test_other_patients_resources_never_reach_the_timeline(client):
    request = fixture_request(PROGRESSIVE)
    resources = resources_of(request)
    body = evaluate(client, {"patientId": "someone-else", "resources": resources}).get_json()
    assert body["cards"] == []
    assert body["timeline"]["grades"] == []
    assert body["timeline"]["redFlags"] == []


@pytest.mark.parametrize(("body", "message"), [
    ([], "patientId"),
    ({"resources": []}, "patientId"),
    ({"patientId": "a/b", "resources": []}, "patientId"),
    ({"patientId": "p1"}, "resources"),
    ({"patientId": "p1", "resources": [1]}, "resources"),
])
def test_bad_evaluate_requests_are_clear_400s(client, body, message):
    response = evaluate(client, body)
    assert response.status_code == 400
    assert message in message_of(response)
    assert "Content-Security-Policy" in response.headers


def test_evaluate_needs_json(client):
    response = client.post("/app/api/evaluate", data="x", content_type="text/plain")
    assert response.status_code == 415


def test_config_names_client_scopes_and_the_patient_view_queries(client):
    response = client.get("/app/api/config")
    body = response.get_json()
    assert body["clientId"] == "foot-drop-timeline"
    assert body["ehrLaunchScope"].split() == ["launch", "openid", "fhirUser", "patient/*.read"]
    assert "launch/patient" in body["standaloneLaunchScope"].split()
    queries = {q["key"]: q for q in body["queries"]}
    assert queries["observations"]["query"].startswith("Observation?patient={{context.patientId}}")
    assert queries["observations"]["required"] is True
    assert queries["imagingStudies"]["required"] is False
    assert "patient" not in queries


@pytest.mark.parametrize("settings_overrides", [{
    "smart_app_dir": Path(__file__).parent / "no-such-dir",
    "smart_connect_src": "https: http://127.0.0.1:*",
    "smart_frame_ancestors": "https://ehr.example.org",
}])
def test_unbuilt_app_says_how_to_build_it_under_the_configured_csp(client):
    response = client.get("/app/launch.html")
    assert response.status_code == 503
    assert "make app" in message_of(response)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "connect-src 'self' https: http://127.0.0.1:*;" in csp
    assert csp.endswith("frame-ancestors https://ehr.example.org")


def test_built_app_pages_are_served_with_a_strict_csp(client, tmp_path, app):
    built = tmp_path / "dist"
    built.mkdir()
    (built / "index.html").write_text("<!doctype html><title>t</title>", encoding="utf-8")
    (built / "launch.html").write_text("<!doctype html><title>l</title>", encoding="utf-8")
    runtime = app.extensions["cds"]
    runtime.settings = runtime.settings.replace(smart_app_dir=built)
    for path in ("/app/", "/app/launch.html"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.mimetype == "text/html"
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
    assert client.get("/app/secrets.txt").status_code == 404
    assert client.get("/app/..%2Fpyproject.toml").status_code == 404


@pytest.mark.parametrize("settings_overrides", [{"smart_app_enabled": False}])
def test_app_can_be_switched_off(client):
    assert client.get("/app/api/config").status_code == 404
    assert evaluate(client, {"patientId": "p", "resources": []}).status_code == 404


@pytest.mark.parametrize("value", ["https:; script-src *", "a,b", ""])
def test_csp_settings_refuse_what_would_break_the_policy(value):
    from cds_service.config import Settings, SettingsError

    with pytest.raises(SettingsError):
        Settings.from_mapping({"smart_connect_src": value})
