"""Checks on the clinical value sets in cards/valuesets (data only; no service code imported)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fhir.resources.R4B.valueset import ValueSet

VALUESET_DIR = Path(__file__).resolve().parents[2] / "cards" / "valuesets"
TEXT_PATTERN_URL = "https://footdrop-cds.example.org/fhir/StructureDefinition/text-pattern"

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS_HTTP = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
HCPCS_HTTPS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
NDC = "http://hl7.org/fhir/sid/ndc"
ALLOWED_SYSTEMS = {SNOMED, ICD10CM, LOINC, RXNORM, CPT, HCPCS_HTTP, HCPCS_HTTPS, NDC}
PREFIX_SYSTEMS = {ICD10CM, NDC}

ICD10CM_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")
INVALID_LOINC = "24967-8"

REQUIRED_IDS = {
    # conditions / findings
    "foot-drop",
    "body-site-right",
    "body-site-left",
    "body-site-bilateral",
    "lumbar-radiculopathy",
    "lumbar-disc-herniation",
    "thoracic-disc",
    "spondylolisthesis",
    "cauda-equina-syndrome",
    "urinary-retention",
    "fecal-incontinence",
    "neurogenic-bladder",
    "saddle-anaesthesia",
    "common-peroneal-neuropathy",
    "peroneal-nerve-injury",
    "sciatic-or-plexus-lesion",
    "stroke",
    "multiple-sclerosis",
    "spasticity",
    "habitual-leg-crossing",
    "seizure-disorder",
    "ckd-stage-3b-to-5",
    "chronic-axial-low-back-pain",
    "walking-difficulty",
    # observations
    "ankle-dorsiflexion-strength",
    "great-toe-extension-strength",
    "plantar-flexion-strength",
    "knee-extension-strength",
    "hip-flexion-strength",
    "hip-abduction-strength",
    "creatinine-clearance",
    "egfr",
    "serum-creatinine",
    # orders / procedures
    "lumbar-mri",
    "ncs-emg",
    "afo",
    "fes",
    "physical-therapy",
    "lumbar-fusion",
    "lumbar-decompression",
    "tendon-transfer",
    "ankle-arthrodesis",
    "dalfampridine",
    "botulinum-toxin",
}

FILES = sorted(VALUESET_DIR.glob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _includes(data: dict) -> list[dict]:
    return data.get("compose", {}).get("include", [])


def _codes(data: dict):
    """Yield (system, code) for every concept and every filter value."""
    for include in _includes(data):
        for concept in include.get("concept", []):
            yield include["system"], concept["code"]
        for flt in include.get("filter", []):
            yield include["system"], flt["value"]


def _patterns(data: dict) -> list[str]:
    return [
        ext["valueString"]
        for ext in data.get("extension", [])
        if ext.get("url") == TEXT_PATTERN_URL
    ]


def loinc_check_digit_ok(code: str) -> bool:
    """LOINC mod-10 check digit (Luhn over the part before the hyphen)."""
    match = re.fullmatch(r"(\d{1,7})-(\d)", code)
    if not match:
        return False
    body, check = match.group(1), int(match.group(2))
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:  # rightmost digit and every second one to its left are doubled
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10 == check


def _by_id() -> dict[str, dict]:
    return {path.stem: _load(path) for path in FILES}


def _matches(vs_id: str, text: str) -> bool:
    """Same text semantics as the service: re.search, case-insensitive, any pattern."""
    return any(re.search(pattern, text, re.IGNORECASE) for pattern in _patterns(_by_id()[vs_id]))


# ------------------------------------------------------------------------------- the algorithm


def test_loinc_check_digit_algorithm():
    assert loinc_check_digit_ok("30679-5")
    assert loinc_check_digit_ok("24967-2")
    assert loinc_check_digit_ok("2160-0")
    assert not loinc_check_digit_ok(INVALID_LOINC)
    assert not loinc_check_digit_ok("30679-4")
    assert not loinc_check_digit_ok("30679")


# ------------------------------------------------------------------------------- per file


def test_directory_not_empty():
    assert FILES, f"no value sets in {VALUESET_DIR}"


def test_required_ids_exist():
    missing = REQUIRED_IDS - {path.stem for path in FILES}
    assert not missing, f"missing value sets: {sorted(missing)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_is_valid_r4_valueset(path: Path):
    data = _load(path)
    assert data["resourceType"] == "ValueSet"
    ValueSet.model_validate(data)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_id_and_url(path: Path):
    data = _load(path)
    assert data["id"] == path.stem
    assert data["url"].endswith(f"/ValueSet/{path.stem}")
    assert data.get("status") == "active"
    assert data.get("description"), "description documents sources and exclusions"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_has_codes_or_text_patterns(path: Path):
    data = _load(path)
    assert list(_codes(data)) or _patterns(data), "value set matches nothing"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_systems_allowed(path: Path):
    for include in _includes(_load(path)):
        assert include.get("system") in ALLOWED_SYSTEMS, include.get("system")
        assert include.get("concept") or include.get("filter"), "include without codes"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_filters_are_prefix_is_a_on_icd_or_ndc(path: Path):
    for include in _includes(_load(path)):
        for flt in include.get("filter", []):
            assert flt["property"] == "concept"
            assert flt["op"] == "is-a"
            assert include["system"] in PREFIX_SYSTEMS, include["system"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_text_patterns_compile(path: Path):
    for pattern in _patterns(_load(path)):
        re.compile(pattern, re.IGNORECASE)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_loinc_codes_have_valid_check_digit(path: Path):
    for system, code in _codes(_load(path)):
        if system == LOINC:
            assert loinc_check_digit_ok(code), f"bad LOINC check digit: {code}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_icd10cm_codes_well_formed(path: Path):
    for system, code in _codes(_load(path)):
        if system == ICD10CM:
            assert ICD10CM_CODE.match(code), f"malformed ICD-10-CM code: {code}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_no_invalid_loinc_anywhere(path: Path):
    assert INVALID_LOINC not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_no_duplicate_codes(path: Path):
    codes = list(_codes(_load(path)))
    assert len(codes) == len(set(codes))


def test_hcpcs_listed_under_both_uris():
    for vs_id in ("afo", "fes", "botulinum-toxin"):
        data = _by_id()[vs_id]
        http = {c for s, c in _codes(data) if s == HCPCS_HTTP}
        https = {c for s, c in _codes(data) if s == HCPCS_HTTPS}
        assert http and http == https, vs_id


# ------------------------------------------------------------------------------- pattern behaviour

POSITIVE = [
    ("ankle-dorsiflexion-strength", "Ankle dorsiflexion strength"),
    ("ankle-dorsiflexion-strength", "L ankle dorsiflexors MRC grade"),
    ("ankle-dorsiflexion-strength", "Tibialis anterior manual muscle test"),
    ("great-toe-extension-strength", "Great toe dorsiflexion strength"),
    ("great-toe-extension-strength", "Extensor hallucis longus strength"),
    ("great-toe-extension-strength", "Hallux extension MRC"),
    ("great-toe-extension-strength", "EHL power right"),
    ("plantar-flexion-strength", "Ankle plantarflexion strength"),
    ("plantar-flexion-strength", "Gastrocnemius MMT"),
    ("knee-extension-strength", "Quadriceps strength"),
    ("hip-flexion-strength", "Hip flexion strength"),
    ("hip-flexion-strength", "Iliopsoas MRC"),
    ("hip-abduction-strength", "Gluteus medius strength"),
    ("hip-abduction-strength", "Hip abductors 4/5"),
    ("saddle-anaesthesia", "Saddle anaesthesia"),
    ("saddle-anaesthesia", "New saddle anesthesia since yesterday"),
    ("saddle-anaesthesia", "Perineal numbness"),
    ("habitual-leg-crossing", "Habitual leg crossing"),
    ("habitual-leg-crossing", "Patient crosses legs for hours at work"),
    ("habitual-leg-crossing", "Sits with legs crossed"),
    ("common-peroneal-neuropathy", "Compressive peroneal neuropathy at the fibular head"),
    ("common-peroneal-neuropathy", "Common fibular nerve palsy"),
    ("common-peroneal-neuropathy", "Compression of the left common peroneal nerve"),
    ("dalfampridine", "Dalfampridine ER 10 mg tablet"),
    ("dalfampridine", "AMPYRA 10 MG"),
    ("dalfampridine", "4-aminopyridine (compounded)"),
    ("lumbar-mri", "MRI lumbar spine without contrast"),
    ("lumbar-mri", "MR Lumbar spine WO contrast"),
    ("lumbar-mri", "L-spine MRI"),
    ("lumbar-mri", "Magnetic resonance imaging, spinal canal and contents, lumbar"),
    ("creatinine-clearance", "Creatinine clearance (Cockcroft-Gault)"),
    ("creatinine-clearance", "CrCl estimated"),
    ("afo", "Ankle-foot orthosis, custom"),
    ("afo", "Dispense AFO right"),
    ("fes", "Functional electrical stimulation for foot drop"),
    ("fes", "WalkAide peroneal nerve stimulator"),
    ("fes", "Bioness L300 Go"),
    ("physical-therapy", "Referral to physiotherapy"),
    ("physical-therapy", "Physical therapy evaluation"),
    ("ncs-emg", "NCS/EMG left leg"),
    ("ncs-emg", "Nerve conduction studies"),
    ("lumbar-fusion", "L4-5 TLIF"),
    ("lumbar-fusion", "Posterolateral lumbar fusion"),
    ("lumbar-fusion", "Spinal fusion"),
    ("lumbar-decompression", "L5-S1 microdiscectomy"),
    ("lumbar-decompression", "Lumbar decompression"),
    ("lumbar-decompression", "Laminotomy (hemilaminectomy) with decompression of nerve root(s)"),
    ("tendon-transfer", "Posterior tibial tendon transfer"),
    ("ankle-arthrodesis", "Ankle arthrodesis"),
    ("ankle-arthrodesis", "Arthrodesis, ankle, open"),
    ("botulinum-toxin", "OnabotulinumtoxinA injection"),
    ("botulinum-toxin", "Botox 200 units"),
    ("spasticity", "Spastic foot drop"),
    ("chronic-axial-low-back-pain", "Chronic axial low back pain"),
    ("spine-surgery-referral", "Urgent referral to spine surgery"),
    ("spine-surgery-referral", "Neurosurgery consult"),
]

NEGATIVE = [
    # great toe must never count as ankle dorsiflexion
    ("ankle-dorsiflexion-strength", "Great toe dorsiflexion strength"),
    ("ankle-dorsiflexion-strength", "Hallux dorsiflexion"),
    ("ankle-dorsiflexion-strength", "Ankle dorsiflexion range of motion"),
    ("ankle-dorsiflexion-strength", "Ankle dorsiflexion ROM (degrees)"),
    ("plantar-flexion-strength", "Plantarflexor spasticity (Modified Ashworth)"),
    ("plantar-flexion-strength", "Toe plantar flexion"),
    ("knee-extension-strength", "Quadriceps reflex"),
    ("great-toe-extension-strength", "Hallux valgus"),
    ("great-toe-extension-strength", "Ankle dorsiflexion strength"),
    ("lumbar-mri", "MR Lumbosacral plexus"),
    ("lumbar-mri", "CT lumbar spine"),
    ("lumbar-mri", "MRI brain"),
    ("afo", "Knee-ankle-foot orthosis"),
    ("ncs-emg", "Needle electromyography for guidance in conjunction with chemodenervation"),
    ("common-peroneal-neuropathy", "Peroneal nerve stimulator"),
    ("lumbar-decompression", "Peroneal nerve decompression at the fibular head"),
    ("lumbar-decompression", "Anterior cervical discectomy and fusion"),
    (
        "lumbar-decompression",
        "Arthrodesis, posterior interbody technique, including laminectomy and/or discectomy "
        "to prepare interspace (other than for decompression), single interspace; lumbar",
    ),
    ("lumbar-fusion", "Cervical spinal fusion"),
    ("lumbar-fusion", "Ankle arthrodesis"),
    ("ankle-arthrodesis", "Triple arthrodesis"),
    ("fes", "Bioness H200"),
    ("creatinine-clearance", "Creatinine [Mass/volume] in Serum or Plasma"),
    ("habitual-leg-crossing", "Crossed the road"),
    ("saddle-anaesthesia", "Anesthesia of skin"),
]


@pytest.mark.parametrize(("vs_id", "text"), POSITIVE)
def test_text_pattern_matches(vs_id: str, text: str):
    assert _matches(vs_id, text)


@pytest.mark.parametrize(("vs_id", "text"), NEGATIVE)
def test_text_pattern_does_not_match(vs_id: str, text: str):
    assert not _matches(vs_id, text)


def test_an_include_with_two_filters_is_refused_at_load():
    """FHIR ANDs the filters of one include (a code would have to be under I63 *and* I61), so a
    reviewer's list of alternatives written that way would match nothing in a FHIR terminology
    server while matching either here: the loader refuses it and asks for one include each."""
    from cds_service.knowledge.valuesets import ValueSetError, compile_valueset

    icd = "http://hl7.org/fhir/sid/icd-10-cm"
    is_a = [{"property": "concept", "op": "is-a", "value": v} for v in ("I63", "I61")]
    resource = {"resourceType": "ValueSet", "id": "two-filters", "status": "active",
                "compose": {"include": [{"system": icd, "filter": is_a}]}}
    with pytest.raises(ValueSetError, match="one filter per include"):
        compile_valueset(resource)
    resource["compose"]["include"] = [{"system": icd, "filter": [f]} for f in is_a]
    stroke = compile_valueset(resource)
    assert stroke.prefixes[icd] == ("I63", "I61")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_include_has_at_most_one_filter(path: Path):
    include = json.loads(path.read_text()).get("compose", {}).get("include", [])
    assert all(len(i.get("filter", [])) <= 1 for i in include)
