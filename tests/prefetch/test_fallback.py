"""Missing, null and OperationOutcome prefetch keys; our own FHIR queries; 412 (checklist R12-R22).

``responses`` stands in for the EHR's FHIR server: each test asserts the exact URL the service
asked for and the Authorization header it presented.
"""

from __future__ import annotations

import time

import pytest
import requests
import responses

from tests.http import builders as b

PATIENT_VIEW = "foot-drop-patient-view"
ORDER_SELECT = "foot-drop-order-select"
FAIL_KEYS = set(b.PREFETCH_KEYS) - {"imagingStudies"}  # imagingStudies: on_failure omit


def url(key):
    return f"{b.FHIR_BASE}/{b.EXPECTED_QUERIES[key]}"


@pytest.fixture
def fhir():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def failed_keys(response):
    assert response.status_code == 412, response.get_data(as_text=True)
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    keys = set()
    for issue in body["issue"]:
        assert issue["severity"] == "error"
        (expression,) = issue["expression"]
        key = expression.removeprefix("prefetch.")
        assert key in issue["diagnostics"]
        keys.add(key)
    return keys


@pytest.mark.parametrize("key", b.PREFETCH_KEYS)
def test_missing_key_is_fetched_with_the_bearer_token(call_service, fhir, key):
    value = b.patient() if key == "patient" else b.searchset()
    fhir.get(url(key), json=value)
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(prefetch=b.full_prefetch()), key))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    (call,) = fhir.calls
    assert call.request.url == url(key)
    assert call.request.headers["Authorization"] == f"Bearer {b.ACCESS_TOKEN}"


def test_fetched_data_drives_the_cards(call_service, fhir):
    fhir.get(url("conditions"), json=b.searchset(b.foot_drop_condition()))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    response = call_service(PATIENT_VIEW, body)
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_no_prefetch_at_all_fetches_every_key_for_order_select_too(call_service, fhir):
    for key in b.PREFETCH_KEYS:
        fhir.get(url(key), json=b.patient() if key == "patient" else b.searchset())
    body = b.with_fhir_server(b.without_prefetch(b.order_select()))
    response = call_service(ORDER_SELECT, body)
    assert response.status_code == 200
    assert sorted(c.request.url for c in fhir.calls) == sorted(url(k) for k in b.PREFETCH_KEYS)
    assert {c.request.headers["Authorization"] for c in fhir.calls} == {
        f"Bearer {b.ACCESS_TOKEN}"}


def test_open_fhir_server_is_queried_without_authorization(call_service, fhir):
    fhir.get(url("conditions"), json=b.searchset(b.foot_drop_condition()))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"), token=None)
    assert "fhirAuthorization" not in body
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert "Authorization" not in fhir.calls[0].request.headers
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_fhir_server_with_trailing_slash(call_service, fhir):
    fhir.get(url("patient"), json=b.patient())
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "patient"),
                              server=b.FHIR_BASE + "/")
    assert call_service(PATIENT_VIEW, body).status_code == 200
    assert fhir.calls[0].request.url == url("patient")


def test_user_id_with_url_characters_cannot_reshape_the_query(call_service, fhir):
    """Token values are URL-encoded; only safe ids pass validation anyway."""
    fhir.get(f"{b.FHIR_BASE}/Patient/p-1.x", json=b.patient("p-1.x"))
    body = b.with_fhir_server(b.without_prefetch(
        b.patient_view("p-1.x", prefetch=b.full_prefetch("p-1.x")), "patient"))
    assert call_service(PATIENT_VIEW, body).status_code == 200
    assert fhir.calls[0].request.url == f"{b.FHIR_BASE}/Patient/p-1.x"


def test_null_key_is_not_fetched(call_service, fhir):
    body = b.with_fhir_server(b.patient_view(prefetch=b.full_prefetch(patient=None,
                                                                      conditions=None)))
    assert call_service(PATIENT_VIEW, body).status_code == 200
    assert len(fhir.calls) == 0


def test_operation_outcome_value_counts_as_missing(call_service, fhir):
    fhir.get(url("conditions"), json=b.searchset(b.foot_drop_condition()))
    prefetch = b.full_prefetch(conditions=b.operation_outcome())
    body = b.with_fhir_server(b.patient_view(prefetch=prefetch))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert fhir.calls[0].request.url == url("conditions")
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_operation_outcome_value_without_fhir_server_is_412(call_service):
    prefetch = b.full_prefetch(conditions=b.operation_outcome())
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=prefetch))
    assert failed_keys(response) == {"conditions"}


MALFORMED = [
    {"foo": 1},
    {"resourceType": 5},
    {"resourceType": "Patient", "id": "p1"},  # a resource where a search result belongs
    {"resourceType": "Bundle", "type": "searchset", "entry": {"resource": {}}},
    # another query's answer: Observations where the Conditions belong
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
        "resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}}}]},
    # only an error where the results belong
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "fatal", "code": "exception"}]}}]},
]


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_value_is_fetched_again_never_read_as_no_data(call_service, fhir, value):
    """Read as "no conditions", a malformed value would silently drop the red flag they hold."""
    fhir.get(url("conditions"), json=b.searchset(b.foot_drop_condition()))
    body = b.with_fhir_server(b.patient_view(prefetch=b.full_prefetch(conditions=value)))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert fhir.calls[0].request.url == url("conditions")
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_value_without_fhir_server_is_412_saying_so(call_service, value):
    response = call_service(PATIENT_VIEW,
                            b.patient_view(prefetch=b.full_prefetch(conditions=value)))
    assert failed_keys(response) == {"conditions"}
    assert "malformed-prefetch" in response.get_json()["issue"][0]["diagnostics"]


def test_another_patients_record_in_the_patient_key_is_never_read(call_service, fhir):
    """A Patient with another id under "patient" is another patient's record: fetched again."""
    stranger = {**b.patient(), "id": "someone-else"}
    response = call_service(PATIENT_VIEW,
                            b.patient_view(prefetch=b.full_prefetch(patient=stranger)))
    assert failed_keys(response) == {"patient"}
    fhir.get(url("patient"), json=b.patient())
    body = b.with_fhir_server(b.patient_view(prefetch=b.full_prefetch(patient=stranger)))
    assert call_service(PATIENT_VIEW, body).status_code == 200
    assert fhir.calls[0].request.url == url("patient")


def test_a_read_answered_with_a_bundle_of_it_is_accepted(call_service):
    prefetch = b.full_prefetch(patient=b.searchset(b.patient()))
    assert call_service(PATIENT_VIEW, b.patient_view(prefetch=prefetch)).status_code == 200


# -- paging --------------------------------------------------------------------------------------
def test_paginated_search_follows_next_links(call_service, fhir):
    page2 = f"{b.FHIR_BASE}/Condition?_getpages=abc&_offset=200"
    other = b.foot_drop_condition(condition_id="c-other")
    other["code"] = {"text": "Hypertension"}
    fhir.get(url("conditions"), json=b.searchset(other, next_url=page2))
    fhir.get(page2, json=b.searchset(b.foot_drop_condition()))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    response = call_service(PATIENT_VIEW, body)
    assert [c.request.url for c in fhir.calls] == [url("conditions"), page2]
    assert {c.request.headers["Authorization"] for c in fhir.calls} == {
        f"Bearer {b.ACCESS_TOKEN}"}
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_relative_next_link_is_resolved_against_the_server(call_service, fhir):
    fhir.get(url("conditions"), json=b.searchset(next_url="Condition?page=2"))
    fhir.get(f"{b.FHIR_BASE}/Condition?page=2", json=b.searchset(b.foot_drop_condition()))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    response = call_service(PATIENT_VIEW, body)
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


@pytest.mark.parametrize("settings_overrides", [{"fhir_max_pages": 2}])
def test_next_links_beyond_the_page_cap_are_not_followed(call_service, fhir, caplog):
    page = [f"{b.FHIR_BASE}/Condition?page={n}" for n in range(4)]
    page[0] = url("conditions")
    for n in range(3):
        fhir.get(page[n], json=b.searchset(next_url=page[n + 1]))
    fhir.get(page[3], json=b.searchset(b.foot_drop_condition()))
    fhir.assert_all_requests_are_fired = False
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert [c.request.url for c in fhir.calls] == page[:2]
    assert response.get_json() == {"cards": []}
    assert any("incomplete" in r.getMessage() for r in caplog.records)


def test_next_link_to_another_host_is_never_requested(call_service, fhir):
    """The access token goes to fhirServer only."""
    fhir.get(url("conditions"),
             json=b.searchset(next_url="https://evil.example.net/r4/Condition?page=2"))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    response = call_service(PATIENT_VIEW, body)
    assert [c.request.url for c in fhir.calls] == [url("conditions")]
    assert failed_keys(response) == {"conditions"}


def test_next_link_loop_is_not_followed_forever(call_service, fhir):
    page2 = f"{b.FHIR_BASE}/Condition?page=2"
    fhir.get(url("conditions"), json=b.searchset(next_url=page2))
    fhir.get(page2, json=b.searchset(b.foot_drop_condition(), next_url=url("conditions")))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    response = call_service(PATIENT_VIEW, body)
    assert len(fhir.calls) == 2
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


# -- 412 -----------------------------------------------------------------------------------------
def test_no_prefetch_and_no_fhir_server_is_412_naming_every_required_key(call_service):
    response = call_service(PATIENT_VIEW, b.without_prefetch(b.patient_view()))
    assert failed_keys(response) == FAIL_KEYS


def test_one_missing_key_and_no_fhir_server_is_412_naming_that_key(call_service):
    body = b.without_prefetch(b.order_select(), "medicationRequests")
    assert failed_keys(call_service(ORDER_SELECT, body)) == {"medicationRequests"}


@pytest.mark.parametrize("failure", [
    {"status": 500, "json": b.operation_outcome()},
    {"status": 503},
    {"status": 401},
    {"status": 403},
    {"body": requests.Timeout("read timed out")},
    {"body": requests.ConnectionError("refused")},
    {"status": 200, "json": b.operation_outcome()},
    {"status": 200, "body": "<html>not json</html>"},
    {"status": 200, "json": b.patient()},  # a search must answer with a Bundle
    {"status": 302, "headers": {"Location": "https://login.example.org/"}},
], ids=["500", "503", "401", "403", "timeout", "unreachable", "outcome", "not-json",
        "not-bundle", "redirect"])
def test_fhir_server_failure_is_412(call_service, fhir, failure):
    fhir.get(url("conditions"), **failure)
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    assert failed_keys(call_service(PATIENT_VIEW, body)) == {"conditions"}


def test_failure_on_a_later_page_is_412(call_service, fhir):
    page2 = f"{b.FHIR_BASE}/Condition?page=2"
    fhir.get(url("conditions"), json=b.searchset(next_url=page2))
    fhir.get(page2, status=500)
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    assert failed_keys(call_service(PATIENT_VIEW, body)) == {"conditions"}


def test_only_the_failed_keys_are_named(call_service, fhir):
    fhir.get(url("patient"), json=b.patient())
    fhir.get(url("conditions"), status=401)
    fhir.get(url("procedures"), body=requests.Timeout())
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "patient", "conditions",
                                                 "procedures"))
    assert failed_keys(call_service(PATIENT_VIEW, body)) == {"conditions", "procedures"}


def test_a_read_that_finds_nothing_is_no_data(call_service, fhir):
    fhir.get(url("patient"), status=404, json=b.operation_outcome("not found"))
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "patient"))
    assert call_service(PATIENT_VIEW, body).status_code == 200


def test_optional_key_failure_is_not_412(call_service, fhir):
    fhir.get(url("imagingStudies"), status=500)
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(prefetch=b.foot_drop_prefetch()),
                                                 "imagingStudies"))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


@pytest.mark.parametrize("settings_overrides", [{"fhir_require_https": True}])
def test_plain_http_fhir_server_is_refused_when_https_is_required(call_service, fhir):
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"),
                              server="http://fhir.example.org/r4")
    assert failed_keys(call_service(PATIENT_VIEW, body)) == {"conditions"}
    assert len(fhir.calls) == 0


@pytest.mark.parametrize("settings_overrides", [{"fhir_budget_seconds": 1.5}])
def test_missing_keys_are_fetched_concurrently_within_one_budget(call_service, fhir):
    """Nine queries of 0.25 s each: one after another they would overrun the 1.5 s budget."""

    def slow(request):
        time.sleep(0.25)
        is_read = "?" not in request.url
        return 200, {}, (b.json_text(b.patient()) if is_read else b.json_text(b.searchset()))

    for key in b.PREFETCH_KEYS:
        fhir.add_callback(responses.GET, url(key), callback=slow)
    body = b.with_fhir_server(b.without_prefetch(b.patient_view()))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert len(fhir.calls) == len(b.PREFETCH_KEYS)


def test_access_token_never_reaches_the_logs(call_service, fhir, caplog, capsys):
    fhir.get(url("conditions"), status=401)
    body = b.with_fhir_server(b.without_prefetch(b.patient_view(), "conditions"))
    call_service(PATIENT_VIEW, body)
    captured = capsys.readouterr()
    assert b.ACCESS_TOKEN not in caplog.text + captured.err + captured.out
    assert all(b.ACCESS_TOKEN not in repr(getattr(r, "fields", "")) for r in caplog.records)


# -- a paginated searchset sent by the EHR (2.0 allows paging in prefetch) -----------------------
def test_paginated_prefetch_from_the_ehr_is_completed_from_the_fhir_server(call_service, fhir):
    page2 = f"{b.FHIR_BASE}/Condition?_getpages=abc&_offset=200"
    fhir.get(page2, json=b.searchset(b.foot_drop_condition()))
    prefetch = b.full_prefetch(conditions=b.searchset(next_url=page2))
    response = call_service(PATIENT_VIEW, b.with_fhir_server(b.patient_view(prefetch=prefetch)))
    assert [c.request.url for c in fhir.calls] == [page2]
    assert fhir.calls[0].request.headers["Authorization"] == f"Bearer {b.ACCESS_TOKEN}"
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


@pytest.mark.parametrize("settings_overrides", [{"fhir_max_pages": 2}])
def test_paginated_prefetch_respects_the_page_cap(call_service, fhir):
    page2, page3 = (f"{b.FHIR_BASE}/Condition?page={n}" for n in (2, 3))
    fhir.get(page2, json=b.searchset(next_url=page3))
    fhir.get(page3, json=b.searchset(b.foot_drop_condition()))
    fhir.assert_all_requests_are_fired = False
    prefetch = b.full_prefetch(conditions=b.searchset(next_url=page2))
    response = call_service(PATIENT_VIEW, b.with_fhir_server(b.patient_view(prefetch=prefetch)))
    assert response.status_code == 200
    assert [c.request.url for c in fhir.calls] == [page2]


def test_paginated_prefetch_next_link_to_another_host_is_never_requested(call_service, fhir):
    first_page = b.searchset(b.foot_drop_condition(),
                             next_url="https://evil.example.net/r4/Condition?page=2")
    prefetch = b.full_prefetch(conditions=first_page)
    response = call_service(PATIENT_VIEW, b.with_fhir_server(b.patient_view(prefetch=prefetch)))
    assert len(fhir.calls) == 0
    # The page the EHR sent is still read: a finding in hand is never hidden behind a 412.
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_paginated_prefetch_without_fhir_server_uses_the_pages_sent(call_service):
    first_page = b.searchset(b.foot_drop_condition(),
                             next_url=f"{b.FHIR_BASE}/Condition?page=2")
    response = call_service(PATIENT_VIEW, b.patient_view(prefetch=b.full_prefetch(
        conditions=first_page)))
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


def test_paginated_prefetch_whose_next_page_fails_uses_the_pages_sent(call_service, fhir):
    page2 = f"{b.FHIR_BASE}/Condition?page=2"
    fhir.get(page2, status=401)
    first_page = b.searchset(b.foot_drop_condition(), next_url=page2)
    response = call_service(PATIENT_VIEW, b.with_fhir_server(b.patient_view(
        prefetch=b.full_prefetch(conditions=first_page))))
    assert len(fhir.calls) == 1
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())


@pytest.mark.parametrize("links", [5, "next", {"relation": "next"}, [{"relation": "next",
                                                                        "url": 7}], [None]])
def test_malformed_links_in_prefetch_are_not_followed(call_service, links):
    conditions = b.searchset(b.foot_drop_condition())
    conditions["link"] = links
    body = b.with_fhir_server(b.patient_view(prefetch=b.full_prefetch(conditions=conditions)))
    response = call_service(PATIENT_VIEW, body)
    assert response.status_code == 200
    assert "orthosis-and-rehabilitation" in b.card_ids(response.get_json())
