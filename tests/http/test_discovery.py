"""Discovery (checklist D1-D13, P1-P7) and the health probe."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest

from cds_service.validation.response import find_empty_members

EXPECTED = {"foot-drop-patient-view": "patient-view", "foot-drop-order-select": "order-select",
            "foot-drop-order-sign": "order-sign"}
# Top-level primitive context fields each hook marks as usable in prefetch tokens (Hook Library).
TOKEN_FIELDS = {
    "patient-view": {"userId", "patientId", "encounterId"},
    "order-select": {"userId", "patientId", "encounterId"},
    "order-sign": {"userId", "patientId", "encounterId"},
}
USER_TOKENS = {"userPractitionerId", "userPractitionerRoleId", "userPatientId",
               "userRelatedPersonId"}
TOKEN = re.compile(r"\{\{(.*?)\}\}")
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Search parameters the templates may use: plain (token/reference/date) names, `:in`, _count, _sort.
PARAM_NAME = re.compile(r"^(_count|_sort|[a-z][a-z0-9-]*(:in)?)$")
SORT_VALUE = re.compile(r"^-?[a-z][a-z0-9-]*(,-?[a-z][a-z0-9-]*)*$")
DATE_PREFIX = re.compile(r"^(ne|sa|eb|ap)\d")


@pytest.fixture
def services(client):
    response = client.get("/cds-services")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert find_empty_members(body) == []
    return {s["id"]: s for s in body["services"]}


def test_discovery_lists_both_services_with_their_hooks(services):
    assert {sid: s["hook"] for sid, s in services.items()} == EXPECTED
    for service in services.values():
        for member in ("title", "description", "usageRequirements"):
            assert isinstance(service[member], str) and service[member].strip(), member
        assert service["prefetch"], "both services declare prefetch templates"
        assert all(isinstance(v, str) for v in service["prefetch"].values())


def lint_template(template: str, hook: str) -> list[str]:
    """CDS Hooks 2.0 template rules; returns the problems found (empty when valid)."""
    problems = []
    if "://" in template or template.startswith("/"):
        problems.append("not a relative URL")
    for token in TOKEN.findall(template):
        field = token.removeprefix("context.")
        if token.startswith("context."):
            if field not in TOKEN_FIELDS[hook]:
                problems.append(f"token {token!r} is not a top-level primitive {hook} field")
        elif token not in USER_TOKENS:
            problems.append(f"unknown token {token!r}")
    if "/{{context.userId}}" in template:
        problems.append("userId already carries its type")
    path, _, query = template.partition("?")
    segments = path.split("/")
    if not RESOURCE_TYPE.match(segments[0]) or len(segments) > 2:
        problems.append(f"not a read or type-level search: {path!r}")
    if len(segments) == 2 and not (FHIR_ID.match(segments[1]) or TOKEN.fullmatch(segments[1])):
        problems.append(f"bad id in read: {segments[1]!r}")
    if len(segments) == 2 and query:
        problems.append("a read has no query")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if "." in name or not PARAM_NAME.match(name):
            problems.append(f"parameter {name!r} is outside the 2.0 query subset")
        if name == "_sort" and not SORT_VALUE.match(value):
            problems.append(f"_sort value {value!r}")
        if name == "_count" and not value.isdigit():
            problems.append(f"_count value {value!r}")
        if DATE_PREFIX.match(value):
            problems.append(f"date prefix in {value!r}")
    return problems


@pytest.mark.parametrize("template, hook", [
    ("https://ehr.example.org/Patient/{{context.patientId}}", "patient-view"),
    ("/Patient/{{context.patientId}}", "patient-view"),
    ("Condition?patient={{context.draftOrders.id}}", "order-select"),
    ("Condition?patient={{context.selections}}", "order-select"),
    ("Practitioner/{{context.userId}}", "patient-view"),
    ("Observation?patient={{Patient.id}}", "patient-view"),
    ("Condition?patient={{context.patientId}}&_include=Condition:subject", "patient-view"),
    ("Observation?subject.name=x&patient={{context.patientId}}", "patient-view"),
    ("Observation?code:text=dorsiflexion&patient={{context.patientId}}", "patient-view"),
    ("Observation?patient={{context.patientId}}&date=ne2024-01-01", "patient-view"),
    ("Observation?patient={{context.patientId}}&sort:desc=date", "patient-view"),
])
def test_the_lint_catches_invalid_templates(template, hook):
    assert lint_template(template, hook)


def test_prefetch_templates_are_valid_cds_hooks_2_0(services):
    for service in services.values():
        for key, template in service["prefetch"].items():
            assert lint_template(template, service["hook"]) == [], (service["id"], key)
            assert urlsplit(template).scheme == ""


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"
