"""Conditions and positive Observations matched against the finding value sets."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

from cds_service.facts.base import Dated
from cds_service.facts.model import Finding, Side
from cds_service.facts.reading import (
    NEGATIVE_ANSWERS,
    NEGATIVE_VALUE,
    YES_TEXT,
    clip,
    coded_label,
    concept_label,
    condition_is_active,
    condition_is_history,
    condition_onset,
    observation_time,
    parse_fhir_datetime,
    reference_of,
)
from cds_service.facts.strength import StrengthMixin
from cds_service.knowledge.valuesets import CompiledValueSet


class FindingsMixin(StrengthMixin):
    """Which finding value sets each Condition and positive Observation matches, dated and sided."""

    @cached_property
    def condition_matches(self) -> dict[str, list[Dated]]:
        matches: dict[str, list[Dated]] = {}
        for condition in self.record.of("Condition"):
            code = condition.get("code")
            active = condition_is_active(condition)
            history = condition_is_history(condition)
            if not history:
                continue  # refuted or entered in error: as if it had never been recorded
            onset = condition_onset(condition)
            # Each note is read on its own: a negation or advice in one never reaches the next,
            # and a long note never pushes a later one past the length read of a text.
            note_list = [n for n in condition.get("note") or ()
                         if isinstance(n, Mapping) and isinstance(n.get("text"), str)]

            def dated(vs: CompiledValueSet, condition: Mapping[str, Any] = condition,
                      code: Any = code, note_list: list[Any] = note_list,
                      onset: datetime | None = onset) -> Dated | None:
                if vs.matches_concept(code):
                    return self._dated(condition, code, vs, onset)
                if vs.id not in self.ex.text_only:
                    return None
                found = [n for n in note_list if vs.matches_text(n["text"])]
                if not found:
                    return None
                # Found in a note: name the note, not the condition it is attached to, and date it
                # by the note (a new sign noted today on a problem from last year).
                times = [parse_fhir_datetime(n.get("time")) for n in found]
                noted = max((t for t in times if t is not None), default=None)
                note_text = clip(found[-1]["text"])
                return self._dated(condition, code, vs, noted or onset,
                                   label=f'{concept_label(code)}, note "{note_text}"')

            if active:
                for fact, sets in self.ex.condition_facts.items():
                    hit = next((d for d in map(dated, sets) if d is not None), None)
                    if hit is not None:
                        matches.setdefault(fact, []).append(hit)
                hit = next((d for d in map(dated, self.ex.ces_signs) if d is not None), None)
                if hit is not None:
                    matches.setdefault("ces_sign", []).append(hit)
            for fact, sets in self.ex.history_facts.items():
                vs = next((v for v in sets if v.matches_concept(code)), None)
                if vs is not None:
                    matches.setdefault(fact, []).append(self._dated(condition, code, vs, onset))
        # Positive Observations of the same findings (a symptom checklist, a text-only finding).
        for obs in self.record.of("Observation"):
            if not self._observation_positive(obs):
                continue
            code = obs.get("code")
            moment = observation_time(obs)
            value_text = obs.get("valueString") if isinstance(obs.get("valueString"), str) else ""
            label = (
                f'{concept_label(code)}: "{clip(value_text)}"'
                if value_text and not NEGATIVE_VALUE.search(value_text) else None
            )
            value_concept = obs.get("valueCodeableConcept")
            for vs in self.ex.ces_signs:
                if vs.matches_concept(code) or (
                    vs.id in self.ex.text_only and vs.matches_text(value_text)
                ):
                    matches.setdefault("ces_sign", []).append(
                        self._dated(obs, code, vs, moment, label=label)
                    )
                    break
                if vs.matches_concept(value_concept):
                    # A generic question ("Symptom", "Bladder function") answered with the sign.
                    matches.setdefault("ces_sign", []).append(self._dated(
                        obs, value_concept, vs, moment,
                        label=f"{concept_label(code)}: {coded_label(value_concept, vs)}",
                    ))
                    break
            for fact, sets in self.ex.condition_facts.items():
                for vs in sets:
                    if (vs.id in self.ex.text_only and (
                        vs.matches_concept(code) or vs.matches_text(value_text)
                    )) or (vs.id in self.ex.observation_findings and vs.matches_concept(code)
                           and self._exam_finding(obs)):
                        matches.setdefault(fact, []).append(
                            self._dated(obs, code, vs, moment, label=label)
                        )
                        break
        return matches

    def _dated(
        self, resource: Mapping[str, Any], code: Any, vs: CompiledValueSet,
        moment: datetime | None, label: str | None = None,
    ) -> Dated:
        side = self.side_of(resource, code)
        label = label or coded_label(code, vs)
        if side is not Side.UNKNOWN and side.value not in label.lower():
            label = f"{label}, {side.value}"
        finding = Finding(
            label=label,
            reference=reference_of(resource),
            when=moment.date() if moment else None,
        )
        return Dated(finding, moment, side, vs.id)

    def _exam_finding(self, obs: Mapping[str, Any]) -> bool:
        """For an Observation already found positive (``_observation_positive``): a finding
        charted present - a boolean true, a coded answer, a plain yes or no value at all - and
        no number (a "Foot drop screen" row holding 5/5 is a grade, not the finding)."""
        if any(key in obs for key in ("valueQuantity", "valueInteger", "valueRange",
                                      "valueRatio")):
            return False
        text = obs.get("valueString")
        if text is not None and not (isinstance(text, str) and YES_TEXT.match(text)):
            return False  # free text other than a plain yes ("Yes - left") is not an answer
        return self._grade(obs) is None

    def _observation_positive(self, obs: Mapping[str, Any]) -> bool:
        if obs.get("status") not in self.t["observation_statuses"]:
            return False
        if obs.get("valueBoolean") is False or obs.get("dataAbsentReason") is not None:
            return False
        value_concept = obs.get("valueCodeableConcept")
        if value_concept is not None and NEGATIVE_VALUE.search(concept_label(value_concept)):
            return False
        if isinstance(value_concept, Mapping) and any(
            isinstance(c, Mapping) and (c.get("system"), c.get("code")) in NEGATIVE_ANSWERS
            for c in value_concept.get("coding") or ()
        ):
            return False
        value_string = obs.get("valueString")
        return not (isinstance(value_string, str) and NEGATIVE_VALUE.search(value_string))
