"""From a patient's validated FHIR resources to ``PatientFacts``.

Every threshold and code list comes from ``cards/`` (facts.yaml and the value sets); this module
only knows how FHIR records dates, statuses, laterality and muscle grades.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

from cds_service.facts.model import (
    Finding,
    LabValue,
    OrderRecord,
    PatientFacts,
    Side,
    StrengthGrade,
)
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.loader import Knowledge
from cds_service.knowledge.valuesets import CompiledValueSet, canonical_coding

INACTIVE_VERIFICATION = frozenset({"refuted", "entered-in-error"})
ACTIVE_CLINICAL = frozenset({"active", "recurrence", "relapse"})
# Answers that do not assert the finding: "no" and its variants, and "unknown" (a sign that was
# not assessed is not a sign that is present). "Pt denies" and a bare "N" (flowsheet shorthand)
# included.
NEGATIVE_VALUE = re.compile(
    r"(?i)^\s*(?:(?:pt|patient)\s+)?(no|none|nil|absent|negative|not present|denies|denied|false"
    r"|unknown|not known|not assessed|not tested|not examined|not done|unable to assess|n)\b"
)
_NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
_YES_TEXT = re.compile(r"(?i)^\s*(?:yes|y|present|positive|pos)\b")
# Coded answers of the same kinds, for a valueCodeableConcept sent without display or text.
NEGATIVE_ANSWERS = frozenset({
    ("http://snomed.info/sct", "373067005"),  # No
    ("http://snomed.info/sct", "2667000"),  # Absent
    ("http://snomed.info/sct", "260385009"),  # Negative
    ("http://snomed.info/sct", "261665006"),  # Unknown
    ("http://loinc.org", "LA32-8"),  # No
    ("http://loinc.org", "LA4489-6"),  # Unknown
    ("http://terminology.hl7.org/CodeSystem/v2-0136", "N"),  # No
    (_NULL_FLAVOR, "UNK"), (_NULL_FLAVOR, "ASKU"), (_NULL_FLAVOR, "NASK"), (_NULL_FLAVOR, "NI"),
    (_NULL_FLAVOR, "NA"),
})
# "3", "3/5", "3-/5", "4+ / 5", "MRC 3", "grade 3/5"; a modifier is worth a third of a grade.
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
_BILATERAL_TEXT = re.compile(r"(?i)\b(bilateral|both|BLE)\b")
# Flowsheet shorthand too: "L ankle DF", "LLE", "Lt"; a lone L or R, but not "L5", "L-spine",
# "L4/L5" or "L/R".
_LEFT_TEXT = re.compile(r"(?i)\bleft\b|\(L\)|\bLT\b|\bLLE\b|(?<![\w/-])L(?![\w/-])")
_RIGHT_TEXT = re.compile(r"(?i)\bright\b|\(R\)|\bRT\b|\bRLE\b|(?<![\w/-])R(?![\w/-])")


# --------------------------------------------------------------------------------------------
# FHIR reading helpers
# --------------------------------------------------------------------------------------------
def parse_fhir_datetime(value: Any) -> datetime | None:
    """FHIR date/dateTime/instant (YYYY, YYYY-MM, YYYY-MM-DD, or full) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        if len(text) == 10:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def concept_label(concept: Any) -> str:
    if not isinstance(concept, Mapping):
        return "unnamed"
    if isinstance(concept.get("text"), str) and concept["text"].strip():
        return concept["text"].strip()
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and coding.get("display"):
            return str(coding["display"])
    for coding in concept.get("coding") or ():
        if isinstance(coding, Mapping) and coding.get("code"):
            return str(coding["code"])
    return "unnamed"


_SYSTEM_NAMES = {
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://snomed.info/sct": "SNOMED CT",
    "http://loinc.org": "LOINC",
    "http://www.ama-assn.org/go/cpt": "CPT",
    "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets": "HCPCS",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RxNorm",
    "http://hl7.org/fhir/sid/ndc": "NDC",
}


def coded_label(concept: Any, valueset: CompiledValueSet | None = None) -> str:
    """'Foot drop, left foot (ICD-10-CM M21.372)': the text plus the code that matched."""
    label = concept_label(concept)
    codings = list(valueset.matching_codings(concept)) if valueset else []
    if not codings and isinstance(concept, Mapping):
        codings = [c for c in concept.get("coding") or () if isinstance(c, Mapping)][:1]
    for coding in codings:
        system = _SYSTEM_NAMES.get(str(coding.get("system")), "code")
        code = coding.get("code")
        if code and str(code) not in label:
            return f"{label} ({system} {code})"
    return label


_STATUS_SYSTEMS = frozenset({
    "http://terminology.hl7.org/CodeSystem/condition-clinical",
    "http://terminology.hl7.org/CodeSystem/condition-ver-status",
})
_STATUS_CODES = frozenset({
    "active", "recurrence", "relapse", "inactive", "remission", "resolved",
    "unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error",
})


def _status_code(concept: Any) -> str | None:
    """The FHIR status a clinicalStatus/verificationStatus holds. EHRs put a local coding beside
    (often before) the HL7 one ("1 Active", "Ruled out"): the HL7 coding wins, then a coding
    whose code or display is a FHIR status word. A status that cannot be read is None, as if
    absent: an unreadable local code must neither hide a red flag nor invent one."""
    if not isinstance(concept, Mapping):
        return None
    codings = [c for c in concept.get("coding") or () if isinstance(c, Mapping)]
    for coding in codings:
        if str(coding.get("system", "")).rstrip("/") in _STATUS_SYSTEMS and coding.get("code"):
            return str(coding["code"])
    for coding in codings:
        for key in ("code", "display"):
            word = str(coding.get(key) or "").strip().lower()
            if word in _STATUS_CODES:
                return word
    word = str(concept.get("text") or "").strip().lower()
    return word if word in _STATUS_CODES else None


def condition_is_active(condition: Mapping[str, Any]) -> bool:
    if _status_code(condition.get("verificationStatus")) in INACTIVE_VERIFICATION:
        return False
    clinical = _status_code(condition.get("clinicalStatus"))
    if clinical is None:
        # No clinical status: active unless an abatement says it ended.
        return not any(k.startswith("abatement") for k in condition)
    return clinical in ACTIVE_CLINICAL


def condition_is_history(condition: Mapping[str, Any]) -> bool:
    """Any record that is not refuted or entered in error, resolved included."""
    return _status_code(condition.get("verificationStatus")) not in INACTIVE_VERIFICATION


_YEAR = re.compile(r"\b(19[5-9]\d|20\d\d)\b")


def condition_onset(condition: Mapping[str, Any]) -> datetime | None:
    """onsetDateTime, onsetPeriod.start, a date or a year in onsetString ("since 2016": 1 January,
    the earliest it can mean), else recordedDate (when the problem was charted, often later)."""
    onset_string = condition.get("onsetString")
    from_string = None
    if isinstance(onset_string, str):
        from_string = parse_fhir_datetime(onset_string.strip())
        year = _YEAR.search(onset_string) if from_string is None else None
        if year:
            from_string = datetime(int(year.group(1)), 1, 1, tzinfo=UTC)
    return (
        parse_fhir_datetime(condition.get("onsetDateTime"))
        or parse_fhir_datetime((condition.get("onsetPeriod") or {}).get("start"))
        or from_string
        or parse_fhir_datetime(condition.get("recordedDate"))
    )


def observation_time(obs: Mapping[str, Any]) -> datetime | None:
    return (
        parse_fhir_datetime(obs.get("effectiveDateTime"))
        or parse_fhir_datetime((obs.get("effectivePeriod") or {}).get("start"))
        or parse_fhir_datetime(obs.get("effectiveInstant"))
        or parse_fhir_datetime(obs.get("issued"))
    )


def _reference(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', 'unidentified')}"


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dated:
    finding: Finding
    moment: datetime | None
    side: Side
    kind: str  # the value set that matched: which finding this is


class FactExtractor:
    """Compiled once from the knowledge; ``extract`` runs per request."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge
        t = knowledge.thresholds
        self.t = t
        self.vs = knowledge.valueset
        self.condition_facts: dict[str, tuple[CompiledValueSet, ...]] = {
            fact: tuple(self.vs(v) for v in sets) for fact, sets in t["condition_facts"].items()
        }
        self.history_facts = {
            fact: tuple(self.vs(v) for v in sets) for fact, sets in t["history_facts"].items()
        }
        self.ces_signs = tuple(self.vs(v) for v in t["cauda_equina_signs"])
        self.text_only = frozenset(t["text_only_findings"])
        self.observation_findings = frozenset(
            self.vs(v).id for v in t.get("observation_findings", ())
        )
        self.muscles = tuple(self.vs(v) for v in t["muscle_groups"])
        self.dorsiflexion = t["dorsiflexion_group"]
        for group in t["multilevel_other_groups"]:
            self.vs(group)  # an unknown name fails at load, like every other knowledge reference
        self.order_sets = tuple(self.vs(v) for v in t["order_categories"])
        self.lab_sets = tuple(self.vs(v) for v in t["lab_categories"])
        self.side_sets = tuple(
            (self.vs(vs_id), Side(side)) for vs_id, side in t["body_site_sides"].items()
        )
        self.muscle_labels: Mapping[str, str] = t.get("muscle_labels", {})
        self.laterality_codes: Mapping[str, Mapping[str, str]] = t.get("laterality_codes", {})
        self.not_strength = re.compile(t["not_strength_pattern"])
        self.generic_strength = re.compile(t.get("generic_strength_pattern") or r"(?!)")
        self.grade_units = frozenset(u.lower() for u in t["grade_units"])

    # -- main entry -----------------------------------------------------------------------------
    def extract(self, record: PatientRecord, now: datetime) -> PatientFacts:
        return _Extraction(self, record, now).facts


class _Extraction:
    def __init__(self, ex: FactExtractor, record: PatientRecord, now: datetime) -> None:
        self.ex = ex
        self.t = ex.t
        self.record = record
        self.now = now
        self.findings: dict[str, list[Any]] = {}
        self.values: dict[str, Any] = {}
        self.bilateral_since: datetime | None = None

    def recent(self, moment: datetime | date | None) -> bool:
        """Within red_flag_recent_days before now (a day of clock skew into the future is fine)."""
        if moment is None:
            return False
        moment_day = moment.date() if isinstance(moment, datetime) else moment
        age = (self.now.date() - moment_day).days
        return -1 <= age <= int(self.t["red_flag_recent_days"])

    # -- sides ----------------------------------------------------------------------------------
    def side_of(self, resource: Mapping[str, Any], concept: Any) -> Side:
        """Laterality from the code itself, else bodySite (coded, then text), else the code text.
        Every coding counts: with no bilateral code, Epic/IMO send "bilateral foot drop" as one
        Condition coded both M21.371 and M21.372."""
        coded = set()
        for coding in (concept or {}).get("coding") or ():
            system, code = canonical_coding(str(coding.get("system")), str(coding.get("code")))
            side = self.ex.laterality_codes.get(system, {}).get(code)
            if side:
                coded.add(Side(side))
        if Side.BILATERAL in coded or {Side.LEFT, Side.RIGHT} <= coded:
            return Side.BILATERAL
        if coded:
            return coded.pop()
        sites = resource.get("bodySite")
        site_list = sites if isinstance(sites, list) else [sites] if sites else []
        for site in site_list:
            for valueset, side in self.ex.side_sets:
                if valueset.matches_concept(site):
                    return side
        for site in site_list:
            side = _side_from_text(concept_label(site))
            if side is not Side.UNKNOWN:
                return side
        return _side_from_text(concept_label(concept))

    # -- conditions and positive findings ---------------------------------------------------------
    @cached_property
    def condition_matches(self) -> dict[str, list[_Dated]]:
        matches: dict[str, list[_Dated]] = {}
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
                      onset: datetime | None = onset) -> _Dated | None:
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
                note_text = _clip(found[-1]["text"])
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
                f'{concept_label(code)}: "{_clip(value_text)}"'
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
    ) -> _Dated:
        side = self.side_of(resource, code)
        label = label or coded_label(code, vs)
        if side is not Side.UNKNOWN and side.value not in label.lower():
            label = f"{label}, {side.value}"
        finding = Finding(
            label=label,
            reference=_reference(resource),
            when=moment.date() if moment else None,
        )
        return _Dated(finding, moment, side, vs.id)

    def _exam_finding(self, obs: Mapping[str, Any]) -> bool:
        """For an Observation already found positive (``_observation_positive``): a finding
        charted present - a boolean true, a coded answer, a plain yes or no value at all - and
        no number (a "Foot drop screen" row holding 5/5 is a grade, not the finding)."""
        if any(key in obs for key in ("valueQuantity", "valueInteger", "valueRange",
                                      "valueRatio")):
            return False
        text = obs.get("valueString")
        if text is not None and not (isinstance(text, str) and _YES_TEXT.match(text)):
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

    # -- strength -------------------------------------------------------------------------------
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
                muscle = next(filter(None, map(self._muscle, _as_list(obs.get("bodySite")))), None)
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
                reference=_reference(obs),
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

    # -- orders, procedures, reports ------------------------------------------------------------
    @cached_property
    def done(self) -> list[OrderRecord]:
        t = self.t
        records: list[OrderRecord] = []

        def add(resource: Mapping[str, Any], concept: Any, status: str, performed: bool,
                moment: datetime | None, priority: str | None) -> None:
            for vs in self.ex.order_sets:
                if vs.matches_concept(concept):
                    records.append(
                        OrderRecord(
                            category=vs.id,
                            resource_type=str(resource.get("resourceType")),
                            reference=_reference(resource),
                            status=status,
                            label=coded_label(concept, vs),
                            priority=priority,
                            when=moment.date() if moment else None,
                            performed=performed,
                        )
                    )

        def occurrence(resource: Mapping[str, Any]) -> datetime | None:
            return parse_fhir_datetime(resource.get("occurrenceDateTime")) or parse_fhir_datetime(
                (resource.get("occurrencePeriod") or {}).get("start")
            )

        for sr in self.record.of("ServiceRequest"):
            status = str(sr.get("status"))
            if status in t["order_statuses_ordered"]:
                performed = status in t["order_statuses_performed"]
                authored = parse_fhir_datetime(sr.get("authoredOn"))
                # A completed order dates from when it was done; an open one from when ordered.
                moment = (occurrence(sr) or authored) if performed else (authored or occurrence(sr))
                add(sr, sr.get("code"), status, performed, moment, sr.get("priority"))
        for dr in self.record.of("DeviceRequest"):
            status = str(dr.get("status"))
            if status in t["order_statuses_ordered"]:
                concept = dr.get("codeCodeableConcept") or _referenced_concept(dr, "codeReference")
                add(dr, concept, status, status in t["order_statuses_performed"],
                    parse_fhir_datetime(dr.get("authoredOn")) or occurrence(dr),
                    dr.get("priority"))
        for proc in self.record.of("Procedure"):
            status = str(proc.get("status"))
            moment = parse_fhir_datetime(proc.get("performedDateTime")) or parse_fhir_datetime(
                (proc.get("performedPeriod") or {}).get("start")
            )
            if status in t["procedure_statuses_done"]:
                add(proc, proc.get("code"), status, True, moment, None)
        for report in self.record.of("DiagnosticReport"):
            status = str(report.get("status"))
            if status in t["report_statuses_final"]:
                moment = (
                    parse_fhir_datetime(report.get("effectiveDateTime"))
                    or parse_fhir_datetime((report.get("effectivePeriod") or {}).get("start"))
                    or parse_fhir_datetime(report.get("issued"))
                )
                add(report, report.get("code"), status, True, moment, None)
        for study in self.record.of("ImagingStudy"):
            if str(study.get("status")) not in t["imaging_statuses_done"]:
                continue
            moment = parse_fhir_datetime(study.get("started"))
            concepts = list(study.get("procedureCode") or ())
            if study.get("description"):
                concepts.append({"text": study["description"]})
            for concept in concepts:
                before = len(records)
                add(study, concept, str(study.get("status")), True, moment, None)
                if len(records) > before:
                    break
        for med in self.record.of("MedicationRequest"):
            status = str(med.get("status"))
            if status in t["medication_statuses_current"]:
                concept = med.get("medicationCodeableConcept") or _referenced_concept(
                    med, "medicationReference"
                )
                add(med, concept, status, False, parse_fhir_datetime(med.get("authoredOn")),
                    med.get("priority"))
        return records

    def _lab_value(self, kind: str, quantity: Mapping[str, Any], moment: datetime,
                   obs: Mapping[str, Any]) -> LabValue | None:
        """A lab value in the unit the rules compare with. A creatinine clearance in mL/s is
        converted to mL/min; one normalised to 1.73 m2 is an eGFR-like value, not the CrCl the
        dalfampridine label uses, so it is read as eGFR. A value with a comparator (">60") is
        kept only as a bound that cannot cross the CrCl limit the wrong way: "<" bounds and
        ">" bounds at or below the limit decide nothing and are dropped."""
        value = float(quantity["value"])
        unit = str(quantity.get("unit") or quantity.get("code") or "")
        compact = unit.replace(" ", "").lower()
        if kind == "creatinine-clearance":
            if "1.73" in compact:
                kind = "egfr"
            elif compact in {"ml/s", "ml/sec"}:
                value, unit = value * 60, "mL/min"
        comparator = str(quantity.get("comparator") or "")
        if comparator:
            limit = float(self.t["crcl_limit_ml_min"])
            if not (comparator in (">", ">=") and value > limit):
                return None
            unit = f"{unit} ({comparator}{quantity['value']:g})".strip()
        return LabValue(kind=kind, value=value, unit=unit, when=moment,
                        reference=_reference(obs))

    def of_category(self, *categories: str) -> list[OrderRecord]:
        return [r for r in self.done if r.category in categories]

    # -- labs -----------------------------------------------------------------------------------
    @cached_property
    def labs(self) -> list[LabValue]:
        values: list[LabValue] = []
        for obs in self.record.of("Observation"):
            if obs.get("status") not in self.t["observation_statuses"]:
                continue
            quantity = obs.get("valueQuantity")
            if not isinstance(quantity, Mapping) or not isinstance(
                quantity.get("value"), int | float
            ):
                continue
            moment = observation_time(obs)
            if moment is None:
                continue
            for vs in self.ex.lab_sets:
                if vs.matches_concept(obs.get("code")):
                    lab = self._lab_value(vs.id, quantity, moment, obs)
                    if lab is not None:
                        values.append(lab)
                    break
        values.sort(key=lambda v: v.when)
        return values

    # -- assemble -------------------------------------------------------------------------------
    @cached_property
    def facts(self) -> PatientFacts:
        v = self.values
        f = self.findings
        matches = self.condition_matches

        for fact in (*self.ex.condition_facts, *self.ex.history_facts):
            hits = matches.get(fact, [])
            v[fact] = bool(hits)
            if hits:
                f[fact] = [h.finding for h in hits]

        self._foot_drop(matches)
        self._causes()
        self._red_flags(matches)
        self._already_done()
        self._renal()
        v["age_years"] = self._age()

        return PatientFacts(
            patient_id=self.record.patient_id,
            now=self.now,
            findings={k: tuple(items) for k, items in f.items()},
            done=tuple(self.done),
            labs=tuple(self.labs),
            **v,
        )

    def _age(self) -> int | None:
        patient = self.record.patient or {}
        born = parse_fhir_datetime(patient.get("birthDate"))
        if born is None:
            return None
        today = self.now.date()
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))

    def _foot_drop(self, matches: Mapping[str, list[_Dated]]) -> None:
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
                _earliest(side_dates[hit.side], hit.moment) if hit.side in side_dates
                else hit.moment
            )
        for grade in self.weak_latest(df, max_grade):
            start = self.weak_since(grade, max_grade)
            side_dates[grade.side] = (
                _earliest(side_dates[grade.side], start) if grade.side in side_dates else start
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

    def _causes(self) -> None:
        t, v, f = self.t, self.values, self.findings
        v["central_cause"] = any(v.get(c) for c in t["central_causes"])
        v["peripheral_cause"] = any(v.get(c) for c in t["peripheral_causes"])
        for fact, causes in (("central_cause", t["central_causes"]),
                             ("peripheral_cause", t["peripheral_causes"])):
            items = [item for c in causes for item in f.get(c, [])]
            if items:
                f[fact] = items
        localising = any(v.get(c) for c in t["localising_causes"])
        v["cause_known"] = localising or bool(v.get("has_peroneal_neuropathy"))
        v["cause_unknown_or_peroneal_only"] = not localising
        radicular = v.get("has_lumbar_radiculopathy") or v.get("has_lumbar_disc_herniation")
        weak = [
            g
            for muscle in self.strength
            for g in self.latest_by_side(muscle).values()
            if g.grade < 5
        ]
        v["has_radiculopathy_with_motor_deficit"] = bool(
            radicular and (weak or v.get("has_foot_drop"))
        )

    def _red_flags(self, matches: Mapping[str, list[_Dated]]) -> None:
        t, v, f = self.t, self.values, self.findings
        flags: list[tuple[str, date]] = []
        df = self.ex.dorsiflexion

        # Progressive weakness: same side, both recent, no more than the window apart, and the
        # later grade at least one MRC grade below the earlier one.
        window = timedelta(days=int(t["progression_window_days"]))
        drop = float(t["progression_min_drop"])
        recent = [g for g in self.strength.get(df, []) if self.recent(g.when)]
        # A grade recorded without a side is compared with the others when the record names only
        # one side for foot drop (grades and foot-drop Conditions): "left 4/5", then "2/5".
        known = {g.side for g in self.strength.get(df, [])}
        known |= {h.side for h in matches.get("has_foot_drop", [])}
        known.discard(Side.UNKNOWN)
        one_side = len(known) == 1 and known <= {Side.LEFT, Side.RIGHT}
        progression: list[StrengthGrade] = []
        for i, earlier in enumerate(recent):
            for later in recent[i + 1:]:
                fell = max(earlier.grade - later.grade, earlier.base_grade - later.base_grade)
                same_side = later.side == earlier.side or (
                    one_side and Side.UNKNOWN in (later.side, earlier.side)
                )
                if (
                    same_side
                    and later.order > earlier.order
                    and later.when - earlier.when <= window
                    and fell >= drop - 1e-9
                ):
                    progression = [earlier, later]
        if progression:
            v["red_flag_progressive_weakness"] = True
            f["red_flag_progressive_weakness"] = progression
            flags.append(("progressive weakness", progression[-1].day))

        # Bilateral foot drop that became bilateral recently.
        if self.bilateral_since is not None and self.recent(self.bilateral_since):
            v["red_flag_bilateral_foot_drop"] = True
            f["red_flag_bilateral_foot_drop"] = list(f.get("has_foot_drop", []))
            flags.append(("bilateral foot drop", self.bilateral_since.date()))

        # Cauda equina signs, recent and active, with foot drop or lumbar radicular disease.
        context = (
            v.get("has_foot_drop")
            or v.get("has_lumbar_radiculopathy")
            or v.get("has_lumbar_disc_herniation")
        )
        signs = [h for h in matches.get("ces_sign", []) if self.recent(h.moment)]
        if context and signs:
            v["red_flag_cauda_equina"] = True
            f["red_flag_cauda_equina"] = [h.finding for h in signs]
            # A sign appeared when it was first recorded in the window: charting the same sign
            # again (post-operative day 2) is not a new red flag, but a different sign is.
            first_seen: dict[str, datetime] = {}
            for hit in signs:
                if hit.moment is not None:
                    first_seen[hit.kind] = min(first_seen.get(hit.kind, hit.moment), hit.moment)
            flags.append(("cauda equina signs", max(first_seen.values()).date()))

        # Multi-level motor deficit: weak dorsiflexion and another weak lower-limb group, where
        # the combination began recently (a long-standing, stable deficit is not a red flag).
        limit = float(t["multilevel_max_grade"])
        weak_df = self.weak_latest(df, limit)
        other_groups = set(t["multilevel_other_groups"])
        weak_other = [
            g for muscle in self.strength if muscle in other_groups
            for g in self.weak_latest(muscle, limit)
        ]
        if weak_other:
            v["other_weak_muscles"] = tuple(weak_other)
        if weak_df and weak_other:
            since = max(
                min(self.weak_since(g, limit) for g in weak_df),
                min(self.weak_since(g, limit) for g in weak_other),
            )
            if self.recent(since):
                v["red_flag_multilevel_deficit"] = True
                f["red_flag_multilevel_deficit"] = weak_df + weak_other
                flags.append(("multi-level motor deficit", since.date()))

        v["has_red_flag"] = bool(flags)
        if flags:
            v["red_flag_names"] = tuple(name for name, _ in flags)
            # The latest red flag: an MRI done before it does not answer it.
            v["red_flag_since"] = max(day for _, day in flags)
            f["has_red_flag"] = [
                item for key in ("red_flag_progressive_weakness", "red_flag_bilateral_foot_drop",
                                 "red_flag_cauda_equina", "red_flag_multilevel_deficit")
                for item in f.get(key, [])
            ]

    def current_episode(self, records: list[OrderRecord]) -> list[OrderRecord]:
        """The records that can belong to the current foot drop: dated on or after its onset
        (less ``episode_grace_days``, for an onset charted late), or undated. An NCS, a discectomy
        or a referral from years before this foot drop began says nothing about it. Medication
        orders are current by their status, whatever their date."""
        onset = self.values.get("foot_drop_onset")
        if onset is None:
            return records
        start = onset - timedelta(days=int(self.t["episode_grace_days"]))
        return [r for r in records
                if r.when is None or r.when >= start or r.resource_type == "MedicationRequest"]

    def _already_done(self) -> None:
        t, v, f = self.t, self.values, self.findings
        mri = self.current_episode(self.of_category("lumbar-mri"))
        if mri:
            newest = max(mri, key=lambda r: r.when or date.min)
            v["lumbar_mri_ordered"] = True
            v["lumbar_mri_priority"] = newest.priority
            v["lumbar_mri_date"] = newest.when
            f["lumbar_mri_ordered"] = mri
        performed = [r for r in mri if r.performed]
        v["lumbar_mri_performed"] = bool(performed)
        if performed:
            f["lumbar_mri_performed"] = performed
        urgent = set(t["urgent_priorities"])
        open_statuses = set(t["order_statuses_ordered"]) - set(t["order_statuses_performed"])
        pending = [
            r for r in mri
            if not r.performed and r.status in open_statuses and r.priority in urgent
            and not any(p.when and r.when and p.when >= r.when for p in performed)
        ]
        v["lumbar_mri_urgent_pending"] = bool(pending)
        if pending:
            f["lumbar_mri_urgent_pending"] = pending
        since = v.get("red_flag_since")
        if since is not None:
            # Answered only by an MRI done, or ordered urgent/stat, on or after the latest red flag.
            answering = [
                r for r in mri
                if r.when is not None and r.when >= since and (r.performed or r.priority in urgent)
            ]
            v["lumbar_mri_urgent_since_red_flag"] = bool(answering)
            if answering:
                f["lumbar_mri_urgent_since_red_flag"] = answering
            referred = [
                r for r in self.of_category("spine-surgery-referral")
                if r.when is not None and r.when >= since and r.priority in urgent
            ]
            v["spine_surgery_referral_since_red_flag"] = bool(referred)
            if referred:
                f["spine_surgery_referral_since_red_flag"] = referred
        any_status = {
            "ncs_emg_done": ("ncs-emg",),
            "afo_done": ("afo",),
            "fes_done": ("fes",),
            "afo_or_fes_done": ("afo", "fes"),
            "pt_referral_done": ("physical-therapy",),
            "botulinum_toxin_done": ("botulinum-toxin",),
            "lumbar_decompression_ordered": ("lumbar-decompression",),
            "spine_surgery_referral_done": ("spine-surgery-referral",),
            "peroneal_decompression_done": ("peroneal-nerve-decompression",),
            "tendon_transfer_or_arthrodesis_ordered": ("tendon-transfer", "ankle-arthrodesis"),
        }
        for fact, categories in any_status.items():
            hits = self.current_episode(self.of_category(*categories))
            v[fact] = bool(hits)
            if hits:
                f[fact] = hits
        performed_only = {
            "lumbar_decompression_done": ("lumbar-decompression",),
            "tendon_transfer_or_arthrodesis_done": ("tendon-transfer", "ankle-arthrodesis"),
        }
        for fact, categories in performed_only.items():
            hits = [r for r in self.current_episode(self.of_category(*categories))
                    if r.performed]
            v[fact] = bool(hits)
            if hits:
                f[fact] = hits
        # History, whatever the episode: a discectomy years ago makes a new herniation a
        # recurrence (the fusion rule's exception).
        prior = [r for r in self.of_category("lumbar-decompression") if r.performed]
        v["prior_lumbar_decompression"] = bool(prior)
        if prior:
            f["prior_lumbar_decompression"] = prior
        dalfampridine = [
            r for r in self.of_category("dalfampridine") if r.resource_type == "MedicationRequest"
        ]
        v["on_dalfampridine"] = bool(dalfampridine)
        if dalfampridine:
            f["on_dalfampridine"] = dalfampridine

    def _renal(self) -> None:
        t, v, f = self.t, self.values, self.findings
        lookback = timedelta(days=int(t["renal_lookback_days"]))
        recent = [lab for lab in self.labs if self.now - lab.when <= lookback]
        crcl = [lab for lab in recent if lab.kind == "creatinine-clearance"]
        egfr = [lab for lab in recent if lab.kind == "egfr"]
        v["renal_function_known"] = bool(recent)  # CrCl, eGFR or serum creatinine
        if recent:
            f["renal_function_known"] = recent[-1:]
        # A CrCl older than an eGFR or serum creatinine taken since (another day) no longer
        # describes the kidneys: a CrCl of 85 from last winter must not clear a drug this week
        # when this week's eGFR is 25. It is set aside and the cards ask for a new estimate.
        if crcl:
            newer = [lab for lab in recent if lab.kind != "creatinine-clearance"
                     and lab.when.date() > crcl[-1].when.date()]
            if newer:
                v["crcl_superseded"] = True
                f["crcl_superseded"] = [crcl[-1], newer[-1]]
                crcl = []
        if crcl:
            v["crcl_latest"] = crcl[-1].value
            f["crcl_latest"] = crcl[-1:]
            v["crcl_at_or_below_limit"] = crcl[-1].value <= float(t["crcl_limit_ml_min"])
        if egfr:
            v["egfr_latest"] = egfr[-1].value
            f["egfr_latest"] = egfr[-1:]
        v["only_egfr_available"] = bool(egfr) and not crcl


# What a contained Medication / Device is: its code (Device: type, else its name).
_CONTAINED_CODE = {"Medication": ("code",), "Device": ("type",)}


def _referenced_concept(resource: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The concept behind ``medicationReference`` / ``codeReference``: the contained resource's
    code when the reference is local ("#med1"), with the reference's display as its text."""
    reference = resource.get(field) or {}
    display = reference.get("display") or ""
    ref = reference.get("reference")
    if isinstance(ref, str) and ref.startswith("#"):
        for contained in resource.get("contained") or ():
            if not isinstance(contained, Mapping) or contained.get("id") != ref[1:]:
                continue
            for key in _CONTAINED_CODE.get(str(contained.get("resourceType")), ()):
                code = contained.get(key)
                if isinstance(code, Mapping):
                    return {**code, "text": code.get("text") or display}
            names = [n.get("name") for n in contained.get("deviceName") or ()
                     if isinstance(n, Mapping) and n.get("name")]
            if names:
                return {"text": " ".join([display, *names]).strip()}
    return {"text": display}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value else []


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _side_from_text(text: str) -> Side:
    if _BILATERAL_TEXT.search(text):
        return Side.BILATERAL
    left, right = bool(_LEFT_TEXT.search(text)), bool(_RIGHT_TEXT.search(text))
    if left and right:
        return Side.BILATERAL
    if left:
        return Side.LEFT
    if right:
        return Side.RIGHT
    return Side.UNKNOWN


def iter_codes(concepts: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for concept in concepts:
        for coding in (concept or {}).get("coding") or ():
            if coding.get("system") and coding.get("code"):
                yield str(coding["system"]), str(coding["code"])
