"""Reading FHIR: dates, statuses, coded labels, laterality words, referenced concepts.

Pure functions shared by the topic modules of fact extraction; no clinical thresholds here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cds_service.facts.model import Side
from cds_service.knowledge.valuesets import CompiledValueSet

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
YES_TEXT = re.compile(r"(?i)^\s*(?:yes|y|present|positive|pos)\b")
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


def reference_of(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', 'unidentified')}"


# What a contained Medication / Device is: its code (Device: type, else its name).
_CONTAINED_CODE = {"Medication": ("code",), "Device": ("type",)}


def referenced_concept(resource: Mapping[str, Any], field: str) -> dict[str, Any]:
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


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value else []


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def clip(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def side_from_text(text: str) -> Side:
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
