"""Replays of what the CDS Hooks sandbox (github.com/cds-hooks/sandbox) really sends.

The request and feedback bodies below are protocol examples written from reading the sandbox's
source (src/reducers/medication-reducers.js createFhirResource, src/components/Pama/pama.jsx
generateContext, src/components/CardList/card-list.jsx takeSuggestion/dismissCard) and checked
against the requests a locally built sandbox sent from Chromium:

- Rx View (order-select): one MedicationRequest ``request-123``, re-sent on every form change;
  bare (no medication) until a drug is picked; ``reasonCode`` and ``category`` as single objects;
  the dose as a count of ``{pill}`` (UCUM annotation) with the strength only in the drug name; no
  Bundle ``type``, no ``fullUrl``, no ``encounterId``.
- PAMA Imaging (order-select): one ServiceRequest ``example-request-id`` with ``intent: plan``,
  no priority, ``code.coding: [{}]`` before a study is picked and ``reasonCode: []`` before a
  reason is.
- Feedback: ``outcomeTimestamp`` from ``Date.toISOString()``; an override reason is only
  ``{code, system}`` (no display, no userComment); a plain Dismiss sends no overrideReason.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cds_service.fixtures import iter_fixtures
from tests.conftest import NOW
from tests.http.conftest import check_body

ORDER_SELECT = "/cds-services/foot-drop-order-select"
SANDBOX_USER = "Practitioner/COREPRACTITIONER1"
AUTHORED = "2026-11-20"
DALFAMPRIDINE_TEXT = "12 HR dalfampridine 10 MG Extended Release Oral Tablet"


def fixture_prefetch(name: str) -> tuple[str, dict[str, Any]]:
    fixture = next(f for f in iter_fixtures(NOW) if f.name == name)
    return fixture.request["context"]["patientId"], fixture.request["prefetch"]


def sandbox_order_select(patient_id: str, prefetch: dict[str, Any],
                         resource: dict[str, Any]) -> dict[str, Any]:
    """The request body service-exchange.js callServices builds for an order-select trigger."""
    return {
        "hookInstance": "5b0c6e4e-2f43-4f3e-9d55-0f1a3c2d7e11",
        "hook": "order-select",
        "fhirServer": "http://127.0.0.1:8095/fhir/R4",
        "context": {
            "patientId": patient_id,
            "userId": SANDBOX_USER,
            "selections": [f"{resource['resourceType']}/{resource['id']}"],
            "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": resource}]},
        },
        "prefetch": prefetch,
    }


def rx_view_draft(patient_id: str, *, number: int | None = None, frequency: int | None = None,
                  reason: dict[str, Any] | None = None) -> dict[str, Any]:
    """createFhirResource for FHIR 4.0.1: bare until a drug is picked (number is None)."""
    resource: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": "request-123",
        "status": "draft",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": AUTHORED,
    }
    if number is not None:
        resource.update({
            "dosageInstruction": [{
                "timing": {"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {
                    "value": number, "system": "http://unitsofmeasure.org", "code": "{pill}"}}],
            }],
            "dispenseRequest": {"expectedSupplyDuration": {
                "value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}},
            "intent": "order",
            "category": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category",
                "code": "community"}]},
            "medicationCodeableConcept": {"text": DALFAMPRIDINE_TEXT, "coding": [{
                "display": DALFAMPRIDINE_TEXT,
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "897021"}]},
        })
    if reason is not None:
        resource["reasonCode"] = reason  # the patient's Condition.code, as one object
    return resource


MS_REASON = {"coding": [{"system": "http://snomed.info/sct", "code": "24700007",
                         "display": "Multiple sclerosis"}], "text": "Multiple sclerosis"}


def pama_draft(patient_id: str, study: dict[str, Any] | None) -> dict[str, Any]:
    """pamaTriggerHandler.generateContext: before a study is picked, studyCoding is {}."""
    code: dict[str, Any] = {"coding": [study or {}]}
    if study:
        code["text"] = study["display"]
    return {
        "resourceType": "ServiceRequest",
        "id": "example-request-id",
        "status": "draft",
        "intent": "plan",
        "code": code,
        "subject": {"reference": f"Patient/{patient_id}"},
        "reasonCode": [],
    }


LUMBAR_MRI_CPT = {
    "code": "72148",
    "display": "Magnetic resonance (eg, proton) imaging, spinal canal and contents, lumbar; "
               "without contrast material",
    "system": "http://www.ama-assn.org/go/cpt",
}


def find_empty(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        found = [path] if not node else []
        for key, value in node.items():
            found += find_empty(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        found = [path] if not node else []
        for i, value in enumerate(node):
            found += find_empty(value, f"{path}[{i}]")
        return found
    return [path] if node in (None, "") else []


# -- Rx View ------------------------------------------------------------------------------------
@pytest.mark.parametrize("draft", [
    pytest.param({}, id="bare-before-a-drug-is-picked"),
    pytest.param({"reason": MS_REASON}, id="treating-picked-reasonCode-object"),
    pytest.param({"number": 1, "frequency": 2, "reason": MS_REASON}, id="dalfampridine-1-pill-bid"),
])
def test_rx_view_drafts_are_answered_without_a_card_at_label_dose(client, draft):
    patient_id, prefetch = fixture_prefetch("dalfampridine-label-dose-normal-crcl-no-card")
    body = sandbox_order_select(patient_id, prefetch, rx_view_draft(patient_id, **draft))
    response = client.post(ORDER_SELECT, json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["cards"] == []


def test_one_pill_once_daily_reads_one_dose_a_day(client):
    """The seizure card quotes the order: "1 dose a day", not "1 doses a day"."""
    patient_id, prefetch = fixture_prefetch("dalfampridine-seizure-history-sandbox-shape")
    resource = rx_view_draft(patient_id, number=1, frequency=1, reason=MS_REASON)
    response = client.post(ORDER_SELECT, json=sandbox_order_select(patient_id, prefetch, resource))
    (card,) = response.get_json()["cards"]
    assert "10 mg per dose, 1 dose a day, 10 mg a day" in card["detail"]


def test_rx_view_two_pills_twice_daily_is_above_the_label_dose(client):
    """Regression: "{pill}" was not read as a unit dose, so 2 x 10 mg twice daily (40 mg a day)
    gave no dose card in the sandbox's Rx View."""
    patient_id, prefetch = fixture_prefetch("dalfampridine-label-dose-normal-crcl-no-card")
    resource = rx_view_draft(patient_id, number=2, frequency=2, reason=MS_REASON)
    response = client.post(ORDER_SELECT, json=sandbox_order_select(patient_id, prefetch, resource))
    assert response.status_code == 200
    (card,) = response.get_json()["cards"]
    assert card["source"]["topic"]["code"] == "dalfampridine-safety"
    assert "20 mg per dose" in card["detail"] and "40 mg a day" in card["detail"]
    update = next(a for s in card["suggestions"] for a in s["actions"] if a["type"] == "update")
    # the sandbox's single-object quirks are not echoed back into the suggested resource
    assert isinstance(update["resource"]["category"], list)
    assert isinstance(update["resource"]["reasonCode"], list)
    assert update["resource"]["id"] == "request-123"


# -- PAMA Imaging -------------------------------------------------------------------------------
def test_pama_draft_before_a_study_is_picked_is_answered(client):
    patient_id, prefetch = fixture_prefetch("mri-routine-with-progressive-weakness")
    body = sandbox_order_select(patient_id, prefetch, pama_draft(patient_id, None))
    response = client.post(ORDER_SELECT, json=body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["cards"] == []


def test_pama_lumbar_mri_with_empty_reason_code_gets_a_valid_update(client):
    """Regression: the update suggestion echoed the draft's "reasonCode": [], our own response
    check refused the empty member and the sandbox got a 500 instead of the stat-MRI card."""
    patient_id, prefetch = fixture_prefetch("mri-routine-with-progressive-weakness")
    body = sandbox_order_select(patient_id, prefetch, pama_draft(patient_id, LUMBAR_MRI_CPT))
    response = client.post(ORDER_SELECT, json=body)
    assert response.status_code == 200, response.get_json()
    (card,) = response.get_json()["cards"]
    assert card["indicator"] == "critical"
    (action,) = card["suggestions"][0]["actions"]
    resource = action["resource"]
    assert action["type"] == "update" and resource["id"] == "example-request-id"
    assert resource["priority"] == "stat"
    assert resource["code"]["coding"] == [LUMBAR_MRI_CPT]
    assert "reasonCode" not in resource
    assert find_empty(resource) == []


# -- feedback -----------------------------------------------------------------------------------
def test_sandbox_feedback_on_accept_override_and_dismiss_is_stored(app, client):
    patient_id, prefetch = fixture_prefetch("mri-routine-with-progressive-weakness")
    served = client.post(ORDER_SELECT, json=sandbox_order_select(
        patient_id, prefetch, pama_draft(patient_id, LUMBAR_MRI_CPT))).get_json()
    (card,) = served["cards"]
    reason = card["overrideReasons"][0]
    sent = [
        {"card": card["uuid"], "outcome": "accepted",
         "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
         "outcomeTimestamp": "2026-11-20T12:00:05.123Z"},
        {"card": card["uuid"], "outcome": "overridden",
         "outcomeTimestamp": "2026-11-20T12:00:07.456Z",
         "overrideReason": {"reason": {"code": reason["code"], "system": reason["system"]}}},
        {"card": card["uuid"], "outcome": "overridden",
         "outcomeTimestamp": "2026-11-20T12:00:09.789Z"},
    ]
    for entry in sent:  # one POST per click, as CardList.sendFeedback does
        response = client.post(f"{ORDER_SELECT}/feedback",
                               json={"feedback": [copy.deepcopy(entry)]},
                               headers={"Origin": "http://127.0.0.1:8095"})
        assert response.status_code == 200, response.get_json()
        assert response.get_json() == {"received": 1, "stored": 1}
        check_body("POST", f"{ORDER_SELECT}/feedback", 200, response.get_json())
    rows = app.extensions["cds"].database.feedback_rows()
    assert sorted(r["outcome"] for r in rows) == ["accepted", "overridden", "overridden"]
    assert {r["override_reason_code"] for r in rows} == {None, reason["code"]}

