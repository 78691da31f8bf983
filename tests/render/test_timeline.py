"""Timeline data shaping: grades by muscle and side, red-flag and cause markers, order lanes."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from cds_service.config import DEFAULT_CARDS_DIR
from cds_service.facts.model import Finding, OrderRecord, PatientFacts, Side, StrengthGrade
from cds_service.render.timeline import (
    TimelineSpecError,
    build_timeline,
    load_spec,
    parse_spec,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SPEC = load_spec(DEFAULT_CARDS_DIR)


DF = "ankle-dorsiflexion-strength"


def grade(side: Side, day: int, value: float, text: str, muscle: str = DF,
          ref: str | None = None) -> StrengthGrade:
    return StrengthGrade(muscle=muscle, side=side, grade=value, recorded_as=text,
                         when=datetime(2026, 11, day, 9, 0, tzinfo=UTC),
                         reference=ref or f"Observation/{muscle}-{side.value}-{day}")


def order(category: str, day: int | None, performed: bool, label: str) -> OrderRecord:
    return OrderRecord(category=category, resource_type="ServiceRequest",
                       reference=f"ServiceRequest/{category}-{day}", status="completed"
                       if performed else "active", label=label, priority=None,
                       when=date(2026, 11, day) if day else None, performed=performed)


def facts(**values) -> PatientFacts:
    return PatientFacts(patient_id="p1", now=NOW, **values)


def test_grades_are_one_dated_series_per_side_dorsiflexion_first_in_time_order():
    timeline = build_timeline(facts(
        dorsiflexion_grades=(grade(Side.RIGHT, 10, 5, "5/5"), grade(Side.LEFT, 18, 3, "3-/5"),
                             grade(Side.LEFT, 4, 4, "4/5")),
        other_weak_muscles=(grade(Side.LEFT, 18, 3, "3/5", muscle="hip-abduction-strength"),),
    ), SPEC)
    series = {s["id"]: s for s in timeline["grades"]}
    assert list(series) == ["ankle-dorsiflexion-strength:left", "ankle-dorsiflexion-strength:right",
                            "hip-abduction-strength:left"]
    left = series["ankle-dorsiflexion-strength:left"]
    assert [(p["date"], p["recordedAs"], p["grade"]) for p in left["points"]] == [
        ("2026-11-04", "4/5", 4), ("2026-11-18", "3-/5", 3)]
    assert left["label"] == "Ankle dorsiflexion, left" and left["primary"] is True
    assert series["hip-abduction-strength:left"]["primary"] is False
    # colour is never the only cue: each side has its own marker shape
    assert left["marker"] != series["ankle-dorsiflexion-strength:right"]["marker"]


def test_red_flags_are_named_and_dated_by_their_latest_finding():
    timeline = build_timeline(facts(
        has_red_flag=True,
        red_flag_cauda_equina=True,
        red_flag_bilateral_foot_drop=True,
        red_flag_names=("bilateral foot drop", "cauda equina signs"),
        red_flag_since=date(2026, 11, 19),
        findings={
            "red_flag_cauda_equina": (
                Finding("Urinary retention", "Condition/c1", date(2026, 11, 12)),
                Finding("Saddle anaesthesia", "Observation/o1", date(2026, 11, 19))),
            "red_flag_bilateral_foot_drop": (
                Finding("Foot drop", "Condition/c2", date(2026, 11, 3)),),
        },
    ), SPEC)
    assert [(m["name"], m["date"]) for m in timeline["redFlags"]] == [
        ("bilateral foot drop", "2026-11-03"), ("cauda equina signs", "2026-11-19")]


def test_a_red_flag_the_spec_does_not_know_is_still_shown():
    timeline = build_timeline(facts(has_red_flag=True, red_flag_names=("new kind of flag",),
                                    red_flag_since=date(2026, 11, 15)), SPEC)
    assert [(m["name"], m["date"]) for m in timeline["redFlags"]] == [
        ("new kind of flag", "2026-11-15")]


def test_causes_are_dated_by_their_first_finding_and_absent_facts_draw_nothing():
    timeline = build_timeline(facts(
        has_lumbar_disc_herniation=True,
        findings={"has_lumbar_disc_herniation": (
            Finding("L4-5 disc herniation", "Condition/c3", date(2026, 10, 1)),
            Finding("L4-5 disc herniation", "Condition/c4", date(2026, 9, 1)))},
    ), SPEC)
    assert [(c["label"], c["date"]) for c in timeline["causes"]] == [
        ("Lumbar disc herniation", "2026-09-01")]
    assert timeline["redFlags"] == []
    assert timeline["footDrop"]["course"] == "unknown"


def test_orders_fall_into_their_lanes_dated_and_marked_done_or_ordered():
    timeline = build_timeline(facts(done=(
        order("lumbar-mri", 15, True, "MRI lumbar spine"),
        order("afo", 16, False, "Ankle-foot orthosis"),
        order("physical-therapy", None, False, "Physiotherapy"),
        order("dalfampridine", 2, True, "Dalfampridine 10 mg"),
    )), SPEC)
    lanes = {lane["id"]: lane["events"] for lane in timeline["lanes"]}
    assert [(e["label"], e["date"], e["status"]) for e in lanes["imaging"]] == [
        ("MRI lumbar spine", "2026-11-15", "done")]
    assert [(e["label"], e["date"], e["status"]) for e in lanes["rehabilitation"]] == [
        ("Ankle-foot orthosis", "2026-11-16", "active"), ("Physiotherapy", None, "active")]
    assert [e["label"] for e in lanes["medication"]] == ["Dalfampridine 10 mg"]
    assert lanes["surgery"] == [] and lanes["electrodiagnosis"] == []


def test_foot_drop_summary_reads_the_facts():
    timeline = build_timeline(facts(has_foot_drop=True, foot_drop_side="left",
                                    foot_drop_onset=date(2026, 10, 30),
                                    dorsiflexion_improving=True), SPEC)
    assert timeline["footDrop"]["onset"] == "2026-10-30"
    assert timeline["footDrop"]["course"] == "improving"
    assert timeline["asOf"] == "2026-11-20"


def test_every_order_category_is_in_at_most_one_lane():
    data = {"grade_series": {}, "side_styles": {}, "red_flags": {}, "red_flag_colour": "#000",
            "causes": {}, "cause_colour": "#000", "smart_link_label": "x",
            "lanes": [{"id": "a", "label": "A", "colour": "#000", "categories": ["afo"]},
                      {"id": "b", "label": "B", "colour": "#000", "categories": ["afo"]}]}
    with pytest.raises(TimelineSpecError, match="more than one lane"):
        parse_spec(data)
    del data["lanes"]
    with pytest.raises(TimelineSpecError, match="lanes"):
        parse_spec(data)


def test_spec_names_only_real_facts_and_order_categories():
    import yaml

    from cds_service.facts.model import PATIENT_FACT_NAMES

    thresholds = yaml.safe_load((DEFAULT_CARDS_DIR / "facts.yaml").read_text(encoding="utf-8"))
    assert set(SPEC.red_flags) | set(SPEC.causes) <= PATIENT_FACT_NAMES
    lane_categories = {c for lane in SPEC.lanes for c in lane.categories}
    assert lane_categories <= set(thresholds["order_categories"])
    assert set(SPEC.grade_series) == set(thresholds["muscle_groups"])
