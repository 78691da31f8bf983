"""Reading prefetch values into a PatientRecord: searchset shapes EHRs and servers really send."""

from __future__ import annotations

from cds_service.fhir.record import read_patient_record

PID = "fd-record-1"


def _condition(rid: str, reference: str) -> dict:
    return {"resourceType": "Condition", "id": rid, "subject": {"reference": reference},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                 "code": "M21.372"}]}}


def test_searchset_with_include_and_outcome_entries() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": _condition("c1", f"Patient/{PID}"), "search": {"mode": "match"}},
        {"resource": {"resourceType": "Patient", "id": PID}, "search": {"mode": "include"}},
        {"resource": {"resourceType": "Practitioner", "id": "dr1"}, "search": {"mode": "include"}},
        {"resource": {"resourceType": "OperationOutcome", "issue": [
            {"severity": "warning", "code": "informational", "diagnostics": "filtered"}]},
         "search": {"mode": "outcome"}},
        {"search": {"mode": "outcome"}},  # an entry without a resource
    ]}
    record = read_patient_record([bundle], PID, lambda _r: True)
    assert [c["id"] for c in record.of("Condition")] == ["c1"]
    assert record.patient is not None and record.patient["id"] == PID
    assert record.stats.invalid == 0


def test_absolute_versioned_and_foreign_references() -> None:
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": _condition("c1", f"https://ehr.example.org/fhir/Patient/{PID}")},
        {"resource": _condition("c2", f"Patient/{PID}/_history/2")},
        {"resource": _condition("c3", f"https://ehr.example.org/fhir/Patient/{PID}/_history/7")},
        {"resource": _condition("c4", f"Patient/{PID}-neighbour")},
        {"resource": _condition("c5", f"https://ehr.example.org/fhir/Patient/x{PID}")},
    ]}
    record = read_patient_record([bundle], PID, lambda _r: True)
    assert [c["id"] for c in record.of("Condition")] == ["c1", "c2", "c3"]
    assert record.stats.other_patient == 2


def test_elements_fhir_does_not_define_are_tolerated_wrong_shapes_are_not() -> None:
    """A vendor's extra member must not drop the Condition (it may be the red flag); a known
    element of the wrong shape still does."""
    extra_top = {**_condition("c1", f"Patient/{PID}"), "epicInternalFlag": True}
    extra_nested = _condition("c2", f"Patient/{PID}")
    extra_nested["code"]["vendorRank"] = 2
    wrong_shape = {**_condition("c3", f"Patient/{PID}"), "onsetDateTime": "last Tuesday"}
    both = {**wrong_shape, "id": "c4", "epicInternalFlag": True}
    bundle = {"resourceType": "Bundle", "type": "searchset",
              "entry": [{"resource": r} for r in (extra_top, extra_nested, wrong_shape, both)]}
    record = read_patient_record([bundle], PID, lambda _r: True)
    assert [c["id"] for c in record.of("Condition")] == ["c1", "c2"]
    assert record.stats.unknown_elements == 2
    assert record.stats.invalid == 2
