"""Synthetic charts for the benchmark: a foot-drop red-flag story hidden among unrelated data.

Sizes (Conditions, Observations): S (20, 200), M (100, 2,000), L (300, 10,000). The story counts
towards those totals:

- Condition M21.372 "Foot drop, left foot", onset 10 days ago;
- Condition M54.16 "Radiculopathy, lumbar region", onset 20 days ago;
- Condition R33.9 "Retention of urine, unspecified", onset 3 days ago (a cauda equina sign);
- two Observations coded only by text, "Left ankle dorsiflexion strength (MRC)", valueString
  "4/5" 12 days ago and "2/5" 2 days ago (a drop of 2 grades within 14 days).

Everything else is what a long outpatient chart carries: vital signs (LOINC, components for blood
pressure), lab panels (CBC, BMP, lipids, HbA1c, TSH, with reference ranges and interpretations),
social history and pain scores, a few old strength and range-of-motion measurements from physical
therapy, chronic and resolved Conditions coded in ICD-10-CM and SNOMED CT, and routine orders,
procedures, reports, imaging and medications. A few unrelated items are ones the rules do read
(serum creatinine, eGFR, knee strength grades, an old physical-therapy referral), as in real
charts.

For order-select, ``context.draftOrders`` holds a selected routine lumbar MRI ServiceRequest
(LOINC 30679-5) beside an unselected CBC order.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

SIZES: dict[str, tuple[int, int]] = {"S": (20, 200), "M": (100, 2000), "L": (300, 10000)}
PATIENT_ID = "bench-fd-1"
PATIENT_REF = {"reference": f"Patient/{PATIENT_ID}"}
SERVICE_IDS = {"patient-view": "foot-drop-patient-view", "order-select": "foot-drop-order-select"}

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
LOCAL_FLOWSHEET = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"

# (code, display, unit, ucum, low, high, decimals)
VITALS = [
    ("8867-4", "Heart rate", "beats/minute", "/min", 52, 110, 0),
    ("9279-1", "Respiratory rate", "breaths/minute", "/min", 11, 22, 0),
    ("8310-5", "Body temperature", "degrees C", "Cel", 36.1, 38.2, 1),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%", 91, 100, 0),
    ("29463-7", "Body weight", "kg", "kg", 68, 84, 1),
    ("8302-2", "Body height", "cm", "cm", 171, 173, 1),
    ("39156-5", "Body mass index (BMI) [Ratio]", "kg/m2", "kg/m2", 23, 28.5, 1),
]
LABS = [  # (code, display, unit, ucum, low, high, decimals, weight)
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "g/dL", 11.5, 16.5, 1, 3),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL", 3.5,
     11.8, 1, 3),
    ("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", "10*3/uL", 140, 420,
     0, 3),
    ("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%", "%", 35, 50, 1, 3),
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 72, 180, 0, 3),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 133, 146, 0, 3),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 3.3, 5.3, 1, 3),
    ("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 96, 109, 0, 3),
    ("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", "mmol/L", 21,
     31, 0, 3),
    ("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 7, 26, 0, 3),
    ("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 8.4, 10.4, 1, 3),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 0.7, 1.3, 2, 1),
    ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum, "
     "Plasma or Blood by Creatinine-based formula (CKD-EPI 2021)", "mL/min/{1.73_m2}",
     "mL/min/{1.73_m2}", 62, 104, 0, 1),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 150, 260, 0, 2),
    ("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 70, 280, 0, 2),
    ("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma", "mg/dL", "mg/dL", 35, 75,
     0, 2),
    ("13457-7", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation", "mg/dL",
     "mg/dL", 70, 180, 0, 2),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", "%", 5.2, 8.4, 1, 2),
    ("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", "m[IU]/L", 0.4, 5.5,
     2, 1),
    ("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L",
     "U/L", 9, 60, 0, 2),
    ("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L",
     "U/L", 10, 55, 0, 2),
    ("2532-0", "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma", "U/L",
     "U/L", 120, 250, 0, 1),
]
CONDITIONS = [  # (icd10, icd display, snomed, snomed display)
    ("I10", "Essential (primary) hypertension", "59621000", "Essential hypertension"),
    ("E11.9", "Type 2 diabetes mellitus without complications", "44054006",
     "Diabetes mellitus type 2"),
    ("E78.5", "Hyperlipidemia, unspecified", "55822004", "Hyperlipidemia"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis", "235595009",
     "Gastroesophageal reflux disease"),
    ("M17.11", "Unilateral primary osteoarthritis, right knee", "239873007",
     "Osteoarthritis of knee"),
    ("J45.909", "Unspecified asthma, uncomplicated", "195967001", "Asthma"),
    ("F32.9", "Major depressive disorder, single episode, unspecified", "35489007",
     "Depressive disorder"),
    ("E03.9", "Hypothyroidism, unspecified", "40930008", "Hypothyroidism"),
    ("J06.9", "Acute upper respiratory infection, unspecified", "54150009",
     "Upper respiratory infection"),
    ("N39.0", "Urinary tract infection, site not specified", "68566005",
     "Urinary tract infectious disease"),
    ("M25.561", "Pain in right knee", "444827008", "Pain of right knee"),
    ("R51.9", "Headache, unspecified", "25064002", "Headache"),
    ("J02.9", "Acute pharyngitis, unspecified", "405737000", "Pharyngitis"),
    ("L30.9", "Dermatitis, unspecified", "182782007", "Dermatitis"),
    ("G47.33", "Obstructive sleep apnea (adult) (pediatric)", "78275009",
     "Obstructive sleep apnea syndrome"),
    ("H52.4", "Presbyopia", "11529002", "Presbyopia"),
    ("Z87.891", "Personal history of nicotine dependence", "8517006", "Ex-smoker"),
    ("E55.9", "Vitamin D deficiency, unspecified", "34713006", "Vitamin D deficiency"),
    ("M79.7", "Fibromyalgia", "203082005", "Fibromyalgia"),
    ("R10.9", "Unspecified abdominal pain", "21522001", "Abdominal pain"),
    ("K59.00", "Constipation, unspecified", "14760008", "Constipation"),
    ("I48.91", "Unspecified atrial fibrillation", "49436004", "Atrial fibrillation"),
    ("N40.0", "Benign prostatic hyperplasia without lower urinary tract symptoms", "266569009",
     "Benign prostatic hyperplasia"),
    ("S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter", "44465007",
     "Sprain of ankle"),
    ("M75.101", "Unspecified rotator cuff tear or rupture of right shoulder", "202416000",
     "Rotator cuff tear"),
]


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _concept(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}],
            "text": text or display}


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle", "type": "searchset", "total": len(resources),
        "link": [{"relation": "self", "url": "https://ehr.example.org/fhir/R4/search"}],
        "entry": [
            {"fullUrl": f"https://ehr.example.org/fhir/R4/{r['resourceType']}/{r['id']}",
             "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


class _Gen:
    def __init__(self, now: datetime, seed: int) -> None:
        self.now = now
        self.rnd = random.Random(seed)
        self.n = 0

    def nid(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:06d}"

    def past(self, min_days: int = 40, max_days: int = 5 * 365) -> datetime:
        return self.now - timedelta(days=self.rnd.randint(min_days, max_days),
                                    minutes=self.rnd.randint(0, 1440))

    def value(self, low: float, high: float, decimals: int) -> float | int:
        v = self.rnd.uniform(low, high)
        return round(v) if decimals == 0 else round(v, decimals)

    # -- observations ---------------------------------------------------------------------------
    def obs_base(self, category: str, concept: dict[str, Any], when: datetime) -> dict[str, Any]:
        return {
            "resourceType": "Observation", "id": self.nid("obs"),
            "meta": {"versionId": "1", "lastUpdated": _iso(when + timedelta(minutes=5))},
            "status": "final",
            "category": [{"coding": [{"system": OBS_CAT, "code": category,
                                      "display": category.replace("-", " ").title()}]}],
            "code": concept, "subject": PATIENT_REF,
            "encounter": {"reference": f"Encounter/enc-{self.rnd.randint(1, 400)}"},
            "effectiveDateTime": _iso(when), "issued": _iso(when + timedelta(minutes=5)),
        }

    def vital(self) -> dict[str, Any]:
        when = self.past()
        if self.rnd.random() < 0.2:
            obs = self.obs_base("vital-signs", _concept(LOINC, "85354-6",
                                "Blood pressure panel with all children optional"), when)
            obs["component"] = [
                {"code": _concept(LOINC, "8480-6", "Systolic blood pressure"),
                 "valueQuantity": {"value": self.rnd.randint(104, 162), "unit": "mmHg",
                                   "system": UCUM, "code": "mm[Hg]"}},
                {"code": _concept(LOINC, "8462-4", "Diastolic blood pressure"),
                 "valueQuantity": {"value": self.rnd.randint(62, 98), "unit": "mmHg",
                                   "system": UCUM, "code": "mm[Hg]"}},
            ]
            return obs
        code, display, unit, ucum, low, high, dec = self.rnd.choice(VITALS)
        obs = self.obs_base("vital-signs", _concept(LOINC, code, display), when)
        obs["valueQuantity"] = {"value": self.value(low, high, dec), "unit": unit,
                                "system": UCUM, "code": ucum}
        return obs

    def lab(self) -> dict[str, Any]:
        code, display, unit, ucum, low, high, dec, _w = self.rnd.choices(
            LABS, weights=[lab[7] for lab in LABS])[0]
        when = self.past()
        obs = self.obs_base("laboratory", _concept(LOINC, code, display), when)
        span = high - low
        value = self.value(low - span * 0.1, high + span * 0.1, dec)
        flag = "H" if value > high else "L" if value < low else "N"
        obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": ucum}
        obs["interpretation"] = [{"coding": [{"system": INTERP, "code": flag, "display": {
            "H": "High", "L": "Low", "N": "Normal"}[flag]}]}]
        obs["referenceRange"] = [{"low": {"value": low, "unit": unit, "system": UCUM,
                                          "code": ucum},
                                  "high": {"value": high, "unit": unit, "system": UCUM,
                                           "code": ucum}}]
        obs["performer"] = [{"reference": "Organization/lab-1", "display": "Hospital laboratory"}]
        return obs

    def survey(self) -> dict[str, Any]:
        when = self.past()
        if self.rnd.random() < 0.5:
            obs = self.obs_base("social-history", _concept(LOINC, "72166-2",
                                "Tobacco smoking status"), when)
            obs["valueCodeableConcept"] = _concept(SCT, "8517006", "Ex-smoker (finding)")
            return obs
        obs = self.obs_base("survey", _concept(LOINC, "72514-3",
                            "Pain severity - 0-10 verbal numeric rating [Score] - Reported"), when)
        obs["valueInteger"] = self.rnd.randint(0, 7)
        return obs

    def therapy(self) -> dict[str, Any]:
        """Old physical-therapy measurements: mostly range of motion (not strength), some grades."""
        when = self.past(200)
        side = self.rnd.choice(["Left", "Right"])
        if self.rnd.random() < 0.7:
            text = f"{side} ankle dorsiflexion range of motion"
            obs = self.obs_base("exam", {"coding": [{"system": LOCAL_FLOWSHEET,
                                "code": "30470" if side == "Left" else "30471", "display": text}],
                                "text": text}, when)
            obs["valueQuantity"] = {"value": self.rnd.randint(5, 20), "unit": "degrees",
                                    "system": UCUM, "code": "deg"}
            return obs
        text = f"{side} knee extension strength (MRC)"
        obs = self.obs_base("exam", {"coding": [{"system": LOCAL_FLOWSHEET,
                            "code": "30480" if side == "Left" else "30481", "display": text}],
                            "text": text}, when)
        obs["valueString"] = "5/5"
        return obs

    def dorsiflexion(self, days_ago: int, grade: str) -> dict[str, Any]:
        text = "Left ankle dorsiflexion strength (MRC)"
        obs = self.obs_base("exam", {"coding": [{"system": LOCAL_FLOWSHEET, "code": "30412",
                            "display": text}], "text": text},
                            self.now - timedelta(days=days_ago, hours=3))
        obs["valueString"] = grade
        obs["performer"] = [{"reference": "Practitioner/fd-neuro-1", "display": "Dr. Neuro"}]
        return obs

    def observations(self, count: int) -> list[dict[str, Any]]:
        story = [self.dorsiflexion(12, "4/5"), self.dorsiflexion(2, "2/5")]
        out: list[dict[str, Any]] = []
        for _ in range(count - len(story)):
            r = self.rnd.random()
            out.append(self.vital() if r < 0.55 else self.lab() if r < 0.94
                       else self.survey() if r < 0.985 else self.therapy())
        # Hide the story among the rest (the EHR sorts by date; position must not matter).
        for obs in story:
            out.insert(self.rnd.randrange(len(out) + 1), obs)
        return out

    # -- conditions -----------------------------------------------------------------------------
    def condition(self, icd: str, icd_display: str, snomed: str | None, snomed_display: str | None,
                  onset: datetime, status: str = "active",
                  category: str = "problem-list-item") -> dict[str, Any]:
        coding = [{"system": ICD, "code": icd, "display": icd_display}]
        if snomed:
            coding.append({"system": SCT, "code": snomed, "display": snomed_display})
        resource: dict[str, Any] = {
            "resourceType": "Condition", "id": self.nid("cond"),
            "meta": {"versionId": "1", "lastUpdated": _iso(onset + timedelta(days=1))},
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                "code": status}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed"}]},
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                "code": category}]}],
            "code": {"coding": coding, "text": icd_display},
            "subject": PATIENT_REF,
            "onsetDateTime": _iso(onset),
            "recordedDate": _iso(onset + timedelta(days=1)),
        }
        if status == "resolved":
            resource["abatementDateTime"] = _iso(onset + timedelta(days=self.rnd.randint(7, 60)))
        return resource

    def conditions(self, count: int) -> list[dict[str, Any]]:
        now = self.now
        story = [
            self.condition("M21.372", "Foot drop, left foot", "6077001", "Foot drop",
                           now - timedelta(days=10)),
            self.condition("M54.16", "Radiculopathy, lumbar region", "128196005",
                           "Lumbar radiculopathy", now - timedelta(days=20)),
            self.condition("R33.9", "Retention of urine, unspecified", "267064002",
                           "Retention of urine", now - timedelta(days=3),
                           category="encounter-diagnosis"),
        ]
        out = []
        for i in range(count - len(story)):
            icd, icd_display, snomed, snomed_display = CONDITIONS[i % len(CONDITIONS)]
            chronic = i < len(CONDITIONS) // 2
            out.append(self.condition(
                icd, icd_display, snomed, snomed_display, self.past(60),
                status="active" if chronic else self.rnd.choice(["resolved", "inactive"]),
                category="problem-list-item" if chronic else "encounter-diagnosis"))
        for cond in story:
            out.insert(self.rnd.randrange(len(out) + 1), cond)
        return out

    # -- orders and the rest --------------------------------------------------------------------
    def request_base(self, rtype: str, when: datetime, status: str = "completed") -> dict[str, Any]:
        return {"resourceType": rtype, "id": self.nid(rtype.lower()[:4]), "status": status,
                "intent": "order", "subject": PATIENT_REF, "authoredOn": _iso(when),
                "requester": {"reference": "Practitioner/pcp-1", "display": "Dr. Primary"}}

    def service_requests(self, count: int) -> list[dict[str, Any]]:
        kinds = [
            (LOINC, "58410-2", "CBC panel - Blood by Automated count"),
            (LOINC, "51990-0", "Basic metabolic panel - Blood"),
            (LOINC, "57698-3", "Lipid panel with direct LDL - Serum or Plasma"),
            (LOINC, "36643-5", "XR Chest 2 Views"),
            (LOINC, "24627-2", "CT Chest"),
            (SCT, "183519002", "Referral to cardiology service"),
        ]
        out = []
        for i in range(count):
            system, code, display = kinds[i % len(kinds)]
            sr = self.request_base("ServiceRequest", self.past(), "completed")
            sr["code"] = _concept(system, code, display)
            sr["priority"] = "routine"
            out.append(sr)
        old_pt = self.request_base("ServiceRequest", self.now - timedelta(days=900), "completed")
        old_pt["code"] = _concept(SCT, "11429006", "Consultation",
                                  "Physical therapy referral for right knee osteoarthritis")
        out.append(old_pt)
        return out

    def medication_requests(self, count: int) -> list[dict[str, Any]]:
        meds = [
            ("197361", "amlodipine 5 MG Oral Tablet"), ("860975", "metformin hydrochloride 500 MG "
             "Extended Release Oral Tablet"), ("617312", "atorvastatin 20 MG Oral Tablet"),
            ("966222", "levothyroxine sodium 0.05 MG Oral Tablet"),
            ("310965", "ibuprofen 200 MG Oral Tablet"),
            ("313782", "acetaminophen 325 MG Oral Tablet"),
            ("198211", "simvastatin 40 MG Oral Tablet"), ("314076", "lisinopril 10 MG Oral Tablet"),
        ]
        out = []
        for i in range(count):
            code, display = meds[i % len(meds)]
            med = self.request_base("MedicationRequest", self.past(),
                                    "active" if i < len(meds) else "completed")
            med["medicationCodeableConcept"] = _concept(RXNORM, code, display)
            med["dosageInstruction"] = [{"text": "1 tablet by mouth daily", "timing": {
                "repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}]}]
            out.append(med)
        return out

    def procedures(self, count: int) -> list[dict[str, Any]]:
        kinds = [(CPT, "45378", "Colonoscopy, flexible; diagnostic"),
                 (CPT, "29881", "Arthroscopy, knee, surgical; with meniscectomy"),
                 (CPT, "66984", "Extracapsular cataract removal with insertion of intraocular "
                  "lens prosthesis"),
                 (SCT, "80146002", "Appendectomy")]
        out = []
        for i in range(count):
            system, code, display = kinds[i % len(kinds)]
            when = self.past(100)
            out.append({"resourceType": "Procedure", "id": self.nid("proc"), "status": "completed",
                        "code": _concept(system, code, display), "subject": PATIENT_REF,
                        "performedDateTime": _iso(when)})
        return out

    def reports(self, count: int) -> list[dict[str, Any]]:
        kinds = [(LOINC, "58410-2", "CBC panel - Blood by Automated count"),
                 (LOINC, "51990-0", "Basic metabolic panel - Blood"),
                 (LOINC, "36643-5", "XR Chest 2 Views")]
        out = []
        for i in range(count):
            system, code, display = kinds[i % len(kinds)]
            when = self.past()
            out.append({"resourceType": "DiagnosticReport", "id": self.nid("rep"),
                        "status": "final", "code": _concept(system, code, display),
                        "subject": PATIENT_REF, "effectiveDateTime": _iso(when),
                        "issued": _iso(when + timedelta(hours=4)),
                        "conclusion": "No acute abnormality."})
        return out

    def imaging(self, count: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(count):
            out.append({"resourceType": "ImagingStudy", "id": self.nid("img"),
                        "status": "available", "subject": PATIENT_REF,
                        "started": _iso(self.past()),
                        "procedureCode": [_concept(LOINC, "36643-5", "XR Chest 2 Views")],
                        "description": "Chest radiograph, two views"})
        return out


def make_request(size: str, hook: str, now: datetime | None = None, seed: int = 7,
                 *, with_prefetch: bool = True) -> dict[str, Any]:
    """One CDS Hooks request for ``hook`` carrying a chart of ``size`` as full prefetch."""
    n_cond, n_obs = SIZES[size]
    now = now or datetime.now(UTC)
    g = _Gen(now, seed)
    scale = {"S": 1, "M": 4, "L": 10}[size]
    context: dict[str, Any] = {"userId": "Practitioner/fd-dr-1", "patientId": PATIENT_ID,
                               "encounterId": "enc-bench-1"}
    body: dict[str, Any] = {
        "hook": hook, "hookInstance": f"d1577c69-dfbe-44ad-ba6d-3e05e953b2ea-{size}",
        "context": context,
    }
    if hook == "order-select":
        mri = {"resourceType": "ServiceRequest", "id": "draft-mri-1", "status": "draft",
               "intent": "order", "priority": "routine",
               "code": _concept(LOINC, "30679-5", "MR Lumbar spine WO contrast"),
               "subject": PATIENT_REF, "authoredOn": _iso(now),
               "reasonCode": [_concept(ICD, "M21.372", "Foot drop, left foot")]}
        cbc = {"resourceType": "ServiceRequest", "id": "draft-cbc-1", "status": "draft",
               "intent": "order", "priority": "routine",
               "code": _concept(LOINC, "58410-2", "CBC panel - Blood by Automated count"),
               "subject": PATIENT_REF, "authoredOn": _iso(now)}
        context["selections"] = ["ServiceRequest/draft-mri-1"]
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": mri}, {"resource": cbc}]}
    if with_prefetch:
        body["prefetch"] = prefetch_for(g, n_cond, n_obs, scale)
    return body


def prefetch_for(g: _Gen, n_cond: int, n_obs: int, scale: int) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient", "id": PATIENT_ID,
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "000-00-0001"}],
        "name": [{"family": "Bench", "given": ["Frances"]}], "gender": "female",
        "birthDate": "1968-05-02",
        "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "01101"}],
    }
    return {
        "patient": patient,
        "conditions": _bundle(g.conditions(n_cond)),
        "observations": _bundle(g.observations(n_obs)),
        "serviceRequests": _bundle(g.service_requests(5 * scale)),
        "deviceRequests": _bundle([]),
        "procedures": _bundle(g.procedures(2 * scale)),
        "diagnosticReports": _bundle(g.reports(5 * scale)),
        "imagingStudies": _bundle(g.imaging(scale)),
        "medicationRequests": _bundle(g.medication_requests(4 * scale)),
    }


def fhir_store(size: str, now: datetime | None = None, seed: int = 7) -> dict[str, Any]:
    """The same chart as a prefetch dict (key -> resource or Bundle), for the loopback server."""
    n_cond, n_obs = SIZES[size]
    g = _Gen(now or datetime.now(UTC), seed)
    return prefetch_for(g, n_cond, n_obs, {"S": 1, "M": 4, "L": 10}[size])
