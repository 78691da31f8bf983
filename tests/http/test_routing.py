"""No redirects from routing: a doubled or trailing slash is a JSON 404, never an HTML 308 whose
Location comes from the caller's Host header (an open redirect)."""

from __future__ import annotations

import pytest
from flask import Flask

from tests.http import builders as b

PATIENT_VIEW = "/cds-services/foot-drop-patient-view"


def assert_json_404(response) -> None:
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert "Location" not in response.headers
    assert "evil.example" not in response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["details"]["coding"][0]["code"] == "not-found"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/cds-services//foot-drop-patient-view"),
    ("POST", "//cds-services/foot-drop-patient-view"),
    ("POST", "/cds-services/foot-drop-patient-view//feedback"),
    ("GET", "//cds-services"),
    ("GET", "//healthz"),
    ("GET", "/preview//fixtures/patient-view/x"),
    ("GET", "/preview/static//preview.js"),
])
def test_doubled_slash_is_a_json_404_not_a_redirect(client, method, path):
    response = client.open(path, method=method, json=b.patient_view(),
                           headers={"Host": "evil.example"})
    assert_json_404(response)


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/cds-services/"),
    ("POST", PATIENT_VIEW + "/"),
    ("POST", PATIENT_VIEW + "/feedback/"),
    ("GET", "/healthz/"),
    ("GET", "/metrics/"),
    ("GET", "/preview/"),
    ("POST", "/preview/render/"),
])
def test_trailing_slash_is_a_json_404_as_before(client, method, path):
    assert_json_404(client.open(path, method=method, json={"cards": []},
                                headers={"Host": "evil.example"}))


def test_every_route_still_answers_at_its_own_path(client):
    assert client.get("/cds-services").status_code == 200
    assert client.post(PATIENT_VIEW, json=b.patient_view()).status_code == 200
    feedback = {"feedback": [{"card": "2d6b1a8e-6a44-4a39-9a8b-3f1c2a7d9e01",
                              "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:03:00Z"}]}
    assert client.post(PATIENT_VIEW + "/feedback", json=feedback).status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/preview").status_code == 200
    assert client.get("/preview/static/preview.js").status_code == 200
    assert client.post("/preview/render", json={"cards": []}).status_code == 200


def test_a_redirect_raised_by_routing_is_answered_as_a_json_404(app: Flask):
    """The fallback in errors.py: a rule ending in "/" makes Werkzeug redirect "/x" to "/x/"."""
    app.add_url_rule("/slash-probe/", "slash_probe", lambda: "never reached")
    response = app.test_client().get("/slash-probe", headers={"Host": "evil.example"})
    assert_json_404(response)
