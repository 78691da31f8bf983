"""Shared by the scenario suites: one app per module (building it costs most of a scenario's
time), with every 200 checked as tests/conftest.py's call_service does."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.fixtures import load_fixture
from tests.conftest import NOW, assert_cards_match_fixture, assert_valid_cds_response


def scenario_client(now: datetime = NOW) -> Any:
    return create_app({"database_url": "sqlite://"}, clock=fixed_clock(now)).test_client()


def checked_caller(client: Any) -> Callable[[str, Any], Any]:
    def call(service_id: str, body: Any) -> Any:
        response = client.post(f"/cds-services/{service_id}", json=body)
        if response.status_code == 200:
            assert_valid_cds_response(response.get_json())
        return response

    return call


@pytest.fixture(scope="module")
def call_service() -> Callable[[str, Any], Any]:
    return checked_caller(scenario_client())


def cards_by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cards = {c["source"]["topic"]["code"]: c for c in body["cards"]}
    assert len(cards) == len(body["cards"]), "one card per recommendation id"
    return cards


def run_fixture(path: Path, hook: str, service_id: str,
                call_service: Callable[[str, Any], Any]) -> tuple[Any, dict[str, Any]]:
    """Load a fixture (dates relative to NOW), call its service, require a 200 and the cards the
    fixture expects; the fixture and the response body for further checks."""
    fx = load_fixture(path, NOW)
    assert fx.hook == hook
    response = call_service(service_id, fx.request)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert_cards_match_fixture(fx, body["cards"])
    for card in body["cards"]:  # every card names its source, with a link to the evidence
        assert card["source"]["label"] and card["source"]["url"].startswith("https://"), card
    return fx, body


def card_ids_of(response: Any) -> set[str]:
    assert response.status_code == 200
    return set(cards_by_id(response.get_json()))


def raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def actions_of(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for s in card.get("suggestions", []) for a in s["actions"]]


def assert_expected_actions(path: Path, cards: dict[str, dict[str, Any]]) -> None:
    """The fixture's ``expectedActions``, if any: exactly these actions, with the ``set`` values."""
    expected_actions = raw(path).get("expectedActions")
    if expected_actions is None:
        return
    got: Counter[tuple[str, str, str]] = Counter()
    for rec_id, card in cards.items():
        for action in actions_of(card):
            target = action.get("resourceId") or (
                f"{action['resource']['resourceType']}/{action['resource']['id']}"
                if action["type"] == "update" else action["resource"]["resourceType"]
            )
            got[(rec_id, action["type"], target)] += 1
    want = Counter(
        (e["id"], e["type"], e.get("resourceId") or e["resourceType"]) for e in expected_actions
    )
    assert got == want
    for e in expected_actions:
        if "set" not in e:
            continue
        resources = [
            a["resource"] for a in actions_of(cards[e["id"]])
            if a["type"] == e["type"] and "resource" in a
            and (e.get("resourceId") is None
                 or f"{a['resource']['resourceType']}/{a['resource']['id']}" == e["resourceId"])
        ]
        assert any(all(r.get(k) == v for k, v in e["set"].items()) for r in resources), e


# Draft-order Bundles an EHR may send that hold no order to review: 200 with no card, never 500.
ODD_DRAFT_BUNDLES = pytest.mark.parametrize(
    "draft_orders",
    [
        {"resourceType": "Bundle"},
        {"resourceType": "Bundle", "entry": []},
        {"resourceType": "Bundle", "type": "collection", "entry": []},
        {"resourceType": "Bundle", "entry": [1, "x", None, {}, {"resource": "x"},
                                              {"resource": {"resourceType": "ServiceRequest"}},
                                              {"resource": {"id": "no-type"}}]},
    ],
    ids=["no-entry", "empty", "empty-with-type", "malformed-entries"],
)
