"""GET /evidence/{id}: the evidence behind each card, generated from the loaded knowledge."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from cds_service.config import DEFAULT_CARDS_DIR
from cds_service.knowledge.loader import load_knowledge
from tests.http.builders import foot_drop_prefetch, patient_view

KNOWLEDGE = load_knowledge(DEFAULT_CARDS_DIR)
IDS = sorted({r.id for r in KNOWLEDGE.recommendations})


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")
        if tag == "script":
            self.scripts += 1


def _parse(html: str) -> _Links:
    parser = _Links()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("rec_id", IDS)
def test_every_recommendation_has_a_page_with_its_sources(client, rec_id: str) -> None:
    response = client.get(f"/evidence/{rec_id}")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    page = _parse(html)
    assert page.scripts == 0
    for rec in (r for r in KNOWLEDGE.recommendations if r.id == rec_id):
        assert rec.title in html
        for source in rec.citations:
            assert source.url in page.hrefs and source.label in html
        first_rationale_words = " ".join(rec.rationale.split()[:6])
        assert first_rationale_words in " ".join(html.split())
    assert "When the card appears" in html and "When it does not appear" in html
    assert KNOWLEDGE.version in html


def test_page_is_written_from_the_rule(client) -> None:
    html = " ".join(client.get("/evidence/localize-lesion").get_data(as_text=True).split())
    # the conditions' own descriptions from cards/recommendations/localize-lesion.yaml
    assert "No localising cause, or only a peroneal neuropathy" in html
    assert "No nerve conduction study or EMG on record for this foot drop" in html


def test_a_recommendation_id_used_by_both_hooks_shows_both(client) -> None:
    html = client.get("/evidence/urgent-red-flag-evaluation").get_data(as_text=True)
    assert 'data-hook="patient-view"' in html and 'data-hook="order-select"' in html


def test_index_lists_every_page_and_preview_links_to_it(client) -> None:
    response = client.get("/evidence")
    assert response.status_code == 200
    hrefs = _parse(response.get_data(as_text=True)).hrefs
    for rec_id in IDS:
        assert f"/evidence/{rec_id}" in hrefs
    assert "/evidence" in _parse(client.get("/preview").get_data(as_text=True)).hrefs


def test_unknown_recommendation_is_a_json_404(client) -> None:
    response = client.get("/evidence/no-such-card")
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_card_links_point_to_the_evidence_page_under_the_public_url(app, client) -> None:
    body = client.post("/cds-services/foot-drop-patient-view",
                       json=patient_view(prefetch=foot_drop_prefetch())).get_json()
    base = app.extensions["cds"].settings.public_base_url
    assert body["cards"]
    for card in body["cards"]:
        rec_id = card["source"]["topic"]["code"]
        links = card["links"]
        assert links[0] == {"label": links[0]["label"], "url": f"{base}/evidence/{rec_id}",
                            "type": "absolute"}
        assert links[1]["url"] == card["source"]["url"]
        assert client.get(f"/evidence/{rec_id}").status_code == 200
