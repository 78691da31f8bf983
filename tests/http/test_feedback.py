"""POST /cds-services/{id}/feedback (checklist F1-F8): validated, stored durably and once,
on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

import cds_service
from cds_service.clock import fixed_clock
from tests.conftest import NOW, TEST_PSEUDONYM_KEY
from tests.http import builders as b
from tests.http.conftest import app as sqlite_app

URL = "/cds-services/foot-drop-patient-view/feedback"
CARD = "2d6b1a8e-6a44-4a39-9a8b-3f1c2a7d9e01"
SUGGESTION = "8a1f6c2e-3d4b-4e5f-9a6b-7c8d9e0f1a2b"


def accepted(card=CARD):
    return {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": SUGGESTION}],
            "outcomeTimestamp": "2026-11-20T12:01:02.5Z"}


def overridden(**reason):
    entry = {"card": CARD, "outcome": "overridden", "outcomeTimestamp": "2026-11-20T12:03:00Z"}
    if reason:
        entry["overrideReason"] = reason
    return entry


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request, tmp_path, settings_overrides, migrated_database):
    if request.param == "sqlite":
        yield sqlite_app.__wrapped__(tmp_path, settings_overrides, migrated_database)
        return
    url = request.getfixturevalue("migrated_postgres_url")
    application = cds_service.create_app({"database_url": url, "pseudonym_key": TEST_PSEUDONYM_KEY,
                                          **settings_overrides},
                                         clock=fixed_clock(NOW), migrate=False)
    yield application
    application.extensions["cds"].database.dispose()


def database(app):
    return app.extensions["cds"].database


def test_accepted_feedback_is_stored(app, client):
    response = client.post(URL, json={"feedback": [accepted()]})
    assert response.status_code == 200
    (row,) = database(app).feedback_rows()
    assert (row["card_uuid"], row["outcome"], row["service_id"]) == (
        CARD, "accepted", "foot-drop-patient-view")
    assert SUGGESTION in row["accepted_suggestions"]


def test_same_feedback_sent_twice_is_stored_once(app, client):
    body = {"feedback": [accepted(), overridden(userComment="patient declined")]}
    first = client.post(URL, json=body)
    second = client.post(URL, json=copy.deepcopy(body))
    assert first.status_code == second.status_code == 200
    assert database(app).count_feedback() == 2
    assert second.get_json()["stored"] == 0


def test_duplicate_inside_one_post_is_stored_once(app, client):
    response = client.post(URL, json={"feedback": [accepted(), accepted()]})
    assert response.status_code == 200
    assert database(app).count_feedback() == 1


def test_feedback_survives_a_restart(tmp_path, client, app):
    from cds_service import create_app

    client.post(URL, json={"feedback": [accepted()]})
    url = app.extensions["cds"].settings.database_url
    restarted = create_app({"database_url": url, "pseudonym_key": TEST_PSEUDONYM_KEY})
    assert restarted.extensions["cds"].database.count_feedback() == 1


def test_same_instant_written_with_another_offset_is_the_same_entry(app, client):
    client.post(URL, json={"feedback": [accepted()]})
    again = {**accepted(), "outcomeTimestamp": "2026-11-20T13:01:02.500+01:00"}
    assert client.post(URL, json={"feedback": [again]}).status_code == 200
    assert database(app).count_feedback() == 1


def test_same_card_with_a_different_outcome_is_a_new_entry(app, client):
    client.post(URL, json={"feedback": [accepted()]})
    client.post(URL, json={"feedback": [overridden()]})
    assert database(app).count_feedback() == 2


@pytest.mark.parametrize("entry", [
    overridden(),
    overridden(reason={"code": "patient-declined"}),  # the sandbox sends no display
    overridden(reason={"system": "https://example.org/reasons", "code": "x", "display": "X"}),
    overridden(userComment="already has a brace at home"),
    {**accepted(), "outcomeTimestamp": "2026-11-20T13:01:02+01:00"},
    {**accepted(), "extension": {"org.example": 1}},
], ids=["no-reason", "reason-without-display", "reason-with-display", "comment-only",
        "offset-timestamp", "extension"])
def test_valid_feedback_shapes_are_accepted(app, client, entry):
    response = client.post(URL, json={"feedback": [entry]})
    assert response.status_code == 200, response.get_json()
    assert database(app).count_feedback() == 1


def test_reason_code_and_comment_are_stored(app, client):
    entry = overridden(reason={"system": "https://example.org/r", "code": "declined"},
                       userComment="prefers FES")
    client.post(URL, json={"feedback": [entry]})
    (row,) = database(app).feedback_rows()
    assert (row["override_reason_system"], row["override_reason_code"],
            row["override_comment"]) == ("https://example.org/r", "declined", "prefers FES")


def without(entry, name):
    entry = dict(entry)
    del entry[name]
    return entry


BAD = {
    "not an object": [accepted()],
    "no feedback member": {"cards": [accepted()]},
    "feedback not a list": {"feedback": accepted()},
    "empty list": {"feedback": []},
    "entry not an object": {"feedback": ["x"]},
    "missing card": {"feedback": [without(accepted(), "card")]},
    "missing outcome": {"feedback": [without(accepted(), "outcome")]},
    "unknown outcome": {"feedback": [{**accepted(), "outcome": "ignored"}]},
    "missing timestamp": {"feedback": [without(accepted(), "outcomeTimestamp")]},
    "timestamp not a date": {"feedback": [{**accepted(), "outcomeTimestamp": "yesterday noon"}]},
    "timestamp without zone": {"feedback": [{**accepted(),
                                             "outcomeTimestamp": "2026-11-20T12:00:00"}]},
    "accepted without suggestions": {"feedback": [without(accepted(), "acceptedSuggestions")]},
    "suggestion without id": {"feedback": [{**accepted(), "acceptedSuggestions": [{}]}]},
    "empty overrideReason": {"feedback": [{**overridden(), "overrideReason": {}}]},
    "reason without code": {"feedback": [overridden(reason={"system": "x"})]},
    "card not a string": {"feedback": [{**accepted(), "card": 1}]},
    # identifiers end where they end: stored with a newline they never match the issued card
    "card with a trailing newline": {"feedback": [accepted(CARD + "\n")]},
    "card with a trailing space": {"feedback": [accepted(CARD + " ")]},
    "card with a NUL": {"feedback": [accepted(CARD + "\x00")]},
    "card with a line separator": {"feedback": [accepted(CARD + "\u2028")]},
    "suggestion id with a newline": {"feedback": [{**accepted(), "acceptedSuggestions": [
        {"id": SUGGESTION + "\n"}]}]},
    "reason code with a newline": {"feedback": [overridden(reason={"code": "declined\n"})]},
}


@pytest.mark.parametrize("body", BAD.values(), ids=BAD.keys())
def test_bad_feedback_is_400_and_nothing_is_stored(app, client, body):
    response = client.post(URL, json=body)
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert database(app).count_feedback() == 0


def test_one_bad_entry_rejects_the_whole_post(app, client):
    body = {"feedback": [accepted(), {**accepted("other"), "outcomeTimestamp": "nope"}]}
    assert client.post(URL, json=body).status_code == 400
    assert database(app).count_feedback() == 0


def test_malformed_json_feedback_is_400(client):
    response = client.post(URL, data=b"{feedback", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_feedback_for_an_unknown_service_is_404(app, client):
    response = client.post("/cds-services/nope/feedback", json={"feedback": [accepted()]})
    assert response.status_code == 404
    assert database(app).count_feedback() == 0


def test_feedback_for_a_card_we_issued(app, client):
    """The round trip an EHR makes: a card's uuid and a suggestion's uuid come back."""
    cards = client.post("/cds-services/foot-drop-patient-view",
                        json=b.patient_view(prefetch=b.foot_drop_prefetch())).get_json()["cards"]
    card = next(c for c in cards
                if c["source"]["topic"]["code"] == "orthosis-and-rehabilitation")
    entry = {"card": card["uuid"], "outcome": "accepted",
             "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
             "outcomeTimestamp": "2026-11-20T12:05:00Z"}
    assert client.post(URL, json={"feedback": [entry]}).status_code == 200
    stats = {s.recommendation_id: s for s in database(app).recommendation_stats()}
    assert stats["orthosis-and-rehabilitation"].accepted == 1


# CDS Hooks 2.0: outcomeTimestamp is an RFC 3339 (section 5.6) date-time. These ISO 8601 forms
# are not, yet datetime.fromisoformat took them and they were stored.
NOT_RFC3339 = [
    "2026-W47-6T10:00:00Z",  # ISO week date
    "20261121T100000Z",  # ISO basic format
    "2026-11-21 10:00:00Z",  # space separator
    "2026-11-21T10:00Z",  # no seconds
    "2026-11-21T10Z",  # hour only
    "2026-11-21T10:00:00+0100",  # offset without the colon
    "2026-11-21T10:00:00+01",  # offset without minutes
    "2026-11-21T10:00:00,5Z",  # decimal comma
    "2026-11-21T10:00:00.Z",  # a dot with no digits
    "2026-11-21T10:00:00Z\n",  # trailing newline
    " 2026-11-21T10:00:00Z",  # leading space
    "2026-11-21T10:00:00\u0661Z",  # a non-ASCII digit
    "2026-11-21T10:00:00UTC",
    "2026-11-21T24:00:00Z",  # valid ISO 8601 end of day, no RFC 3339 hour 24
    "2026-02-30T10:00:00Z",  # no such day
    "2026-11-21T10:00:00+25:00",  # no such offset
    "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC: cannot be stored
    "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
]


@pytest.mark.parametrize("timestamp", NOT_RFC3339)
def test_timestamp_that_is_not_rfc3339_is_400_and_not_stored(app, client, timestamp):
    response = client.post(URL, json={"feedback": [{**accepted(),
                                                    "outcomeTimestamp": timestamp}]})
    assert response.status_code == 400
    issue = response.get_json()["issue"][0]
    assert issue["diagnostics"].startswith("feedback.0.outcomeTimestamp:")
    assert database(app).count_feedback() == 0


@pytest.mark.parametrize(("timestamp", "stored_utc"), [
    ("2026-11-20T12:01:02Z", "2026-11-20T12:01:02"),
    ("2026-11-20t12:01:02z", "2026-11-20T12:01:02"),  # RFC 3339 allows lower-case t and z
    ("2026-11-20T12:01:02.123456789Z", "2026-11-20T12:01:02.123456"),  # cut to microseconds
    ("2026-11-20T13:01:02+01:00", "2026-11-20T12:01:02"),
    ("2026-11-20T12:01:02-00:00", "2026-11-20T12:01:02"),  # UTC, local offset unknown
    ("2026-11-20T00:31:02-11:30", "2026-11-20T12:01:02"),
])
def test_rfc3339_timestamps_are_stored_as_utc(app, client, timestamp, stored_utc):
    response = client.post(URL, json={"feedback": [{**accepted(),
                                                    "outcomeTimestamp": timestamp}]})
    assert response.status_code == 200, response.get_json()
    (row,) = database(app).feedback_rows()
    moment = row["outcome_timestamp"]
    assert moment.utcoffset() in (None, timedelta(0))  # SQLite keeps no zone: the UTC instant
    assert moment.replace(tzinfo=None).isoformat() == stored_utc
