"""Fact extraction (facts/extract.py) from hand-built FHIR resources, with an explicit ``now``."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from cds_service.config import PROJECT_ROOT
from cds_service.facts.extract import FactExtractor, parse_fhir_datetime
from cds_service.facts.model import PatientFacts, Side
from cds_service.fhir.record import read_patient_record
from cds_service.knowledge.loader import load_knowledge

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
PID = "fd-unit"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
CPT = "http://www.ama-assn.org/go/cpt"
SITES = {"left": "7771000", "right": "24028007", "bilateral": "51440002"}
DF = "Ankle dorsiflexion strength"


@pytest.fixture(scope="module")
def extractor() -> FactExtractor:
    return FactExtractor(load_knowledge(PROJECT_ROOT / "cards"))


def ago(days: float, as_date: bool = False) -> str:
    moment = NOW - timedelta(days=days)
    return moment.date().isoformat() if as_date else moment.isoformat().replace("+00:00", "Z")


_counter = iter(range(10**6))


def _id(prefix: str) -> str:
    return f"{prefix}-{next(_counter)}"


def condition(system: str, code: str, display: str = "", onset: float | None = 10,
              clinical: str | None = "active", verification: str | None = "confirmed",
              site: str | None = None, site_text: str | None = None, note: str | None = None,
              recorded: float | None = None, patient: str = PID, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Condition", "id": _id("c"),
                         "subject": {"reference": f"Patient/{patient}"},
                         "code": {"coding": [{"system": system, "code": code, "display": display}],
                                  "text": display or code}}
    if clinical:
        r["clinicalStatus"] = {"coding": [{"code": clinical}]}
    if verification:
        r["verificationStatus"] = {"coding": [{"code": verification}]}
    if onset is not None:
        r["onsetDateTime"] = ago(onset, as_date=True)
    if recorded is not None:
        r["recordedDate"] = ago(recorded, as_date=True)
    if site or site_text:
        concept: dict[str, Any] = {}
        if site:
            concept["coding"] = [{"system": SCT, "code": SITES[site]}]
        if site_text:
            concept["text"] = site_text
        r["bodySite"] = [concept]
    if note:
        r["note"] = [{"text": note}]
    r.update(extra)
    return r


def obs(text: str, days: float, side: str | None = None, status: str = "final",
        patient: str = PID, **value: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"resourceType": "Observation", "id": _id("o"), "status": status,
                         "subject": {"reference": f"Patient/{patient}"},
                         "code": {"text": text}, "effectiveDateTime": ago(days)}
    if side:
        r["bodySite"] = {"coding": [{"system": SCT, "code": SITES[side]}]}
    r.update(value)
    return r


def df(grade: Any, days: float, side: str | None = "left", **kw: Any) -> dict[str, Any]:
    if isinstance(grade, str):
        return obs(DF, days, side, valueString=grade, **kw)
    return obs(DF, days, side, valueInteger=grade, **kw)


def muscle(text: str, grade: int, days: float, side: str | None = "left") -> dict[str, Any]:
    return obs(text, days, side, valueInteger=grade)


def order(resource_type: str, text: str, status: str = "active", days: float = 5,
          priority: str | None = None, coding: dict[str, str] | None = None,
          **extra: Any) -> dict[str, Any]:
    concept: dict[str, Any] = {"text": text}
    if coding:
        concept["coding"] = [coding]
    r: dict[str, Any] = {"resourceType": resource_type, "id": _id(resource_type.lower()),
                         "status": status, "subject": {"reference": f"Patient/{PID}"}}
    if resource_type == "ServiceRequest":
        r.update(intent="order", code=concept, authoredOn=ago(days))
    elif resource_type == "DeviceRequest":
        r.update(intent="order", codeCodeableConcept=concept, authoredOn=ago(days))
    elif resource_type == "Procedure":
        r.update(code=concept, performedDateTime=ago(days))
    elif resource_type == "DiagnosticReport":
        r.update(code=concept, effectiveDateTime=ago(days))
    elif resource_type == "MedicationRequest":
        r.update(intent="order", medicationCodeableConcept=concept, authoredOn=ago(days))
    if priority:
        r["priority"] = priority
    r.update(extra)
    return r


def lab(text: str, value: float, unit: str, days: float, coding: dict[str, str] | None = None):
    r = obs(text, days, valueQuantity={"value": value, "unit": unit})
    if coding:
        r["code"]["coding"] = [coding]
    return r


def facts(extractor: FactExtractor, *resources: dict[str, Any], now: datetime = NOW,
          birth: str | None = "1970-01-01") -> PatientFacts:
    patient = {"resourceType": "Patient", "id": PID}
    if birth:
        patient["birthDate"] = birth
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": r} for r in resources]}
    record = read_patient_record([patient, bundle], PID, lambda r: True)
    assert record.stats.invalid == 0, "test resources must be valid FHIR"
    return extractor.extract(record, now)


FD_LEFT = (ICD, "M21.372", "Foot drop, left foot")
FD_RIGHT = (ICD, "M21.371", "Foot drop, right foot")
FD_ANY = (ICD, "M21.379", "Foot drop, unspecified foot")
L5 = (ICD, "M54.17", "Radiculopathy, lumbosacral region")
MS = (ICD, "G35.A", "Relapsing-remitting multiple sclerosis")


# ------------------------------------------------------------------------------- dates
def test_parse_fhir_datetime_partial_and_zoned() -> None:
    assert parse_fhir_datetime("2026") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_fhir_datetime("2026-03") == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_fhir_datetime("2026-03-04T10:00:00+02:00") == datetime(2026, 3, 4, 8, tzinfo=UTC)
    assert parse_fhir_datetime("garbage") is None
    assert parse_fhir_datetime(None) is None


def test_onset_falls_back_to_period_then_recorded_date(extractor) -> None:
    period = condition(*FD_LEFT, onset=None, onsetPeriod={"start": ago(20, True)})
    assert facts(extractor, period).foot_drop_onset == (NOW - timedelta(days=20)).date()
    recorded = condition(*FD_LEFT, onset=None, recorded=12)
    f = facts(extractor, recorded)
    assert f.foot_drop_onset == (NOW - timedelta(days=12)).date()
    assert f.foot_drop_duration_days == 12


# ------------------------------------------------------------------------------- statuses
@pytest.mark.parametrize("clinical", ["active", "recurrence", "relapse", None])
def test_active_condition_statuses(extractor, clinical) -> None:
    assert facts(extractor, condition(*FD_LEFT, clinical=clinical)).has_foot_drop


@pytest.mark.parametrize("clinical", ["inactive", "remission", "resolved"])
def test_inactive_condition_statuses(extractor, clinical) -> None:
    assert not facts(extractor, condition(*FD_LEFT, clinical=clinical)).has_foot_drop


def test_no_clinical_status_with_abatement_is_not_active(extractor) -> None:
    c = condition(*FD_LEFT, clinical=None, abatementDateTime=ago(3, True))
    assert not facts(extractor, c).has_foot_drop


@pytest.mark.parametrize("verification", ["refuted", "entered-in-error"])
def test_refuted_or_entered_in_error_never_count(extractor, verification) -> None:
    f = facts(extractor,
              condition(*FD_LEFT, verification=verification),
              condition(ICD, "G40.909", "Epilepsy", verification=verification),
              condition(SCT, "267064002", "Retention of urine", onset=1,
                        verification=verification),
              condition(*L5))
    assert not f.has_foot_drop
    assert not f.seizure_history
    assert not f.red_flag_cauda_equina


@pytest.mark.parametrize(("status", "counts"), [
    ("final", True), ("amended", True), ("corrected", True), ("preliminary", True),
    ("registered", False), ("cancelled", False), ("entered-in-error", False),
])
def test_observation_statuses(extractor, status, counts) -> None:
    assert facts(extractor, df(2, 3, status=status)).has_foot_drop is counts


def test_other_patients_data_is_ignored(extractor) -> None:
    other = "someone-else"
    f = facts(extractor,
              condition(*L5),
              condition(SCT, "267064002", "Retention of urine", onset=1, patient=other),
              df(4, 5, patient=other), df(1, 1, patient=other))
    assert not f.has_red_flag
    assert not f.has_foot_drop


# ------------------------------------------------------------------------------- sides
@pytest.mark.parametrize(("resource", "side"), [
    (condition(*FD_RIGHT), "right"),
    (condition(*FD_LEFT), "left"),
    (condition(*FD_LEFT, site="right"), "left"),  # the code's laterality wins
    (condition(*FD_ANY, site="left"), "left"),
    (condition(*FD_ANY, site="bilateral"), "bilateral"),
    (condition(*FD_ANY, site_text="Right ankle"), "right"),
    (condition(*FD_ANY, site_text="left and right feet"), "bilateral"),
    (condition(SCT, "6077001", "Left foot drop"), "left"),
    (condition(SCT, "6077001", "Foot drop"), "unknown"),
    (condition(*FD_ANY), "unknown"),
])
def test_side(extractor, resource, side) -> None:
    f = facts(extractor, resource)
    assert f.has_foot_drop
    assert f.foot_drop_side == side


def test_left_and_right_conditions_make_bilateral(extractor) -> None:
    f = facts(extractor, condition(*FD_LEFT, onset=100), condition(*FD_RIGHT, onset=90))
    assert f.foot_drop_side == Side.BILATERAL.value
    assert not f.red_flag_bilateral_foot_drop  # bilateral for months: not a new red flag


def test_side_from_weak_grades(extractor) -> None:
    f = facts(extractor, df(2, 3, side="right"))
    assert f.foot_drop_side == "right"
    assert facts(extractor, obs("Right ankle dorsiflexion MRC", 3, valueInteger=1)
                 ).foot_drop_side == "right"


# ------------------------------------------------------------------------------- grades
@pytest.mark.parametrize(("value", "grade", "shown"), [
    ({"valueInteger": 3}, 3.0, "3/5"),
    ({"valueQuantity": {"value": 2, "unit": "{score}"}}, 2.0, "2/5"),
    ({"valueQuantity": {"value": 3}}, 3.0, "3/5"),
    ({"valueString": "3"}, 3.0, "3/5"),
    ({"valueString": "3/5"}, 3.0, "3/5"),
    ({"valueString": "3-/5"}, 3 - 1 / 3, "3-/5"),
    ({"valueString": "4+ / 5"}, 4 + 1 / 3, "4+/5"),
    ({"valueString": "MRC 2"}, 2.0, "2/5"),
    ({"valueString": "grade 1/5"}, 1.0, "1/5"),
    ({"valueCodeableConcept": {"text": "2/5"}}, 2.0, "2/5"),
    ({"valueCodeableConcept": {"coding": [{"system": "https://ehr.example.org/mrc",
                                           "code": "4"}]}}, 4.0, "4/5"),
])
def test_grade_parsing(extractor, value, grade, shown) -> None:
    f = facts(extractor, obs(DF, 2, "left", **value))
    (g,) = f.dorsiflexion_grades
    assert g.grade == pytest.approx(grade)
    assert g.recorded_as == shown
    assert g.describe() == f"left ankle dorsiflexion {shown} on {g.day.isoformat()}"


@pytest.mark.parametrize("value", [
    {"valueQuantity": {"value": 2, "unit": "deg", "code": "deg"}},
    {"valueQuantity": {"value": 3, "unit": "N"}},
    {"valueQuantity": {"value": 3, "comparator": "<"}},
    {"valueInteger": 7},
    {"valueString": "weak"},
    {"valueString": "3/5 with pain"},
    {"valueBoolean": True},
])
def test_values_that_are_not_grades(extractor, value) -> None:
    f = facts(extractor, obs(DF, 2, "left", **value))
    assert f.dorsiflexion_grades == ()
    assert not f.has_foot_drop


@pytest.mark.parametrize("text", [
    "Ankle dorsiflexion range of motion",
    "Ankle dorsiflexion ROM (degrees)",
    "Ankle dorsiflexion passive goniometry",
])
def test_range_of_motion_is_not_strength(extractor, text) -> None:
    assert not facts(extractor, obs(text, 2, "left", valueInteger=2)).has_foot_drop


def test_great_toe_is_not_ankle(extractor) -> None:
    f = facts(extractor, obs("Great toe dorsiflexion strength", 2, "left", valueString="1/5"))
    assert not f.has_foot_drop
    assert f.dorsiflexion_grades == ()
    assert [g.muscle for g in f.other_weak_muscles] == ["great-toe-extension-strength"]


def test_foot_drop_threshold_and_latest_grade(extractor) -> None:
    assert facts(extractor, df(3, 2)).has_foot_drop
    assert facts(extractor, df("3-/5", 2)).has_foot_drop
    assert not facts(extractor, df("3+/5", 2)).has_foot_drop
    assert not facts(extractor, df(4, 2)).has_foot_drop
    # weak once, full strength since: no foot drop from grades
    recovered = facts(extractor, df(2, 60), df(5, 2))
    assert not recovered.has_foot_drop


def test_foot_drop_onset_is_start_of_the_weak_run(extractor) -> None:
    f = facts(extractor, df(5, 100), df(3, 70), df(2, 40), df(2, 3))
    assert f.foot_drop_onset == (NOW - timedelta(days=70)).date()
    assert f.foot_drop_duration_days == 70
    assert f.dorsiflexion_latest_grade == 2


# ------------------------------------------------------------------------------- red flags
def test_progressive_weakness_with_3_minus(extractor) -> None:
    f = facts(extractor, condition(*L5), df("4/5", 6), df("3-/5", 2))
    assert f.red_flag_progressive_weakness
    assert f.has_red_flag
    assert f.red_flag_since == (NOW - timedelta(days=2)).date()
    assert [g.recorded_as for g in f.why("red_flag_progressive_weakness")] == ["4/5", "3-/5"]


@pytest.mark.parametrize(("grades", "flag"), [
    ([(4, 6), (3, 2)], True),  # one grade within 4 days
    ([("4/5", 10), ("3+/5", 2)], True),  # 4 -> 3+: a fall of one MRC grade
    ([("4+/5", 10), ("4-/5", 2)], False),  # within grade 4
    ([(4, 20), (3, 2)], False),  # 18 days apart: outside the 14-day window
    ([(4, 35), (3, 25)], False),  # the earlier one is older than 30 days
    ([(4, 45), (2, 40)], False),  # both old
    ([(3, 6), (4, 2)], False),  # better, not worse
])
def test_progression_window_and_recency(extractor, grades, flag) -> None:
    f = facts(extractor, condition(*L5), *[df(g, d) for g, d in grades])
    assert f.red_flag_progressive_weakness is flag


def test_progression_needs_the_same_side(extractor) -> None:
    f = facts(extractor, df(4, 6, side="left"), df(2, 2, side="right"))
    assert not f.red_flag_progressive_weakness


def test_bilateral_recency(extractor) -> None:
    recent = facts(extractor, condition(*FD_LEFT, onset=40), condition(*FD_RIGHT, onset=5))
    assert recent.red_flag_bilateral_foot_drop
    assert recent.red_flag_since == (NOW - timedelta(days=5)).date()
    old = facts(extractor, condition(*FD_LEFT, onset=60), condition(*FD_RIGHT, onset=45))
    assert old.foot_drop_side == "bilateral"
    assert not old.red_flag_bilateral_foot_drop
    coded = facts(extractor, condition(*FD_ANY, onset=10, site="bilateral"))
    assert coded.red_flag_bilateral_foot_drop
    by_grade = facts(extractor, condition(*FD_LEFT, onset=200), df(2, 3, side="right"))
    assert by_grade.red_flag_bilateral_foot_drop


def test_resolved_side_does_not_make_bilateral(extractor) -> None:
    f = facts(extractor, condition(*FD_LEFT, onset=5),
              condition(*FD_RIGHT, onset=4, clinical="resolved"))
    assert f.foot_drop_side == "left"
    assert not f.red_flag_bilateral_foot_drop


@pytest.mark.parametrize("sign", [
    condition(SCT, "267064002", "Retention of urine", onset=2),
    condition(ICD, "R33.9", "Retention of urine, unspecified", onset=2),
    condition(ICD, "G83.4", "Cauda equina syndrome", onset=2),
    condition(ICD, "R15.9", "Full incontinence of feces", onset=2),
    condition(ICD, "N31.9", "Neuromuscular dysfunction of bladder, unspecified", onset=2),
    obs("Saddle anaesthesia", 1, valueBoolean=True),
    obs("Neurological examination", 1, valueString="New saddle anaesthesia since yesterday"),
    condition(ICD, "R20.0", "Anesthesia of skin", onset=2, note="Saddle anaesthesia on exam"),
])
def test_cauda_equina_signs_in_context(extractor, sign) -> None:
    f = facts(extractor, condition(*L5), sign)
    assert f.red_flag_cauda_equina
    assert f.has_red_flag
    assert f.why("red_flag_cauda_equina")


@pytest.mark.parametrize("sign", [
    obs("Saddle anaesthesia", 1, valueBoolean=False),
    obs("Neurological examination", 1, valueString="No saddle anaesthesia"),
    obs("Saddle anaesthesia", 1, valueString="none"),
    condition(SCT, "267064002", "Retention of urine", onset=45),
    condition(SCT, "267064002", "Retention of urine", onset=2, clinical="resolved"),
])
def test_cauda_equina_sign_negated_old_or_inactive(extractor, sign) -> None:
    assert not facts(extractor, condition(*L5), sign).red_flag_cauda_equina


def test_cauda_equina_sign_needs_foot_drop_or_lumbar_disease(extractor) -> None:
    retention = condition(SCT, "267064002", "Retention of urine", onset=2)
    assert not facts(extractor, retention).red_flag_cauda_equina
    assert facts(extractor, retention, condition(*FD_LEFT)).red_flag_cauda_equina
    assert facts(extractor, retention,
                 condition(ICD, "M51.26", "Other intervertebral disc displacement, lumbar region")
                 ).red_flag_cauda_equina


def test_multilevel_deficit(extractor) -> None:
    f = facts(extractor, df(2, 3), muscle("Hip flexion strength", 3, 3))
    assert f.red_flag_multilevel_deficit
    assert {g.muscle for g in f.why("red_flag_multilevel_deficit")} == {
        "ankle-dorsiflexion-strength", "hip-flexion-strength"}
    for other in ("Knee extension strength", "Ankle plantarflexion strength",
                  "Hip abduction strength", "Extensor hallucis longus strength"):
        assert facts(extractor, df(2, 3), muscle(other, 3, 3)).red_flag_multilevel_deficit, other


@pytest.mark.parametrize("resources", [
    [df(2, 3), muscle("Hip flexion strength", 4, 3)],  # other group not weak enough
    [df(4, 3), muscle("Hip flexion strength", 2, 3)],  # dorsiflexion not weak enough
    [df(2, 3), muscle("Hip flexion strength", 3, 10), muscle("Hip flexion strength", 5, 2)],
    # long-standing and stable: weak in both groups for months
    [df(2, 90), df(2, 3), muscle("Hip flexion strength", 3, 90),
     muscle("Hip flexion strength", 3, 3)],
    [df(2, 40), muscle("Hip flexion strength", 3, 40)],  # old measurements only
])
def test_no_multilevel_deficit(extractor, resources) -> None:
    assert not facts(extractor, *resources).red_flag_multilevel_deficit


def test_multilevel_dates_from_the_newer_level(extractor) -> None:
    f = facts(extractor, df(2, 90), df(2, 3), muscle("Hip flexion strength", 3, 5))
    assert f.red_flag_multilevel_deficit
    assert f.red_flag_since == (NOW - timedelta(days=5)).date()


# ------------------------------------------------------------------------------- recovery
@pytest.mark.parametrize(("series", "plateau", "improving"), [
    ([(1, 120), (1, 60), (1, 5)], True, False),
    ([(2, 80), (3, 30), (2, 1)], True, False),  # worse than 6 weeks ago
    ([(2, 80), (3, 45), (3, 1)], True, True),  # better than 3 months ago, flat for 6 weeks
    ([(1, 100), (2, 50), (3, 3)], False, True),  # better than 6+ weeks ago
    ([(3, 60), (1, 20), (3, 1)], False, True),  # recovering from a dip
    ([(2, 30), (3, 1)], False, True),  # no grade 6+ weeks before the latest
    ([(2, 100), (5, 1)], False, False),  # recovered
    ([(2, 100)], False, False),
])
def test_recovery_plateau_and_improving(extractor, series, plateau, improving) -> None:
    f = facts(extractor, *[df(g, d) for g, d in series])
    assert f.dorsiflexion_recovery_plateau is plateau
    assert f.dorsiflexion_improving is improving
    if plateau:
        reference, last = f.why("dorsiflexion_recovery_plateau")
        assert (last.when - reference.when).days >= 42


def test_recovered_when_every_side_is_full_strength(extractor) -> None:
    assert facts(extractor, condition(*FD_LEFT), df(5, 2)).dorsiflexion_recovered
    assert not facts(extractor, condition(*FD_LEFT), df(4, 2)).dorsiflexion_recovered
    assert not facts(extractor, condition(*FD_LEFT)).dorsiflexion_recovered


# ------------------------------------------------------------------------------- causes
def test_causes_central_peripheral_and_localising(extractor) -> None:
    stroke = facts(extractor, condition(*FD_LEFT), condition(ICD, "I63.9", "Cerebral infarction"))
    assert stroke.central_cause and not stroke.peripheral_cause
    assert not stroke.cause_unknown_or_peroneal_only
    ms = facts(extractor, condition(*MS))
    assert ms.has_multiple_sclerosis and ms.central_cause
    l5 = facts(extractor, condition(*FD_LEFT), condition(*L5))
    assert l5.peripheral_cause and not l5.central_cause
    assert not l5.cause_unknown_or_peroneal_only
    peroneal = facts(extractor, condition(*FD_LEFT),
                     condition(ICD, "G57.32", "Lesion of lateral popliteal nerve, left"))
    assert peroneal.has_compressive_peroneal_neuropathy and peroneal.cause_known
    assert peroneal.cause_unknown_or_peroneal_only
    trauma = facts(extractor, condition(ICD, "S84.12XA", "Injury of peroneal nerve, left leg"))
    assert trauma.has_peroneal_neuropathy and not trauma.has_compressive_peroneal_neuropathy
    unknown = facts(extractor, condition(*FD_LEFT))
    assert unknown.cause_unknown_or_peroneal_only and not unknown.cause_known


def test_habitual_leg_crossing_from_a_note_names_the_note(extractor) -> None:
    f = facts(extractor, condition(ICD, "G57.31", "Lesion of lateral popliteal nerve, right",
                                   note="Crosses legs for hours at work"))
    assert f.habitual_leg_crossing
    (finding,) = f.why("habitual_leg_crossing")
    assert "Crosses legs for hours at work" in finding.describe()
    denied = facts(extractor, condition(ICD, "G57.31", "Lesion of lateral popliteal nerve",
                                        note="Denies crossing legs"))
    assert not denied.habitual_leg_crossing


def test_radiculopathy_with_motor_deficit(extractor) -> None:
    assert facts(extractor, condition(*L5), muscle("EHL strength", 4, 3)
                 ).has_radiculopathy_with_motor_deficit
    assert facts(extractor, condition(*L5), condition(*FD_LEFT)
                 ).has_radiculopathy_with_motor_deficit
    assert not facts(extractor, condition(*L5), df(5, 3)).has_radiculopathy_with_motor_deficit


# ------------------------------------------------------------------------------- already done
MRI_LOINC = {"system": LOINC, "code": "30679-5", "display": "MR Lumbar spine WO contrast"}


def _progressive() -> list[dict[str, Any]]:
    return [condition(*L5), df(4, 6), df(2, 3)]  # red flag since 3 days ago


@pytest.mark.parametrize(("mri", "answered"), [
    (order("ServiceRequest", "MRI lumbar spine", days=1, priority="stat"), True),
    (order("ServiceRequest", "MRI lumbar spine", days=1, priority="urgent"), True),
    (order("ServiceRequest", "MRI lumbar spine", days=1, priority="routine"), False),
    (order("ServiceRequest", "MRI lumbar spine", days=1), False),
    (order("ServiceRequest", "MRI lumbar spine", days=10, priority="stat"), False),  # before
    (order("ServiceRequest", "MRI lumbar spine", days=1, priority="stat", status="draft"), False),
    (order("DiagnosticReport", "MR L-spine", status="final", days=1, coding=MRI_LOINC), True),
    (order("DiagnosticReport", "MR L-spine", status="final", days=20, coding=MRI_LOINC), False),
    (order("Procedure", "MRI lumbar spine", status="completed", days=1), True),
])
def test_mri_after_red_flag(extractor, mri, answered) -> None:
    f = facts(extractor, *_progressive(), mri)
    assert f.has_red_flag
    assert f.lumbar_mri_urgent_since_red_flag is answered


def test_mri_facts(extractor) -> None:
    f = facts(extractor, order("ServiceRequest", "MRI lumbar spine", days=4, priority="routine"))
    assert f.lumbar_mri_ordered and not f.lumbar_mri_performed
    assert f.lumbar_mri_priority == "routine"
    assert f.lumbar_mri_date == (NOW - timedelta(days=4)).date()
    done = facts(extractor, order("ServiceRequest", "MRI lumbar spine", status="completed",
                                  days=9, occurrenceDateTime=ago(2)))
    assert done.lumbar_mri_performed
    assert done.lumbar_mri_date == (NOW - timedelta(days=2)).date()


def test_orders_and_procedures_already_done(extractor) -> None:
    f = facts(extractor,
              order("DeviceRequest", "Ankle-foot orthosis, left"),
              order("ServiceRequest", "Referral to physiotherapy"),
              order("ServiceRequest", "NCS/EMG left leg", status="completed"),
              order("ServiceRequest", "L5-S1 microdiscectomy"),
              order("ServiceRequest", "Posterior tibial tendon transfer"),
              order("ServiceRequest", "Urgent referral to spine surgery"),
              order("ServiceRequest", "Neurolysis of the left common peroneal nerve"),
              order("Procedure", "OnabotulinumtoxinA injection", status="completed"))
    assert f.afo_done and f.afo_or_fes_done and not f.fes_done
    assert f.pt_referral_done and f.ncs_emg_done and f.botulinum_toxin_done
    assert f.lumbar_decompression_ordered and not f.lumbar_decompression_done
    assert f.tendon_transfer_or_arthrodesis_ordered
    assert not f.tendon_transfer_or_arthrodesis_done
    assert f.spine_surgery_referral_done and f.peroneal_decompression_done
    surgery = facts(extractor,
                    order("Procedure", "Laminotomy", status="completed",
                          coding={"system": CPT, "code": "63030"}),
                    order("Procedure", "Arthrodesis, ankle, open", status="completed"))
    assert surgery.lumbar_decompression_done and surgery.tendon_transfer_or_arthrodesis_done
    assert not facts(extractor, order("Procedure", "Peroneal nerve decompression at the fibular "
                                      "head", status="completed")).lumbar_decompression_done


def test_inactive_orders_do_not_count(extractor) -> None:
    f = facts(extractor,
              order("DeviceRequest", "Ankle-foot orthosis", status="revoked"),
              order("ServiceRequest", "Referral to physiotherapy", status="draft"),
              order("Procedure", "NCS left leg", status="not-done"),
              order("MedicationRequest", "Dalfampridine 10 mg ER", status="stopped"))
    assert not (f.afo_done or f.pt_referral_done or f.ncs_emg_done or f.on_dalfampridine)
    assert facts(extractor, order("MedicationRequest", "Ampyra 10 MG")).on_dalfampridine


def test_urgent_spine_referral_since_red_flag(extractor) -> None:
    f = facts(extractor, *_progressive(),
              order("ServiceRequest", "Urgent referral to spine surgery", days=1,
                    priority="urgent"))
    assert f.spine_surgery_referral_since_red_flag
    routine = facts(extractor, *_progressive(),
                    order("ServiceRequest", "Referral to spine surgery", days=1))
    assert not routine.spine_surgery_referral_since_red_flag


# ------------------------------------------------------------------------------- dalfampridine
CRCL = "Creatinine clearance (Cockcroft-Gault)"
EGFR = {"system": LOINC, "code": "98979-8"}


@pytest.mark.parametrize(("resources", "crcl", "at_or_below", "only_egfr", "known"), [
    ([lab(CRCL, 40, "mL/min", 10)], 40.0, True, False, True),
    ([lab(CRCL, 50, "mL/min", 10)], 50.0, True, False, True),
    ([lab(CRCL, 51, "mL/min", 10)], 51.0, False, False, True),
    ([lab(CRCL, 40, "mL/min", 200), lab(CRCL, 70, "mL/min", 10)], 70.0, False, False, True),
    ([lab(CRCL, 40, "mL/min", 400)], None, False, False, False),  # older than a year
    ([lab("eGFR", 45, "mL/min/1.73m2", 10, coding=EGFR)], None, False, True, True),
    ([lab("Creatinine", 1.1, "mg/dL", 10, coding={"system": LOINC, "code": "2160-0"})],
     None, False, False, True),  # a creatinine: CrCl can be estimated from it
    ([], None, False, False, False),
])
def test_renal_function(extractor, resources, crcl, at_or_below, only_egfr, known) -> None:
    f = facts(extractor, *resources)
    assert f.crcl_latest == crcl
    assert f.crcl_at_or_below_limit is at_or_below
    assert f.only_egfr_available is only_egfr
    assert f.renal_function_known is known


def test_ckd_stage(extractor) -> None:
    assert facts(extractor, condition(ICD, "N18.4", "CKD stage 4")).ckd_stage_3b_or_worse
    assert not facts(extractor, condition(ICD, "N18.31", "CKD stage 3a")).ckd_stage_3b_or_worse


@pytest.mark.parametrize(("clinical", "verification", "history"), [
    ("active", "confirmed", True),
    ("resolved", "confirmed", True),
    ("inactive", None, True),
    ("resolved", "refuted", False),
    ("active", "entered-in-error", False),
])
def test_seizure_history_includes_resolved(extractor, clinical, verification, history) -> None:
    c = condition(ICD, "G40.909", "Epilepsy", onset=4000, clinical=clinical,
                  verification=verification)
    assert facts(extractor, c).seizure_history is history


def test_age(extractor) -> None:
    assert facts(extractor, birth="1970-11-21").age_years == 55
    assert facts(extractor, birth="1970-11-20").age_years == 56
    assert facts(extractor, birth=None).age_years is None


def test_why_names_the_data(extractor) -> None:
    f = facts(extractor, condition(*FD_LEFT, onset=49))
    (finding,) = f.why("has_foot_drop")
    assert finding.describe() == (
        f"Foot drop, left foot (ICD-10-CM M21.372) ({(NOW - timedelta(days=49)).date()})"
    )
    assert f.why("nothing-recorded") == ()
    assert isinstance(f.foot_drop_onset, date)


# ------------------------------------------------------------------------------- export shapes
# Found by red-teaming with EHR / Synthea style exports; the fixtures under fhir_fixtures/ whose
# patient ids start with fd-pv-rt- / fd-os-rt- run the same shapes end to end.
@pytest.mark.parametrize(("system", "code"), [
    (ICD, "M21372"),  # claims-style: no dot
    (ICD, "m21.372"),
    ("urn:oid:2.16.840.1.113883.6.90", "M21.372"),  # ICD-10-CM by OID
    ("http://hl7.org/fhir/sid/icd-10-cm/", "M21.372"),
])
def test_icd_10_cm_variants_are_read(extractor, system, code) -> None:
    f = facts(extractor, condition(system, code, "Foot drop, left foot"))
    assert f.has_foot_drop
    assert f.foot_drop_side == "left"


@pytest.mark.parametrize("system", [
    "urn:oid:2.16.840.1.113883.6.96",
    "http://snomed.info/sct/731000124108",
    "http://snomed.info/sct/731000124108/version/20250301",
])
def test_snomed_system_variants_are_read(extractor, system) -> None:
    f = facts(extractor, condition(system, "192970008", "Cauda equina syndrome", onset=2),
              condition(*L5))
    assert f.red_flag_cauda_equina


def test_other_systems_are_not_mistaken_for_snomed(extractor) -> None:
    assert not facts(extractor, condition("http://snomed.info/xyz", "6077001", "x")).has_foot_drop
    assert not facts(extractor, condition("urn:oid:1.2.3", "M21.372", "x")).has_foot_drop


def _panel(days: float, *components: tuple[str, Any], text: str = "Manual muscle test",
           **extra: Any) -> dict[str, Any]:
    r = obs(text, days, **extra)
    r["component"] = [{"code": {"text": t}, "valueInteger": v} for t, v in components]
    return r


def test_manual_muscle_test_panel_components_are_grades(extractor) -> None:
    f = facts(extractor, condition(*L5),
              _panel(9, ("Left ankle dorsiflexion", 4), ("Right ankle dorsiflexion", 5)),
              _panel(2, ("Left ankle dorsiflexion", 2), ("Right ankle dorsiflexion", 5),
                     ("Right knee extension", 3)))
    assert f.has_foot_drop and f.foot_drop_side == "left"
    assert f.red_flag_progressive_weakness
    assert f.red_flag_multilevel_deficit
    assert [g.describe() for g in f.why("red_flag_progressive_weakness")] == [
        f"left ankle dorsiflexion 4/5 on {ago(9, True)}",
        f"left ankle dorsiflexion 2/5 on {ago(2, True)}"]


def test_side_components_under_a_muscle_named_panel(extractor) -> None:
    f = facts(extractor, _panel(3, ("Left", 2), ("Right", 5), text=DF))
    assert f.foot_drop_side == "left"
    assert {(g.side, g.grade) for g in f.dorsiflexion_grades} == {
        (Side.LEFT, 2.0), (Side.RIGHT, 5.0)}


def test_panel_components_that_are_not_grades_are_ignored(extractor) -> None:
    # a side-less, muscle-less component ("Position") under a muscle-named panel is not a grade
    f = facts(extractor, _panel(3, ("Position", 2), ("Ankle dorsiflexion ROM", 2), text=DF))
    assert f.dorsiflexion_grades == ()
    assert not facts(extractor, _panel(3, ("Left ankle dorsiflexion", 2),
                                       text="Ankle range of motion")).has_foot_drop


@pytest.mark.parametrize(("text", "side"), [
    ("L ankle DF (MRC)", "left"),
    ("R ankle dorsiflexion", "right"),
    ("LLE ankle dorsiflexion", "left"),
    ("Ankle dorsiflexion, RLE", "right"),
    ("Ankle dorsiflexion L/R", "unknown"),
    ("Ankle dorsiflexion (L5 myotome)", "unknown"),
])
def test_flowsheet_side_shorthand(extractor, text, side) -> None:
    assert facts(extractor, obs(text, 2, valueInteger=2)).foot_drop_side == side


def test_sideless_grade_joins_the_only_named_side_for_progression(extractor) -> None:
    assert facts(extractor, df(4, 8, side="left"), df(2, 1, side=None)
                 ).red_flag_progressive_weakness
    # both sides named: a side-less grade is not compared
    both = facts(extractor, condition(*FD_RIGHT, onset=60), df(5, 8, side="left"),
                 df(3, 1, side=None))
    assert not both.red_flag_progressive_weakness


def test_same_day_grades_are_ordered_by_issued(extractor) -> None:
    worse = facts(extractor, condition(*L5),
                  df(4, 1, issued=ago(1.1)), df(2, 1, issued=ago(0.9)))
    assert worse.red_flag_progressive_weakness
    better = facts(extractor, condition(*L5),
                   df(2, 1, issued=ago(1.1)), df(4, 1, issued=ago(0.9)))
    assert not better.red_flag_progressive_weakness


def test_mrc_unit(extractor) -> None:
    f = facts(extractor, obs(DF, 2, "left", valueQuantity={"value": 2, "unit": "MRC"}))
    assert f.dorsiflexion_latest_grade == 2


@pytest.mark.parametrize("answer", [
    {"system": "http://terminology.hl7.org/CodeSystem/v2-0136", "code": "N"},
    {"system": LOINC, "code": "LA32-8"},
    {"system": SCT, "code": "373067005"},
])
def test_coded_no_answers_are_negative_findings(extractor, answer) -> None:
    retention = obs("Retention of urine", 1, valueCodeableConcept={"coding": [answer]})
    retention["code"] = {"coding": [{"system": SCT, "code": "267064002"}]}
    assert not facts(extractor, condition(*L5), retention).red_flag_cauda_equina


def test_contained_medication_and_device_references(extractor) -> None:
    med = {"resourceType": "MedicationRequest", "id": _id("m"), "status": "active",
           "intent": "order", "subject": {"reference": f"Patient/{PID}"},
           "contained": [{"resourceType": "Medication", "id": "m1",
                          "code": {"text": "Dalfampridine 10 mg ER tablet"}}],
           "medicationReference": {"reference": "#m1"}}
    device = {"resourceType": "DeviceRequest", "id": _id("d"), "status": "active",
              "intent": "order", "subject": {"reference": f"Patient/{PID}"},
              "contained": [{"resourceType": "Device", "id": "d1", "type": {"coding": [
                  {"system": "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                   "code": "L1960"}]}}],
              "codeReference": {"reference": "#d1"}}
    displayed = {"resourceType": "DeviceRequest", "id": _id("d"), "status": "active",
                 "intent": "order", "subject": {"reference": f"Patient/{PID}"},
                 "codeReference": {"reference": "Device/x", "display": "Ankle foot orthosis"}}
    f = facts(extractor, med, device)
    assert f.on_dalfampridine and f.afo_done
    assert facts(extractor, displayed).afo_done


@pytest.mark.parametrize(("system", "code"), [
    (SCT, "128613002"), (SCT, "703151001"), (ICD, "G40909"),
])
def test_seizure_history_codes(extractor, system, code) -> None:
    assert facts(extractor, condition(system, code, "Seizure", clinical="resolved")
                 ).seizure_history


@pytest.mark.parametrize("code", ["700379002", "431857002", "433146000", "46177005"])
def test_ckd_stage_3b_or_worse_snomed(extractor, code) -> None:
    assert facts(extractor, condition(SCT, code, "Chronic kidney disease")).ckd_stage_3b_or_worse


def test_generic_strength_row_names_its_muscle_in_body_site(extractor) -> None:
    row = obs("Muscle strength (MRC)", 2, valueInteger=2,
              bodySite={"text": "Left tibialis anterior"})
    f = facts(extractor, row)
    assert f.has_foot_drop and f.foot_drop_side == "left"
    # a non-strength row is not read from its bodySite
    assert not facts(extractor, obs("Pain score", 2, valueInteger=2,
                                    bodySite={"text": "Left tibialis anterior"})).has_foot_drop


def test_multilevel_groups_are_reviewer_data_and_checked_at_load(tmp_path):
    import shutil

    import yaml

    from cds_service.config import DEFAULT_CARDS_DIR
    from cds_service.facts.extract import FactExtractor
    from cds_service.knowledge.loader import KnowledgeError, load_knowledge

    cards = tmp_path / "cards"
    shutil.copytree(DEFAULT_CARDS_DIR, cards)
    facts_file = cards / "facts.yaml"
    data = yaml.safe_load(facts_file.read_text())
    data["multilevel_other_groups"] = ["no-such-muscle-group"]
    facts_file.write_text(yaml.safe_dump(data))
    with pytest.raises(KnowledgeError):
        FactExtractor(load_knowledge(cards))


# ------------------------------------------------------------ red-team regressions (EHR shapes)
def test_one_condition_coded_for_both_feet_is_bilateral(extractor) -> None:
    """Epic/IMO "bilateral foot drop": one Condition coded M21.371 and M21.372 (no bilateral
    code exists)."""
    both = condition(ICD, "M21.371", "Bilateral foot drop", onset=4)
    both["code"]["coding"].append({"system": ICD, "code": "M21.372"})
    f = facts(extractor, both)
    assert f.foot_drop_side == "bilateral"
    assert f.red_flag_bilateral_foot_drop


@pytest.mark.parametrize(("statuses", "active"), [
    ([{"system": "urn:oid:1.2.840.114350.1", "code": "1", "display": "Active"},
      {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}],
     True),
    ([{"system": "urn:oid:1.2.840.114350.1", "code": "1", "display": "Active"}], True),
    ([{"system": "urn:oid:1.2.840.114350.1", "code": "3", "display": "Resolved"}], False),
    ([{"system": "urn:local", "code": "1"},
      {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
       "code": "resolved"}], False),
])
def test_the_hl7_status_coding_wins_over_a_local_one(extractor, statuses, active) -> None:
    retention = condition(ICD, "R33.9", "Retention of urine", onset=2, clinical=None)
    retention["clinicalStatus"] = {"coding": statuses}
    assert facts(extractor, condition(*FD_LEFT), retention).red_flag_cauda_equina is active


def test_refuted_in_a_second_coding_is_refuted(extractor) -> None:
    ces = condition(ICD, "G83.4", "Cauda equina syndrome", onset=2, verification=None)
    ces["verificationStatus"] = {"coding": [
        {"system": "urn:local", "code": "RO", "display": "Ruled out"},
        {"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
         "code": "refuted"}]}
    assert not facts(extractor, condition(*FD_LEFT), ces).red_flag_cauda_equina


@pytest.mark.parametrize("answer", [
    {"valueString": "Denied"}, {"valueString": "Pt denies"}, {"valueString": "Unknown"},
    {"valueCodeableConcept": {"coding": [{"system": SCT, "code": "261665006"}]}},
    {"dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "data-absent-reason", "code": "asked-unknown"}]}},
])
def test_a_sign_answered_anything_but_yes_is_not_a_red_flag(extractor, answer) -> None:
    retention = obs("Retention of urine", 1, **answer)
    retention["code"] = {"coding": [{"system": SCT, "code": "267064002"}]}
    assert not facts(extractor, condition(*FD_LEFT), retention).red_flag_cauda_equina


def test_a_sign_given_as_the_answer_to_a_generic_question_is_read(extractor) -> None:
    symptom = obs("Symptom", 1, valueCodeableConcept={
        "coding": [{"system": SCT, "code": "267064002", "display": "Retention of urine"}]})
    symptom["code"] = {"coding": [{"system": LOINC, "code": "75325-1", "display": "Symptom"}]}
    f = facts(extractor, condition(*FD_LEFT), symptom)
    assert f.red_flag_cauda_equina
    assert "Retention of urine" in f.why("red_flag_cauda_equina")[0].describe()


def test_a_sign_noted_today_on_an_old_problem_is_recent(extractor) -> None:
    disc = condition(ICD, "M51.16", "Lumbar disc herniation with radiculopathy", onset=60,
                     note="New saddle anaesthesia today")
    disc["note"][0]["time"] = ago(0)
    assert facts(extractor, disc).red_flag_cauda_equina
    disc["note"][0]["time"] = ago(45)
    assert not facts(extractor, disc).red_flag_cauda_equina


def test_recharting_the_same_sign_after_the_mri_is_not_a_new_red_flag(extractor) -> None:
    retention = condition(ICD, "R33.9", "Retention of urine", onset=6)
    charted_again = obs("Retention of urine", 1, valueString="Yes")
    charted_again["code"] = {"coding": [{"system": SCT, "code": "267064002"}]}
    mri = order("ImagingStudy", "MRI lumbar spine", status="available", started=ago(5))
    mri.pop("subject")
    mri.update(subject={"reference": f"Patient/{PID}"},
               procedureCode=[{"text": "MRI lumbar spine"}], description="MRI lumbar spine")
    f = facts(extractor, condition(*FD_LEFT), retention, charted_again, mri)
    assert f.red_flag_cauda_equina and f.lumbar_mri_urgent_since_red_flag
    saddle = obs("Saddle anaesthesia", 0, valueString="Yes")  # a new sign after the MRI
    assert not facts(extractor, condition(*FD_LEFT), retention, charted_again, mri,
                     saddle).lumbar_mri_urgent_since_red_flag


@pytest.mark.parametrize(("text", "grade"), [
    ("Good (4/5)", 4.0), ("2/5 poor", 2.0), ("Fair 3-/5", 3 - 1 / 3), ("4/5 -> 2/5", None),
    ("3/5 with pain", None), ("4/5?", None),
])
def test_grades_written_with_words(extractor, text, grade) -> None:
    f = facts(extractor, df(text, 1))
    assert [g.grade for g in f.dorsiflexion_grades] == ([pytest.approx(grade)] if grade else [])


def test_no_second_stat_mri_is_suggested_while_one_is_open(extractor) -> None:
    stat = order("ServiceRequest", "MRI lumbar spine", days=6, priority="stat")
    f = facts(extractor, condition(*FD_LEFT), df(4, 3), df(2, 0), stat)
    assert f.red_flag_progressive_weakness and not f.lumbar_mri_urgent_since_red_flag
    assert f.lumbar_mri_urgent_pending
    routine = order("ServiceRequest", "MRI lumbar spine", days=6, priority="routine")
    assert not facts(extractor, condition(*FD_LEFT), df(4, 3), df(2, 0),
                     routine).lumbar_mri_urgent_pending


def test_a_problem_contradicted_by_a_later_normal_grade_is_stale(extractor) -> None:
    """An old left foot-drop problem still "active", left dorsiflexion 5/5 since, and a new right
    foot drop: one foot, not a bilateral red flag."""
    old_left = condition(*FD_LEFT, onset=400)
    new_right = condition(*FD_RIGHT, onset=4)
    f = facts(extractor, old_left, new_right, df(5, 60), df(5, 0), df(2, 0, side="right"))
    assert f.foot_drop_side == "right" and not f.red_flag_bilateral_foot_drop
    f = facts(extractor, old_left, new_right, df(2, 0, side="right"))  # no exam of the left
    assert f.foot_drop_side == "bilateral"


def test_a_free_text_foot_drop_problem_counts_unless_negated(extractor) -> None:
    free_text = condition(ICD, "x", onset=3)
    free_text["code"] = {"text": "Bilateral foot drop"}
    f = facts(extractor, free_text)
    assert f.has_foot_drop and f.foot_drop_side == "bilateral" and f.red_flag_bilateral_foot_drop
    free_text["code"] = {"text": "No foot drop"}
    assert not facts(extractor, free_text).has_foot_drop


@pytest.mark.parametrize(("value", "counts"), [
    ({"valueBoolean": True}, True),
    ({}, True),
    ({"valueBoolean": False}, False),
    ({"valueCodeableConcept": {"coding": [{"system": SCT, "code": "373067005"}]}}, False),
    ({"valueInteger": 5}, False),  # a grade on a "foot drop" row is a grade, not the finding
    ({"valueString": "none"}, False),
])
def test_foot_drop_charted_on_an_exam_flowsheet(extractor, value, counts) -> None:
    exam = obs("Foot drop", 2, "bilateral", **value)
    exam["code"] = {"coding": [{"system": SCT, "code": "6077001", "display": "Foot drop"}]}
    f = facts(extractor, exam)
    assert f.has_foot_drop is counts
    if counts:
        assert f.foot_drop_side == "bilateral"


# ------------------------------------------------------------ red-team round 2 (renal, episodes)
def test_a_crcl_older_than_a_worse_result_no_longer_clears_the_drug(extractor) -> None:
    old_crcl = lab(CRCL, 85, "mL/min", 300)
    low_egfr = lab("eGFR", 25, "mL/min/1.73m2", 3, coding=EGFR)
    f = facts(extractor, old_crcl, low_egfr)
    assert f.crcl_latest is None and f.crcl_superseded
    assert [x.value for x in f.why("crcl_superseded")] == [85.0, 25.0]
    same_day = lab("eGFR", 80, "mL/min/1.73m2", 300, coding=EGFR)
    assert facts(extractor, old_crcl, same_day).crcl_latest == 85.0


@pytest.mark.parametrize(("quantity", "crcl", "egfr"), [
    ({"value": 1.5, "unit": "mL/s"}, 90.0, None),  # SI units
    ({"value": 45, "unit": "mL/min/1.73m2"}, None, 45.0),  # normalised: not the label's CrCl
    ({"value": 60, "unit": "mL/min", "comparator": ">"}, 60.0, None),  # a bound above 50
    ({"value": 40, "unit": "mL/min", "comparator": ">"}, None, None),  # decides nothing
    ({"value": 30, "unit": "mL/min", "comparator": "<"}, None, None),
])
def test_creatinine_clearance_units_and_comparators(extractor, quantity, crcl, egfr) -> None:
    obs_ = obs(CRCL, 5, valueQuantity=quantity)
    f = facts(extractor, obs_)
    assert f.crcl_latest == crcl
    assert f.egfr_latest == egfr


def test_orders_from_before_this_foot_drop_do_not_count_as_done(extractor) -> None:
    foot_drop = condition(*FD_LEFT, onset=20)
    old_ncs = order("Procedure", "Nerve conduction study", status="completed", days=4 * 365)
    recent_ncs = order("Procedure", "Nerve conduction study", status="completed", days=10)
    charted_late = order("Procedure", "Nerve conduction study", status="completed", days=40)
    assert not facts(extractor, foot_drop, old_ncs).ncs_emg_done
    assert facts(extractor, foot_drop, recent_ncs).ncs_emg_done
    assert facts(extractor, foot_drop, charted_late).ncs_emg_done  # within the grace days
    old_discectomy = order("Procedure", "Lumbar microdiscectomy", status="completed",
                           days=5 * 365)
    assert not facts(extractor, foot_drop, old_discectomy).lumbar_decompression_done
    active_drug = order("MedicationRequest", "dalfampridine 10 mg ER", days=3 * 365)
    assert facts(extractor, foot_drop, active_drug).on_dalfampridine  # current by its status


def test_a_red_flag_in_a_later_note_is_read_whatever_came_before(extractor) -> None:
    """Notes are read one by one: a long note (or many short ones) before the one naming the
    sign used to push it past the length read of a single text."""
    disc = condition(ICD, "M51.16", "Lumbar disc herniation with radiculopathy", onset=10)
    long_note = {"text": "Routine review, no change. " * 320}
    many = [{"text": f"Visit {i}: pain controlled, walking with a stick, plan unchanged."}
            for i in range(150)]
    flag = {"text": "New saddle anaesthesia today", "time": ago(0)}
    for before in ([long_note], many):
        disc["note"] = [*before, flag]
        assert facts(extractor, disc).red_flag_cauda_equina


# ------------------------------------------------------------ red-team round 3 (shapes, dates)
@pytest.mark.parametrize(("value", "counts"), [
    ({"valueString": "Yes - left"}, True),
    ({"valueString": "Pillows/boots applied"}, False),
    ({"valueCodeableConcept": {"text": "Not tested"}}, False),
])
def test_exam_flowsheet_answers(extractor, value, counts) -> None:
    exam = obs("Foot drop", 1, "left", **value)
    exam["code"] = {"coding": [{"system": SCT, "code": "6077001", "display": "Foot drop"}]}
    assert facts(extractor, exam).has_foot_drop is counts


def test_a_grade_quoting_an_earlier_one_is_read_as_the_current_grade(extractor) -> None:
    f = facts(extractor, condition(*L5), df(4, 5), df("2/5 (was 4/5 on Monday)", 1))
    assert [g.grade for g in f.dorsiflexion_grades] == [4.0, 2.0]
    assert f.red_flag_progressive_weakness


def test_an_onset_given_as_text_dates_the_problem(extractor) -> None:
    old = condition(*FD_LEFT, onset=None, recorded=0, onsetString="since 2016")
    f = facts(extractor, old)
    assert f.foot_drop_onset == date(2016, 1, 1)


def test_a_discectomy_from_an_earlier_episode_is_history_not_this_episode(extractor) -> None:
    discectomy = order("Procedure", "Lumbar microdiscectomy", status="completed", days=3 * 365)
    f = facts(extractor, condition(*FD_LEFT, onset=14), discectomy)
    assert f.prior_lumbar_decompression and not f.lumbar_decompression_done
