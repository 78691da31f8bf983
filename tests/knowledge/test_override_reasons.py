"""Override reasons fit the card: each variant offers only its own reasons (data in cards/),
and reasons or snooze settings that name nothing stop the service at load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cds_service.fixtures import FIXTURES_DIR
from cds_service.knowledge.loader import KnowledgeError, load_knowledge
from tests.conftest import NOW
from tests.scenarios.conftest import checked_caller, run_fixture, scenario_client

CARDS = Path(__file__).resolve().parents[2] / "cards"
ORDER_SELECT = FIXTURES_DIR / "order-select"
RENAL = {"crcl-estimated-above-limit", "renal-function-pending"}


@pytest.fixture(scope="module")
def call_service():
    return checked_caller(scenario_client(NOW))


def reason_codes(call_service, fixture: str) -> set[str]:
    _, body = run_fixture(ORDER_SELECT / f"{fixture}.json", "order-select",
                          "foot-drop-order-select", call_service)
    (card,) = body["cards"]
    return {r["code"] for r in card["overrideReasons"]}


def test_seizure_contraindication_offers_no_renal_reason(call_service) -> None:
    codes = reason_codes(call_service, "dalfampridine-seizure-history-sandbox-shape")
    assert "seizure-history-in-error" in codes
    assert not codes & RENAL
    assert "patient-declined" not in codes


def test_renal_contraindication_offers_the_crcl_reason_not_the_seizure_one(call_service) -> None:
    codes = reason_codes(call_service, "dalfampridine-low-crcl")
    assert "crcl-estimated-above-limit" in codes
    assert "seizure-history-in-error" not in codes
    assert "renal-function-pending" not in codes, "a CrCl is on record"


def test_dose_warning_offers_only_dose_reasons(call_service) -> None:
    codes = reason_codes(call_service, "dalfampridine-above-label-dose")
    assert "dose-reviewed-with-neurology" in codes
    assert not codes & (RENAL | {"seizure-history-in-error", "replaces-active-order"})


def test_every_card_keeps_the_snoozing_reason(call_service) -> None:
    for fixture in ("dalfampridine-low-crcl", "dalfampridine-above-label-dose",
                    "dalfampridine-duplicate-4-aminopyridine"):
        assert "clinical-judgement" in reason_codes(call_service, fixture)


# --------------------------------------------------------------------------- checked at load
@pytest.fixture
def cards_copy(tmp_path: Path) -> Path:
    target = tmp_path / "cards"
    shutil.copytree(CARDS, target)
    return target


def edit_dalfampridine(cards: Path, change) -> None:
    path = cards / "recommendations" / "order-select" / "dalfampridine-safety.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["override_reasons"].append({"code": "no-such-reason"}), "no-such-reason"),
        (lambda d: d["override_reasons"].append({"code": "x", "display": "X", "variant": "y"}),
         "variant"),
        (lambda d: d["override_reasons"].append(
            {"code": "x", "display": "X", "when": {"fact": "no_such_fact"}}), "no_such_fact"),
        (lambda d: d.update(snooze={"reasons": ["patient-declined"]}), "patient-declined"),
    ],
    ids=["unknown-code", "unknown-key", "unknown-fact-in-when", "snooze-reason-not-offered"],
)
def test_bad_override_reasons_stop_the_service_at_load(cards_copy, change, message) -> None:
    edit_dalfampridine(cards_copy, change)
    with pytest.raises(KnowledgeError, match=message):
        load_knowledge(cards_copy)


def test_snooze_period_is_per_recommendation_with_a_default_of_14_days(cards_copy) -> None:
    knowledge = load_knowledge(CARDS)
    dalfampridine = knowledge.recommendation("dalfampridine-safety")
    assert dalfampridine is not None
    assert dalfampridine.snooze.days == 14
    assert "clinical-judgement" in dalfampridine.snooze.reasons
    edit_dalfampridine(cards_copy, lambda d: d.update(
        snooze={"reasons": ["clinical-judgement"], "days": 3}))
    changed = load_knowledge(cards_copy).recommendation("dalfampridine-safety")
    assert changed is not None and changed.snooze.days == 3
