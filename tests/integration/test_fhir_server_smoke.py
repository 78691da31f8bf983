"""Smoke tests for the in-memory FHIR R4 test server (tests/integration/fhir_server)."""

from __future__ import annotations

import time

import pytest
import requests

pytestmark = pytest.mark.integration

FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
PID = "fd-smoke-001"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"


def _put_entry(resource: dict) -> dict:
    ref = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": ref, "resource": resource, "request": {"method": "PUT", "url": ref}}


def _observation(oid: str, status: str, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
        "effectiveDateTime": when,
    }


@pytest.fixture(scope="module")
def seeded(fhir_server) -> str:
    base = fhir_server.base
    patient = {
        "resourceType": "Patient",
        "id": PID,
        "name": [{"family": "Smoke", "given": ["Test"]}],
    }
    r = requests.put(f"{base}/Patient/{PID}", json=patient, headers=HEADERS, timeout=10)
    assert r.status_code in (200, 201), r.text
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    assert r.json()["id"] == PID

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            _put_entry(
                {
                    "resourceType": "Condition",
                    "id": "fd-smoke-cond-1",
                    "subject": {"reference": f"Patient/{PID}"},
                    "code": {
                        "coding": [
                            {"system": ICD10, "code": "M21.372", "display": "Foot drop, left foot"}
                        ]
                    },
                }
            ),
            _put_entry(_observation("fd-smoke-obs-1", "final", "2024-01-05")),
            _put_entry(_observation("fd-smoke-obs-2", "amended", "2024-03-01T10:00:00Z")),
            _put_entry(_observation("fd-smoke-obs-3", "preliminary", "2023-12-01")),
        ],
    }
    for _ in range(2):  # the second POST checks that PUT entries upsert with stable ids
        r = requests.post(base, json=bundle, headers=HEADERS, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith(FHIR_JSON)
        body = r.json()
        assert body["type"] == "transaction-response"
        assert all(e["response"]["status"].startswith(("200", "201")) for e in body["entry"])
        assert [e["resource"]["id"] for e in body["entry"]] == [
            e["resource"]["id"] for e in bundle["entry"]
        ]
    return base


def test_read_patient(seeded):
    r = requests.get(f"{seeded}/Patient/{PID}", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    assert r.json()["name"][0]["family"] == "Smoke"


def test_search_pages_with_absolute_next_links(seeded):
    r = requests.get(f"{seeded}/Observation", params={"patient": PID, "_count": "2"}, timeout=10)
    assert r.status_code == 200
    page = r.json()
    assert page["type"] == "searchset"
    assert page["total"] == 3
    ids = [e["resource"]["id"] for e in page["entry"]]
    assert len(ids) == 2
    pages = 1
    while True:
        nxt = [link["url"] for link in page.get("link", []) if link["relation"] == "next"]
        if not nxt:
            break
        assert nxt[0].startswith(seeded + "/Observation?"), nxt[0]
        r = requests.get(nxt[0], timeout=10)
        assert r.status_code == 200
        page = r.json()
        ids += [e["resource"]["id"] for e in page.get("entry", [])]
        pages += 1
    assert pages == 2
    assert sorted(ids) == ["fd-smoke-obs-1", "fd-smoke-obs-2", "fd-smoke-obs-3"]
    for entry in page["entry"]:
        assert entry["fullUrl"] == f"{seeded}/Observation/{entry['resource']['id']}"


def test_status_or_list_and_sort(seeded):
    r = requests.get(
        f"{seeded}/Observation?patient={PID}&status=final,amended,corrected&_sort=-date", timeout=10
    )
    assert r.status_code == 200
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ["fd-smoke-obs-2", "fd-smoke-obs-1"]


def test_token_search_system_and_code(seeded):
    hit = requests.get(f"{seeded}/Condition?patient={PID}&code={ICD10}|M21.372", timeout=10)
    assert hit.status_code == 200
    assert [e["resource"]["id"] for e in hit.json()["entry"]] == ["fd-smoke-cond-1"]

    either = requests.get(
        f"{seeded}/Condition?patient={PID}&code={ICD10}|M21.371,{ICD10}|M21.372", timeout=10
    )
    assert either.json()["total"] == 1

    wrong_system = requests.get(
        f"{seeded}/Condition?patient={PID}&code=http://snomed.info/sct|M21.372", timeout=10
    )
    assert wrong_system.status_code == 200
    assert wrong_system.json()["total"] == 0
    assert "entry" not in wrong_system.json()


def test_unknown_search_parameter_is_rejected(seeded):
    r = requests.get(f"{seeded}/Condition?patient={PID}&no-such-param=1", timeout=10)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_missing_patient_is_404(fhir_server):
    r = requests.get(f"{fhir_server.base}/Patient/missing", timeout=10)
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith(FHIR_JSON)
    assert r.json()["resourceType"] == "OperationOutcome"


def test_requests_are_logged(seeded, fhir_server):
    requests.get(f"{seeded}/Patient/{PID}?_elements=id", timeout=10)
    deadline = time.monotonic() + 5  # the log arrives through a pipe and a reader thread
    while (
        "GET",
        f"/fhir/R4/Patient/{PID}",
    ) not in fhir_server.request_log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("GET", f"/fhir/R4/Patient/{PID}") in fhir_server.request_log()
    assert not any("?" in path for _, path in fhir_server.request_log())
