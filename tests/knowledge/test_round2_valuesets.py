"""Round-2 clinical red team: value-set data gaps, checked through the loaded knowledge (the value
sets as fact extraction reads them, with the NegEx-style context check of
cds_service.knowledge.valuesets).

Scenarios (red team): d2b seizure history as text, s4 "non-spastic", o7/o7b cerebral palsy and
spinal cord injury as central causes, o2/o3b orthotic training and referral, sp0/sp2 spine
referral names, d11 eGFR by display, s3 the botulinum set and CPT 64615.
"""

from __future__ import annotations

import pytest

from cds_service.config import DEFAULT_CARDS_DIR
from cds_service.knowledge.loader import load_knowledge

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
LOINC = "http://loinc.org"
EPIC_OID = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"


@pytest.fixture(scope="module")
def knowledge():
    return load_knowledge(DEFAULT_CARDS_DIR)


def _concept(system: str, code: str, display: str | None = None,
             text: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    concept: dict = {"coding": [coding]}
    if text:
        concept["text"] = text
    return concept


# ----------------------------------------------------------------- seizure history (d2b)

SEIZURE_ASSERTED = [
    "History of seizures",
    "Seizure disorder",
    "Seizures",
    "Febrile seizure in childhood",
    "Febrile convulsions",
    "Epilepsy",
    "Juvenile myoclonic epilepsy",
    "Epileptic seizure 2019",
    "Status epilepticus (2015)",
    "Convulsions",
    "Single generalised tonic-clonic seizure",
    "Grand mal",
    "History of fits",
    "Febrile fits as a child",
    "Had a fit in 2010",
    "Fits",
    "Seizure-free on levetiracetam",
]

SEIZURE_NOT_ASSERTED = [
    "No history of seizures",
    "Denies seizures",
    "Risk of seizures explained",
    "AFO fits well",
    "Fitting of ankle-foot orthosis",
    "Shoe fits",
    "Had a fit of coughing",
    "Anti-seizure medication",
    "Anticonvulsant level",
    "Personal history of other diseases of the nervous system and sense organs",
    "Fitness to drive",
]


@pytest.mark.parametrize("text", SEIZURE_ASSERTED)
def test_seizure_text_counts(knowledge, text: str):
    vs = knowledge.valueset("seizure-disorder")
    assert vs.matches_text(text)
    assert vs.matches_concept({"text": text})


@pytest.mark.parametrize("text", SEIZURE_NOT_ASSERTED)
def test_seizure_text_does_not_count(knowledge, text: str):
    assert not knowledge.valueset("seizure-disorder").matches_text(text)


def test_z86_69_counts_only_through_its_text(knowledge):
    vs = knowledge.valueset("seizure-disorder")
    display = "Personal history of other diseases of the nervous system and sense organs"
    assert not vs.matches_concept(_concept(ICD10CM, "Z86.69", display))  # not seizure-specific
    assert vs.matches_concept(_concept(ICD10CM, "Z86.69", display, "History of seizures"))


@pytest.mark.parametrize("code", ["R56.00", "R56.01", "R5600", "G40.909", "R56.9"])
def test_febrile_and_other_seizure_codes(knowledge, code: str):
    assert knowledge.valueset("seizure-disorder").matches_coding(ICD10CM, code)


# ----------------------------------------------------------------- central causes (o7, o7b)

@pytest.mark.parametrize(("vs_id", "code"), [
    ("cerebral-palsy", "G80.1"),
    ("cerebral-palsy", "G80.9"),
    ("cerebral-palsy", "G802"),
    ("spinal-cord-injury", "G82.22"),
    ("spinal-cord-injury", "G82.20"),
    ("spinal-cord-injury", "G82.54"),
])
def test_central_cause_codes(knowledge, vs_id: str, code: str):
    assert knowledge.valueset(vs_id).matches_coding(ICD10CM, code)


@pytest.mark.parametrize(("vs_id", "code"), [
    ("cerebral-palsy", "G81.10"),  # spastic hemiplegia: not cerebral palsy
    ("spinal-cord-injury", "G83.4"),  # cauda equina syndrome: lower motor neuron, a red flag
    ("spinal-cord-injury", "G83.1"),  # monoplegia of lower limb
    ("spinal-cord-injury", "G11.4"),
])
def test_central_cause_codes_not_over_broad(knowledge, vs_id: str, code: str):
    assert not knowledge.valueset(vs_id).matches_coding(ICD10CM, code)


def test_new_causes_are_central_and_localising(knowledge):
    t = knowledge.thresholds
    assert t["condition_facts"]["has_cerebral_palsy"] == ["cerebral-palsy"]
    assert t["condition_facts"]["has_spinal_cord_injury"] == ["spinal-cord-injury"]
    for fact in ("has_cerebral_palsy", "has_spinal_cord_injury"):
        assert fact in t["central_causes"]
        assert fact in t["localising_causes"]
        assert fact not in t["peripheral_causes"]


# ----------------------------------------------------------------- orthosis (o2, o3b, o5b)

def test_orthotic_training_counts_as_afo(knowledge):
    afo = knowledge.valueset("afo")
    assert afo.matches_coding(CPT, "97760")
    assert not afo.matches_coding(CPT, "97763")  # orthotic or prosthetic, subsequent: not added
    assert not afo.matches_coding(HCPCS, "L1932")  # not verified here


def test_pt_procedure_codes_not_added(knowledge):
    pt = knowledge.valueset("physical-therapy")
    assert not pt.matches_coding(CPT, "97530")
    assert not pt.matches_coding(CPT, "97112")


# ----------------------------------------------------------------- eGFR (d11)

def _lab_kind(knowledge, concept: dict) -> str | None:
    """The lab kind fact extraction gives an Observation code: the first of lab_categories whose
    value set matches."""
    for vs_id in knowledge.thresholds["lab_categories"]:
        if knowledge.valueset(vs_id).matches_concept(concept):
            return vs_id
    return None


@pytest.mark.parametrize("concept", [
    _concept(LOINC, "48642-3", "Glomerular filtration rate/1.73 sq M.predicted", "eGFR"),
    _concept(LOINC, "48643-1", "Glomerular filtration rate/1.73 sq M.predicted among blood donors"),
    _concept("urn:oid:1.2.3.4", "EGFR1", "eGFR (MDRD)"),
    _concept("urn:oid:1.2.3.4", "GFR2", "Estimated GFR, non-African American"),
    _concept(LOINC, "62238-1"),
])
def test_egfr_by_display(knowledge, concept: dict):
    assert _lab_kind(knowledge, concept) == "egfr"


@pytest.mark.parametrize("concept", [
    _concept(LOINC, "2164-2", "Creatinine renal clearance in 24 hour Urine and Serum or Plasma"),
    _concept("urn:oid:1.2.3.4", "CRCL", "Creatinine clearance, estimated (Cockcroft-Gault)"),
    _concept("urn:oid:1.2.3.4", "CRCL2", "Creatinine clearance (not eGFR)"),
    _concept("urn:oid:1.2.3.4", "GFRCL", "Glomerular filtration rate by creatinine clearance"),
])
def test_creatinine_clearance_is_not_egfr(knowledge, concept: dict):
    assert _lab_kind(knowledge, concept) == "creatinine-clearance"


def test_egfr_pattern_alone_refuses_clearance(knowledge):
    egfr = knowledge.valueset("egfr")
    assert not egfr.matches_text("Glomerular filtration rate by creatinine clearance")
    assert not egfr.matches_text("Creatinine clearance")
    assert not egfr.matches_text("Creatinine [Mass/volume] in Serum or Plasma")


# ----------------------------------------------------------------- botulinum toxin (s3)

def test_chemodenervation_for_migraine_code_is_not_in_the_set(knowledge):
    """Research file 1.8 lists only the extremity chemodenervation codes 64642-64645."""
    botulinum = knowledge.valueset("botulinum-toxin")
    assert not botulinum.matches_coding(CPT, "64615")
    for code in ("64642", "64643", "64644", "64645"):
        assert botulinum.matches_coding(CPT, code)


# ------------------------------------------------------------ texts, value set by value set
# (s4, o7, o7b, o2, o3b, sp0, sp2; round 3: foot-drop statements and fusion order names)
TEXTS = {
    "spasticity": {
        True: ["Spasticity of left lower limb", "Spastic hemiparesis", "Spastic foot drop",
               "Post-stroke spasticity, non-progressive"],
        False: ["Flaccid (non-spastic) hemiparesis", "Non spastic paraparesis",
                "Nonspastic weakness", "Hemiparesis, not spastic"],
    },
    "cerebral-palsy": {
        True: ["Spastic diplegic cerebral palsy"],
        False: ["No cerebral palsy"],
    },
    "spinal-cord-injury": {
        True: ["Incomplete paraplegia after thoracic spinal cord injury",
               "Spinal cord injury, T10, ASIA C", "Incomplete tetraplegia"],
        False: ["Paraplegia due to cauda equina syndrome",
                "Paraparesis from Guillain-Barre syndrome"],
    },
    "afo": {
        True: ["Ambulatory referral to Orthotics", "AMB REFERRAL TO ORTHOTICS",
               "Referral to orthotist", "Consult orthotics for left foot drop",
               "Orthotics referral", "Orthotic clinic referral"],
        False: ["Referral to orthotics for custom foot orthotics", "Referral for foot orthotics",
                "Referral to orthotics for insoles", "Referral to orthotics for knee brace",
                "Referral to orthotics for KAFO", "Referral to orthotics for wrist splint",
                "Orthotics", "No referral to orthotics"],
    },
    "spine-surgery-referral": {
        True: ["Ambulatory referral to Orthopedic Spine", "Referral to Spine Center",
               "Referral to spine centre", "Referral to Orthopaedic Spine Surgery",
               "Orthopedic spine referral", "Spine center consult",
               "Urgent referral to spine surgery"],
        False: ["Ambulatory referral to Orthopedics", "Referral to physical therapy",
                "Spine center", "Lumbar spine MRI"],
    },
    "foot-drop": {
        True: ["Bilateral foot drop", "Acute left foot drop due to L5 radiculopathy",
               "Right foot drop (peroneal palsy)", "Foot-drop, left"],
        False: ["Family history of bilateral foot drop (mother, CMT)", "Foot drop risk",
                "Potential for foot drop related to immobility", "Foot drop precautions",
                "Foot drop prevention (bed rest, ICU)", "Gait abnormality - evaluate for foot drop",
                "Left foot drop, resolved 2019",
                "Right foot drop - resolved after L5 discectomy (2021)",
                "Left foot drop (resolved)"],
    },
    "lumbar-fusion": {
        True: ["FUSION SPINE LUMBAR POSTERIOR L4-5", "L4-5 DECOMPRESSION AND POSTERIOR FUSION"],
        False: ["Cervical fusion C5-6", "Lumbar microdiscectomy L4-5"],
    },
}
TEXT_CASES = [(vs_id, text, expected) for vs_id, cases in TEXTS.items()
              for expected, texts in cases.items() for text in texts]


@pytest.mark.parametrize(("vs_id", "text", "expected"), TEXT_CASES)
def test_value_set_text(knowledge, vs_id: str, text: str, expected: bool):
    assert knowledge.valueset(vs_id).matches_text(text) is expected


@pytest.mark.parametrize("text", TEXTS["afo"][True] + TEXTS["spine-surgery-referral"][True])
def test_order_names_count_as_a_local_codes_display(knowledge, text: str):
    vs_id = "afo" if text in TEXTS["afo"][True] else "spine-surgery-referral"
    assert knowledge.valueset(vs_id).matches_concept(_concept(EPIC_OID, "REF0", text))
