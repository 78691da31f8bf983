"""POST /cds-services/{id} with the prefetch supplied: cards, tolerance, sparse and bad data."""

from __future__ import annotations

import copy

import pytest
import responses

from tests.http import builders as b

PATIENT_VIEW = "foot-drop-patient-view"
ORDER_SELECT = "foot-drop-order-select"


@pytest.fixture
def no_fhir_calls():
    """Any request to a FHIR server fails the test: the prefetch alone must do."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
    assert len(mock.calls) == 0


def summaries(body):
    return sorted((c["source"]["topic"]["code"], c["summary"]) for c in body["cards"])


def test_patient_view_with_full_prefetch_gives_the_orthosis_card(call_service, no_fhir_calls):
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=b.foot_drop_prefetch()))
    assert response.status_code == 200
    body = response.get_json()
    assert "orthosis-and-rehabilitation" in b.card_ids(body)
    card = next(c for c in body["cards"]
                if c["source"]["topic"]["code"] == "orthosis-and-rehabilitation")
    assert card["indicator"] in {"info", "warning", "critical"}
    assert card["overrideReasons"]
    assert card["suggestions"] and card["selectionBehavior"]
    actions = [a for s in card["suggestions"] for a in s["actions"]]
    assert all(a["resource"]["subject"]["reference"] == "Patient/p1" for a in actions)


def test_every_card_carries_override_reasons_and_a_source(call_service, no_fhir_calls):
    body = call_service(PATIENT_VIEW, b.patient_view(prefetch=b.foot_drop_prefetch())).get_json()
    assert body["cards"]
    for card in body["cards"]:
        assert card["overrideReasons"]
        assert card["source"]["label"] and card["source"]["url"].startswith("https://")
        assert len(card["summary"]) < 140


def test_order_select_with_full_prefetch_is_answered_from_the_prefetch(
    call_service, no_fhir_calls
):
    response = call_service(ORDER_SELECT, b.order_select(prefetch=b.foot_drop_prefetch()))
    assert response.status_code == 200
    assert isinstance(response.get_json()["cards"], list)


def test_no_foot_drop_means_no_cards(call_service):
    response = call_service(PATIENT_VIEW, b.patient_view())
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}


def test_sparse_data_is_not_a_failure(call_service):
    """Empty searchsets everywhere and a null patient: 200, never 412."""
    body = b.patient_view(prefetch=b.full_prefetch(patient=None))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200


def test_null_prefetch_key_means_no_data_and_is_not_fetched(call_service, no_fhir_calls):
    prefetch = b.foot_drop_prefetch(observations=None, medicationRequests=None, patient=None)
    body = b.with_fhir_server(b.patient_view(prefetch=prefetch))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_unknown_members_and_extensions_are_ignored(call_service):
    plain = b.patient_view(prefetch=b.foot_drop_prefetch())
    extended = copy.deepcopy(plain)
    extended["extension"] = {"org.example.trace": {"id": 1}}
    extended["someFutureMember"] = True
    extended["context"]["someNewOptionalField"] = "x"
    extended["context"]["extension"] = {"org.example.ctx": "y"}
    extended["prefetch"]["otherServicesKey"] = {"resourceType": "Patient", "id": "zzz"}
    first = call_service(PATIENT_VIEW, plain).get_json()
    second = call_service(PATIENT_VIEW, extended).get_json()
    assert summaries(first) == summaries(second)
    assert summaries(first)


def test_encounter_id_and_every_user_type_are_accepted(call_service):
    for user in ("Practitioner/a", "PractitionerRole/b", "Patient/p1", "RelatedPerson/c"):
        body = b.patient_view(prefetch=b.foot_drop_prefetch(), encounterId="enc-1")
        body["context"]["userId"] = user
        response = call_service(PATIENT_VIEW, body)
        assert response.status_code == 200, user
        assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_a_resource_failing_fhir_validation_is_skipped(call_service, caplog):
    broken = b.foot_drop_condition(condition_id="c-broken")
    broken["onsetDateTime"] = "not a date"
    broken["code"]["coding"][0]["code"] = "M21.371"
    prefetch = b.full_prefetch(conditions=b.searchset(broken))
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=prefetch))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert b.last_request_log(caplog)["counts"]["skipped_invalid"] == 1


def test_a_bad_resource_does_not_hide_the_good_ones(call_service):
    broken = {"resourceType": "Condition", "id": "c-bad", "subject": {"reference": "Patient/p1"},
              "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                   "code": "M21.371"}]}, "clinicalStatus": "active"}
    prefetch = b.full_prefetch(conditions=b.searchset(broken, b.foot_drop_condition()))
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=prefetch))
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_resources_about_another_patient_are_ignored(call_service, caplog):
    prefetch = b.full_prefetch(conditions=b.searchset(b.foot_drop_condition("someone-else")))
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=prefetch))
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert b.last_request_log(caplog)["counts"]["skipped_other_patient"] == 1


def test_sandbox_medication_request_with_single_object_members_is_tolerated(
    call_service, caplog
):
    """The CDS Hooks sandbox sends MedicationRequest.reasonCode and .category as objects."""
    medication = {  # a drug the facts read, so that it is validated rather than filtered out
        "resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"text": "dalfampridine 10 mg extended-release tablet"},
        "reasonCode": {"text": "back pain"},
        "category": {"coding": [{"code": "outpatient"}]},
    }
    prefetch = b.foot_drop_prefetch(medicationRequests=b.searchset(medication))
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=prefetch))
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())
    counts = b.last_request_log(caplog)["counts"]
    assert (counts["skipped_invalid"], counts["resources_kept"]) == (0, 2)


def test_card_and_suggestion_uuids_are_fresh_per_call(call_service):
    body = b.patient_view(prefetch=b.foot_drop_prefetch())
    first = call_service(PATIENT_VIEW, body).get_json()
    second = call_service(PATIENT_VIEW, body).get_json()
    uuids = lambda r: {c["uuid"] for c in r["cards"]} | {  # noqa: E731
        s["uuid"] for c in r["cards"] for s in c.get("suggestions", [])}
    assert uuids(first) and not uuids(first) & uuids(second)


def test_selection_missing_from_draft_orders_is_handled_gracefully(call_service):
    body = b.order_select(prefetch=b.foot_drop_prefetch(),
                          selections=["DeviceRequest/afo-1", "ServiceRequest/not-in-bundle"])
    assert call_service(ORDER_SELECT, body).status_code == 200


def test_sandbox_draft_orders_without_bundle_type_are_accepted(call_service):
    body = b.order_select(prefetch=b.foot_drop_prefetch())
    del body["context"]["draftOrders"]["type"]
    assert call_service(ORDER_SELECT, body).status_code == 200
