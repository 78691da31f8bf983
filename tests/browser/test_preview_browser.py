"""The card preview page in headless Chromium: a red-flag scenario shows its critical card first."""

from __future__ import annotations

import json

import pytest

from cds_service.fixtures import fixture_paths, load_fixture
from tests.browser.conftest import unavailable
from tests.conftest import NOW

pytestmark = pytest.mark.browser
SEVERITY = {"critical": 0, "warning": 1, "info": 2}


def red_flag_fixture() -> str | None:
    """A patient-view fixture expecting a critical card (and preferably others after it)."""
    best: tuple[int, int, str] | None = None
    for path in fixture_paths():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        expected = data.get("expected") or []
        if not any(e.get("indicator") == "critical" for e in expected):
            continue
        name = f"{path.parent.name}/{path.stem}"
        rank = (0 if data.get("hook") == "patient-view" else 1,
                -len(expected) + (0 if "red-flag" in name or "urgent" in name else 1), name)
        best = rank if best is None or rank < best else best
    return best[2] if best else None


def test_red_flag_scenario_shows_the_critical_card_first(page, live_server, tmp_path):
    name = red_flag_fixture()
    if name is None:
        unavailable("no fixture expects a critical card yet")
    page.goto(f"{live_server}/preview")
    page.click(f'button[data-fixture="{name}"]')
    page.wait_for_selector('#cards[data-state="done"]', state="attached")
    cards = page.locator("#cards article.card")
    expected = load_fixture(next(p for p in fixture_paths()
                                 if f"{p.parent.name}/{p.stem}" == name), NOW).expected
    assert cards.count() == len(expected)
    first = cards.nth(0)
    assert first.get_attribute("data-indicator") == "critical"
    assert first.evaluate("e => getComputedStyle(e).borderLeftColor") == "rgb(198, 40, 40)"
    indicators = [cards.nth(i).get_attribute("data-indicator") for i in range(cards.count())]
    assert indicators == sorted(indicators, key=SEVERITY.__getitem__)
    # markdown is rendered (no raw ** left), the source is a link, suggestions and reasons show
    detail = first.locator(".detail")
    assert detail.locator("p").count() >= 1
    assert "**" not in detail.inner_text()
    assert first.locator(".source a").get_attribute("href").startswith("https://")
    assert first.locator(".override li").count() >= 1
    assert page.locator("#expected").inner_text().startswith("✓")
    page.screenshot(path=str(tmp_path / "preview-red-flag.png"), full_page=True)
    assert (tmp_path / "preview-red-flag.png").stat().st_size > 10_000
    assert page.problems == []  # no script errors, no CSP violations


def test_pasted_request_and_invalid_json(page, live_server, live_app):
    paths = fixture_paths()
    if not paths:
        unavailable("no fixtures yet")
    fixture = load_fixture(paths[0], NOW)
    page.goto(f"{live_server}/preview")
    page.fill("#request", "{not json")
    page.click("#run")
    page.wait_for_selector('#cards[data-state="error"]', state="attached")
    assert "not valid JSON" in page.locator("#status").inner_text()

    page.fill("#request", json.dumps(fixture.request))
    page.click("#run")
    page.wait_for_selector('#cards[data-state="done"]', state="attached")
    direct = live_app.test_client().post(f"/cds-services/{fixture.service_id}",
                                         json=fixture.request).get_json()["cards"]
    shown = page.locator("#cards article.card")
    assert shown.count() == len(direct)
    assert [shown.nth(i).get_attribute("data-recommendation") for i in range(shown.count())] == [
        c["source"]["topic"]["code"] for c in direct]
    assert page.locator("#service").input_value() == fixture.service_id
    assert page.problems == []


def test_service_errors_are_shown(page, live_server):
    page.goto(f"{live_server}/preview")
    page.fill("#request", json.dumps({"hook": "patient-view", "hookInstance": "x",
                                      "context": {"patientId": "p"}}))
    page.click("#run")
    page.wait_for_selector('#cards[data-state="error"]', state="attached")
    assert "The service answered 400" in page.locator("#status").inner_text()
