"""Cause timing (facts/causes.py) and the Cockcroft-Gault estimate (facts/renal.py)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.facts.extract import FactExtractor
from cds_service.facts.model import PatientFacts
from cds_service.fhir.record import read_patient_record
from tests.facts.test_extract import FD_LEFT, ICD, LOINC, NOW, PID, SCT, condition, extractor, obs

__all__ = ["extractor"]  # the module-scoped fixture, shared


def chart(ex: FactExtractor, *resources: dict[str, Any], gender: str | None = "male",
          birth: str | None = "1966-06-15") -> PatientFacts:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": PID}
    if gender:
        patient["gender"] = gender
    if birth:
        patient["birthDate"] = birth
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": r} for r in resources]}
    record = read_patient_record([patient, bundle], PID, lambda r: True)
    assert record.stats.invalid == 0
    return ex.extract(record, NOW)


def loinc(code: str, value: float, unit: str, days: float) -> dict[str, Any]:
    r = obs(code, days, valueQuantity={"value": value, "unit": unit})
    r["code"] = {"coding": [{"system": LOINC, "code": code}]}
    return r


def creatinine(value: float = 1.0, unit: str = "mg/dL", days: float = 10) -> dict[str, Any]:
    return loinc("38483-4" if unit == "mg/dL" else "14682-9", value, unit, days)


def weight(kg: float = 80, days: float = 12, unit: str = "kg") -> dict[str, Any]:
    return loinc("29463-7", kg, unit, days)


# -- Cockcroft-Gault --------------------------------------------------------------------------
def test_estimate_from_creatinine_weight_age_and_sex(extractor):
    # (140 - 60) x 80 / (72 x 1.0) = 88.9 mL/min
    f = chart(extractor, creatinine(), weight())
    assert f.crcl_latest == pytest.approx(88.9) and f.crcl_estimated
    assert not f.crcl_at_or_below_limit and not f.only_egfr_available
    why = f.why("crcl_latest")[0].describe()
    assert "Cockcroft-Gault" in why and "weight 80 kg on" in why and "age 60" in why
    assert "1 mg/dL on" in why


def test_estimate_in_micromol_per_litre_and_for_a_woman(extractor):
    assert chart(extractor, creatinine(88.4, "umol/L"), weight()).crcl_latest == pytest.approx(88.9)
    female = chart(extractor, creatinine(), weight(), gender="female")
    assert female.crcl_latest == pytest.approx(75.6)


def test_estimate_at_or_below_the_limit_contraindicates(extractor):
    f = chart(extractor, creatinine(2.0), weight(55), gender="female", birth="1950-06-15")
    assert f.crcl_latest is not None and f.crcl_latest <= 50 and f.crcl_at_or_below_limit


def test_weight_in_pounds_and_the_nearest_weight(extractor):
    f = chart(extractor, creatinine(), weight(176.37, unit="[lb_av]"))
    assert f.crcl_latest == pytest.approx(88.9, abs=0.1)
    nearest = chart(extractor, creatinine(), weight(60, days=35), weight(80, days=9))
    assert nearest.crcl_latest == pytest.approx(88.9)


@pytest.mark.parametrize("missing", ["weight", "far-weight", "sex", "birth", "creatinine",
                                     "odd-unit"])
def test_no_estimate_when_an_input_is_missing(extractor, missing):
    resources = [creatinine(unit="mmol/L") if missing == "odd-unit" else creatinine(),
                 weight(days=60) if missing == "far-weight" else weight()]
    if missing == "weight":
        resources = resources[:1]
    if missing == "creatinine":
        resources = resources[1:]
    f = chart(extractor, *resources, gender=None if missing == "sex" else "male",
              birth=None if missing == "birth" else "1966-06-15")
    assert f.crcl_latest is None and not f.crcl_estimated


def test_a_measured_clearance_wins_over_the_estimate(extractor):
    measured = obs("Creatinine clearance", 5, valueQuantity={"value": 40, "unit": "mL/min"})
    f = chart(extractor, measured, creatinine(days=5), weight())
    assert f.crcl_latest == 40 and not f.crcl_estimated


# -- cause timing ------------------------------------------------------------------------------
STROKE = (SCT, "230690007", "Cerebrovascular accident")


def test_a_remote_stroke_does_not_explain_a_new_foot_drop(extractor):
    f = chart(extractor, condition(*FD_LEFT, onset=30), condition(*STROKE, onset=7300))
    assert not f.has_stroke and not f.central_cause
    assert f.cause_unknown_or_peroneal_only and f.remote_causes
    remote = f.why("remote_causes")[0].describe()
    assert "about 20 years before this foot drop" in remote and "365-day window" in remote


def test_a_recent_stroke_explains_it(extractor):
    f = chart(extractor, condition(*FD_LEFT, onset=30), condition(*STROKE, onset=50))
    assert f.has_stroke and f.central_cause and not f.cause_unknown_or_peroneal_only
    assert not f.remote_causes


def test_a_stroke_charted_long_after_the_foot_drop_does_not_explain_it(extractor):
    f = chart(extractor, condition(*FD_LEFT, onset=300), condition(*STROKE, onset=5))
    assert not f.has_stroke and f.remote_causes
    assert "after this foot drop" in f.why("remote_causes")[0].describe()


def test_lifelong_causes_and_snomed_only_codes(extractor):
    cp = chart(extractor, condition(*FD_LEFT, onset=30),
               condition(SCT, "128188000", "Cerebral palsy", onset=9000))
    assert cp.has_cerebral_palsy and cp.central_cause and not cp.cause_unknown_or_peroneal_only
    sci = chart(extractor, condition(*FD_LEFT, onset=30),
                condition(SCT, "698754002", "Chronic paralysis due to lesion of spinal cord",
                          onset=60))
    assert sci.has_spinal_cord_injury and sci.central_cause


def test_without_foot_drop_a_cause_is_not_timed(extractor):
    assert chart(extractor, condition(*STROKE, onset=7300)).has_stroke


def test_localising_cause_names_come_from_facts_yaml(extractor):
    names = chart(extractor, condition(ICD, "M21.372", "Foot drop")).localising_cause_names
    assert "cerebral palsy" in names and "spinal cord injury or lesion" in names
