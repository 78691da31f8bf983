"""Alembic migrations and the feedback / issued-card / JWT-id store, on SQLite and on a real
PostgreSQL server (``database_url`` is parametrized over both)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from cds_service.storage import tables
from cds_service.storage.db import Database, FeedbackEntry, IssuedCard, SnoozeRecord
from tests.conftest import TEST_PSEUDONYM_KEY

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    database.migrate()
    yield database
    database.dispose()


def entry(**changes):
    values = dict(service_id="foot-drop-patient-view", card_uuid="card-1", outcome="accepted",
                  accepted_suggestions=("s-1",), override_reason_system=None,
                  override_reason_code=None, override_comment=None, outcome_timestamp=NOW)
    values.update(changes)
    return FeedbackEntry(**values)


def schema(database):
    inspector = inspect(database.engine)
    return {
        name: (
            {c["name"]: (type(c["type"]).__name__, c["nullable"])
             for c in inspector.get_columns(name)},
            tuple(inspector.get_pk_constraint(name)["constrained_columns"]),
            {i["name"]: tuple(i["column_names"]) for i in inspector.get_indexes(name)},
        )
        for name in inspector.get_table_names()
        if name != "alembic_version"
    }


def test_migration_creates_the_schema_on_an_empty_database(database_url):
    database = Database(database_url)
    assert inspect(database.engine).get_table_names() == []
    database.migrate()
    assert set(inspect(database.engine).get_table_names()) == {
        "alembic_version", "feedback", "issued_card", "seen_jti", "snooze"}
    database.dispose()


def test_migrated_schema_matches_the_table_definitions(db, request, tmp_path):
    """The code writes through tables.py; the database is built by the migrations."""
    other = (request.getfixturevalue("postgres_cluster").new_database() if db.is_postgresql
             else f"sqlite:///{tmp_path / 'metadata.sqlite3'}")
    from_metadata = Database(other)
    tables.metadata.create_all(from_metadata.engine)
    assert schema(db) == schema(from_metadata)
    from_metadata.dispose()


def test_upgrade_is_idempotent_and_keeps_data(db):
    db.store_feedback([entry()], NOW)
    db.migrate()
    db.migrate()
    with db.engine.connect() as conn:
        versions = conn.execute(text("select version_num from alembic_version")).scalars().all()
    assert len(versions) == 1
    assert db.count_feedback() == 1


def test_two_processes_migrating_the_same_file(database_url):
    url = database_url
    first, second = Database(url), Database(url)
    first.migrate()
    second.migrate()
    assert second.store_feedback([entry()], NOW) == 1
    first.dispose()
    second.dispose()


def test_the_same_entry_is_stored_once(db):
    assert db.store_feedback([entry()], NOW) == 1
    assert db.store_feedback([entry()], NOW + timedelta(minutes=5)) == 0
    assert db.count_feedback() == 1


def test_entries_differing_in_any_member_are_distinct(db):
    variants = [
        entry(),
        entry(card_uuid="card-2"),
        entry(outcome="overridden", accepted_suggestions=()),
        entry(accepted_suggestions=("s-2",)),
        entry(outcome_timestamp=NOW + timedelta(seconds=1)),
        entry(outcome="overridden", accepted_suggestions=(), override_reason_code="x"),
        entry(outcome="overridden", accepted_suggestions=(), override_comment="c"),
        entry(service_id="foot-drop-order-select"),
    ]
    assert db.store_feedback(variants, NOW) == len(variants)


def test_suggestion_order_does_not_make_a_new_entry(db):
    db.store_feedback([entry(accepted_suggestions=("a", "b"))], NOW)
    assert db.store_feedback([entry(accepted_suggestions=("b", "a"))], NOW) == 0


def test_concurrent_writers_store_an_entry_once(db):
    with ThreadPoolExecutor(8) as pool:
        stored = list(pool.map(lambda _: db.store_feedback([entry()], NOW), range(16)))
    assert sum(stored) == 1
    assert db.count_feedback() == 1


def test_feedback_is_attributed_to_the_recommendation_that_issued_the_card(db):
    db.record_issued([IssuedCard("card-1", "foot-drop-patient-view",
                                 "orthosis-and-rehabilitation", "info", NOW)])
    db.store_feedback([entry(), entry(card_uuid="card-9", outcome="overridden",
                                      accepted_suggestions=())], NOW)
    stats = {s.recommendation_id: s for s in db.recommendation_stats()}
    assert (stats["orthosis-and-rehabilitation"].issued,
            stats["orthosis-and-rehabilitation"].accepted) == (1, 1)
    assert stats["(unknown card)"].overridden == 1


def test_a_replayed_jwt_id_is_detected(db):
    assert db.remember_jti("https://ehr", "j1", NOW + timedelta(minutes=5), NOW)
    assert not db.remember_jti("https://ehr", "j1", NOW + timedelta(minutes=5), NOW)
    assert db.remember_jti("https://other-ehr", "j1", NOW + timedelta(minutes=5), NOW)


def test_expired_jwt_ids_are_forgotten(db):
    db.remember_jti("https://ehr", "j1", NOW + timedelta(minutes=5), NOW)
    assert db.remember_jti("https://ehr", "j1", NOW + timedelta(hours=2),
                           NOW + timedelta(hours=1))


# -- parallel start: several instances migrating one empty database at once ---------------------
def test_instances_starting_together_migrate_an_empty_database_once(database_url):
    """Each process runs ``python -m cds_service migrate`` as ``serve`` does before its workers
    start; all of them succeed and the schema is created once."""
    import os
    import subprocess
    import sys

    from cds_service.config import PROJECT_ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env["CDS_DATABASE_URL"] = database_url
    env["CDS_PSEUDONYM_KEY"] = TEST_PSEUDONYM_KEY
    processes = [
        subprocess.Popen([sys.executable, "-m", "cds_service", "migrate"], cwd=PROJECT_ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 3, outputs
    database = Database(database_url)
    with database.engine.connect() as conn:
        versions = conn.execute(text("select version_num from alembic_version")).scalars().all()
    assert len(versions) == 1
    assert set(inspect(database.engine).get_table_names()) >= set(tables.metadata.tables)
    database.dispose()


# -- purge: off the hot path, every table covered -------------------------------------------------
def test_every_table_the_service_writes_has_a_purge_rule():
    """A new table must say how its rows leave the database (storage.db.PURGED)."""
    from cds_service.storage.db import PURGED

    assert set(PURGED) == set(tables.metadata.tables)
    for name, rule in PURGED.items():
        assert rule.column in tables.metadata.tables[name].c, name
        assert rule.kind in ("expired", "retention")
        indexed = {col.name for index in tables.metadata.tables[name].indexes
                   for col in index.columns}
        assert rule.column in indexed, f"{name}.{rule.column}: the purge would scan the table"


def test_purge_deletes_expired_jwt_ids_and_rows_past_the_retention(db):
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=10)
    db.remember_jti("https://ehr", "expired", NOW - timedelta(minutes=1), NOW - timedelta(hours=1))
    db.remember_jti("https://ehr", "live", NOW + timedelta(minutes=5), NOW)
    db.record_issued([IssuedCard("old-card", "foot-drop-patient-view", "r", "info", old),
                      IssuedCard("new-card", "foot-drop-patient-view", "r", "info", recent)])
    db.store_feedback([entry(card_uuid="old-card")], old)
    db.store_feedback([entry(card_uuid="new-card")], recent)
    for uuid, at in (("old-card", old), ("new-card", recent)):
        db.add_snooze(SnoozeRecord("p", "r", "patient-view", uuid, "clinical-judgement", "info",
                                   None, at, at + timedelta(days=14)))

    deleted = db.purge(NOW, timedelta(days=365))

    assert deleted == {"seen_jti": 1, "issued_card": 1, "feedback": 1, "snooze": 1}
    assert [r["card_uuid"] for r in db.feedback_rows()] == ["new-card"]
    assert not db.remember_jti("https://ehr", "live", NOW + timedelta(minutes=5), NOW)
    assert db.remember_jti("https://ehr", "expired", NOW + timedelta(minutes=5), NOW)
    assert db.purge(NOW, timedelta(days=365)) == {"seen_jti": 0, "issued_card": 0, "feedback": 0,
                                                  "snooze": 0}


def test_a_hook_calls_jwt_check_deletes_nothing(db):
    """Expired ids stay until the purge: remembering a token id is one insert."""
    db.remember_jti("https://ehr", "expired", NOW - timedelta(minutes=1), NOW - timedelta(hours=1))
    db.remember_jti("https://ehr", "new", NOW + timedelta(minutes=5), NOW)
    with db.engine.connect() as conn:
        assert conn.execute(text("select count(*) from seen_jti")).scalar_one() == 2


def test_an_expired_id_is_taken_by_one_of_two_concurrent_tokens(db):
    db.remember_jti("https://ehr", "j1", NOW - timedelta(minutes=1), NOW - timedelta(hours=1))
    with ThreadPoolExecutor(8) as pool:
        taken = list(pool.map(
            lambda _: db.remember_jti("https://ehr", "j1", NOW + timedelta(minutes=5), NOW),
            range(8)))
    assert taken.count(True) == 1


def test_purge_command(database_url, monkeypatch, capsys):
    from cds_service.__main__ import main

    database = Database(database_url)
    database.migrate()
    database.record_issued([IssuedCard("old-card", "foot-drop-patient-view", "r", "info",
                                       datetime.now(UTC) - timedelta(days=40))])
    monkeypatch.setenv("CDS_DATABASE_URL", database_url)
    monkeypatch.setenv("CDS_RETENTION_DAYS", "30")
    assert main(["purge"]) == 0
    assert "issued_card: 1 deleted" in capsys.readouterr().out
    with database.engine.connect() as conn:
        assert conn.execute(text("select count(*) from issued_card")).scalar_one() == 0
    database.dispose()
