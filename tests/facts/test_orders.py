"""Selections parsing (facts/orders.py) and per-order rule folding (rules/evaluate.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cds_service.config import PROJECT_ROOT
from cds_service.facts.model import PatientFacts, SelectedOrder, order_fact_names
from cds_service.facts.orders import (
    dosage_per_day,
    dosing,
    draft_entries,
    selected_orders,
)
from cds_service.knowledge.loader import load_knowledge
from cds_service.rules.evaluate import evaluate

PID = "fd-os-unit"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS_HTTPS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@cache
def _knowledge():
    return load_knowledge(PROJECT_ROOT / "cards")


@pytest.fixture
def knowledge():
    return _knowledge()


def bundle(*resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources], **extra}


def sr(rid: str, concept: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"resourceType": "ServiceRequest", "id": rid, "status": "draft", "intent": "order",
            "code": concept, "subject": {"reference": f"Patient/{PID}"}, **fields}


def med(rid: str, dosage: Any, text: str = "dalfampridine 10 mg ER tablet", **fields: Any):
    return {"resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"text": text}, "subject": {"reference": f"Patient/{PID}"},
            "dosageInstruction": dosage, **fields}


def cpt(code: str) -> dict[str, Any]:
    return {"coding": [{"system": CPT, "code": code}]}


def one(knowledge, resource: dict[str, Any], *others: dict[str, Any]) -> SelectedOrder:
    reference = f"{resource['resourceType']}/{resource['id']}"
    (order,) = selected_orders(bundle(resource, *others), [reference], PID, knowledge)
    return order


# -- the Bundle ---------------------------------------------------------------------------------
def test_entries_without_type_or_full_url_and_ids_from_full_url() -> None:
    draft = {"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "ServiceRequest", "id": "a"}},
        {"fullUrl": "https://ehr.example.org/fhir/ServiceRequest/b/_history/2",
         "resource": {"resourceType": "ServiceRequest"}},
        {"fullUrl": "urn:uuid:5b3c1f0e-0000-4000-8000-000000000001",
         "resource": {"resourceType": "MedicationRequest"}},
        {"fullUrl": "urn:uuid:", "resource": {"resourceType": "MedicationRequest"}},
        {"resource": {"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "DeviceRequest", "id": "c"}}]}},
        {"resource": {"id": "no-type"}}, {"resource": None}, None, 3,
    ]}
    assert [e.reference for e in draft_entries(draft)] == [
        "ServiceRequest/a", "ServiceRequest/b",
        "MedicationRequest/5b3c1f0e-0000-4000-8000-000000000001", "DeviceRequest/c",
    ]


@pytest.mark.parametrize("draft", [None, {}, {"resourceType": "Bundle"},
                                   {"resourceType": "Bundle", "entry": "x"}, [], "x"])
def test_empty_or_broken_bundles(knowledge, draft) -> None:
    assert selected_orders(draft, ["ServiceRequest/x"], PID, knowledge) == []


def test_missing_and_duplicate_selections(knowledge) -> None:
    fusion = sr("f1", cpt("22612"))
    orders = selected_orders(bundle(fusion), ["ServiceRequest/absent", "ServiceRequest/f1",
                                              "ServiceRequest/f1"], PID, knowledge)
    assert [o.reference for o in orders] == ["ServiceRequest/f1"]
    assert orders[0].is_lumbar_fusion and orders[0].value("is_lumbar_fusion")


@pytest.mark.parametrize(
    ("subject", "kept"),
    [
        (None, True),
        ({"display": "the patient"}, True),
        ({"reference": f"Patient/{PID}"}, True),
        ({"reference": f"https://ehr.example.org/fhir/Patient/{PID}"}, True),
        ({"reference": "urn:uuid:pt-1"}, True),
        ({"reference": "Patient/other"}, False),
        ({"reference": "Group/g1"}, False),
        ("Patient/x", False),
    ],
)
def test_subject(knowledge, subject, kept) -> None:
    order = sr("s1", cpt("22612"))
    if subject is None:
        order.pop("subject")
    else:
        order["subject"] = subject
    draft = {"resourceType": "Bundle", "entry": [
        {"resource": order},
        {"fullUrl": "urn:uuid:pt-1", "resource": {"resourceType": "Patient", "id": PID}},
    ]}
    orders = selected_orders(draft, ["ServiceRequest/s1"], PID, knowledge)
    assert bool(orders) is kept


def test_inactive_orders_are_neither_reviewed_nor_counted(knowledge) -> None:
    cancelled_mri = sr("m1", cpt("72148"), status="revoked", priority="stat")
    afo = {"resourceType": "DeviceRequest", "id": "d1", "status": "draft", "intent": "order",
           "codeCodeableConcept": {"coding": [{"system": HCPCS_HTTPS, "code": "L1930"}]}}
    orders = selected_orders(bundle(cancelled_mri, afo), ["ServiceRequest/m1", "DeviceRequest/d1"],
                             PID, knowledge)
    assert [o.reference for o in orders] == ["DeviceRequest/d1"]
    assert orders[0].is_afo
    assert not orders[0].draft_has_lumbar_mri


def test_session_categories_include_unselected_orders(knowledge) -> None:
    afo = {"resourceType": "DeviceRequest", "id": "d1", "status": "draft", "intent": "order",
           "codeCodeableConcept": {"text": "Ankle-foot orthosis"}}
    mri = sr("m1", cpt("72148"), priority="asap")
    referral = sr("r1", {"text": "Urgent referral to spine surgery"})
    order = one(knowledge, afo, mri, referral)
    assert order.value("draft_has_lumbar_mri") and order.value("draft_has_urgent_lumbar_mri")
    assert order.value("draft_has_spine_surgery_referral")
    assert not order.value("draft_has_urgent_spine_surgery_referral")
    assert order.value("draft_has_afo") and not order.value("is_lumbar_mri")


def test_invalid_fhir_is_still_reviewed(knowledge) -> None:
    order = sr("x1", cpt("22630"))
    del order["intent"]  # required in FHIR; a client that omits it still gets the safety check
    assert one(knowledge, order).is_lumbar_fusion


def test_sandbox_quirks_are_normalised(knowledge) -> None:
    order = med("q1", {"doseAndRate": [{"doseQuantity": {"value": 20, "unit": "mg"}}],
                       "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}},
                reasonCode={"text": "MS"}, category={"text": "outpatient"})
    parsed = one(knowledge, order)
    assert parsed.resource["reasonCode"] == [{"text": "MS"}]
    assert parsed.resource["category"] == [{"text": "outpatient"}]
    assert (parsed.dose_mg, parsed.doses_per_day, parsed.daily_dose_mg) == (20, 2, 40)


# -- what is ordered ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("resource", "category"),
    [
        (sr("t1", {"text": "Posterior tibial tendon transfer, left"}), "tendon-transfer"),
        (sr("t2", cpt("27691")), "tendon-transfer"),
        (sr("t3", cpt("27870")), "ankle-arthrodesis"),
        (sr("t4", {"text": "TLIF L5-S1"}), "lumbar-fusion"),
        (sr("t5", {"coding": [{"system": "http://loinc.org", "code": "30679-5"}]}), "lumbar-mri"),
        (sr("t6", cpt("95886")), "ncs-emg"),
        (sr("t7", {"coding": [{"system": "http://snomed.info/sct", "code": "308447003"}]}),
         "physical-therapy"),
        (med("t8", [], text="Ampyra"), "dalfampridine"),
        (med("t9", [], text="x", medicationCodeableConcept={
            "coding": [{"system": "http://hl7.org/fhir/sid/ndc", "code": "0591-2533-60"}]}),
         "dalfampridine"),
        ({"resourceType": "MedicationRequest", "id": "t10", "status": "draft", "intent": "order",
          "medicationReference": {"reference": "#m"},
          "contained": [{"resourceType": "Medication", "id": "m",
                         "code": {"text": "fampridine 10 mg"}}]}, "dalfampridine"),
        ({"resourceType": "MedicationRequest", "id": "t11", "status": "draft", "intent": "order",
          "medicationReference": {"reference": "Medication/zz", "display": "Dalfampridine ER"}},
         "dalfampridine"),
        ({"resourceType": "DeviceRequest", "id": "t12", "status": "draft", "intent": "order",
          "codeReference": {"display": "WalkAide peroneal nerve stimulator"}}, "fes"),
    ],
    ids=lambda v: v if isinstance(v, str) else v["id"],
)
def test_classification(knowledge, resource, category) -> None:
    assert category in one(knowledge, resource).categories


def test_label_names_the_matched_code(knowledge) -> None:
    afo = {"resourceType": "DeviceRequest", "id": "l1", "status": "draft", "intent": "order",
           "codeCodeableConcept": {"coding": [{"system": HCPCS_HTTPS, "code": "L1930"}],
                                   "text": "AFO"}}
    assert one(knowledge, afo).label == "AFO (HCPCS L1930)"


# -- dosing -------------------------------------------------------------------------------------
def mg(value: Any, unit: str = "mg") -> list[dict[str, Any]]:
    return [{"doseQuantity": {"value": value, "unit": unit}}]


@pytest.mark.parametrize(
    ("dosage", "expected"),
    [
        ([{"doseAndRate": mg(10), "timing": {"repeat": {"frequency": 1, "period": 12,
                                                         "periodUnit": "h"}}}], (10, 2, 20)),
        ([{"doseAndRate": mg(0.01, "g"), "timing": {"code": {"coding": [{"code": "BID"}]}}}],
         (10, 2, 20)),
        ([{"doseAndRate": mg(2, "tablet"), "timing": {"code": {"text": "TID"}}}], (20, 3, 60)),
        ([{"doseAndRate": mg(1, "{tbl}"), "text": "every 8 hours"}], (10, 3, 30)),
        ([{"doseAndRate": [{"doseRange": {"low": {"value": 10, "unit": "mg"},
                                          "high": {"value": 15, "unit": "mg"}}}],
           "timing": {"repeat": {"timeOfDay": ["08:00:00", "20:00:00"]}}}], (15, 2, 30)),
        ([{"text": "20 mg twice daily"}], (20, 2, 40)),
        # two concurrent instructions (same or no sequence) add up
        ([{"doseAndRate": mg(10), "timing": {"repeat": {"when": ["MORN"]}}},
          {"doseAndRate": mg(10), "timing": {"repeat": {"when": ["EVE"]}}}], (10, 2, 20)),
        # sequential instructions: the busiest one counts
        ([{"sequence": 1, "doseAndRate": mg(10), "timing": {"code": {"text": "BID"}}},
          {"sequence": 2, "doseAndRate": mg(10), "timing": {"code": {"text": "QID"}}}],
         (10, 4, 40)),
        ([{"doseAndRate": mg(True)}], (None, None, None)),
        ([{"doseAndRate": mg(10, "mL")}], (None, None, None)),
        ("garbage", (None, None, None)),
        ({"doseAndRate": mg(10), "timing": {"repeat": {"frequency": 2, "period": 1,
                                                        "periodUnit": "d"}}}, (10, 2, 20)),
    ],
)
def test_dosing(dosage, expected) -> None:
    parsed = dosing({"dosageInstruction": dosage}, {"text": "dalfampridine 10 mg ER tablet"})
    assert (parsed.dose_mg, parsed.doses_per_day, parsed.daily_dose_mg) == expected


@pytest.mark.parametrize(
    ("timing", "per_day"),
    [
        ({"repeat": {"frequency": 2, "frequencyMax": 3, "period": 1, "periodUnit": "d"}}, 3),
        ({"repeat": {"period": 1, "periodUnit": "wk"}}, 1 / 7),
        ({"repeat": {"frequency": 1, "period": 0, "periodUnit": "d"}}, None),
        ({"repeat": {"frequency": 1, "period": 1, "periodUnit": "fortnight"}}, None),
        ({"code": {"coding": [{"code": "q12h"}]}}, 2),
        ({"code": {"text": "b.i.d."}}, 2),
        ({"code": {"text": "every 0 hours"}}, None),
        ({}, None),
    ],
)
def test_per_day(timing, per_day) -> None:
    assert dosage_per_day({"timing": timing}) == (pytest.approx(per_day) if per_day else None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["resourceType", "id", "entry", "resource", "fullUrl",
                                       "subject", "reference", "code", "status", "priority",
                                       "dosageInstruction", "doseAndRate", "doseQuantity",
                                       "value", "unit", "timing", "repeat", "frequency",
                                       "period", "periodUnit", "text", "coding",
                                       "medicationCodeableConcept", "medicationReference",
                                       "contained", "sequence"]), children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=json_values, order_type=st.sampled_from(
    ["ServiceRequest", "DeviceRequest", "MedicationRequest"]))
def test_arbitrary_json_never_raises(payload, order_type) -> None:
    resource = payload if isinstance(payload, dict) else {"value": payload}
    resource = {**resource, "resourceType": order_type, "id": "fz"}
    draft = {"resourceType": "Bundle", "entry": [{"resource": resource}, {"resource": payload}]}
    selected_orders(draft, [f"{order_type}/fz"], PID, _knowledge())


# -- fact names and folding ---------------------------------------------------------------------
def test_order_fact_names(knowledge) -> None:
    names = order_fact_names(knowledge.thresholds["selected_order_categories"])
    for name in ("order.daily_dose_mg", "order.is_spine_surgery_referral",
                 "order.draft_has_lumbar_mri", "order.draft_has_urgent_lumbar_mri"):
        assert name in names
    order = SelectedOrder("ServiceRequest/x", "ServiceRequest", "x", "x", "draft", frozenset())
    with pytest.raises(AttributeError):
        order.no_such_fact  # noqa: B018


def _facts(**values: Any) -> PatientFacts:
    return PatientFacts(patient_id=PID, now=NOW, **values)


def test_create_only_rule_folds_into_one_match(knowledge) -> None:
    afo = {"resourceType": "DeviceRequest", "id": "d1", "status": "draft", "intent": "order",
           "codeCodeableConcept": {"text": "AFO"}}
    pt = sr("p1", {"text": "Physical therapy referral"})
    orders = selected_orders(bundle(afo, pt), ["DeviceRequest/d1", "ServiceRequest/p1"], PID,
                             knowledge)
    facts = _facts(has_red_flag=True, red_flag_names=("bilateral foot drop",))
    (match,) = evaluate(knowledge, "order-select", facts, orders)
    assert match.recommendation.id == "urgent-red-flag-evaluation"
    assert [o.reference for o in match.orders] == ["DeviceRequest/d1", "ServiceRequest/p1"]
    assert [s.key for s in match.suggestions] == ["stat-lumbar-mri", "urgent-spine-referral"]


def test_rules_acting_on_the_order_stay_per_order(knowledge) -> None:
    fusions = [sr("f1", cpt("22612")), sr("f2", cpt("22633"))]
    orders = selected_orders(bundle(*fusions), ["ServiceRequest/f1", "ServiceRequest/f2"], PID,
                             knowledge)
    facts = _facts(has_lumbar_disc_herniation=True)
    matches = evaluate(knowledge, "order-select", facts, orders)
    assert [(m.recommendation.id, m.order.reference) for m in matches] == [
        ("avoid-routine-fusion", "ServiceRequest/f1"),
        ("avoid-routine-fusion", "ServiceRequest/f2"),
    ]


@pytest.mark.parametrize(
    ("facts", "fires"),
    [
        ({"has_lumbar_radiculopathy": True}, True),
        ({"has_lumbar_radiculopathy": True, "has_spondylolisthesis": True}, False),
        ({"has_lumbar_radiculopathy": True, "prior_lumbar_decompression": True}, True),
        ({"has_lumbar_radiculopathy": True, "chronic_axial_low_back_pain": True}, True),
        ({"has_lumbar_radiculopathy": True, "prior_lumbar_decompression": True,
          "chronic_axial_low_back_pain": True}, False),
        ({}, False),
    ],
)
def test_fusion_exceptions(knowledge, facts, fires) -> None:
    orders = selected_orders(bundle(sr("f1", cpt("22612"))), ["ServiceRequest/f1"], PID, knowledge)
    matches = evaluate(knowledge, "order-select", _facts(**facts), orders)
    assert bool(matches) is fires


DALF_BID = {"doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}],
            "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}


@pytest.mark.parametrize(
    ("facts", "dosage", "indicator", "keys"),
    [
        ({"crcl_latest": 90.0}, DALF_BID, None, None),
        ({"crcl_latest": 51.0}, DALF_BID, None, None),
        ({"crcl_latest": 50.0}, DALF_BID, "critical", ["cancel-contraindicated"]),
        ({"crcl_latest": 90.0, "seizure_history": True}, DALF_BID, "critical",
         ["cancel-contraindicated"]),
        ({"crcl_latest": 90.0, "ckd_stage_3b_or_worse": True}, DALF_BID, "critical",
         ["cancel-contraindicated"]),
        ({}, DALF_BID, "warning", ["cancel"]),
        ({"egfr_latest": 40.0, "renal_function_known": True}, DALF_BID, "warning", ["cancel"]),
        ({"crcl_latest": 90.0}, {**DALF_BID, "doseAndRate": [{"doseQuantity": {
            "value": 15, "unit": "mg"}}]}, "warning", ["reduce-to-label-dose", "cancel"]),
        ({"crcl_latest": 90.0}, {**DALF_BID, "timing": {"code": {"text": "TID"}}}, "warning",
         ["reduce-to-label-dose", "cancel"]),
        ({"crcl_latest": 40.0}, {**DALF_BID, "timing": {"code": {"text": "TID"}}}, "critical",
         ["cancel-contraindicated"]),
    ],
)
def test_dalfampridine_thresholds(knowledge, facts, dosage, indicator, keys) -> None:
    orders = selected_orders(bundle(med("d1", [dosage])), ["MedicationRequest/d1"], PID, knowledge)
    matches = evaluate(knowledge, "order-select", _facts(**facts), orders)
    if indicator is None:
        assert matches == []
        return
    (match,) = matches
    assert match.indicator == indicator
    assert [s.key for s in match.suggestions] == keys


@pytest.mark.parametrize(
    ("facts", "fires"),
    [
        ({"has_foot_drop": True, "foot_drop_duration_days": 181}, True),
        ({"has_foot_drop": True, "foot_drop_duration_days": 182}, False),
        ({"has_foot_drop": True, "foot_drop_duration_days": 300, "dorsiflexion_improving": True},
         True),
        ({"has_foot_drop": True}, False),
    ],
)
def test_tendon_transfer_threshold(knowledge, facts, fires) -> None:
    orders = selected_orders(bundle(sr("t1", {"text": "Tendon transfer"})), ["ServiceRequest/t1"],
                             PID, knowledge)
    assert bool(evaluate(knowledge, "order-select", _facts(**facts), orders)) is fires


@pytest.mark.parametrize(
    ("priority", "facts", "fires"),
    [
        (None, {"has_red_flag": True}, True),
        ("routine", {"has_red_flag": True}, True),
        ("urgent", {"has_red_flag": True}, False),
        ("asap", {"has_red_flag": True}, False),
        ("stat", {"has_red_flag": True}, False),
        ("routine", {}, False),
        ("routine", {"has_red_flag": True, "lumbar_mri_urgent_since_red_flag": True}, False),
    ],
)
def test_mri_priority(knowledge, priority, facts, fires) -> None:
    mri = sr("m1", cpt("72148"), **({"priority": priority} if priority else {}))
    orders = selected_orders(bundle(mri), ["ServiceRequest/m1"], PID, knowledge)
    matches = evaluate(knowledge, "order-select", _facts(**facts), orders)
    assert [m.recommendation.id for m in matches] == (["mri-priority-stat"] if fires else [])


def test_a_referral_to_evaluate_a_fusion_is_not_a_fusion_order(knowledge) -> None:
    facts = _facts(has_lumbar_disc_herniation=True)
    referral = one(knowledge, sr("r1", {"text": "Referral to Neurosurgery - evaluation for "
                                                "L4-L5 fusion"}))
    fusion = one(knowledge, sr("f1", {"text": "FUSION SPINE LUMBAR POSTERIOR L4-5"}))
    assert referral.is_lumbar_fusion and referral.is_referral
    assert not evaluate(knowledge, "order-select", facts, [referral])
    assert [m.recommendation.id for m in evaluate(knowledge, "order-select", facts, [fusion])] == [
        "avoid-routine-fusion"]
