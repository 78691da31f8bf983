"""400, 404, 405 and 415: every error is a JSON OperationOutcome, never a stack trace."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.http import builders as b

PATIENT_VIEW = "/cds-services/foot-drop-patient-view"
ORDER_SELECT = "/cds-services/foot-drop-order-select"


def outcome(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["code"]
    return issue


def drop(path):
    def change(body):
        *parents, last = path.split(".")
        node = body
        for name in parents:
            node = node[name]
        del node[last]
    return change


def setter(path, value):
    def change(body):
        *parents, last = path.split(".")
        node = body
        for name in parents:
            node = node[name]
        node[last] = value
    return change


def fhir_authorization_without_server(body):
    body.update(b.with_fhir_server(body))
    del body["fhirServer"]


BAD_PATIENT_VIEW = {
    "missing hook": drop("hook"),
    "missing hookInstance": drop("hookInstance"),
    "missing context": drop("context"),
    "missing patientId": drop("context.patientId"),
    "missing userId": drop("context.userId"),
    "hook for another service": setter("hook", "order-select"),
    "unknown hook": setter("hook", "order-sign"),
    "hook not a string": setter("hook", 7),
    "context not an object": setter("context", ["p1"]),
    "patientId with &": setter("context.patientId", "p1&_include=*"),
    "patientId with /": setter("context.patientId", "p1/../Practitioner/x"),
    "patientId with ?": setter("context.patientId", "p1?x=1"),
    "patientId empty": setter("context.patientId", ""),
    "userId of wrong type": setter("context.userId", "Device/1"),
    "prefetch not an object": setter("prefetch", ["x"]),
    "prefetch value a string": setter("prefetch.patient", "Patient/p1"),
    "fhirAuthorization without fhirServer": fhir_authorization_without_server,
    "fhirServer not a URL": setter("fhirServer", "fhir.example.org"),
    "fhirAuthorization without access_token": lambda body: (
        body.update(b.with_fhir_server(body)), body["fhirAuthorization"].pop("access_token")),
}


@pytest.mark.parametrize("change", BAD_PATIENT_VIEW.values(), ids=BAD_PATIENT_VIEW.keys())
def test_invalid_patient_view_request_is_400(client, change):
    body = b.patient_view()
    change(body)
    outcome(client.post(PATIENT_VIEW, json=body), 400)


BAD_ORDER_SELECT = {
    "selections empty": setter("context.selections", []),
    "selections missing": drop("context.selections"),
    "selection not Type/id": setter("context.selections", ["afo-1"]),
    "draftOrders missing": drop("context.draftOrders"),
    "draftOrders not a Bundle": setter("context.draftOrders", {"resourceType": "Patient"}),
    "patient-view hook": setter("hook", "patient-view"),
}


@pytest.mark.parametrize("change", BAD_ORDER_SELECT.values(), ids=BAD_ORDER_SELECT.keys())
def test_invalid_order_select_request_is_400(client, change):
    body = b.order_select()
    change(body)
    outcome(client.post(ORDER_SELECT, json=body), 400)


def test_the_valid_requests_these_are_derived_from_succeed(client):
    assert client.post(PATIENT_VIEW, json=b.patient_view()).status_code == 200
    assert client.post(ORDER_SELECT, json=b.order_select()).status_code == 200


def test_hook_mismatch_names_the_problem(client):
    body = b.patient_view()
    body["hook"] = "order-select"
    issue = outcome(client.post(PATIENT_VIEW, json=body), 400)
    assert issue["details"]["coding"][0]["code"] == "hook-mismatch"


def test_missing_member_is_named_in_the_error(client):
    body = b.patient_view()
    del body["context"]["patientId"]
    issue = outcome(client.post(PATIENT_VIEW, json=body), 400)
    assert "patientId" in issue["diagnostics"]


def test_error_messages_do_not_echo_patient_data(client):
    body = b.patient_view()
    body["context"]["patientId"] = "Jane-Doe-secret/1"
    response = client.post(PATIENT_VIEW, json=body)
    outcome(response, 400)
    assert "Jane-Doe-secret" not in response.get_data(as_text=True)


@pytest.mark.parametrize("raw", [b"{", b"{'hook': 1}", b"", b"   ", b"\xff\xfe", b"[1,]"])
def test_malformed_json_is_400(client, raw):
    response = client.post(PATIENT_VIEW, data=raw, content_type="application/json")
    outcome(response, 400)


@pytest.mark.parametrize("raw", [b"[]", b'"patient-view"', b"1", b"null", b"true"])
def test_body_that_is_not_an_object_is_400(client, raw):
    response = client.post(PATIENT_VIEW, data=raw, content_type="application/json")
    outcome(response, 400)


def test_non_json_content_type_is_415(client):
    response = client.post(PATIENT_VIEW, data="hook=patient-view",
                           content_type="application/x-www-form-urlencoded")
    outcome(response, 415)


def test_fhir_json_content_type_is_accepted(client):
    response = client.post(PATIENT_VIEW, data=json.dumps(b.patient_view()),
                           content_type="application/fhir+json")
    assert response.status_code == 200


@pytest.mark.parametrize("path", [
    "/cds-services/no-such-service",
    "/cds-services/no-such-service/feedback",
    "/cds-services/foot-drop-patient-view/other",
    "/no-such-endpoint",
])
def test_unknown_endpoint_is_404(client, path):
    outcome(client.post(path, json=b.patient_view()), 404)


def test_unknown_service_is_404_even_with_a_bad_body(client):
    response = client.post("/cds-services/no-such-service", data=b"{",
                           content_type="application/json")
    outcome(response, 404)


@pytest.mark.parametrize("method, path, allowed", [
    ("get", PATIENT_VIEW, {"POST"}),
    ("put", ORDER_SELECT, {"POST"}),
    ("delete", PATIENT_VIEW, {"POST"}),
    ("get", PATIENT_VIEW + "/feedback", {"POST"}),
    ("post", "/cds-services", {"GET"}),
])
def test_wrong_method_is_405_with_allow(client, method, path, allowed):
    response = getattr(client, method)(path)
    outcome(response, 405)
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_body_larger_than_the_limit_is_413(app, tmp_path):
    from cds_service import create_app

    small = create_app({"database_url": f"sqlite:///{tmp_path / 'small.sqlite3'}",
                        "max_body_mb": 0.001}).test_client()
    body = b.patient_view()
    body["prefetch"]["patient"]["text"] = {"status": "generated", "div": "x" * 4000}
    outcome(small.post(PATIENT_VIEW, json=copy.deepcopy(body)), 413)


@pytest.mark.parametrize("settings_overrides", [{"compute_budget_seconds": 1e-9}])
def test_a_request_over_the_compute_budget_is_a_json_413(call_service, settings_overrides):
    """A chart too big (or too wordy) to evaluate in CDS_COMPUTE_BUDGET_SECONDS gets a JSON 413,
    before gunicorn's worker timeout would kill the worker and leave the EHR with no answer."""
    response = call_service("foot-drop-patient-view",
                            b.patient_view(prefetch=b.foot_drop_prefetch()))
    assert response.status_code == 413
    body = response.get_json()
    assert body["issue"][0]["details"]["coding"][0]["code"] == "request-too-complex"


def with_newline(path):
    """The valid value at ``path`` (``selections.0`` is a list item) with "\\n" appended."""
    def change(body):
        *parents, last = path.split(".")
        node = body
        for name in parents:
            node = node[int(name)] if isinstance(node, list) else node[name]
        key = int(last) if isinstance(node, list) else last
        node[key] = node[key] + "\n"
    return change


def with_server_and_newline(path):
    def change(body):
        body.update(b.with_fhir_server(body))
        with_newline(path)(body)
    return change


# A value with a trailing newline was accepted: Python's re lets "$" match before a final "\n",
# and an id such as "p1\n" then matched no resource, so a critical card was silently lost.
TRAILING_NEWLINE = [
    (PATIENT_VIEW, b.patient_view, "context.patientId", with_newline("context.patientId")),
    (PATIENT_VIEW, b.patient_view, "context.userId", with_newline("context.userId")),
    (PATIENT_VIEW, lambda: {**b.patient_view(), "context": {
        **b.patient_view()["context"], "encounterId": "e1"}},
     "context.encounterId", with_newline("context.encounterId")),
    (PATIENT_VIEW, b.patient_view, "fhirServer", with_server_and_newline("fhirServer")),
    (PATIENT_VIEW, b.patient_view, "fhirAuthorization.token_type",
     with_server_and_newline("fhirAuthorization.token_type")),
    (ORDER_SELECT, b.order_select, "context.patientId", with_newline("context.patientId")),
    (ORDER_SELECT, b.order_select, "context.userId", with_newline("context.userId")),
    (ORDER_SELECT, lambda: {**b.order_select(), "context": {
        **b.order_select()["context"], "encounterId": "e1"}},
     "context.encounterId", with_newline("context.encounterId")),
    (ORDER_SELECT, b.order_select, "context.selections.0",
     with_newline("context.selections.0")),
]


@pytest.mark.parametrize(("url", "build", "member", "change"), TRAILING_NEWLINE,
                         ids=[f"{u.rsplit('-', 2)[-2]}-{m}" for u, _, m, _ in TRAILING_NEWLINE])
def test_trailing_newline_in_a_checked_member_is_400_naming_it(client, url, build, member,
                                                               change):
    body = build()
    assert client.post(url, json=body).status_code == 200  # the value without "\n" is fine
    change(body)
    issue = outcome(client.post(url, json=body), 400)
    assert issue["details"]["coding"][0]["code"] == "invalid-request"
    assert issue["diagnostics"].startswith(f"{member}:"), issue["diagnostics"]


@pytest.mark.parametrize("ending", ["\r", "\r\n", " ", "\u2028", "\n\n"])
def test_other_line_endings_after_an_id_are_400_too(client, ending):
    body = b.patient_view()
    body["context"]["patientId"] += ending
    issue = outcome(client.post(PATIENT_VIEW, json=body), 400)
    assert issue["diagnostics"].startswith("context.patientId:")


def shipped_patterns() -> list[tuple[str, str]]:
    """(schema file, pattern) for every "pattern" in the service's own JSON Schemas."""
    found = []

    def walk(node, name):
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append((name, node["pattern"]))
            for value in node.values():
                walk(value, name)
        elif isinstance(node, list):
            for value in node:
                walk(value, name)

    for path in resources.files("cds_service.validation").joinpath("schemas").iterdir():
        if path.name.endswith(".json"):
            walk(json.loads(path.read_text()), path.name)
    return sorted(found)


@pytest.mark.parametrize(("schema", "pattern"), shipped_patterns())
@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_no_schema_pattern_accepts_a_value_with_a_trailing_newline(schema, pattern, data):
    """Covers patterns added later too: the validator uses Python's re.search, as here."""
    value = data.draw(st.from_regex(pattern))
    if re.search(pattern, value + " "):  # a prefix rule ("^https?://"): whitespace may follow
        return
    assert re.search(pattern, value)
    assert not re.search(pattern, value + "\n"), f"{schema}: {pattern}"


def test_more_selections_than_any_ordering_session_has_are_refused(call_service):
    """Each selected order can carry its own card: a request selecting thousands would answer
    with thousands of cards (and rows). 200 is far above a real ordering session."""
    body = b.order_select(prefetch=b.foot_drop_prefetch(),
                          selections=[f"ServiceRequest/sr-{i}" for i in range(201)])
    response = call_service("foot-drop-order-select", body)
    assert response.status_code == 400
    assert "selections" in response.get_json()["issue"][0]["diagnostics"]
