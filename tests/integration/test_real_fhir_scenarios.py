"""Every fixture, round-tripped through a real FHIR server (medplum's fhir-router, in memory).

The fixtures are uploaded once with ``load-fixtures`` (dates materialised at ``NOW``, the clock of
the in-process service). Then, per fixture and for both hooks:

(a) prefetch expanded by ``fire`` against the server (our templates as queries a real server
    answers), sent to the service with no ``fhirServer`` -> the fixture's expected ids;
(b) the request with no prefetch and ``fhirServer`` = the server -> the service's own fallback
    fetches -> the same expected ids.

A fixture that cannot round-trip (it tests raw-prefetch quirks a server search would never
return) opts out with ``"roundTrip": false``; it is not collected here, and the opt-outs are
themselves checked to stay few and explained.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service import cli, create_app
from cds_service.__main__ import main
from cds_service.clock import fixed_clock
from cds_service.config import Settings
from cds_service.fixtures import fixture_paths, load_fixture
from tests.conftest import NOW, assert_cards_match_fixture, assert_valid_cds_response

pytestmark = pytest.mark.integration


def _data(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


OPTED_OUT = [p for p in fixture_paths() if not cli.round_trips(_data(p))]
FIXTURES = [pytest.param(p, id=cli.fixture_label(p)) for p in fixture_paths()
            if p not in OPTED_OUT]


def test_round_trip_opt_outs_stay_few_and_explained():
    assert len(OPTED_OUT) <= 3, [p.name for p in OPTED_OUT]
    for path in OPTED_OUT:
        description = _data(path).get("description", "")
        assert "round" in description.lower() or "prefetch-only" in description.lower(), path.name


@pytest.fixture(scope="module")
def loaded(fhir_server) -> Iterator[str]:
    """The session's FHIR server holding every round-trip fixture (loaded by load-fixtures)."""
    progress: list[str] = []
    plan = cli.load_fixtures(fhir_server.base, fixture_paths(), NOW, progress=progress.append)
    assert plan.uploads, "no fixtures were uploaded"
    return fhir_server.base


@pytest.fixture(scope="module")
def service_app(tmp_path_factory):
    db = tmp_path_factory.mktemp("real-fhir") / "cds.sqlite3"
    app = create_app({"database_url": f"sqlite:///{db}", "log_level": "WARNING"},
                     clock=fixed_clock(NOW))
    yield app
    app.extensions["cds"].database.dispose()


def call(app, service_id: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = app.test_client().post(f"/cds-services/{service_id}", json=body)
    assert response.status_code == 200, response.get_json()
    payload = response.get_json()
    assert_valid_cds_response(payload)
    return payload["cards"]


@pytest.mark.parametrize("path", FIXTURES)
def test_prefetch_expanded_against_the_server(path, loaded, service_app):
    fixture = load_fixture(path, NOW)
    runtime = service_app.extensions["cds"]
    service = runtime.knowledge.services[fixture.service_id]
    context = fixture.request["context"]
    prefetch = cli.fetch_prefetch(service, context, loaded, settings=Settings())
    assert set(prefetch) == {spec.key for spec in service.prefetch}, "a template went unanswered"
    body = cli.build_request(
        fixture.hook, context["patientId"], user_id=context.get("userId", "Practitioner/x"),
        encounter_id=context.get("encounterId"), prefetch=prefetch,
        draft_orders=context.get("draftOrders"), selections=context.get("selections") or (),
    )
    cards = call(service_app, fixture.service_id, body)
    assert_cards_match_fixture(fixture, cards, "prefetch from fire")


@pytest.mark.parametrize("path", FIXTURES)
def test_service_fallback_fetches_from_the_server(path, loaded, service_app):
    fixture = load_fixture(path, NOW)
    body = copy.deepcopy(fixture.request)
    body.pop("prefetch", None)
    body["fhirServer"] = loaded
    cards = call(service_app, fixture.service_id, body)
    assert_cards_match_fixture(fixture, cards, "service fallback")


def _first(hook: str) -> Path | None:
    for param in FIXTURES:
        path = param.values[0]
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("hook") == hook and cli.round_trips(data):
            return path
    return None


@pytest.mark.parametrize("hook", ["patient-view", "order-select"])
def test_fire_command_end_to_end(hook, loaded, capsys):
    path = _first(hook)
    assert path is not None, f"no round-trip {hook} fixture"
    fixture = load_fixture(path, NOW)
    argv = ["fire", "--fhir-server", loaded, "--patient", fixture.request["context"]["patientId"],
            "--hook", hook, "--now", NOW.isoformat(), "--json"]
    if hook == "order-select":
        argv += ["--orders", str(path)]
        for selection in fixture.request["context"]["selections"]:
            argv += ["--select", selection]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "prefetching" in err and "calling" in err  # progress goes to stderr
    assert_cards_match_fixture(fixture, json.loads(out)["cards"], "fire command")


def test_load_fixtures_command_is_idempotent(loaded, capsys):
    """Loading again PUTs the same ids: nothing is duplicated and every fixture still matches."""
    code = main(["load-fixtures", "--fhir-server", loaded, "--now", NOW.isoformat()])
    _out, err = capsys.readouterr()
    assert code == 0, err
    assert "[1/" in err and "done:" in err
    path = _first("patient-view") or _first("order-select")
    assert path is not None, "no round-trip fixtures"
    fixture = load_fixture(path, NOW)
    patient = fixture.request["context"]["patientId"]
    conditions = cli.fhir_session().get(f"{loaded}/Condition?patient={patient}&_count=200",
                                        timeout=10).json()
    want = len((fixture.request["prefetch"].get("conditions") or {}).get("entry") or [])
    assert len(conditions.get("entry") or []) == want


def test_round_trip_fixtures_do_not_collide():
    """Fixtures sharing a patient (or a resource id with different content) would see each
    other's data on a server: each round-trip fixture needs its own patient."""
    plan = cli.plan_upload(fixture_paths(), NOW)
    assert not plan.conflicts, plan.conflicts


def test_paging_beyond_one_page(fhir_server, tmp_path):
    """More results than _count=200: fetch follows the server's next links."""
    observations = [
        {"resourceType": "Observation", "id": f"fd-paging-obs-{i}", "status": "final",
         "code": {"text": "Pain score"}, "subject": {"reference": "Patient/fd-paging-1"},
         "effectiveDateTime": f"$now-{i}d", "valueInteger": i % 10}
        for i in range(230)
    ]
    data = {"description": "paging", "hook": "patient-view", "expected": [],
            "request": {"hook": "patient-view", "hookInstance": "paging",
                        "context": {"userId": "Practitioner/fd-paging-dr",
                                    "patientId": "fd-paging-1"},
                        "prefetch": {"patient": {"resourceType": "Patient", "id": "fd-paging-1"},
                                     "observations": {"resourceType": "Bundle",
                                                      "type": "searchset",
                                                      "entry": [{"resource": o}
                                                                for o in observations]}}}}
    path = tmp_path / "paging.json"
    path.write_text(json.dumps(data))
    cli.load_fixtures(fhir_server.base, [path], NOW)
    from cds_service.knowledge.loader import load_knowledge

    service = load_knowledge(Settings().cards_dir).services["foot-drop-patient-view"]
    prefetch = cli.fetch_prefetch(service, data["request"]["context"], fhir_server.base)
    ids = [e["resource"]["id"] for e in prefetch["observations"]["entry"]]
    assert len(ids) == len(set(ids)) == 230
