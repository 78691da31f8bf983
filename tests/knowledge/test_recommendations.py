"""The recommendation files under cards/recommendations: they load, cite primary sources from the
research file, never repeat the seeds' mis-attributed figures, suggest real FHIR orders with
verified codes only, and keep summaries under 140 characters for every fixture."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from cds_service.facts.extract import FactExtractor
from cds_service.fhir.record import read_patient_record
from cds_service.fixtures import FIXTURES_DIR, fixture_paths, load_fixture
from cds_service.knowledge.loader import load_knowledge
from cds_service.render.cards import RenderContext, render_cards
from cds_service.rules.evaluate import evaluate
from tests.conftest import NOW

ROOT = Path(__file__).resolve().parents[2]
CARDS = ROOT / "cards"
REC_FILES = sorted((CARDS / "recommendations").rglob("*.yaml"))
PATIENT_VIEW_FILES = sorted((CARDS / "recommendations").glob("*.yaml"))
RESEARCH = Path("/work/shared/research/clinical-codes-and-evidence.md")

# Domains of the primary sources listed in shared/research/clinical-codes-and-evidence.md.
ALLOWED_DOMAINS = {
    "doi.org",
    "pubmed.ncbi.nlm.nih.gov",
    "www.nice.org.uk",
    "dailymed.nlm.nih.gov",
    "drugs.com",
    "www.bmj.com",
    "gettingitrightfirsttime.co.uk",
    "hssib.org.uk",
    "acsearch.acr.org",
    "gravitas.acr.org",
    "www.neuropt.org",
    "www.aerzteblatt.de",
    "www.rcr.ac.uk",
    "www.cms.gov",
    "www.accessdata.fda.gov",
}
# Codes a suggested resource may carry: verified (high or medium-high) in the research file.
VERIFIED_SUGGESTION_CODES = {
    ("http://loinc.org", "30679-5"),  # MR Lumbar spine WO contrast
    ("http://loinc.org", "2160-0"),  # Creatinine [Mass/volume] in Serum or Plasma
    ("http://www.ama-assn.org/go/cpt", "72148"),  # MRI lumbar spine without contrast
    ("http://snomed.info/sct", "308447003"),  # Referral to physiotherapist
    ("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "L1930"),  # AFO prefabricated
    ("http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets", "E0770"),  # FES device
}
# The seeds' thoracolumbar-series figures (research file sections 0.6 and 3.1).
SEED_FIGURES = re.compile(
    r"\b83(?:\.\d)?\s*(?:%|[-\u2013]\s*92)|\b92\s*%|\b52\s*[-\u2013]\s*53|\b52(?:\.\d)?\s*%"
)
NO_HOURS_TARGET = re.compile(r"\b4\s*[-\u2013]\s*24\s*h")


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(CARDS)


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _shown_text(data: dict[str, Any]) -> str:
    """Everything a clinician sees (not the reviewer notes)."""
    sources = yaml.safe_load((CARDS / "sources.yaml").read_text(encoding="utf-8"))["sources"]
    parts = [data["title"], data["summary"], data["detail"], data["rationale"]]
    parts += [sources[key]["label"] for key in data["citations"]]
    for suggestion in data.get("suggestions", []):
        parts.append(suggestion["label"])
        parts += [a["description"] for a in suggestion["actions"]]
        parts += [str(a.get("resource", "")) for a in suggestion["actions"]]
    return "\n".join(parts)


def _codings(node: Any):
    if isinstance(node, dict):
        if "system" in node and "code" in node:
            yield node["system"], str(node["code"])
        for value in node.values():
            yield from _codings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _codings(value)


def test_every_recommendation_loads(knowledge) -> None:
    loaded = {(r.hook, r.id) for r in knowledge.recommendations}
    for path in REC_FILES:
        data = _load(path)
        assert (data["hook"], data["id"]) in loaded, path.name


def test_patient_view_cards_are_the_ten_of_the_pathway() -> None:
    ids = {_load(p)["id"] for p in PATIENT_VIEW_FILES}
    assert ids == {
        "urgent-red-flag-evaluation", "orthosis-and-rehabilitation", "localize-lesion",
        "imaging-timing", "surgical-referral-disc", "peroneal-decompression", "stop-leg-crossing",
        "tendon-transfer-evaluation", "spasticity-botulinum", "ms-walking-dalfampridine",
    }
    for path in PATIENT_VIEW_FILES:
        data = _load(path)
        assert data["hook"] == "patient-view"
        assert path.stem == data["id"], "one file per recommendation, named by its id"


def test_indicators_match_the_pathway() -> None:
    indicators = {_load(p)["id"]: _load(p)["indicator"] for p in PATIENT_VIEW_FILES}
    assert indicators["urgent-red-flag-evaluation"] == "critical"
    assert indicators["surgical-referral-disc"] == "warning"
    others = set(indicators) - {"urgent-red-flag-evaluation", "surgical-referral-disc"}
    assert {indicators[i] for i in others} == {"info"}


@pytest.mark.parametrize("path", REC_FILES, ids=lambda p: p.stem)
def test_sources_are_primary_and_from_the_research_file(path: Path) -> None:
    data = _load(path)
    sources = yaml.safe_load((CARDS / "sources.yaml").read_text(encoding="utf-8"))["sources"]
    urls = [sources[key]["url"] for key in data["citations"]]
    research = RESEARCH.read_text(encoding="utf-8") if RESEARCH.exists() else None
    for url in urls:
        parsed = urlparse(url)
        assert parsed.scheme == "https", url
        assert parsed.hostname in ALLOWED_DOMAINS, url
        if research is not None:
            assert url.replace("https://", "") in research, f"{url} is not in the research file"


@pytest.mark.parametrize("path", PATIENT_VIEW_FILES, ids=lambda p: p.stem)
def test_no_seed_figures_on_cards(path: Path) -> None:
    shown = _shown_text(_load(path))
    assert not SEED_FIGURES.search(shown), SEED_FIGURES.search(shown)
    assert not NO_HOURS_TARGET.search(shown), "no 4-24 h surgical target"


@pytest.mark.parametrize("path", PATIENT_VIEW_FILES, ids=lambda p: p.stem)
def test_suggestions_are_draft_orders_with_verified_codes(path: Path) -> None:
    data = _load(path)
    for suggestion in data.get("suggestions", []):
        for action in suggestion["actions"]:
            assert action["type"] == "create"
            resource = action["resource"]
            assert resource["status"] == "draft"
            assert resource["intent"] == "order"
            assert resource["subject"] == {"reference": "Patient/{{ patient_id }}"}
            for coding in _codings(resource):
                if coding[0] != "http://unitsofmeasure.org":  # UCUM units, not concepts
                    assert coding in VERIFIED_SUGGESTION_CODES, coding


def test_fes_is_offered_only_for_a_central_cause() -> None:
    data = _load(CARDS / "recommendations" / "orthosis-and-rehabilitation.yaml")
    fes = next(s for s in data["suggestions"] if s["key"] == "fes")
    assert {"fact": "central_cause"} in fes["when"]["all"]


def _fixture_matches(knowledge):
    extractor = FactExtractor(knowledge)
    for path in fixture_paths(FIXTURES_DIR / "patient-view"):
        fx = load_fixture(path, NOW)
        pid = fx.request["context"]["patientId"]
        record = read_patient_record(fx.request["prefetch"].values(), pid, lambda r: True)
        facts = extractor.extract(record, NOW)
        yield path, pid, evaluate(knowledge, "patient-view", facts)


def test_summaries_fit_for_every_fixture(knowledge) -> None:
    """Rendered before the renderer's safety truncation: every summary is < 140 characters."""
    checked = 0
    for path, pid, matches in _fixture_matches(knowledge):
        for match in matches:
            summary = " ".join(
                match.recommendation.summary.render(
                    facts=match.view.patient, order=None, orders=(), patient_id=pid,
                    user_id=None, encounter_id=None, now=NOW, today=NOW.date().isoformat(),
                    indicator=match.indicator,
                ).split()
            )
            assert len(summary) < 140, (path.stem, summary)
            assert "…" not in summary
            checked += 1
    assert checked >= 30


def test_rendered_details_never_show_seed_figures(knowledge) -> None:
    for path, pid, matches in _fixture_matches(knowledge):
        cards = render_cards(matches, knowledge, RenderContext(pid, None, None, NOW))
        for card in cards:
            detail = card.card["detail"]
            assert not SEED_FIGURES.search(detail), (path.stem, card.recommendation_id)
            assert "\n\n**Do now:**" in detail or "\n\n**No prescription" in detail or (
                card.recommendation_id == "dalfampridine-safety"), "the action is its own paragraph"
            assert "{%" not in detail and "{{" not in detail
