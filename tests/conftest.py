"""Shared test fixtures: the app built through the factory, a pinned clock, response checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.fhir.record import model_class
from cds_service.validation.response import find_empty_members

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# PostgreSQL needs CDS_PSEUDONYM_KEY (no key file beside a server database); tests share one.
TEST_PSEUDONYM_KEY = "test-pseudonym-key-not-a-secret-0123456789"
TESTS = Path(__file__).parent
RESPONSE_SCHEMA = Draft202012Validator(
    json.loads((TESTS / "schemas" / "cds-hooks-2.0-response.schema.json").read_text())
)


def assert_valid_cds_response(body: Any) -> None:
    """Every CDS service response: CDS Hooks 2.0 shape, no empty members, real FHIR actions."""
    errors = sorted(RESPONSE_SCHEMA.iter_errors(body), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    assert find_empty_members(body) == []
    uuids = []
    for card in body["cards"]:
        uuids.append(card["uuid"])
        assert len(card["summary"]) < 140
        assert card["source"]["topic"]["code"]
        for suggestion in card.get("suggestions", []):
            uuids.append(suggestion["uuid"])
            for action in suggestion.get("actions", []):
                if action["type"] in ("create", "update"):
                    resource = action["resource"]
                    model_class(resource["resourceType"]).model_validate(resource)
    assert len(uuids) == len(set(uuids)), "card and suggestion uuids must be unique"


def assert_cards_match_fixture(fixture: Any, cards: list[dict[str, Any]], how: str = "") -> None:
    """The cards a fixture expects: exactly its ids and indicators (as `evaluate --check`
    compares them), each detail naming every `detailIncludes` text."""
    from cds_service.cli import compare_expected, recommendation_id

    where = f"{fixture.name} ({how})" if how else fixture.name
    problems = compare_expected(fixture.expected, cards)
    assert not problems, f"{where}: {'; '.join(problems)}"
    details: dict[str, list[str]] = {}
    for card in cards:
        details.setdefault(recommendation_id(card), []).append(card.get("detail", ""))
    for expected in fixture.expected:
        for text in expected.get("detailIncludes") or []:
            assert any(text in d for d in details[expected["id"]]), (
                f"{where}: {expected['id']} detail lacks {text!r}")


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def app(tmp_path: Path, settings_overrides: dict[str, Any]):
    # no purge thread: a test's rows stay until the test removes them (tests/production tests it)
    config = {"database_url": f"sqlite:///{tmp_path / 'cds.sqlite3'}",
              "purge_interval_seconds": 0, **settings_overrides}
    return create_app(config, clock=fixed_clock(NOW))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def call_service(client) -> Callable[..., Any]:
    """POST a hook request; checks every 200 body against the CDS Hooks 2.0 response schema."""

    def call(service_id: str, body: Any, **kwargs: Any):
        response = client.post(f"/cds-services/{service_id}", json=body, **kwargs)
        if response.status_code == 200:
            assert_valid_cds_response(response.get_json())
        else:
            assert response.get_json()["resourceType"] == "OperationOutcome"
        return response

    return call


# -- PostgreSQL: one throwaway cluster per test session, a fresh database per test -------------
@pytest.fixture(scope="session")
def postgres_cluster():
    from tests.pg import PostgresCluster

    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_cluster) -> str:
    """The cluster's maintenance database (create databases through it, do not store in it)."""
    return postgres_cluster.url()


@pytest.fixture
def new_database_url(postgres_cluster) -> str:
    """An empty PostgreSQL database of its own for this test."""
    return postgres_cluster.new_database()


@pytest.fixture
def migrated_postgres_url(postgres_cluster) -> str:
    """A PostgreSQL database of its own for this test, already at the newest schema."""
    return postgres_cluster.migrated_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """Storage tests run against both engines the service supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sub' / 'cds.sqlite3'}"
    return request.getfixturevalue("new_database_url")
