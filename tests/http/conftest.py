"""Fixtures for the HTTP-level suites (tests/http, tests/prefetch).

- The knowledge in cards/ is immutable, so it is loaded once per session instead of once per test
  (loading validates every recommendation against its schema), and the database is migrated once
  and copied for each test.
- ``client`` checks every response it returns: a 200 from a service is validated against the
  tests' own CDS Hooks 2.0 response schema, discovery against the 2.0 discovery rules, and every
  error body must be a FHIR OperationOutcome.
"""

from __future__ import annotations

import re
import shutil
from functools import cache

import pytest
from flask.testing import FlaskClient

import cds_service
from cds_service.clock import fixed_clock
from cds_service.knowledge.loader import load_knowledge
from cds_service.storage.db import Database
from cds_service.validation.response import find_empty_members
from tests.conftest import NOW, assert_valid_cds_response

_load_once = cache(load_knowledge)
SERVICE_PATH = re.compile(r"^/cds-services/[^/]+$")


@pytest.fixture(autouse=True)
def shared_knowledge(monkeypatch):
    monkeypatch.setattr(cds_service, "load_knowledge", _load_once)


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory):
    """A database file migrated once (tests/storage checks the migrations themselves)."""
    path = tmp_path_factory.mktemp("template") / "cds.sqlite3"
    database = Database(f"sqlite:///{path}")
    database.migrate()
    database.dispose()
    return path


@pytest.fixture
def app(tmp_path, settings_overrides, migrated_database):
    """As tests/conftest.py's ``app``, on a private copy of the migrated database."""
    shutil.copyfile(migrated_database, tmp_path / "cds.sqlite3")
    # no purge thread: a test's rows stay until the test removes them (tests/production tests it)
    config = {"database_url": f"sqlite:///{tmp_path / 'cds.sqlite3'}",
              "purge_interval_seconds": 0, **settings_overrides}
    return cds_service.create_app(config, clock=fixed_clock(NOW), migrate=False)


def check_body(method: str, path: str, status: int, body: object) -> None:
    if method == "OPTIONS":
        return
    if status >= 400:
        assert isinstance(body, dict) and body.get("resourceType") == "OperationOutcome", body
        assert body["issue"] and all(i["severity"] and i["code"] for i in body["issue"])
    elif method == "POST" and SERVICE_PATH.match(path) and status == 200:
        assert_valid_cds_response(body)
    elif method == "GET" and path == "/cds-services" and status == 200:
        assert isinstance(body, dict) and isinstance(body["services"], list)
        assert find_empty_members(body) == []
        for service in body["services"]:
            assert all(isinstance(service.get(m), str) and service[m]
                       for m in ("id", "hook", "description"))


class CheckingClient(FlaskClient):
    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        body = response.get_json(silent=True) if response.mimetype == "application/json" else None
        if response.status_code >= 400:
            assert response.mimetype == "application/json", response.status_code
        check_body(response.request.method, response.request.path, response.status_code, body)
        return response


@pytest.fixture
def client(app):
    app.test_client_class = CheckingClient
    return app.test_client()
