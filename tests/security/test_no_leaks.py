"""Nothing leaked: with logging at DEBUG, running every scenario fixture through the service, a
FHIR fallback with an access token, a loopback FHIR server (real sockets, so urllib3 would log
URLs if it could) and JWT-authenticated calls, the logs hold no access token, no JWT and no
patient name, birth date, identifier or telecom value.

The fixtures' Patients carry only ids, gender and birth dates, so each gets a synthetic name,
identifier and telecom (unique, unmistakable strings) before it is sent: a leak of any of them
would be caught, not just of what the fixtures happen to hold.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import responses

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.fixtures import iter_fixtures
from tests.conftest import NOW
from tests.robustness.fhir_double import misbehaving_fhir
from tests.security.conftest import SERVICE_AUD

SERVICES = {"patient-view": "foot-drop-patient-view", "order-select": "foot-drop-order-select",
            "order-sign": "foot-drop-order-sign"}
ACCESS_TOKEN = "SECRET-TOKEN-4f9c2e7a-access"
FHIR_BASE = "https://fhir.leakcheck.example.org/r4"
LOOPBACK_PATIENT_ID = "pt-leakcheck-77"  # goes into FHIR URLs on real sockets


def patients_in(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient":
            yield node
        for value in node.values():
            yield from patients_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from patients_in(value)


def with_identity(request: dict, n: int) -> dict:
    """The request with every Patient given a name, identifier and telecom."""
    request = copy.deepcopy(request)
    for i, patient in enumerate(patients_in(request)):
        tag = f"{n}x{i}"
        patient.setdefault("name", [{"family": f"Quillfeather{tag}",
                                     "given": [f"Zebulonia{tag}"],
                                     "text": f"Zebulonia Quillfeather {tag}"}])
        patient.setdefault("identifier", [{"system": "urn:oid:2.16.840.1.113883.4.1",
                                           "value": f"MRN-LEAK-{tag}"}])
        patient.setdefault("telecom", [{"system": "phone", "value": f"+1-555-01{n:02d}-{i:03d}"}])
    return request


def secrets_of(requests_sent: list[dict]) -> set[str]:
    """Every name part, birth date, identifier and telecom value of every Patient sent, and its
    resource id (a pseudonym, but one that links a log line to a chart)."""
    found: set[str] = set()
    for request in requests_sent:
        for patient in patients_in(request):
            if isinstance(patient.get("id"), str) and len(patient["id"]) >= 6:
                found.add(patient["id"])
            for name in patient.get("name") or []:
                found.update(name.get("given") or [])
                found.update(v for v in (name.get("family"), name.get("text")) if v)
            found.update(i["value"] for i in patient.get("identifier") or [] if i.get("value"))
            found.update(t["value"] for t in patient.get("telecom") or [] if t.get("value"))
            if patient.get("birthDate"):
                found.add(patient["birthDate"])
    return found


def assert_clean(texts: list[str], secrets: set[str]) -> None:
    everything = "\n".join(texts)
    assert everything.strip(), "nothing was logged: the capture is not working"
    leaked = sorted(s for s in secrets if s in everything)
    assert not leaked, f"patient data in the logs: {leaked[:5]}"
    assert ACCESS_TOKEN not in everything
    assert "SECRET-TOKEN" not in everything
    assert not re.search(r"eyJ[\w-]{4,}", everything), "a JWT (or its header) reached the logs"


@pytest.fixture
def debug_app(tmp_path):
    return create_app({"database_url": f"sqlite:///{tmp_path / 'leak.sqlite3'}",
                       "log_level": "DEBUG", "fhir_budget_seconds": 2.0},
                      clock=fixed_clock(NOW))


def test_fixtures_and_fallbacks_leave_no_patient_data_or_token_in_the_logs(
        debug_app, captured_logs, capfd):
    client = debug_app.test_client()
    sent: list[dict] = []
    statuses = []
    fixtures = list(iter_fixtures(NOW))
    assert len(fixtures) >= 2
    for n, fixture in enumerate(fixtures):
        request = with_identity(fixture.request, n)
        sent.append(request)
        response = client.post(f"/cds-services/{SERVICES[fixture.hook]}", json=request)
        statuses.append(response.status_code)
    assert set(statuses) == {200}, statuses

    # fallback: no prefetch, the FHIR server (a `responses` double) is called with the token
    template = next(f for f in fixtures if f.hook == "patient-view").request
    patient_id = template["context"]["patientId"]
    fallback = {k: v for k, v in copy.deepcopy(template).items() if k != "prefetch"}
    fallback["fhirServer"] = FHIR_BASE
    fallback["fhirAuthorization"] = {"access_token": ACCESS_TOKEN, "token_type": "Bearer",
                                     "expires_in": 300, "scope": "patient/*.read",
                                     "subject": "cds-service"}
    served = with_identity({"prefetch": template["prefetch"]}, 999)["prefetch"]
    sent.append(served)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(f"{FHIR_BASE}/Patient/{patient_id}", json=served["patient"])
        mock.get(re.compile(re.escape(FHIR_BASE) + r"/Condition\?.*"),
                 json=served["conditions"])
        observations = {"fail": True}

        def observation_search(_request: Any) -> tuple[int, dict, str]:
            if observations["fail"]:
                outcome = {"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "exception",
                     "diagnostics": f"boom for {served['patient']['name'][0]['text']}"}]}
                return 500, {}, json.dumps(outcome)
            return 200, {}, json.dumps({"resourceType": "Bundle", "type": "searchset"})

        mock.add_callback(responses.GET, re.compile(re.escape(FHIR_BASE) + r"/Observation\?.*"),
                          callback=observation_search, content_type="application/fhir+json")
        for kind in ("ServiceRequest", "DeviceRequest", "Procedure", "DiagnosticReport",
                     "ImagingStudy", "MedicationRequest"):  # disjoint patterns: one match each
            mock.get(re.compile(re.escape(f"{FHIR_BASE}/{kind}?") + ".*"),
                     json={"resourceType": "Bundle", "type": "searchset", "entry": []})
        response = client.post("/cds-services/foot-drop-patient-view", json=fallback)
        assert response.status_code == 412  # observations failed: named, not hidden
        assert {i["expression"][0] for i in response.get_json()["issue"]} == {
            "prefetch.observations"}
        observations["fail"] = False
        response = client.post("/cds-services/foot-drop-patient-view", json=fallback)
        assert response.status_code == 200, response.get_json()
        authorizations = {c.request.headers.get("Authorization") for c in mock.calls}
    assert authorizations == {f"Bearer {ACCESS_TOKEN}"}  # the token was really used

    # a real loopback FHIR server: real sockets, URLs with the patient id, urllib3 at work
    with misbehaving_fhir() as fhir:
        for mode in ("ok", "gzip", "500", "401", "drip", "badheaders"):
            real = copy.deepcopy(fallback)
            real["fhirServer"] = fhir.base(mode)
            real["context"]["patientId"] = LOOPBACK_PATIENT_ID
            assert client.post("/cds-services/foot-drop-patient-view",
                               json=real).status_code in (200, 412)
    assert captured_logs.records, "nothing was logged"
    assert any(r.levelname == "DEBUG" or r.levelno < 20 for r in captured_logs.records) or \
        captured_logs.records[0].getMessage()  # DEBUG was on; some modules simply say nothing

    out, err = capfd.readouterr()
    secrets = secrets_of(sent) | {"Zebulonia", "Quillfeather", "MRN-LEAK", LOOPBACK_PATIENT_ID}
    assert_clean([captured_logs.text, captured_logs.raw_text(), out, err], secrets)


def test_jwt_authenticated_calls_leave_no_token_in_the_logs(tmp_path, issuers_file, make_token,
                                                           keys, captured_logs, capfd):
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'jwt.sqlite3'}",
                      "log_level": "DEBUG", "auth": "required",
                      "trusted_issuers_file": issuers_file,
                      "public_base_url": "https://cds.example.org"},
                     clock=fixed_clock(NOW))
    client = app.test_client()
    fixture = next(f for f in iter_fixtures(NOW) if f.hook == "patient-view")
    request = with_identity(fixture.request, 0)
    good = make_token(SERVICE_AUD)
    tokens = [good, make_token(SERVICE_AUD, key=keys.stranger), make_token("https://x.test/")]
    assert client.post("/cds-services/foot-drop-patient-view", json=request,
                       headers={"Authorization": f"Bearer {good}"}).status_code == 200
    for token in [good, *tokens[1:]]:  # a replay and two bad tokens
        response = client.post("/cds-services/foot-drop-patient-view", json=request,
                               headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    out, err = capfd.readouterr()
    texts = [captured_logs.text, captured_logs.raw_text(), out, err]
    assert_clean(texts, secrets_of([request]))
    for token in tokens:
        for segment in token.split("."):
            assert all(segment not in text for text in texts)


def test_the_formatter_masks_tokens_even_if_code_passes_them(captured_logs):
    """Second line of defence: a bearer token or JWT handed to a logger by mistake is masked."""
    import logging

    from cds_service.logs import log_event

    jwtish = "eyJhbGciOiJFUzM4NCJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
    log_event(logging.getLogger("cds_service.test"), f"oops Bearer {ACCESS_TOKEN}",
              logging.WARNING, header=f"Bearer {jwtish}", nested={"token": jwtish})
    text = captured_logs.text
    assert ACCESS_TOKEN not in text
    assert "eyJhbGciOiJFUzM4NCJ9" not in text


def test_library_log_records_lose_urls_at_the_source(debug_app, captured_logs):
    """urllib3's own wording, as it logs a request line and a header-parsing failure."""
    import logging

    logging.getLogger("urllib3.connectionpool").warning(
        '%s://%s:%s "%s %s %s" %s %s', "https", "fhir.example.org", 443, "GET",
        "/r4/Condition?patient=pt-url-secret-1&_count=200", "HTTP/1.1", 200, 512)
    logging.getLogger("urllib3.connection").warning(
        "Failed to parse headers (url=%s): %s", "https://fhir.example.org/r4/Patient/pt-url-secret-2",
        "[MissingHeaderBodySeparatorDefect()]")
    logging.getLogger("some.other.library").warning(
        "fetching %s", "https://fhir.example.org/r4/Patient/pt-url-secret-3")
    everything = captured_logs.text + captured_logs.raw_text()
    assert "fhir.example.org" in captured_logs.text  # the host stays: which server failed
    assert "pt-url-secret-1" not in everything
    assert "pt-url-secret-2" not in everything
    assert "pt-url-secret-3" not in captured_logs.text  # formatter catch-all for other libraries
