"""order-sign scenarios from fhir_fixtures/order-sign: every draft order is about to be signed (no
selections), reviewed by the same order rules as order-select; exact cards and actions, and
requests that must not fail (odd Bundles, another patient's order)."""

from __future__ import annotations

import copy
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

SERVICE = "foot-drop-order-sign"
ORDER_SIGN_DIR = FIXTURES_DIR / "order-sign"
PATHS = fixture_paths(ORDER_SIGN_DIR)
ROOT = Path(__file__).resolve().parents[2]
SERVICES = yaml.safe_load((ROOT / "cards" / "services.yaml").read_text())["services"]
ORDER_RULES = {"avoid-routine-fusion", "dalfampridine-safety", "mri-priority-stat",
               "premature-tendon-transfer", "urgent-red-flag-evaluation"}


def fixture(name: str) -> Fixture:
    return load_fixture(ORDER_SIGN_DIR / f"{name}.json", NOW)


def draft_references(request: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in request["context"]["draftOrders"]["entry"]}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_scenario(path: Path, call_service) -> None:
    fx, body = run_fixture(path, "order-sign", SERVICE, call_service)
    cards = cards_by_id(body)
    drafts = draft_references(fx.request)
    for card in cards.values():
        for action in actions_of(card):
            if action["type"] == "delete":
                assert action["resourceId"] in drafts
            elif action["type"] == "update":
                resource = action["resource"]
                assert f"{resource['resourceType']}/{resource['id']}" in drafts
            if "resource" in action:
                model_class(action["resource"]["resourceType"]).model_validate(action["resource"])
    assert_expected_actions(path, cards)


def test_every_order_rule_fires_in_one_order_sign_fixture_and_not_in_another() -> None:
    expected = [load_fixture(p, NOW).expected_ids for p in PATHS]
    for rule in ORDER_RULES:
        assert any(rule in ids for ids in expected), f"no order-sign fixture fires {rule}"
    assert sum(1 for p in PATHS if p.stem.startswith("not-")) >= len(ORDER_RULES)
    assert all(load_fixture(p, NOW).expected_ids == set() for p in PATHS
               if p.stem.startswith("not-"))


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_fixture_shape(path: Path) -> None:
    data = raw(path)
    assert path.stem.startswith(("fires-", "not-"))
    request = data["request"]
    assert request["hook"] == data["hook"] == "order-sign"
    assert "selections" not in request["context"], "order-sign has no selections"
    assert request["context"]["patientId"].startswith("fd-sg-")
    assert set(request["prefetch"]) == set(SERVICES[SERVICE]["prefetch"])


def test_order_sign_shares_the_order_select_prefetch() -> None:
    assert SERVICES[SERVICE]["prefetch"] == SERVICES["foot-drop-order-select"]["prefetch"]


def test_discovery_lists_order_sign(client) -> None:
    services = {s["id"]: s for s in client.get("/cds-services").get_json()["services"]}
    assert services[SERVICE]["hook"] == "order-sign"
    assert services[SERVICE]["prefetch"] == services["foot-drop-order-select"]["prefetch"]


def test_selections_sent_anyway_do_not_narrow_the_review(call_service) -> None:
    """Some EHRs send order-select's selections on order-sign too: everything is still checked."""
    request = copy.deepcopy(fixture("fires-one-card-for-risky-order-among-harmless").request)
    vitamin_d = next(e for e in request["context"]["draftOrders"]["entry"]
                     if e["resource"]["id"].endswith("-mr-vitd"))["resource"]
    request["context"]["selections"] = [f"MedicationRequest/{vitamin_d['id']}"]
    assert card_ids_of(call_service(SERVICE, request)) == {"dalfampridine-safety"}


def test_only_the_harmless_order_gives_no_card(call_service) -> None:
    request = copy.deepcopy(fixture("fires-one-card-for-risky-order-among-harmless").request)
    bundle = request["context"]["draftOrders"]
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["id"].endswith("-mr-vitd")]
    assert card_ids_of(call_service(SERVICE, request)) == set()


def test_another_patients_order_alone_gives_no_card(call_service) -> None:
    request = copy.deepcopy(fixture("fires-one-card-for-risky-order-among-harmless").request)
    bundle = request["context"]["draftOrders"]
    bundle["entry"] = [e for e in bundle["entry"]
                       if e["resource"]["id"].endswith("-mr-other-patient")]
    assert card_ids_of(call_service(SERVICE, request)) == set()


@ODD_DRAFT_BUNDLES
def test_odd_bundles_give_no_card_and_no_error(call_service, draft_orders) -> None:
    request = copy.deepcopy(fixture("fires-avoid-routine-fusion-with-discectomy").request)
    request["context"]["draftOrders"] = draft_orders
    response = call_service(SERVICE, request)
    assert response.status_code == 200
    assert response.get_json()["cards"] == []


@pytest.mark.parametrize("draft_orders", [None, "x", [], {"resourceType": "Patient"},
                                          {"resourceType": "Bundle", "entry": "x"}])
def test_draft_orders_that_are_not_a_bundle_are_a_400(call_service, draft_orders) -> None:
    request = copy.deepcopy(fixture("fires-avoid-routine-fusion-with-discectomy").request)
    request["context"]["draftOrders"] = draft_orders
    response = call_service(SERVICE, request)
    assert response.status_code == 400
    assert "draftOrders" in response.get_json()["issue"][0]["diagnostics"]


def test_an_order_select_request_is_refused_by_order_sign(call_service) -> None:
    request = copy.deepcopy(fixture("fires-avoid-routine-fusion-with-discectomy").request)
    request["hook"] = "order-select"
    assert call_service(SERVICE, request).status_code == 400


@pytest.mark.parametrize("path", [p for p in PATHS if p.stem.startswith("fires-")],
                         ids=lambda p: p.stem)
def test_order_sign_cards_say_the_order_is_about_to_be_signed(path: Path, call_service) -> None:
    """On order-sign nothing is selected: every order card is worded for signing."""
    _, body = run_fixture(path, "order-sign", SERVICE, call_service)
    for card in body["cards"]:
        text = f"{card['summary']}\n{card['detail']}"
        assert "signed" in card["detail"], (path.stem, card["detail"])
        assert "select" not in text.lower(), (path.stem, text)


def test_order_select_cards_keep_saying_selected(call_service) -> None:
    request = copy.deepcopy(fixture("fires-red-flag-afo-and-routine-mri-both-signed").request)
    request["hook"] = "order-select"
    request["context"]["selections"] = sorted(draft_references(request))
    cards = call_service("foot-drop-order-select", request).get_json()["cards"]
    assert cards
    for card in cards:
        assert "selected" in card["detail"].lower() and "signed" not in card["detail"]


@pytest.mark.parametrize("deceased", [{"deceasedBoolean": True},
                                      {"deceasedDateTime": "2026-11-01"}])
def test_no_order_card_for_a_patient_recorded_as_deceased(call_service, deceased) -> None:
    """config.yaml applies_when: a chart reviewed after death gets no card, on every hook."""
    request = copy.deepcopy(fixture("fires-dalfampridine-seizure-sandbox-rx-sign-shape").request)
    assert card_ids_of(call_service(SERVICE, request)) == {"dalfampridine-safety"}
    request["prefetch"]["patient"].update(deceased)
    assert card_ids_of(call_service(SERVICE, request)) == set()


def test_deceased_false_changes_nothing(call_service) -> None:
    request = copy.deepcopy(fixture("fires-dalfampridine-seizure-sandbox-rx-sign-shape").request)
    request["prefetch"]["patient"]["deceasedBoolean"] = False
    assert card_ids_of(call_service(SERVICE, request)) == {"dalfampridine-safety"}
