"""Hook request builders for the HTTP and prefetch tests.

``patient_view()`` and ``order_select()`` give a complete, valid request whose prefetch satisfies
every template with an empty searchset; keyword arguments replace prefetch values, and
``without_prefetch`` / ``with_fhir_server`` shape the missing-key paths.
"""

from __future__ import annotations

import copy
from typing import Any

PATIENT_ID = "p1"
USER_ID = "Practitioner/dr-1"
FHIR_BASE = "https://fhir.example.org/r4"
ACCESS_TOKEN = "opaque-access-token-123"
PREFETCH_KEYS = (
    "patient",
    "conditions",
    "observations",
    "serviceRequests",
    "deviceRequests",
    "procedures",
    "diagnosticReports",
    "imagingStudies",
    "medicationRequests",
)
# The query each template expands to for PATIENT_ID (what the service must send to fhirServer).
EXPECTED_QUERIES = {
    "patient": "Patient/p1",
    "conditions": "Condition?patient=p1&_count=200",
    "observations": "Observation?patient=p1&status=final,amended,corrected,preliminary"
    "&_sort=-date&_count=200",
    "serviceRequests": "ServiceRequest?patient=p1&status=active,completed,on-hold&_count=200",
    "deviceRequests": "DeviceRequest?patient=p1&status=active,completed,on-hold&_count=200",
    "procedures": "Procedure?patient=p1&status=completed,in-progress&_count=200",
    "diagnosticReports": "DiagnosticReport?patient=p1&status=final,amended,corrected,preliminary"
    "&_count=200",
    "imagingStudies": "ImagingStudy?patient=p1&status=available&_count=200",
    "medicationRequests": "MedicationRequest?patient=p1&status=active,on-hold,completed"
    "&_count=200",
}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def patient(patient_id: str = PATIENT_ID) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": patient_id, "gender": "female",
            "birthDate": "1971-03-14"}


def foot_drop_condition(
    patient_id: str = PATIENT_ID, condition_id: str = "c-foot-drop"
) -> dict[str, Any]:
    """Active left foot drop (ICD-10-CM M21.372) for 7 weeks before tests/conftest.py NOW."""
    return {
        "resourceType": "Condition",
        "id": condition_id,
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
            "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
            "code": "confirmed"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M21.372",
                             "display": "Foot drop, left foot"}],
                 "text": "Foot drop, left foot"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": "2026-10-02",
        "recordedDate": "2026-10-06",
    }


def operation_outcome(text: str = "the EHR could not run this query") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "exception", "diagnostics": text}]}


def full_prefetch(patient_id: str = PATIENT_ID, **values: Any) -> dict[str, Any]:
    prefetch: dict[str, Any] = {key: searchset() for key in PREFETCH_KEYS}
    prefetch["patient"] = patient(patient_id)
    unknown = set(values) - set(PREFETCH_KEYS)
    assert not unknown, f"not a prefetch key: {unknown}"
    prefetch.update(values)
    return prefetch


def foot_drop_prefetch(patient_id: str = PATIENT_ID, **values: Any) -> dict[str, Any]:
    values.setdefault("conditions", searchset(foot_drop_condition(patient_id)))
    return full_prefetch(patient_id, **values)


def patient_view(
    patient_id: str = PATIENT_ID, prefetch: dict[str, Any] | None = None, **context: Any
) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": USER_ID, "patientId": patient_id, **context},
        "prefetch": full_prefetch(patient_id) if prefetch is None else prefetch,
    }


def draft_device_request(patient_id: str = PATIENT_ID, order_id: str = "afo-1") -> dict[str, Any]:
    return {
        "resourceType": "DeviceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "codeCodeableConcept": {"text": "Ankle-foot orthosis"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def order_select(
    patient_id: str = PATIENT_ID,
    prefetch: dict[str, Any] | None = None,
    orders: list[dict[str, Any]] | None = None,
    selections: list[str] | None = None,
    **context: Any,
) -> dict[str, Any]:
    orders = [draft_device_request(patient_id)] if orders is None else orders
    if selections is None:
        selections = [f"{o['resourceType']}/{o['id']}" for o in orders]
    return {
        "hook": "order-select",
        "hookInstance": "0b5e8a9c-49a4-4a57-a0c7-62a7c3b1f2d0",
        "context": {
            "userId": USER_ID,
            "patientId": patient_id,
            "selections": selections,
            "draftOrders": {"resourceType": "Bundle", "type": "collection",
                            "entry": [{"resource": o} for o in orders]},
            **context,
        },
        "prefetch": full_prefetch(patient_id) if prefetch is None else prefetch,
    }


def without_prefetch(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A copy of ``body`` without the given prefetch keys (all of them, and the member, if none
    are named)."""
    body = copy.deepcopy(body)
    if not keys:
        body.pop("prefetch", None)
        return body
    for key in keys:
        del body["prefetch"][key]
    return body


def with_fhir_server(
    body: dict[str, Any], server: str = FHIR_BASE, token: str | None = ACCESS_TOKEN
) -> dict[str, Any]:
    """A copy of ``body`` with fhirServer, and fhirAuthorization when ``token`` is given."""
    body = copy.deepcopy(body)
    body["fhirServer"] = server
    if token is not None:
        body["fhirAuthorization"] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Condition.read user/Observation.read",
            "subject": "foot-drop-cds",
        }
    return body


def card_ids(body: dict[str, Any]) -> set[str]:
    return {card["source"]["topic"]["code"] for card in body["cards"]}


def last_request_log(caplog: Any) -> dict[str, Any]:
    """The structured fields of the newest per-request log line."""
    lines = [r.fields for r in caplog.records if r.getMessage() == "request"]
    assert lines, "no request log line"
    return lines[-1]


def json_text(value: Any) -> str:
    import json

    return json.dumps(value)
