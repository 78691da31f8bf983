"""The foot-drop timeline the SMART app draws, shaped from the same facts the cards come from.

``build_timeline(facts, spec)`` turns a patient's :class:`PatientFacts` into plain JSON: muscle
grades as one series per muscle group and side (every point dated), the foot drop's onset, each
red flag as a named marker, the causes found and the orders/procedures in lanes on the same time
axis. Labels, colours and lanes come from ``cards/timeline.yaml``; nothing clinical is decided
here (the facts already did that), so the picture and the cards cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.facts.model import OrderRecord, PatientFacts, StrengthGrade

TIMELINE_FILE = "timeline.yaml"


class TimelineSpecError(ValueError):
    """cards/timeline.yaml is missing a member or names something twice."""


@dataclass(frozen=True)
class Lane:
    id: str
    label: str
    colour: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class TimelineSpec:
    grade_series: Mapping[str, Mapping[str, Any]]
    side_styles: Mapping[str, Mapping[str, str]]
    red_flags: Mapping[str, str]
    red_flag_colour: str
    causes: Mapping[str, str]
    cause_colour: str
    lanes: tuple[Lane, ...]
    smart_link_label: str

    def lane_of(self, category: str) -> Lane | None:
        return next((lane for lane in self.lanes if category in lane.categories), None)


def parse_spec(data: Mapping[str, Any]) -> TimelineSpec:
    try:
        lanes = tuple(
            Lane(str(lane["id"]), str(lane["label"]), str(lane["colour"]),
                 tuple(str(c) for c in lane["categories"]))
            for lane in data["lanes"]
        )
        spec = TimelineSpec(
            grade_series=dict(data["grade_series"]),
            side_styles=dict(data["side_styles"]),
            red_flags=dict(data["red_flags"]),
            red_flag_colour=str(data["red_flag_colour"]),
            causes=dict(data["causes"]),
            cause_colour=str(data["cause_colour"]),
            lanes=lanes,
            smart_link_label=str(data["smart_link_label"]),
        )
    except (KeyError, TypeError) as exc:
        raise TimelineSpecError(f"{TIMELINE_FILE}: missing or malformed member {exc}") from exc
    categories = [c for lane in lanes for c in lane.categories]
    if len(categories) != len(set(categories)):
        raise TimelineSpecError(f"{TIMELINE_FILE}: a category is in more than one lane")
    return spec


@cache
def load_spec(cards_dir: Path) -> TimelineSpec:
    path = Path(cards_dir) / TIMELINE_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TimelineSpecError(f"{path}: {exc}") from exc
    return parse_spec(data)


def _day(value: date | datetime | None) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    return value


def _finding_days(items: Iterable[Any]) -> list[date]:
    days = []
    for item in items:
        day = _day(getattr(item, "when", None))
        if day is not None:
            days.append(day)
    return days


def _grade_point(grade: StrengthGrade) -> dict[str, Any]:
    return {
        "date": grade.day.isoformat(),
        "grade": grade.grade,
        "recordedAs": grade.recorded_as,
        "reference": grade.reference,
    }


def grade_series(facts: PatientFacts, spec: TimelineSpec) -> list[dict[str, Any]]:
    """One series per muscle group and side, points in date order; dorsiflexion first."""
    grouped: dict[tuple[str, str], list[StrengthGrade]] = {}
    seen: set[str] = set()
    for grade in (*facts.dorsiflexion_grades, *facts.other_weak_muscles):
        if grade.muscle not in spec.grade_series or grade.reference in seen:
            continue
        seen.add(grade.reference)
        grouped.setdefault((grade.muscle, grade.side.value), []).append(grade)
    muscle_order = list(spec.grade_series)
    side_order = list(spec.side_styles)
    series = []
    for (muscle, side), grades in sorted(
        grouped.items(),
        key=lambda kv: (muscle_order.index(kv[0][0]),
                        side_order.index(kv[0][1]) if kv[0][1] in side_order else 99),
    ):
        muscle_spec = spec.grade_series[muscle]
        style = spec.side_styles.get(side) or spec.side_styles["unknown"]
        label = str(muscle_spec["label"])
        series.append({
            "id": f"{muscle}:{side}",
            "muscle": muscle,
            "side": side,
            "label": label if side == "unknown" else f"{label}, {side}",
            "primary": bool(muscle_spec.get("primary", False)),
            "colour": style["colour"],
            "marker": style["marker"],
            "dash": style["dash"],
            "points": [_grade_point(g) for g in sorted(grades, key=lambda g: g.order)],
        })
    return series


def red_flag_markers(facts: PatientFacts, spec: TimelineSpec) -> list[dict[str, Any]]:
    """Each red flag the facts raised, named as the cards name it, dated by its latest finding."""
    markers = []
    for fact, name in spec.red_flags.items():
        if not facts.value(fact):
            continue
        days = _finding_days(facts.why(fact))
        day = max(days) if days else facts.red_flag_since
        markers.append({"fact": fact, "name": name,
                        "date": day.isoformat() if day else None,
                        "colour": spec.red_flag_colour})
    # A flag the facts name but the spec does not know is still shown (never hide a red flag).
    known = set(spec.red_flags.values())
    for name in facts.red_flag_names:
        if name not in known:
            since = facts.red_flag_since
            markers.append({"fact": "has_red_flag", "name": name,
                            "date": since.isoformat() if since else None,
                            "colour": spec.red_flag_colour})
    return markers


def cause_markers(facts: PatientFacts, spec: TimelineSpec) -> list[dict[str, Any]]:
    causes = []
    for fact, label in spec.causes.items():
        if not facts.value(fact):
            continue
        days = _finding_days(facts.why(fact))
        causes.append({"fact": fact, "label": label,
                       "date": min(days).isoformat() if days else None,
                       "colour": spec.cause_colour})
    return causes


def _event(record: OrderRecord, lane: str) -> dict[str, Any]:
    return {
        "lane": lane,
        "category": record.category,
        "label": record.label,
        "status": "done" if record.performed else record.status,
        "priority": record.priority,
        "date": record.when.isoformat() if record.when else None,
        "description": record.describe(),
        "reference": record.reference,
    }


def lane_events(facts: PatientFacts, spec: TimelineSpec) -> list[dict[str, Any]]:
    lanes: list[dict[str, Any]] = []
    for lane in spec.lanes:
        events = [_event(r, lane.id) for r in facts.done if r.category in lane.categories]
        events.sort(key=lambda e: (e["date"] is None, e["date"] or ""))
        lanes.append({"id": lane.id, "label": lane.label, "colour": lane.colour,
                      "events": events})
    return lanes


def build_timeline(facts: PatientFacts, spec: TimelineSpec) -> dict[str, Any]:
    onset = facts.foot_drop_onset
    return {
        "patientId": facts.patient_id,
        "asOf": facts.now.date().isoformat(),
        "footDrop": {
            "present": facts.has_foot_drop,
            "side": facts.foot_drop_side,
            "onset": onset.isoformat() if onset else None,
            "durationDays": facts.foot_drop_duration_days,
            "latestDorsiflexionGrade": facts.dorsiflexion_latest_grade,
            "course": course_of(facts),
        },
        "grades": grade_series(facts, spec),
        "redFlags": red_flag_markers(facts, spec),
        "causes": cause_markers(facts, spec),
        "lanes": lane_events(facts, spec),
    }


def course_of(facts: PatientFacts) -> str:
    """The course in the words the pathway uses, read off the facts (no new judgement here)."""
    if facts.red_flag_progressive_weakness:
        return "worsening"
    if facts.dorsiflexion_recovered:
        return "recovered"
    if facts.dorsiflexion_improving:
        return "improving"
    if facts.dorsiflexion_recovery_plateau:
        return "plateau"
    return "unknown"
