"""Alembic migrations and the feedback / issued-card / JWT-id store, on SQLite and on a real
PostgreSQL server (``database_url`` is parametrized over both)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import inspect, text

from cds_service.storage import tables
from cds_service.storage.db import Database, FeedbackEntry, IssuedCard

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
        "alembic_version", "feedback", "issued_card", "seen_jti"}
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
