"""patient-view scenarios from fhir_fixtures/patient-view, each run through the HTTP endpoint.

For every fixture: the exact set of recommendation ids, their indicators, the patient data each
detail must name, the critical card first, the expected suggestions present (an invalid FHIR
resource is dropped by the renderer, so a missing suggestion means an invalid resource), every
suggested resource valid FHIR R4 (``assert_valid_cds_response``), and the same cards when "now"
moves (fixture dates are relative to the injected clock).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.fhir.record import iter_resources, model_class
from cds_service.fixtures import FIXTURES_DIR, fixture_paths, load_fixture, materialize
from tests.conftest import NOW
from tests.scenarios.conftest import cards_by_id, raw, run_fixture, scenario_client

SERVICE = "foot-drop-patient-view"
PATIENT_VIEW_DIR = FIXTURES_DIR / "patient-view"
PATHS = fixture_paths(PATIENT_VIEW_DIR)
ROOT = Path(__file__).resolve().parents[2]
PREFETCH_KEYS = set(
    yaml.safe_load((ROOT / "cards" / "services.yaml").read_text())["services"][SERVICE]["prefetch"]
)
PATIENT_VIEW_IDS = {
    yaml.safe_load(p.read_text())["id"] for p in (ROOT / "cards" / "recommendations").glob("*.yaml")
}


def _resources(request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for value in (request.get("prefetch") or {}).values():
        yield from iter_resources(value)


# ------------------------------------------------------------------------------- the scenarios
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_scenario(path: Path, call_service) -> None:
    fx, body = run_fixture(path, "patient-view", SERVICE, call_service)
    cards = cards_by_id(body)

    for expected in fx.expected:
        card = cards[expected["id"]]
        assert card["source"]["url"].startswith("https://")
        assert [link["type"] for link in card["links"]][:2] == ["absolute", "absolute"]
        if "suggestionLabels" in expected:
            labels = [s["label"].lower() for s in card.get("suggestions", [])]
            wanted = [w.lower() for w in expected["suggestionLabels"]]
            assert len(labels) == len(wanted), (expected["id"], labels)
            for want in wanted:
                assert any(want in label for label in labels), (expected["id"], want, labels)
    indicators = [c["indicator"] for c in body["cards"]]
    if "critical" in indicators:
        assert indicators[0] == "critical", "the critical card comes first"


LATER = NOW + timedelta(days=731, hours=5)


@pytest.fixture(scope="module")
def later_client():
    return scenario_client(LATER)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_same_cards_at_another_now(path: Path, later_client) -> None:
    """Fixture dates are relative: moving the clock two years on changes nothing."""
    fx = load_fixture(path, LATER)
    response = later_client.post(f"/cds-services/{SERVICE}", json=fx.request)
    assert response.status_code == 200
    assert set(cards_by_id(response.get_json())) == fx.expected_ids


# ------------------------------------------------------------------------------- the fixture files
def test_there_are_patient_view_fixtures() -> None:
    assert len(PATHS) >= 20


def test_every_recommendation_fires_in_some_fixture_and_is_absent_from_another() -> None:
    expected_sets = [load_fixture(p, NOW).expected_ids for p in PATHS]
    for rec_id in PATIENT_VIEW_IDS:
        assert any(rec_id in s for s in expected_sets), f"no fixture fires {rec_id}"
        assert any(rec_id not in s for s in expected_sets), rec_id
    assert any(not s for s in expected_sets), "a no-card scenario"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_fixture_file_shape(path: Path) -> None:
    data = raw(path)
    assert path.stem.startswith(("fires-", "not-")), "name files <fires|not>-<scenario>.json"
    assert path.stem.startswith("not-") or data["expected"], "a fires- fixture expects a card"
    assert data["description"]
    request = data["request"]
    assert request["hook"] == "patient-view"
    assert set(request["prefetch"]) == PREFETCH_KEYS, "every prefetch key, empty Bundle if no data"
    pid = request["context"]["patientId"]
    assert pid.startswith("fd-pv-")
    assert request["prefetch"]["patient"]["id"] == pid
    for expected in data["expected"]:
        assert expected["id"] in PATIENT_VIEW_IDS
        assert expected["indicator"] in ("info", "warning", "critical")
        assert expected["detailIncludes"], "each detail must name its triggering data"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_fixture_resources_are_valid_fhir_and_prefixed(path: Path) -> None:
    request = materialize(raw(path)["request"], NOW)
    pid = request["context"]["patientId"]
    for resource in _resources(request):
        model_class(resource["resourceType"]).model_validate(resource)
        assert resource["id"].startswith(pid), resource["id"]


def test_patient_ids_are_unique_per_fixture() -> None:
    pids = Counter(raw(p)["request"]["context"]["patientId"] for p in PATHS)
    assert [pid for pid, n in pids.items() if n > 1] == []


def test_resource_ids_are_globally_unique_across_all_fixtures() -> None:
    """A later tool uploads every fixture into one FHIR server with stable ids."""
    seen: dict[tuple[str, str], str] = {}
    duplicates = []
    for path in fixture_paths(FIXTURES_DIR):
        request = raw(path)["request"]
        resources = list(_resources(request))
        draft = (request.get("context") or {}).get("draftOrders")
        if draft:
            resources.extend(iter_resources(draft))
        for resource in resources:
            key = (resource["resourceType"], resource["id"])
            if key in seen and seen[key] != path.name:
                duplicates.append((key, seen[key], path.name))
            seen.setdefault(key, path.name)
    assert duplicates == []
