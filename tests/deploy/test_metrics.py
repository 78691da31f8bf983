"""GET /metrics: request, card, FHIR fallback and feedback counters in Prometheus format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.config import PROJECT_ROOT
from cds_service.fixtures import fixture_paths, load_fixture
from tests.conftest import NOW

PV = "foot-drop-patient-view"


def samples(client) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(data, name: str, **labels: str) -> float:
    return data.get((name, frozenset(labels.items())), 0.0)


def empty_request(patient: str = "p1", **extra) -> dict:
    return {"hook": "patient-view", "hookInstance": "m-1",
            "context": {"userId": "Practitioner/u", "patientId": patient}, **extra}


@pytest.fixture
def fhir_stub() -> Iterator[str]:
    """A minimal FHIR server: Patient/p1, empty searchsets, Observation searches fail (500)."""

    @Request.application
    def app(request: Request) -> Response:
        if request.path.endswith("/Patient/p1"):
            body = {"resourceType": "Patient", "id": "p1"}
        elif "/Observation" in request.path:
            return Response("boom", status=500)
        else:
            body = {"resourceType": "Bundle", "type": "searchset", "entry": []}
        return Response(json.dumps(body), content_type="application/fhir+json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/fhir"
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


def test_requests_and_cards_are_counted(client):
    paths = [p for p in fixture_paths() if load_fixture(p, NOW).expected]
    assert paths, "a fixture with cards"
    fixture = load_fixture(paths[0], NOW)
    response = client.post(f"/cds-services/{fixture.service_id}", json=fixture.request)
    assert response.status_code == 200
    client.post("/cds-services/no-such-service", json={})
    client.get("/cds-services")
    data = samples(client)
    assert value(data, "cds_http_requests_total", endpoint="service",
                 service=fixture.service_id, status="200") == 1
    assert value(data, "cds_http_requests_total", endpoint="service", service="unknown",
                 status="404") == 1
    assert value(data, "cds_http_requests_total", endpoint="discovery", service="",
                 status="200") == 1
    assert value(data, "cds_http_request_duration_seconds_count", endpoint="service",
                 service=fixture.service_id, status="200") == 1
    for card in response.get_json()["cards"]:
        assert value(data, "cds_cards_total", service=fixture.service_id,
                     recommendation=card["source"]["topic"]["code"],
                     indicator=card["indicator"]) >= 1


def test_fallback_calls_and_failures(client, fhir_stub):
    ok = client.post(f"/cds-services/{PV}", json=empty_request(
        fhirServer=fhir_stub, prefetch={"observations": None}))
    assert ok.status_code == 200
    failed = client.post(f"/cds-services/{PV}", json=empty_request(fhirServer=fhir_stub))
    assert failed.status_code == 412
    no_server = client.post(f"/cds-services/{PV}", json=empty_request())
    assert no_server.status_code == 412
    data = samples(client)
    # call 1 fetched 8 keys; call 2 failed on observations (its successful fetches are not
    # reported by the pipeline); call 3 never reached a server
    assert value(data, "cds_fhir_fallback_calls_total", service=PV, key="conditions") == 1
    assert value(data, "cds_fhir_fallback_calls_total", service=PV, key="observations") == 1
    assert value(data, "cds_fhir_fallback_calls_total", service=PV, key="patient") == 1
    assert value(data, "cds_fhir_fallback_failures_total", service=PV, key="observations",
                 reason="server-error") == 1
    assert value(data, "cds_fhir_fallback_failures_total", service=PV, key="patient",
                 reason="no-fhir-server") == 1


def test_feedback_outcomes(client):
    when = datetime(2026, 11, 20, tzinfo=UTC).isoformat()
    body = {"feedback": [
        {"card": "c1", "outcome": "accepted", "outcomeTimestamp": when,
         "acceptedSuggestions": [{"id": "s1"}]},
        {"card": "c2", "outcome": "overridden", "outcomeTimestamp": when},
    ]}
    assert client.post(f"/cds-services/{PV}/feedback", json=body).status_code == 200
    data = samples(client)
    assert value(data, "cds_feedback_total", service=PV, outcome="accepted") == 1
    assert value(data, "cds_feedback_total", service=PV, outcome="overridden") == 1


def test_each_app_has_its_own_registry(tmp_path, client):
    client.get("/cds-services")
    other = create_app({"database_url": f"sqlite:///{tmp_path / 'other.sqlite3'}"},
                       clock=fixed_clock(NOW)).test_client()
    data = samples(other)
    assert value(data, "cds_http_requests_total", endpoint="discovery", service="",
                 status="200") == 0


@pytest.mark.parametrize("settings_overrides", [{"metrics_enabled": False}])
def test_metrics_can_be_switched_off(client):
    assert client.get("/metrics").status_code == 404


def test_multiprocess_mode(tmp_path):
    """Under gunicorn workers (PROMETHEUS_MULTIPROC_DIR), /metrics adds up every process."""
    script = (
        "from cds_service import create_app\n"
        f"app = create_app({{'database_url': 'sqlite:///{tmp_path / 'mp.sqlite3'}', "
        "'log_level': 'ERROR'})\n"
        "c = app.test_client()\n"
        "c.get('/cds-services'); c.get('/cds-services')\n"
        "print(c.get('/metrics').get_data(as_text=True))\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")}
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert list((tmp_path / "prom").glob("*.db")), "workers write their values to the directory"
    line = next(line for line in out.splitlines()
                if line.startswith("cds_http_requests_total{") and 'endpoint="discovery"' in line)
    assert line.endswith(" 2.0")
