"""Schemathesis against openapi.yaml on a live gunicorn server: no request it generates, valid or
not, may get a 5xx, and every response must match what openapi.yaml documents."""

from __future__ import annotations

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.config import DEFAULT_CARDS_DIR, PROJECT_ROOT
from cds_service.knowledge.loader import load_knowledge

OPENAPI = PROJECT_ROOT / "openapi.yaml"


def load_schema() -> schemathesis.BaseSchema:
    raw = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    # Aim most generated calls at real services (any other id is a plain 404).
    ids = sorted(load_knowledge(DEFAULT_CARDS_DIR).services)
    raw["components"]["parameters"]["ServiceId"]["schema"] = {
        "type": "string", "enum": [*ids, "no-such-service"]}
    return schemathesis.openapi.from_dict(raw)


schema = load_schema()


@pytest.mark.integration
@schema.parametrize()
@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_server_error_and_responses_match_openapi(case, live_server):
    response = case.call(base_url=live_server.url, timeout=10)
    case.validate_response(
        response,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
    )
