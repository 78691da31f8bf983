"""Snooze end to end over HTTP: a card, an override for a snoozing reason, the next call without
the card; another patient keeps it; a new red flag or a worse grade brings the critical card
back at once; two app instances on one database share the snooze; the pseudonym key.

Every test takes ``database_url`` (SQLite file now; the lead may parametrize it for PostgreSQL)."""

from __future__ import annotations

import copy
import json
import os
import stat
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from cds_service import create_app
from cds_service.clock import fixed_clock
from cds_service.config import SettingsError
from cds_service.fixtures import FIXTURES_DIR, load_fixture
from cds_service.logs import JsonLineFormatter
from tests.conftest import NOW

PATIENT_VIEW = "/cds-services/foot-drop-patient-view"
ORDER_SIGN = "/cds-services/foot-drop-order-sign"
RED_FLAG = "urgent-red-flag-evaluation"
FIXTURE = FIXTURES_DIR / "patient-view" / "fires-urgent-bilateral-foot-drop-recent.json"
KEY = "k" * 40


def make_app(database_url: str, now=NOW, **settings: Any):
    return create_app({"database_url": database_url, "pseudonym_key": KEY, **settings},
                      clock=fixed_clock(now))


@pytest.fixture
def client(database_url: str):
    return make_app(database_url).test_client()


def request_for(patient_id: str | None = None) -> dict[str, Any]:
    request = load_fixture(FIXTURE, NOW).request
    if patient_id is not None:  # the same chart under another patient id
        old = request["context"]["patientId"]
        request = json.loads(json.dumps(request).replace(old, patient_id))
    return request


def cards(client, request: dict[str, Any], path: str = PATIENT_VIEW) -> dict[str, dict]:
    response = client.post(path, json=request)
    assert response.status_code == 200, response.get_json()
    return {c["source"]["topic"]["code"]: c for c in response.get_json()["cards"]}


def override(client, card: dict[str, Any], code: str = "clinical-judgement",
             path: str = PATIENT_VIEW) -> None:
    response = client.post(f"{path}/feedback", json={"feedback": [{
        "card": card["uuid"], "outcome": "overridden",
        "overrideReason": {"reason": {"code": code,
                                      "system": card["overrideReasons"][0]["system"]}},
        "outcomeTimestamp": "2026-11-20T12:00:00Z"}]})
    assert response.status_code == 200, response.get_json()


def with_condition(request: dict[str, Any], code: str, display: str) -> dict[str, Any]:
    request = copy.deepcopy(request)
    pid = request["context"]["patientId"]
    bundle = request["prefetch"]["conditions"]
    first = bundle["entry"][0]["resource"]
    condition = {**copy.deepcopy(first), "id": f"{pid}-new-{code.replace('.', '')}",
                 "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                      "code": code, "display": display}], "text": display},
                 "onsetDateTime": (NOW - timedelta(days=1)).date().isoformat(),
                 "recordedDate": (NOW - timedelta(days=1)).date().isoformat()}
    bundle["entry"].append({"fullUrl": f"urn:uuid:{condition['id']}", "resource": condition})
    return request


def test_override_for_clinical_judgement_hides_the_card_for_that_patient_only(client) -> None:
    first = cards(client, request_for())
    assert first[RED_FLAG]["indicator"] == "critical"
    override(client, first[RED_FLAG])

    again = cards(client, request_for())
    assert RED_FLAG not in again
    assert set(again) == set(first) - {RED_FLAG}, "only the overridden recommendation"
    other = cards(client, request_for("fd-pv-bilateral-other"))
    assert other[RED_FLAG]["indicator"] == "critical", "another patient keeps the card"


def test_a_new_red_flag_brings_the_critical_card_back_at_once(client) -> None:
    override(client, cards(client, request_for())[RED_FLAG])
    assert RED_FLAG not in cards(client, request_for())

    worse = with_condition(request_for(), "G83.4", "Cauda equina syndrome")
    back = cards(client, worse)[RED_FLAG]
    assert back["indicator"] == "critical"
    assert "snoozed" in back["detail"] and "new red flag" in back["detail"]


def test_a_reason_that_does_not_snooze_and_accepted_feedback_do_not_hide(client) -> None:
    override(client, cards(client, request_for())[RED_FLAG], code="patient-declined")
    card = cards(client, request_for())[RED_FLAG]
    response = client.post(f"{PATIENT_VIEW}/feedback", json={"feedback": [{
        "card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-20T12:00:00Z",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}]})
    assert response.status_code == 200
    assert RED_FLAG in cards(client, request_for())


def test_the_snooze_ends_after_the_recommendations_period(database_url) -> None:
    client = make_app(database_url).test_client()
    override(client, cards(client, request_for())[RED_FLAG])
    later = make_app(database_url, now=NOW + timedelta(days=13)).test_client()
    assert RED_FLAG not in cards(later, request_for())
    after = make_app(database_url, now=NOW + timedelta(days=14, minutes=1)).test_client()
    assert RED_FLAG in cards(after, request_for())


def test_two_app_instances_on_one_database_share_the_snooze(database_url) -> None:
    one = make_app(database_url).test_client()
    two = make_app(database_url).test_client()
    override(one, cards(one, request_for())[RED_FLAG])
    assert RED_FLAG not in cards(two, request_for())


def test_snoozed_cards_are_counted_in_metrics_and_the_log(client, caplog) -> None:
    override(client, cards(client, request_for())[RED_FLAG])
    with caplog.at_level("INFO"):
        cards(client, request_for())
    formatter = JsonLineFormatter()
    logged = [json.loads(formatter.format(r)) for r in caplog.records
              if r.getMessage() == "request"]
    assert any(RED_FLAG in line.get("snoozed", []) for line in logged), logged
    metrics = client.get("/metrics").get_data(as_text=True)
    assert f'cds_cards_snoozed_total{{recommendation="{RED_FLAG}"' in metrics.replace(
        'service="foot-drop-patient-view",', "")
    assert "cds_snoozes_started_total" in metrics


def test_order_sign_card_is_snoozed_per_patient_too(client) -> None:
    fx = load_fixture(FIXTURES_DIR / "order-sign" / "fires-dalfampridine-low-crcl.json", NOW)
    card = cards(client, fx.request, ORDER_SIGN)["dalfampridine-safety"]
    override(client, card, path=ORDER_SIGN)
    assert "dalfampridine-safety" not in cards(client, fx.request, ORDER_SIGN)


def test_the_raw_patient_id_is_never_stored(client, database_url) -> None:
    override(client, cards(client, request_for())[RED_FLAG])
    engine = create_engine(database_url)
    with engine.connect() as conn:
        dump = [tuple(map(str, row)) for table in ("issued_card", "snooze", "feedback")
                for row in conn.execute(text(f"SELECT * FROM {table}"))]
    engine.dispose()
    assert dump
    assert not any("fd-pv-bilateral" in value for row in dump for value in row)


# ----------------------------------------------------------------------------- the key
def test_without_a_key_sqlite_creates_a_private_key_file_beside_the_database(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'var' / 'cds.sqlite3'}"
    one = create_app({"database_url": url}, clock=fixed_clock(NOW)).test_client()
    key_file = tmp_path / "var" / "pseudonym.key"
    assert key_file.exists()
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    override(one, cards(one, request_for())[RED_FLAG])
    two = create_app({"database_url": url}, clock=fixed_clock(NOW)).test_client()
    assert RED_FLAG not in cards(two, request_for()), "the second start reads the same key"


def test_postgresql_without_a_key_is_a_clear_start_error() -> None:
    with pytest.raises(SettingsError, match="CDS_PSEUDONYM_KEY"):
        create_app({"database_url": "postgresql+psycopg://cds@127.0.0.1:1/cds"},
                   clock=fixed_clock(NOW))


def test_a_worse_grade_brings_the_critical_card_back(client) -> None:
    path = FIXTURES_DIR / "patient-view" / "fires-urgent-progressive-weakness-3minus.json"
    request = load_fixture(path, NOW).request
    override(client, cards(client, request)[RED_FLAG])
    assert RED_FLAG not in cards(client, request)

    worse = copy.deepcopy(request)
    entries = worse["prefetch"]["observations"]["entry"]
    latest = copy.deepcopy(entries[-1]["resource"])
    latest.update(id=f"{latest['id']}-today", valueString="1/5",
                  effectiveDateTime=(NOW - timedelta(hours=1)).isoformat())
    entries.append({"fullUrl": f"urn:uuid:{latest['id']}", "resource": latest})
    back = cards(client, worse)[RED_FLAG]
    assert back["indicator"] == "critical"
    assert "1/5" in back["detail"].split("\n\n")[0], "the note says what is new"


def test_unreadable_snoozes_show_every_card(client, database_url) -> None:
    override(client, cards(client, request_for())[RED_FLAG])
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE snooze"))
    engine.dispose()
    assert RED_FLAG in cards(client, request_for()), "fail open: a card shown beats a card lost"


def test_migration_0002_keeps_cards_issued_before_it(tmp_path) -> None:
    from alembic import command
    from alembic.config import Config

    from cds_service.storage.db import MIGRATIONS_DIR, Database

    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0001")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO issued_card VALUES ('u1', 'svc', 'rec', 'info', "
                          "'2026-11-01 00:00:00')"))
    engine.dispose()
    database = Database(url)
    database.migrate()
    assert database.issued_cards(["u1"])["u1"]["patient_pseudonym"] is None
    assert {s.recommendation_id: s.issued for s in database.recommendation_stats()} == {"rec": 1}
    database.dispose()


def test_snoozing_the_chart_card_leaves_the_order_card_of_the_same_id(client) -> None:
    """patient-view and the order rules share the id urgent-red-flag-evaluation; a snooze of the
    chart card must not silence the order check."""
    order_fx = load_fixture(
        FIXTURES_DIR / "order-select" / "red-flag-afo-pt-ncs-one-card.json", NOW)
    chart = copy.deepcopy(order_fx.request)
    chart["hook"] = "patient-view"
    chart["context"] = {k: v for k, v in chart["context"].items()
                        if k in ("userId", "patientId", "encounterId")}
    override(client, cards(client, chart)[RED_FLAG])
    assert RED_FLAG not in cards(client, chart)
    order_path = "/cds-services/foot-drop-order-select"
    assert RED_FLAG in cards(client, order_fx.request, order_path)
