"""order-select scenarios from fhir_fixtures/order-select: exact cards, actions on the selected
orders, FHIR-valid resources, and requests that must not fail (missing selections, odd Bundles)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.fhir.record import model_class
from cds_service.fixtures import FIXTURES_DIR, Fixture, fixture_paths, load_fixture
from tests.conftest import NOW
from tests.scenarios.conftest import (
    ODD_DRAFT_BUNDLES,
    actions_of,
    assert_expected_actions,
    card_ids_of,
    cards_by_id,
    raw,
    run_fixture,
)

SERVICE = "foot-drop-order-select"
ORDER_SELECT_DIR = FIXTURES_DIR / "order-select"
PATHS = [p for p in fixture_paths(ORDER_SELECT_DIR)]
PREFETCH_KEYS = set(
    yaml.safe_load((Path(__file__).resolve().parents[2] / "cards" / "services.yaml").read_text())
    ["services"][SERVICE]["prefetch"]
)


def fixture(name: str) -> Fixture:
    return load_fixture(ORDER_SELECT_DIR / f"{name}.json", NOW)


def test_there_are_order_select_fixtures() -> None:
    assert len(PATHS) >= 10


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_scenario(path: Path, call_service) -> None:
    fx, body = run_fixture(path, "order-select", SERVICE, call_service)
    cards = cards_by_id(body)

    selections = set(fx.request["context"]["selections"])

    for card in cards.values():
        for action in actions_of(card):
            if action["type"] == "delete":
                assert action["resourceId"] in selections
                assert "resource" not in action
            elif action["type"] == "update":
                resource = action["resource"]
                assert f"{resource['resourceType']}/{resource['id']}" in selections
            if "resource" in action:
                model_class(action["resource"]["resourceType"]).model_validate(action["resource"])

    assert_expected_actions(path, cards)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_fixture_shape(path: Path) -> None:
    data = raw(path)
    request = data["request"]
    pid = request["context"]["patientId"]
    assert pid.startswith("fd-os-")
    assert set(request["prefetch"]) == PREFETCH_KEYS
    assert request["prefetch"]["patient"]["id"] == pid
    for resource in _resources(request):
        if resource.get("resourceType") != "Patient":
            assert resource["id"].startswith(pid + "-"), resource["id"]


def test_fixture_ids_are_globally_unique() -> None:
    """All fixtures go to one FHIR server: ids must not collide, patient ids are per fixture."""
    owners: dict[tuple[str, str], str] = {}
    patients: dict[str, str] = {}
    for path in fixture_paths(FIXTURES_DIR):
        request = raw(path)["request"]
        mine = path.parent.name == "order-select"
        pid = request["context"]["patientId"]
        if pid in patients and (mine or "order-select" in patients[pid]):
            pytest.fail(f"patientId {pid} in {path.name} and {patients[pid]}")
        patients[pid] = str(path)
        seen_here: set[tuple[str, str]] = set()
        for resource in _resources(request):
            key = (resource["resourceType"], resource["id"])
            if key in seen_here:
                continue
            seen_here.add(key)
            if key in owners and (mine or "order-select" in owners[key]):
                pytest.fail(f"{key} in {path.name} and {owners[key]}")
            owners[key] = str(path)


def _resources(request: dict[str, Any]):
    values = [*request.get("prefetch", {}).values(), request["context"].get("draftOrders")]
    for value in values:
        if not isinstance(value, dict):
            continue
        if value.get("resourceType") == "Bundle":
            for entry in value.get("entry", []):
                yield entry["resource"]
        else:
            yield value


def test_sandbox_fixture_keeps_the_sandbox_shape() -> None:
    request = fixture("dalfampridine-seizure-history-sandbox-shape").request
    bundle = request["context"]["draftOrders"]
    assert "type" not in bundle
    assert all("fullUrl" not in e for e in bundle["entry"])
    order = bundle["entry"][0]["resource"]
    assert isinstance(order["reasonCode"], dict)
    assert isinstance(order["category"], dict)


def test_sandbox_shaped_order_is_updated_as_valid_fhir(call_service) -> None:
    """A sandbox MedicationRequest (single-object reasonCode/category) above the label dose: the
    update keeps the id, turns the quirks into arrays and sets 10 mg every 12 hours."""
    request = copy.deepcopy(fixture("dalfampridine-seizure-history-sandbox-shape").request)
    conditions = request["prefetch"]["conditions"]["entry"]
    request["prefetch"]["conditions"]["entry"] = [
        e for e in conditions if "G40" not in json.dumps(e)
    ]
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    order["dosageInstruction"] = [{
        "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
        "doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}],
    }]
    response = call_service(SERVICE, request)
    card = cards_by_id(response.get_json())["dalfampridine-safety"]
    assert card["indicator"] == "warning"
    assert "3 doses a day" in card["detail"]
    updates = [a for a in actions_of(card) if a["type"] == "update"]
    assert len(updates) == 1
    resource = updates[0]["resource"]
    assert resource["id"] == order["id"]
    assert isinstance(resource["reasonCode"], list) and isinstance(resource["category"], list)
    (dosage,) = resource["dosageInstruction"]
    assert dosage["timing"]["repeat"] == {"frequency": 1, "period": 12, "periodUnit": "h"}
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 10
    assert card["selectionBehavior"] == "at-most-one"
    recommended = [s for s in card["suggestions"] if s.get("isRecommended")]
    assert len(recommended) == 1 and recommended[0]["actions"][0]["type"] == "update"


def test_contraindication_offers_only_deletion(call_service) -> None:
    body = call_service(SERVICE, fixture("dalfampridine-low-crcl").request).get_json()
    card = cards_by_id(body)["dalfampridine-safety"]
    assert [a["type"] for a in actions_of(card)] == ["delete"]
    assert card["suggestions"][0].get("isRecommended") is True


def test_red_flag_card_is_one_card_for_several_orders(call_service) -> None:
    fx = fixture("red-flag-afo-pt-ncs-one-card")
    body = call_service(SERVICE, fx.request).get_json()
    assert len(body["cards"]) == 1
    card = body["cards"][0]
    for label in ("Ankle-foot orthosis", "Physiotherapy referral", "Nerve conduction studies"):
        assert label in card["detail"]  # every selected order, named in words (no FHIR ids)
    created = [a["resource"] for a in actions_of(card)]
    mri = next(r for r in created if r.get("priority") == "stat")
    assert mri["code"]["coding"][0] == {
        "system": "http://loinc.org", "code": "30679-5", "display": "MR Lumbar spine WO contrast"
    }
    assert all(r["subject"]["reference"] == f"Patient/{fx.request['context']['patientId']}"
               for r in created)


def test_unselected_draft_orders_produce_nothing(call_service) -> None:
    """The same Bundle with nothing relevant selected gives no card."""
    request = copy.deepcopy(fixture("fusion-with-discectomy-disc-herniation").request)
    request["context"]["selections"] = [
        s for s in request["context"]["selections"] if "discectomy" in s
    ]
    body = call_service(SERVICE, request).get_json()
    assert body["cards"] == []


@ODD_DRAFT_BUNDLES
def test_odd_bundles_give_no_card_and_no_error(call_service, draft_orders) -> None:
    request = copy.deepcopy(fixture("fusion-with-discectomy-disc-herniation").request)
    request["context"]["draftOrders"] = draft_orders
    response = call_service(SERVICE, request)
    assert response.status_code == 200
    assert response.get_json()["cards"] == []


def test_bundle_without_type_or_full_url_still_reviews(call_service) -> None:
    request = copy.deepcopy(fixture("fusion-with-discectomy-disc-herniation").request)
    bundle = request["context"]["draftOrders"]
    bundle.pop("type")
    for entry in bundle["entry"]:
        entry.pop("fullUrl")
    body = call_service(SERVICE, request).get_json()
    assert set(cards_by_id(body)) == {"avoid-routine-fusion"}


def test_order_identified_only_by_full_url(call_service) -> None:
    request = copy.deepcopy(fixture("fusion-with-discectomy-disc-herniation").request)
    for entry in request["context"]["draftOrders"]["entry"]:
        rid = entry["resource"].pop("id")
        entry["fullUrl"] = f"https://ehr.example.org/fhir/ServiceRequest/{rid}"
    body = call_service(SERVICE, request).get_json()
    card = cards_by_id(body)["avoid-routine-fusion"]
    assert [a["resourceId"] for a in actions_of(card)] == ["ServiceRequest/fd-os-fusion-sr-fusion"]


def test_selection_of_another_patients_order_is_ignored(call_service) -> None:
    request = copy.deepcopy(fixture("fusion-with-discectomy-disc-herniation").request)
    for entry in request["context"]["draftOrders"]["entry"]:
        entry["resource"]["subject"] = {"reference": "Patient/someone-else"}
    body = call_service(SERVICE, request).get_json()
    assert body["cards"] == []


def test_the_referral_patient_view_suggests_is_not_taken_for_the_operation(call_service) -> None:
    """tendon-transfer-evaluation (patient-view) suggests a referral to *evaluate* a transfer;
    selecting it must not bring back "defer tendon transfer", as the operation itself does."""
    fx = fixture("tendon-transfer-after-three-months")
    request = copy.deepcopy(fx.request)
    order = request["context"]["draftOrders"]["entry"][0]["resource"]
    assert "premature-tendon-transfer" in card_ids_of(call_service(SERVICE, request))
    order["code"] = {"text": "Referral to orthopaedic foot and ankle surgery - evaluation for "
                             "tendon transfer (persistent foot drop)"}
    assert "premature-tendon-transfer" not in card_ids_of(call_service(SERVICE, request))
