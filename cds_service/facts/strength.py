"""Muscle grades, foot drop (side, onset) and its course (recovered, improving, plateau)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cds_service.facts.base import Dated, ExtractionBase
from cds_service.facts.model import Side, StrengthGrade
from cds_service.facts.reading import (
    as_list,
    concept_label,
    earliest,
    observation_time,
    parse_fhir_datetime,
    reference_of,
)

_GRADE_TEXT = re.compile(
    r"^\s*(?:MRC\s*)?(?:grade\s*)?([0-5])\s*([+-]?)\s*(?:/\s*5)?\s*$", re.IGNORECASE
)
_GRADE_IN_TEXT = re.compile(r"(?<![\d.])([0-5])\s*([+-]?)\s*/\s*5(?![\d.])")
_EARLIER_GRADE = re.compile(
    r"(?i)\(\s*(?:was|previously|prev\.?|from|down from|up from|last)\b[^()]*\)"
    r"|\b(?:was|previously|down from|up from)\s+[0-5]\s*[+-]?\s*/\s*5\b"
)
_UNRELIABLE_GRADE = re.compile(
    r"(?i)\b(pain\w*|limited|effort|give[- ]?way|not tested|unable|inconsistent)\b|\?"
)
_MODIFIER = {"+": 1 / 3, "-": -1 / 3, "": 0.0}


class StrengthMixin(ExtractionBase):
    """Manual muscle test grades per muscle and side; foot drop and its course from them."""

    @cached_property
    def strength(self) -> dict[str, list[StrengthGrade]]:
        """Manual muscle test grades per muscle group, oldest first.

        Read from the Observation itself and from its ``component``s: flowsheet exports often
        send a manual-muscle-test panel with one component per muscle and side ("Left ankle
        dorsiflexion": 2), or a muscle-named panel with one component per side ("Left": 2).
        """
        grades: dict[str, list[StrengthGrade]] = {}
        for obs in self.record.of("Observation"):
            if obs.get("status") not in self.t["observation_statuses"]:
                continue
            code = obs.get("code")
            if self.ex.not_strength.search(concept_label(code)):
                continue
            moment = observation_time(obs)
            if moment is None:
                continue
            muscle = self._muscle(code)
            if muscle is None and self.ex.generic_strength.search(concept_label(code)):
                muscle = next(filter(None, map(self._muscle, as_list(obs.get("bodySite")))), None)
            if muscle is not None:
                self._add_grade(grades, muscle, obs, obs, self.side_of(obs, code), moment)
            for component in obs.get("component") or ():
                if not isinstance(component, Mapping):
                    continue
                part = component.get("code")
                if self.ex.not_strength.search(concept_label(part)):
                    continue
                side = self.side_of(component, part)
                part_muscle = self._muscle(part)
                if part_muscle is None and side is not Side.UNKNOWN:
                    part_muscle = muscle  # "Left" under an "Ankle dorsiflexion" panel
                if part_muscle is None:
                    continue
                if side is Side.UNKNOWN:
                    side = self.side_of(obs, code)
                self._add_grade(grades, part_muscle, obs, component, side, moment)
        for series in grades.values():
            series.sort(key=lambda g: g.order)
        return grades

    def _muscle(self, concept: Any) -> str | None:
        # Ordered: great toe before ankle, so "great toe dorsiflexion" is never the ankle.
        return next((vs.id for vs in self.ex.muscles if vs.matches_concept(concept)), None)

    def _add_grade(
        self, grades: dict[str, list[StrengthGrade]], muscle: str, obs: Mapping[str, Any],
        valued: Mapping[str, Any], side: Side, moment: datetime,
    ) -> None:
        parsed = self._grade(valued)
        if parsed is None:
            return
        grade, recorded_as = parsed
        grades.setdefault(muscle, []).append(
            StrengthGrade(
                muscle=muscle,
                side=side,
                grade=grade,
                recorded_as=recorded_as,
                when=moment,
                reference=reference_of(obs),
                muscle_label=self.ex.muscle_labels.get(muscle, ""),
                issued=parse_fhir_datetime(obs.get("issued")),
            )
        )

    def _grade(self, obs: Mapping[str, Any]) -> tuple[float, str] | None:
        """An MRC 0-5 grade, or None when the value is not one (degrees, newtons, free text)."""
        if isinstance(obs.get("valueInteger"), int) and not isinstance(obs["valueInteger"], bool):
            value = float(obs["valueInteger"])
            return (value, f"{value:g}/5") if 0 <= value <= 5 else None
        quantity = obs.get("valueQuantity")
        if isinstance(quantity, Mapping):
            if not isinstance(quantity.get("value"), int | float) or quantity.get("comparator"):
                return None
            unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
            if unit not in self.ex.grade_units:
                return None
            value = float(quantity["value"])
            return (value, f"{value:g}/5") if 0 <= value <= 5 else None
        text = obs.get("valueString")
        if not isinstance(text, str) and isinstance(obs.get("valueCodeableConcept"), Mapping):
            concept = obs["valueCodeableConcept"]
            text = concept.get("text") or next(
                (c.get(key) for c in concept.get("coding") or () for key in ("display", "code")
                 if isinstance(c, Mapping) and c.get(key) and _GRADE_TEXT.match(str(c[key]))),
                None,
            )
        if isinstance(text, str):
            match = _GRADE_TEXT.match(text)
            if match is None:
                # A grade out of 5 inside words ("Good (4/5)", "4/5 good"): only when the text
                # holds exactly one, so "4/5 -> 2/5" is not read as either.
                # Not when the text says the test was unreliable ("3/5 with pain").
                # An earlier grade quoted as history ("2/5 (was 4/5 on Monday)") is not this one.
                current = _EARLIER_GRADE.sub(" ", text)
                found = {m.groups() for m in _GRADE_IN_TEXT.finditer(current)}
                reliable = not _UNRELIABLE_GRADE.search(current)
                match = _GRADE_IN_TEXT.search(current) if len(found) == 1 and reliable else None
            if match:
                base, modifier = match.group(1), match.group(2)
                value = min(5.0, max(0.0, float(base) + _MODIFIER[modifier]))
                return value, f"{base}{modifier}/5"
        return None

    def latest_by_side(self, muscle: str) -> dict[Side, StrengthGrade]:
        latest: dict[Side, StrengthGrade] = {}
        for grade in self.strength.get(muscle, ()):
            latest[grade.side] = grade  # series is sorted, so the last one wins
        return latest

    def weak_since(self, grade: StrengthGrade, limit: float) -> datetime:
        """When the run of grades at or below ``limit`` that ends with ``grade`` began."""
        start = grade.when
        series = [
            g for g in self.strength.get(grade.muscle, ())
            if g.side == grade.side and g.when < grade.when
        ]
        for earlier in reversed(series):
            if earlier.grade > limit + 1e-9:
                break
            start = earlier.when
        return start

    def weak_latest(self, muscle: str, limit: float) -> list[StrengthGrade]:
        return [g for g in self.latest_by_side(muscle).values() if g.grade <= limit + 1e-9]


    def _foot_drop(self, matches: Mapping[str, list[Dated]]) -> None:
        v, f = self.values, self.findings
        max_grade = float(self.t["foot_drop_max_grade"])
        df = self.ex.dorsiflexion
        grades = self.strength.get(df, [])
        latest = self.latest_by_side(df)

        # Since when each side is affected: active foot-drop Conditions (onset), and sides whose
        # latest dorsiflexion grade is weak (start of the run of weak grades).
        side_dates: dict[Side, datetime | None] = {}
        evidence: list[Any] = []
        for hit in matches.get("has_foot_drop", []):
            later_exam = latest.get(hit.side)
            if (later_exam is not None and later_exam.grade >= 5 and hit.moment is not None
                    and later_exam.when > hit.moment):
                # A normal grade on that side after the problem was recorded: the problem-list
                # entry is stale (problem lists often are), so it must not make a foot "dropped"
                # (nor, with the other foot, bilateral).
                continue
            evidence.append(hit.finding)
            side_dates[hit.side] = (
                earliest(side_dates[hit.side], hit.moment) if hit.side in side_dates
                else hit.moment
            )
        for grade in self.weak_latest(df, max_grade):
            start = self.weak_since(grade, max_grade)
            side_dates[grade.side] = (
                earliest(side_dates[grade.side], start) if grade.side in side_dates else start
            )
            evidence.append(grade)

        v["has_foot_drop"] = bool(side_dates)
        v["dorsiflexion_grades"] = tuple(grades)
        if latest:
            v["dorsiflexion_latest_grade"] = min(g.grade for g in latest.values())
            v["dorsiflexion_recovered"] = all(g.grade >= 5 for g in latest.values())
            if v["dorsiflexion_recovered"]:
                f["dorsiflexion_recovered"] = list(latest.values())
        if evidence:
            f["has_foot_drop"] = evidence
        if grades:
            f["dorsiflexion_grades"] = grades

        known = set(side_dates) - {Side.UNKNOWN}
        if Side.BILATERAL in known or {Side.LEFT, Side.RIGHT} <= known:
            side = Side.BILATERAL
        elif len(known) == 1:
            side = next(iter(known))
        else:
            side = Side.UNKNOWN
        v["foot_drop_side"] = side.value
        dates = [d for d in side_dates.values() if d is not None]
        if dates:
            onset = min(dates).date()
            v["foot_drop_onset"] = onset
            v["foot_drop_duration_days"] = max(0, (self.now.date() - onset).days)

        # Both feet affected: the red flag dates from when the second foot became affected.
        if side is Side.BILATERAL:
            left, right = side_dates.get(Side.LEFT), side_dates.get(Side.RIGHT)
            candidates = [side_dates.get(Side.BILATERAL)]
            if left and right:
                candidates.append(max(left, right))
            dated = [c for c in candidates if c is not None]
            self.bilateral_since = max(dated) if dated else None

        self._recovery(grades)

    def _recovery(self, grades: Sequence[StrengthGrade]) -> None:
        """Per side: improving (latest better than a recent grade) or plateaued (latest no better
        than it was plateau_days or more before)."""
        t, v, f = self.t, self.values, self.findings
        window = timedelta(days=int(t["improving_window_days"]))
        plateau_gap = timedelta(days=int(t["plateau_days"]))
        improving_any, plateau_any = False, False
        for side in dict.fromkeys(g.side for g in grades):
            series = [g for g in grades if g.side == side]
            last = series[-1]
            worse_before = [
                g for g in series[:-1]
                if g.grade < last.grade - 1e-9 and last.when - g.when <= window
            ]
            if worse_before:
                improving_any = True
                f.setdefault("dorsiflexion_improving", []).extend([worse_before[-1], last])
            # The most recent grade at least plateau_days before the latest one.
            reference = [g for g in series if last.when - g.when >= plateau_gap]
            if not reference or last.grade >= 5:
                continue
            since_reference = [g for g in series if g.when > reference[-1].when]
            if all(last.grade <= g.grade + 1e-9 for g in [reference[-1], *since_reference]):
                plateau_any = True
                f.setdefault("dorsiflexion_recovery_plateau", []).extend([reference[-1], last])
        v["dorsiflexion_improving"] = improving_any
        v["dorsiflexion_recovery_plateau"] = plateau_any
