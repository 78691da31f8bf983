"""The relevance filter drops resources before validation; it must never drop one a fact reads.

Facts are computed twice for every scenario fixture and for the benchmark's synthetic charts
(every size, both hooks): once through the filter, once keeping everything. They must be equal.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from cds_service.config import DEFAULT_CARDS_DIR
from cds_service.facts.extract import FactExtractor
from cds_service.fhir.record import iter_resources, read_patient_record
from cds_service.fhir.relevance import RelevanceFilter
from cds_service.fixtures import iter_fixtures
from cds_service.knowledge.loader import load_knowledge
from cds_service.knowledge.valuesets import ValueSetIndex
from tests.conftest import NOW

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(DEFAULT_CARDS_DIR)


def _charts_module():
    spec = importlib.util.spec_from_file_location("bench_charts", ROOT / "bench" / "charts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requests():
    for fixture in iter_fixtures(NOW):
        yield fixture.name, fixture.request
    charts = _charts_module()
    for size in charts.SIZES:
        for hook in ("patient-view", "order-select"):
            yield f"bench-{size}-{hook}", charts.make_request(size, hook, NOW)


@pytest.mark.parametrize(("name", "request_body"), list(_requests()), ids=lambda v: v
                         if isinstance(v, str) else "")
def test_filtered_and_unfiltered_records_give_the_same_facts(knowledge, name, request_body):
    patient_id = request_body["context"]["patientId"]
    values = list((request_body.get("prefetch") or {}).values())
    extractor = FactExtractor(knowledge)
    filtered = read_patient_record(values, patient_id, RelevanceFilter(knowledge))
    everything = read_patient_record(values, patient_id, lambda _resource: True)
    assert extractor.extract(filtered, NOW) == extractor.extract(everything, NOW), name


def test_the_synthetic_chart_is_mostly_irrelevant(knowledge):
    body = _charts_module().make_request("L", "patient-view", NOW)
    record = read_patient_record(body["prefetch"].values(), body["context"]["patientId"],
                                 RelevanceFilter(knowledge))
    # Body weights (about 600 vital-sign rows in this chart) are read since issue 14: they feed
    # the Cockcroft-Gault estimate of creatinine clearance.
    assert record.stats.irrelevant > 9_000
    assert record.stats.kept < 1_000


def test_text_only_findings_in_observation_values_are_kept(knowledge):
    """Saddle anaesthesia has no code: it is read from Observation.valueString."""
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"text": "Review of systems"}, "subject": {"reference": "Patient/p1"},
           "valueString": "Reports saddle anaesthesia since yesterday"}
    assert RelevanceFilter(knowledge)(obs)


def test_the_index_agrees_with_the_value_sets(knowledge):
    index = ValueSetIndex(knowledge.valuesets.values())
    concepts = []
    for vs in knowledge.valuesets.values():
        for system, code in vs.exact:
            concepts.append({"coding": [{"system": system, "code": code}]})
            concepts.append({"coding": [{"system": system, "code": code + "9"}]})
        for system, prefixes in vs.prefixes.items():
            for prefix in prefixes:
                concepts.append({"coding": [{"system": system, "code": prefix + ".1"}]})
                concepts.append({"coding": [{"system": "urn:other", "code": prefix}]})
    texts = ("Left ankle dorsiflexion strength (MRC)", "Left ankle dorsiflexion range of motion",
             "Heart rate", "no saddle anaesthesia", "Creatinine clearance", "MRI lumbar spine",
             "MR Lumbar spine WO contrast", "Physical therapy referral", "Botox injection",
             "denies leg crossing", "crosses her legs", "")
    for text in texts:
        concepts.append({"text": text})
        concepts.append({"coding": [{"system": "urn:local", "code": "1", "display": text}]})
    for concept in concepts:
        expected = any(vs.matches_concept(concept) for vs in knowledge.valuesets.values())
        assert index.matches_concept(concept) == expected, concept


def test_members_of_the_wrong_type_are_left_to_validation(knowledge):
    relevant = RelevanceFilter(knowledge)
    assert relevant({"resourceType": "Observation", "code": {"coding": [{"system": "s",
                                                                          "code": 5}]}})
    assert relevant({"resourceType": "Observation", "code": {"text": ["list"]}})
    assert relevant({"resourceType": "Condition", "note": {"text": "not a list"}})
    assert relevant({"resourceType": ["Observation"]})
    assert not relevant({"resourceType": "Observation", "code": {"text": "Heart rate"}})


def test_every_resource_type_the_extractor_reads_is_covered(knowledge):
    body = _charts_module().make_request("S", "patient-view", NOW)
    types = {r["resourceType"] for v in body["prefetch"].values() for r in iter_resources(v)}
    assert {"Condition", "Observation", "ServiceRequest", "Procedure", "DiagnosticReport",
            "ImagingStudy", "MedicationRequest", "Patient"} <= types


def test_medication_requests_are_kept_only_for_drugs_a_fact_reads(knowledge):
    relevant = RelevanceFilter(knowledge)
    order = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
             "subject": {"reference": "Patient/p1"}}
    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert not relevant({**order, "medicationCodeableConcept": {
        "coding": [{"system": rxnorm, "code": "197361"}], "text": "amlodipine 5 MG Oral Tablet"}})
    assert relevant({**order, "medicationCodeableConcept": {"text": "Ampyra 10 mg ER tablet"}})
    # named by reference (a contained Medication, or one elsewhere): fact extraction resolves it
    assert relevant({**order, "medicationReference": {"reference": "#med1"},
                     "contained": [{"resourceType": "Medication", "id": "med1"}]})
    assert relevant({**order, "medicationReference": {"reference": "Medication/m7"}})
