"""The periodic purge runs in each worker, outside requests."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.conftest import NOW


def jti_rows(database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(text("select count(*) from seen_jti")).scalar_one())


@pytest.mark.parametrize("settings_overrides", [{"purge_interval_seconds": 0.05,
                                                 "retention_days": 30}])
def test_the_purge_thread_deletes_expired_rows_without_a_request(app):
    runtime = app.extensions["cds"]
    database = runtime.database
    database.remember_jti("https://ehr", "old", NOW - timedelta(minutes=1),
                          NOW - timedelta(hours=1))
    database.remember_jti("https://ehr", "live", NOW + timedelta(minutes=5), NOW)
    assert jti_rows(database) == 2
    runtime.pipeline  # noqa: B018  (a worker builds its pipeline, and starts the thread, once)
    end = time.monotonic() + 30
    while jti_rows(database) != 1:
        assert time.monotonic() < end, "the purge thread never ran"
        time.sleep(0.05)
    assert not database.remember_jti("https://ehr", "live", NOW + timedelta(minutes=5), NOW)
