"""Cards a clinician reads in five seconds, over every fixture folder (patient-view,
order-select, and order-sign once it exists): a short detail in clinical words, the evidence
behind links, one label per source URL, and an evidence page for every card."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cds_service.fixtures import FIXTURES_DIR, fixture_paths, load_fixture
from cds_service.render.text import is_fhir_reference
from tests.conftest import NOW
from tests.scenarios.conftest import checked_caller, scenario_client

MAX_DETAIL_WORDS = 100
PATHS = fixture_paths(FIXTURES_DIR)
HOOK_FOLDERS = {p.parent.name for p in PATHS}
# "(SNOMED CT 267064002)", "ICD-10-CM M21.371", "LOINC 30679-5", "CPT 72148", "(code 88123)"
CODE_SYSTEM_CODE = re.compile(
    r"\b(?:ICD-10(?:-CM)?|SNOMED(?: CT)?|LOINC|CPT|HCPCS|RxNorm|NDC)\s*:?\s*[A-Z0-9][\w.\-]*"
    r"|\(code [^)]+\)")
# ICD-10-CM codes as they look on their own (M21.371, R33.9, G40.909).
ICD10_CODE = re.compile(r"\b[A-TV-Z][0-9]{2}\.[0-9A-Z]{1,4}\b")
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\([^)]*\)|<https?://|https?://")


@pytest.fixture(scope="module")
def app_client() -> Any:
    return scenario_client()


def _service_for(hook: str, client: Any) -> str:
    services = client.get("/cds-services").get_json()["services"]
    return next(s["id"] for s in services if s["hook"] == hook)


def _cards(path: Path, client: Any) -> Iterator[dict[str, Any]]:
    fx = load_fixture(path, NOW)
    response = checked_caller(client)(_service_for(fx.hook, client), fx.request)
    assert response.status_code == 200, response.get_json()
    yield from response.get_json()["cards"]


def test_every_hook_folder_is_covered() -> None:
    assert {"patient-view", "order-select"} <= HOOK_FOLDERS


@pytest.mark.parametrize("path", PATHS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_cards_are_short_in_clinical_words_with_evidence_links(path: Path, app_client) -> None:
    for card in _cards(path, app_client):
        rec_id = card["source"]["topic"]["code"]
        where = f"{path.stem}: {rec_id}"
        detail = card["detail"]
        words = len(detail.split())
        assert words <= MAX_DETAIL_WORDS, f"{where}: {words} words"
        for text in (card["summary"], detail):
            assert not CODE_SYSTEM_CODE.search(text), f"{where}: {CODE_SYSTEM_CODE.search(text)}"
            assert not ICD10_CODE.search(text), f"{where}: {ICD10_CODE.search(text)}"
            references = [t for t in re.findall(r"[\w:/.\-]+/[\w.\-]+", text)
                          if is_fhir_reference(t)]
            assert not references, f"{where}: FHIR ids {references}"
        assert not MARKDOWN_LINK.search(detail), f"{where}: link inside the detail"
        links = card["links"]
        assert [link["type"] for link in links[:2]] == ["absolute", "absolute"]
        assert links[0]["url"].endswith(f"/evidence/{rec_id}")
        assert card["source"]["url"] in [link["url"] for link in links]
        page = app_client.get(f"/evidence/{rec_id}")
        assert page.status_code == 200
        assert card["source"]["label"] in page.get_data(as_text=True)


def test_one_label_per_url_across_every_card(app_client) -> None:
    labels: dict[str, set[str]] = {}
    for path in PATHS:
        for card in _cards(path, app_client):
            named = [card["source"], *card["links"][1:]]
            for item in named:
                labels.setdefault(item["url"], set()).add(item["label"])
    assert labels
    assert {url: names for url, names in labels.items() if len(names) > 1} == {}


def test_fes_is_not_discussed_when_no_cause_is_on_record(app_client) -> None:
    """Nothing that does not apply: with no cause recorded, the orthosis card says nothing about
    FES (it is for central causes and not for peripheral ones, and neither is known here)."""
    path = FIXTURES_DIR / "patient-view" / "fires-orthosis-left-foot-drop-no-afo.json"
    cards = {c["source"]["topic"]["code"]: c for c in _cards(path, app_client)}
    assert "No cause is on record" in cards["localize-lesion"]["detail"]
    assert "FES is" not in cards["orthosis-and-rehabilitation"]["detail"]
    assert "alternative to an AFO" not in cards["orthosis-and-rehabilitation"]["detail"]
