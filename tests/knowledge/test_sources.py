"""cards/sources.yaml: each source defined once and cited by key; one URL never has two labels."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.knowledge.loader import KnowledgeError, load_knowledge

CARDS = Path(__file__).resolve().parents[2] / "cards"


@pytest.fixture
def cards_copy(tmp_path: Path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(CARDS, target)
    return target


def _edit_sources(cards: Path, change) -> None:
    path = cards / "sources.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data["sources"])
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_every_card_source_comes_from_the_registry() -> None:
    knowledge = load_knowledge(CARDS)
    registry = {s.url: s.label for s in knowledge.sources.values()}
    for rec in knowledge.recommendations:
        for source in (rec.source, *rec.citations):
            assert registry[source.url] == source.label, rec.id
        assert rec.source in rec.citations


def test_one_url_under_two_labels_fails_to_load(cards_copy: Path) -> None:
    def duplicate(sources: dict) -> None:
        sources["acr-copy"] = {**sources["acr-low-back-pain-2021"],
                               "label": "ACR Appropriateness Criteria (another label)"}

    _edit_sources(cards_copy, duplicate)
    with pytest.raises(KnowledgeError, match="defined twice"):
        load_knowledge(cards_copy)


def test_unknown_source_key_fails_to_load(cards_copy: Path) -> None:
    path = cards_copy / "recommendations" / "localize-lesion.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace(
        "source: stewart-2008", "source: stewart-2009"), encoding="utf-8")
    with pytest.raises(KnowledgeError, match="unknown source keys"):
        load_knowledge(cards_copy)


def test_a_source_needs_a_year(cards_copy: Path) -> None:
    _edit_sources(cards_copy, lambda sources: sources["nice-ng59"].pop("year"))
    with pytest.raises(KnowledgeError, match="year"):
        load_knowledge(cards_copy)
