"""One structured JSON log line per request: request id, service, hook, status, duration."""

from __future__ import annotations

import json

from cds_service.logs import JsonLineFormatter
from tests.http import builders as b


def request_lines(caplog):
    formatter = JsonLineFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.getMessage() == "request"]


def test_service_call_is_logged_as_one_json_line(client, caplog):
    response = client.post("/cds-services/foot-drop-patient-view",
                           json=b.patient_view(prefetch=b.foot_drop_prefetch()),
                           headers={"X-Request-Id": "ehr-req-42"})
    assert response.headers["X-Request-Id"] == "ehr-req-42"
    (line,) = request_lines(caplog)
    assert line["request_id"] == "ehr-req-42"
    assert line["service"] == "foot-drop-patient-view" and line["hook"] == "patient-view"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "orthosis-and-rehabilitation" in line["cards"]


def test_request_id_is_generated_when_missing_or_unsafe(client, caplog):
    for header in ({}, {"X-Request-Id": "bad id;<script>"}, {"X-Request-Id": "x" * 200}):
        response = client.get("/cds-services", headers=header)
        generated = response.headers["X-Request-Id"]
        assert generated and generated != header.get("X-Request-Id")
        assert request_lines(caplog)[-1]["request_id"] == generated


def test_412_log_names_the_failed_keys(client, caplog):
    body = b.without_prefetch(b.patient_view(), "conditions")
    assert client.post("/cds-services/foot-drop-patient-view", json=body).status_code == 412
    line = request_lines(caplog)[-1]
    assert line["status"] == 412 and line["service"] == "foot-drop-patient-view"
    assert line["failed_keys"] == {"conditions": "no-fhir-server"}


def test_error_responses_are_logged_with_their_status(client, caplog):
    client.post("/cds-services/foot-drop-patient-view", data=b"{",
                content_type="application/json")
    client.post("/cds-services/nope", json={})
    statuses = [line["status"] for line in request_lines(caplog)]
    assert statuses == [400, 404]


def test_patient_data_is_not_logged(client, caplog):
    body = b.patient_view("secret-patient-77", prefetch=b.foot_drop_prefetch("secret-patient-77"))
    assert client.post("/cds-services/foot-drop-patient-view", json=body).status_code == 200
    assert "secret-patient-77" not in caplog.text
    assert all("secret-patient-77" not in json.dumps(line) for line in request_lines(caplog))
