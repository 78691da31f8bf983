"""feedback-report counts decisions, not hook calls: the sandbox re-fires order-select on every
change of the draft, and each call issues a new card for the same order."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from cds_service import create_app
from cds_service.__main__ import main
from cds_service.clock import fixed_clock
from cds_service.fixtures import FIXTURES_DIR, load_fixture
from tests.conftest import NOW

ORDER_SELECT = "/cds-services/foot-drop-order-select"
PATIENT_VIEW = "/cds-services/foot-drop-patient-view"
DALFAMPRIDINE = FIXTURES_DIR / "order-select" / "dalfampridine-low-crcl.json"
RED_FLAG_CHART = FIXTURES_DIR / "patient-view" / "fires-urgent-bilateral-foot-drop-recent.json"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'var' / 'cds.sqlite3'}"


def card_of(client: Any, path: str, request: dict[str, Any], rec_id: str) -> dict[str, Any]:
    response = client.post(path, json=request)
    assert response.status_code == 200
    return next(c for c in response.get_json()["cards"] if c["source"]["topic"]["code"] == rec_id)


def feedback(client: Any, path: str, card: dict[str, Any], outcome: str,
             reason: str | None = None, at: str = "2026-11-20T12:00:00Z") -> None:
    item: dict[str, Any] = {"card": card["uuid"], "outcome": outcome, "outcomeTimestamp": at}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    if reason:
        item["overrideReason"] = {"reason": {"code": reason,
                                             "system": card["overrideReasons"][0]["system"]}}
    response = client.post(f"{path}/feedback", json={"feedback": [item]})
    assert response.status_code == 200


def report(capsys, database_url: str) -> dict[str, dict[str, Any]]:
    assert main(["feedback-report", "--database-url", database_url, "--json"]) == 0
    out, _ = capsys.readouterr()
    return {r["recommendation"]: r for r in json.loads(out)["recommendations"]}


def test_a_re_fired_order_select_is_one_decision(database_url, capsys) -> None:
    client = create_app({"database_url": database_url}, clock=fixed_clock(NOW)).test_client()
    request = load_fixture(DALFAMPRIDINE, NOW).request
    cards = []
    for _ in range(3):  # the sandbox re-sends the same draft on every change
        re_fired = copy.deepcopy(request)
        cards.append(card_of(client, ORDER_SELECT, re_fired, "dalfampridine-safety"))
    assert len({c["uuid"] for c in cards}) == 3
    feedback(client, ORDER_SELECT, cards[0], "accepted", at="2026-11-20T12:00:00Z")
    feedback(client, ORDER_SELECT, cards[2], "accepted", at="2026-11-20T12:01:00Z")

    row = report(capsys, database_url)["dalfampridine-safety"]
    assert (row["issued"], row["cards"], row["decided"], row["accepted"], row["overridden"]) == (
        1, 3, 1, 1, 0)
    assert row["acceptance_rate"] == 1.0

    # A second draft order (another id) for the same patient is another decision.
    other = json.loads(json.dumps(request).replace("fd-os-dalf-crcl-mr1", "fd-os-dalf-crcl-mr2"))
    card_of(client, ORDER_SELECT, other, "dalfampridine-safety")
    row = report(capsys, database_url)["dalfampridine-safety"]
    assert (row["issued"], row["decided"], row["no_feedback"]) == (2, 1, 1)


def test_overrides_by_reason_and_snoozes_per_recommendation(database_url, capsys) -> None:
    client = create_app({"database_url": database_url}, clock=fixed_clock(NOW)).test_client()
    request = load_fixture(RED_FLAG_CHART, NOW).request
    first = card_of(client, PATIENT_VIEW, request, "urgent-red-flag-evaluation")
    second = card_of(client, PATIENT_VIEW, request, "urgent-red-flag-evaluation")
    feedback(client, PATIENT_VIEW, first, "overridden", "patient-declined",
             at="2026-11-20T12:00:00Z")
    feedback(client, PATIENT_VIEW, second, "overridden", "clinical-judgement",
             at="2026-11-20T12:05:00Z")

    row = report(capsys, database_url)["urgent-red-flag-evaluation"]
    assert (row["issued"], row["decided"], row["overridden"], row["snoozed"]) == (1, 1, 1, 1)
    assert row["override_reasons"] == {"clinical-judgement": 1}, "the latest feedback counts"
    assert main(["feedback-report", "--database-url", database_url]) == 0
    out, _ = capsys.readouterr()
    assert "snoozed" in out.splitlines()[0]
