"""Every fixture's cards, shown in the preview's 400 px sidebar, stay short enough to read.

CARD_HEIGHT_LIMIT_PX = 640. What a card holds at 400 px: its header (a summary of up to 139
characters, up to three lines on a critical card: about 95 px), a detail of at most 100 words
(about 9 words a line at 14.4 px: 12 lines and paragraph gaps, about 260 px), the Source line
(40-60 px), up to three suggestion buttons (about 35-40 px each), the evidence link and the
collapsed override reasons (40 px), and padding (about 30 px): about 640 px at the most. A card
then fits one screen of a laptop-height EHR window (about 900 px) with the next card's summary in
view; before the short-card rewrite cards were 700-1,040 px tall and a bilateral patient's three
cards filled 3,000 px (they now take about 1,700).
"""

from __future__ import annotations

import pytest

from cds_service.fixtures import fixture_paths

pytestmark = pytest.mark.browser
CARD_HEIGHT_LIMIT_PX = 640
SIDEBAR_WIDTH_PX = 400
NAMES = [f"{p.parent.name}/{p.stem}" for p in fixture_paths()]


def test_every_fixture_card_fits_the_sidebar_height(page, live_server) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server}/preview")
    assert round(page.locator("section.ehr").bounding_box()["width"]) == SIDEBAR_WIDTH_PX
    too_tall: dict[str, list[int]] = {}
    measured = 0
    for name in NAMES:
        page.evaluate("document.querySelector('#cards').dataset.state = 'idle'")
        page.click(f'button[data-fixture="{name}"]')
        page.wait_for_selector('#cards[data-state="done"]', state="attached")
        heights = page.eval_on_selector_all(
            "#cards article.card", "cards => cards.map(c => c.getBoundingClientRect().height)")
        for links in page.eval_on_selector_all(
                "#cards article.card", "cards => cards.map(c => Array.from(c.querySelectorAll("
                "'.links a, .source a')).map(a => a.getAttribute('href')))"):
            assert any("/evidence/" in href for href in links), f"{name}: evidence link shown"
            assert len(links) >= 2, f"{name}: evidence and source links shown"
        measured += len(heights)
        if any(h > CARD_HEIGHT_LIMIT_PX for h in heights):
            too_tall[name] = [round(h) for h in heights]
    assert measured > 100, "most fixtures show cards"
    assert too_tall == {}
    assert page.problems == []
