"""POST /preview/render with cards of the wrong shape: a JSON 400 naming the member, never a 500
(a number where the template loops over a list was a TypeError)."""

from __future__ import annotations

import pytest

RENDER = "/preview/render"
GOOD_CARD = {
    "summary": "Foot drop", "indicator": "warning", "detail": "**Why**",
    "source": {"label": "Src", "topic": {"code": "r1"}},
    "suggestions": [{"label": "Order AFO", "actions": [
        {"type": "create", "description": "d", "resource": {"resourceType": "ServiceRequest"}}]}],
    "links": [{"label": "Guide", "url": "https://a.example", "type": "absolute"}],
    "overrideReasons": [{"code": "declined", "display": "Patient declined"}],
}

BAD_CARDS = {
    "suggestions a number": ({"suggestions": 5}, "cards.0.suggestions"),
    "links a number": ({"links": 5}, "cards.0.links"),
    "links a string": ({"links": "x"}, "cards.0.links"),
    "overrideReasons true": ({"overrideReasons": True}, "cards.0.overrideReasons"),
    "actions a number": ({"suggestions": [{"label": "x", "actions": 5}]},
                         "cards.0.suggestions.0.actions"),
    "suggestion a string": ({"suggestions": ["x"]}, "cards.0.suggestions.0"),
    "action a string": ({"suggestions": [{"label": "x", "actions": ["x"]}]},
                        "cards.0.suggestions.0.actions.0"),
    "link a number": ({"links": [1]}, "cards.0.links.0"),
    "source a list": ({"source": ["x"]}, "cards.0.source"),
    "topic a string": ({"source": {"label": "s", "topic": "x"}}, "cards.0.source.topic"),
    "summary an object": ({"summary": {"a": 1}}, "cards.0.summary"),
    "indicator null": ({"indicator": None}, "cards.0.indicator"),
    "card a string": ("junk", "cards.0"),
    "card null": (None, "cards.0"),
}


@pytest.mark.parametrize(("card", "member"), BAD_CARDS.values(), ids=BAD_CARDS.keys())
def test_card_of_the_wrong_shape_is_400_naming_the_member(client, card, member):
    response = client.post(RENDER, json={"cards": [card]})
    assert response.status_code == 400
    issue = response.get_json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "invalid-request"
    assert issue["diagnostics"].startswith(f"{member}:"), issue["diagnostics"]
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_a_bad_card_after_good_ones_is_named_by_its_position(client):
    response = client.post(RENDER, json={"cards": [GOOD_CARD, GOOD_CARD, {"links": 5}]})
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["diagnostics"].startswith("cards.2.links:")


def test_the_message_does_not_echo_the_value(client):
    response = client.post(RENDER, json={"cards": [{"summary": {"patient": "Jane-Doe-7"}}]})
    assert response.status_code == 400
    assert "Jane-Doe-7" not in response.get_data(as_text=True)


def test_a_well_formed_card_still_renders(client):
    response = client.post(RENDER, json={"cards": [GOOD_CARD]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["count"] == 1
    for text in ("Foot drop", "Order AFO", "Patient declined", 'href="https://a.example"'):
        assert text in body["html"]
