"""With the database down, hooks still answer cards, feedback answers 503 (never 200 for
something not stored), the JWT replay check fails closed, and /readyz says not ready.

The database "goes down" by refusing new connections and terminating the open ones on a real
PostgreSQL server, then comes back.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager

import pytest

import cds_service
from cds_service.clock import fixed_clock
from tests.conftest import NOW, TEST_PSEUDONYM_KEY
from tests.http import builders as b
from tests.production.ehr import TestEhr

PATIENT_VIEW = "foot-drop-patient-view"
FEEDBACK = f"/cds-services/{PATIENT_VIEW}/feedback"


@contextmanager
def database_down(cluster, url: str):
    name = url.split("?")[0].rsplit("/", 1)[-1]
    cluster.admin_execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
    cluster.admin_execute(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    try:
        yield
    finally:
        cluster.admin_execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")


def feedback_body(card: str = "card-1") -> dict:
    return {"feedback": [{"card": card, "outcome": "overridden",
                          "outcomeTimestamp": "2026-11-20T12:00:00Z"}]}


@pytest.fixture
def pg_app(migrated_postgres_url):
    app = cds_service.create_app({"database_url": migrated_postgres_url,
                                   "pseudonym_key": TEST_PSEUDONYM_KEY}, clock=fixed_clock(NOW),
                                 migrate=False)
    yield app
    app.extensions["cds"].database.dispose()


def metric(client, name: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    values = re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, flags=re.MULTILINE)
    return sum(float(v) for v in values)


def test_hooks_answer_cards_without_their_bookkeeping(pg_app, postgres_cluster,
                                                      migrated_postgres_url,
                                                      caplog):
    client = pg_app.test_client()
    body = b.patient_view(prefetch=b.foot_drop_prefetch())
    with database_down(postgres_cluster, migrated_postgres_url), caplog.at_level(logging.INFO):
        response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body)
        assert response.status_code == 200
        assert response.get_json()["cards"]
    assert any("bookkeeping skipped" in r.getMessage() for r in caplog.records)
    assert metric(client, "cds_bookkeeping_skipped_total") == 1
    # back up: the next call records its cards again
    assert client.post(f"/cds-services/{PATIENT_VIEW}", json=body).status_code == 200
    assert metric(client, "cds_bookkeeping_skipped_total") == 1


def test_feedback_answers_503_with_retry_after_and_is_stored_once_retried(
        pg_app, postgres_cluster, migrated_postgres_url):
    client = pg_app.test_client()
    body = feedback_body()
    with database_down(postgres_cluster, migrated_postgres_url):
        response = client.post(FEEDBACK, json=body)
        assert response.status_code == 503
        assert response.headers["Retry-After"].isdigit()
        outcome = response.get_json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "transient"
    assert pg_app.extensions["cds"].database.count_feedback() == 0
    retried = client.post(FEEDBACK, json=body)
    assert (retried.status_code, retried.get_json()["stored"]) == (200, 1)


def test_readiness_follows_the_database_while_liveness_does_not(pg_app, postgres_cluster,
                                                                migrated_postgres_url):
    client = pg_app.test_client()
    assert client.get("/readyz").get_json() == {"status": "ready", "database": "ok",
                                                "knowledge": "ok"}
    with database_down(postgres_cluster, migrated_postgres_url):
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json()["database"] == "unavailable"
        assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_with_auth_required_the_replay_check_fails_closed(tmp_path, postgres_cluster,
                                                          migrated_postgres_url):
    ehr = TestEhr(tmp_path)
    base = "http://cds.test.example"
    app = cds_service.create_app({"database_url": migrated_postgres_url, "auth": "required",
                                   "pseudonym_key": TEST_PSEUDONYM_KEY,
                                  "trusted_issuers_file": ehr.issuers_file,
                                  "public_base_url": base},  # tokens carry real times
                                 migrate=False)
    client = app.test_client()
    audience = f"{base}/cds-services/{PATIENT_VIEW}"
    body = b.patient_view(prefetch=b.foot_drop_prefetch())
    with database_down(postgres_cluster, migrated_postgres_url):
        response = client.post(f"/cds-services/{PATIENT_VIEW}", json=body,
                               headers={"Authorization": f"Bearer {ehr.token(audience, 'j-1')}"})
        assert response.status_code == 503
        assert response.get_json()["resourceType"] == "OperationOutcome"
    # the token was not remembered, so once the database is back it is accepted once
    headers = {"Authorization": f"Bearer {ehr.token(audience, 'j-1')}"}
    assert client.post(f"/cds-services/{PATIENT_VIEW}", json=body, headers=headers
                       ).status_code == 200
    assert client.post(f"/cds-services/{PATIENT_VIEW}", json=body, headers=headers
                       ).status_code == 401
    app.extensions["cds"].database.dispose()
