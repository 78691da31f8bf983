"""Shared by the scenario suites: one app per module (building it costs most of a scenario's
time), with every 200 checked as tests/conftest.py's call_service does."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service import create_app
from cds_service.clock import fixed_clock
from tests.conftest import NOW, assert_valid_cds_response


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


def raw(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))
