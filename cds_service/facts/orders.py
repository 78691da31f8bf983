"""The draft orders a clinician selected (order-select), classified against the value sets.

Only ``context.selections`` get cards; the other draft orders of the session are read only to
know what is already being ordered (``SelectedOrder.session_categories``). Parsing is defensive:
the Bundle may lack ``type`` or ``fullUrl``, entries may be malformed, a selection may be missing
from the Bundle (skipped). An order about another patient is skipped; an order without ``subject``
is taken as this patient's (draftOrders is scoped to ``context.patientId``). An order that fails
FHIR validation is still reviewed (a safety check must not vanish because a client left out a
required element); suggestions built from it are validated again when the card is rendered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cds_service.facts.extract import coded_label
from cds_service.facts.model import SelectedOrder
from cds_service.fhir.record import model_class, normalise_quirks, refers_to_patient, validate
from cds_service.knowledge.loader import Knowledge
from cds_service.knowledge.valuesets import CompiledValueSet
from cds_service.logs import log_event

log = logging.getLogger(__name__)

ORDER_CODE_FIELDS = {
    "ServiceRequest": "code",
    "DeviceRequest": "codeCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
}
_REFERENCE_FIELDS = {"DeviceRequest": "codeReference", "MedicationRequest": "medicationReference"}
# Code of a referenced (contained or bundled) Medication / Device.
_REFERENCED_CODE_FIELDS = {"Medication": "code", "Device": "type"}
# Orders in these states are not going to happen; they get no card and do not count as ordered.
INACTIVE_STATUSES = frozenset({"entered-in-error", "revoked", "cancelled", "stopped"})

_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0,
                "a": 365.0}
# HL7 v3 GTSAbbreviation (FHIR timing-abbreviation) plus the common Q12H.
_TIMING_CODES = {"QD": 1.0, "QOD": 0.5, "BID": 2.0, "TID": 3.0, "QID": 4.0, "AM": 1.0, "PM": 1.0,
                 "BED": 1.0, "Q1H": 24.0, "Q2H": 12.0, "Q3H": 8.0, "Q4H": 6.0, "Q6H": 4.0,
                 "Q8H": 3.0, "Q12H": 2.0, "WK": 1 / 7, "MO": 1 / 30}
_MASS_TO_MG = {"mg": 1.0, "milligram": 1.0, "milligrams": 1.0, "g": 1000.0, "gram": 1000.0,
               "grams": 1000.0, "ug": 0.001, "mcg": 0.001, "microgram": 0.001,
               "micrograms": 0.001}
# Unit doses: "{tbl}", "TAB", and "{pill}" (UCUM annotation the CDS Hooks sandbox's Rx View sends).
_UNIT_DOSE = re.compile(r"(?i)^\{?(?:tab|tabs|tablet|tablets|tbl|cap|caps|capsule|capsules|"
                        r"pill|pills|each|ea|1)\}?$")
_STRENGTH = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*(?:mg|milligrams?)\b")
_TEXT_FREQUENCY = (
    (re.compile(r"(?i)\b(?:every|q)\s*(\d+(?:\.\d+)?)\s*(?:h|hr|hrs|hours?)\b"), None),
    (re.compile(r"(?i)\b(?:four\s+times|4\s*(?:x|times))\s+(?:a\s+|per\s+)?(?:day|daily)\b|"
                r"\bq\.?i\.?d\b"), 4.0),
    (re.compile(r"(?i)\b(?:three\s+times|3\s*(?:x|times))\s+(?:a\s+|per\s+)?(?:day|daily)\b|"
                r"\bt\.?i\.?d\b"), 3.0),
    (re.compile(r"(?i)\btwice\b|\b(?:2\s*(?:x|times))\s+(?:a\s+|per\s+)?(?:day|daily)\b|"
                r"\bb\.?i\.?d\b"), 2.0),
    (re.compile(r"(?i)\bonce\b|\bdaily\b|\bevery\s+day\b|\bq\.?d\b|\bnightly\b"), 1.0),
)


# --------------------------------------------------------------------------------------------
# Reading the draftOrders Bundle
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DraftEntry:
    reference: str
    resource: dict[str, Any]
    full_url: str | None


def draft_entries(draft_orders: Any) -> Iterator[DraftEntry]:
    """Every resource in draftOrders with its ``Type/id`` (id from the resource, else fullUrl)."""
    yield from _entries(draft_orders, depth=0)


def _entries(bundle: Any, depth: int) -> Iterator[DraftEntry]:
    if not isinstance(bundle, Mapping) or depth > 2:
        return
    if bundle.get("resourceType") != "Bundle":
        reference = _reference_of(bundle, None)
        if reference:
            yield DraftEntry(reference, dict(bundle), None)
        return
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, Mapping):
            continue
        if resource.get("resourceType") == "Bundle":
            yield from _entries(resource, depth + 1)
            continue
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        reference = _reference_of(resource, full_url)
        if reference:
            yield DraftEntry(reference, dict(resource), full_url)


def _reference_of(resource: Mapping[str, Any], full_url: str | None) -> str | None:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        return None
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{resource_type}/{rid}"
    if full_url:
        tail = full_url.split("/_history/")[0]
        if tail.startswith("urn:uuid:") and len(tail) > 9:
            return f"{resource_type}/{tail[9:]}"
        parts = tail.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
            return f"{resource_type}/{parts[-1]}"
    return None


def _is_this_patient(
    resource: Mapping[str, Any], patient_id: str, bundle_patients: Mapping[str, str]
) -> bool:
    """No subject, or a subject naming this patient (also via a urn:uuid Patient in the Bundle)."""
    subject = resource.get("subject")
    if subject is None:
        return True
    if not isinstance(subject, Mapping):
        return False
    ref = subject.get("reference")
    if ref is None:
        return True  # identifier/display only: nothing says it is someone else
    if refers_to_patient(subject, patient_id):
        return True
    return isinstance(ref, str) and bundle_patients.get(ref) == patient_id


# --------------------------------------------------------------------------------------------
# What is being ordered
# --------------------------------------------------------------------------------------------
def clean_concept(concept: Any) -> dict[str, Any] | None:
    """A CodeableConcept reduced to well-typed text and codings (draft orders are not validated
    before they are matched, and a number where text belongs must not break the matching)."""
    if not isinstance(concept, Mapping):
        return None
    clean: dict[str, Any] = {}
    if isinstance(concept.get("text"), str):
        clean["text"] = concept["text"]
    codings = concept.get("coding")
    if isinstance(codings, list):
        clean["coding"] = [
            {k: c[k] for k in ("system", "code", "display") if isinstance(c.get(k), str)}
            for c in codings if isinstance(c, Mapping)
        ]
    return clean


def order_concept(
    resource: Mapping[str, Any], bundle: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The CodeableConcept naming what is ordered; follows medication/device references to a
    contained or bundled Medication/Device, else uses the reference's display as text."""
    return clean_concept(_raw_concept(resource, bundle))


def _raw_concept(
    resource: Mapping[str, Any], bundle: Mapping[str, Mapping[str, Any]] | None
) -> Any:
    field = ORDER_CODE_FIELDS.get(str(resource.get("resourceType")))
    concept = resource.get(field) if field else None
    if isinstance(concept, Mapping):
        return concept
    ref_field = _REFERENCE_FIELDS.get(str(resource.get("resourceType")))
    reference = resource.get(ref_field) if ref_field else None
    if not isinstance(reference, Mapping):
        return None
    target = _resolve(resource, reference.get("reference"), bundle or {})
    if target is not None:
        code = target.get(_REFERENCED_CODE_FIELDS.get(str(target.get("resourceType")), ""))
        if isinstance(code, Mapping):
            return code
    display = reference.get("display")
    return {"text": display} if isinstance(display, str) and display else None


def _resolve(
    resource: Mapping[str, Any], ref: Any, bundle: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    if not isinstance(ref, str) or not ref:
        return None
    if ref.startswith("#"):
        contained_list = resource.get("contained")
        for contained in contained_list if isinstance(contained_list, list) else ():
            if isinstance(contained, Mapping) and contained.get("id") == ref[1:]:
                return contained
        return None
    return bundle.get(ref)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _dosages(resource: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    dosages = resource.get("dosageInstruction")
    if isinstance(dosages, Mapping):
        dosages = [dosages]
    if not isinstance(dosages, list):
        return []
    return [d for d in dosages if isinstance(d, Mapping)]


def _strength_mg(concept: Any) -> float | None:
    """'Dalfampridine 10 MG Extended Release Oral Tablet' -> 10 (mg per tablet)."""
    if not isinstance(concept, Mapping):
        return None
    texts = [concept.get("text")]
    texts += [c.get("display") for c in concept.get("coding") or () if isinstance(c, Mapping)]
    for text in texts:
        if isinstance(text, str):
            match = _STRENGTH.search(text)
            if match:
                return float(match.group(1))
    return None


def dosage_dose_mg(dosage: Mapping[str, Any], strength_mg: float | None) -> float | None:
    """One administration in mg: a mass dose, tablets x strength, or the mg in the dosage text."""
    for dose_rate in _list(dosage.get("doseAndRate")):
        if not isinstance(dose_rate, Mapping):
            continue
        quantity = dose_rate.get("doseQuantity")
        if not isinstance(quantity, Mapping):
            high = (dose_rate.get("doseRange") or {}).get("high") if isinstance(
                dose_rate.get("doseRange"), Mapping) else None
            quantity = high if isinstance(high, Mapping) else None
        if quantity is None:
            continue
        value = _number(quantity.get("value"))
        if value is None:
            continue
        unit = str(quantity.get("code") or quantity.get("unit") or "").strip().lower()
        if unit in _MASS_TO_MG:
            return value * _MASS_TO_MG[unit]
        if _UNIT_DOSE.match(unit) and strength_mg is not None:
            return value * strength_mg
    text = dosage.get("text")
    if isinstance(text, str):
        match = _STRENGTH.search(text)
        if match:
            return float(match.group(1))
    return None


def dosage_per_day(dosage: Mapping[str, Any]) -> float | None:
    """Administrations per day from Timing.repeat, else Timing.code, else the dosage text."""
    timing = dosage.get("timing") if isinstance(dosage.get("timing"), Mapping) else {}
    repeat = timing.get("repeat") if isinstance(timing.get("repeat"), Mapping) else {}
    candidates: list[float] = []
    frequency = _number(repeat.get("frequencyMax")) or _number(repeat.get("frequency"))
    period = _number(repeat.get("period"))
    unit = repeat.get("periodUnit")
    if period and period > 0 and isinstance(unit, str) and unit in _PERIOD_DAYS:
        candidates.append((frequency or 1.0) / (period * _PERIOD_DAYS[unit]))
    for key in ("timeOfDay", "when"):
        times = repeat.get(key)
        if isinstance(times, list) and times:
            candidates.append(float(len(times)))
    if candidates:
        return max(candidates)
    code = timing.get("code") if isinstance(timing.get("code"), Mapping) else {}
    for coding in _list(code.get("coding")):
        if isinstance(coding, Mapping) and str(coding.get("code", "")).upper() in _TIMING_CODES:
            return _TIMING_CODES[str(coding["code"]).upper()]
    for text in (code.get("text"), dosage.get("text")):
        if not isinstance(text, str):
            continue
        for pattern, per_day in _TEXT_FREQUENCY:
            match = pattern.search(text)
            if match:
                if per_day is None:
                    hours = float(match.group(1))
                    if hours <= 0:
                        continue
                    return 24.0 / hours
                return per_day
    return None


@dataclass(frozen=True)
class Dosing:
    dose_mg: float | None
    doses_per_day: float | None
    daily_dose_mg: float | None
    text: str | None


def dosing(resource: Mapping[str, Any], concept: Any) -> Dosing:
    """Largest single dose, and the busiest day: instructions that share a ``sequence`` (or have
    none) run together and add up; different sequences follow one another (the maximum counts)."""
    strength = _strength_mg(concept)
    groups: dict[Any, list[tuple[float | None, float | None]]] = {}
    texts: list[str] = []
    for dosage in _dosages(resource):
        sequence = dosage.get("sequence")
        key = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None
        groups.setdefault(key, []).append((dosage_dose_mg(dosage, strength),
                                           dosage_per_day(dosage)))
        if isinstance(dosage.get("text"), str) and dosage["text"].strip():
            texts.append(dosage["text"].strip())
    doses = [d for group in groups.values() for d, _ in group if d is not None]
    per_day = [sum(f for _, f in group if f is not None) for group in groups.values()
               if any(f is not None for _, f in group)]
    daily = [sum(d * f for d, f in group if d is not None and f is not None)
             for group in groups.values()
             if any(d is not None and f is not None for d, f in group)]
    dose_mg = max(doses) if doses else None
    doses_per_day = max(per_day) if per_day else None
    daily_dose_mg = max(daily) if daily else None
    parts = []
    if dose_mg is not None:
        parts.append(f"{dose_mg:g} mg per dose")
    if doses_per_day is not None:
        parts.append(f"{doses_per_day:g} dose{'' if doses_per_day == 1 else 's'} a day")
    if daily_dose_mg is not None:
        parts.append(f"{daily_dose_mg:g} mg a day")
    text = ", ".join(parts) if parts else None
    if texts:
        text = f"\"{'; '.join(texts)}\"" + (f" ({text})" if text else "")
    return Dosing(dose_mg, doses_per_day, daily_dose_mg, text)


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------
def selected_orders(
    draft_orders: Mapping[str, Any] | None,
    selections: Sequence[str],
    patient_id: str,
    knowledge: Knowledge,
) -> list[SelectedOrder]:
    category_sets = [knowledge.valueset(c)
                     for c in knowledge.thresholds["selected_order_categories"]]
    urgent = frozenset(knowledge.thresholds.get("urgent_priorities") or ())
    entries = list(draft_entries(draft_orders))
    by_reference: dict[str, DraftEntry] = {}
    bundle: dict[str, Mapping[str, Any]] = {}
    bundle_patients: dict[str, str] = {}
    for entry in entries:
        by_reference.setdefault(entry.reference, entry)
        for key in (entry.reference, entry.full_url):
            if key:
                bundle.setdefault(key, entry.resource)
        if entry.resource.get("resourceType") == "Patient" and entry.full_url:
            bundle_patients[entry.full_url] = str(entry.resource.get("id"))

    # Every live draft order of this patient, classified: what the session already orders.
    classified: dict[str, tuple[dict[str, Any], Any, list[CompiledValueSet]]] = {}
    session: set[str] = set()
    session_urgent: set[str] = set()
    for reference, entry in by_reference.items():
        resource = normalise_quirks(entry.resource)
        if resource.get("resourceType") not in ORDER_CODE_FIELDS:
            continue
        if _string(resource.get("status")) in INACTIVE_STATUSES:
            continue
        if not _is_this_patient(resource, patient_id, bundle_patients):
            continue
        concept = order_concept(resource, bundle)
        matched = [vs for vs in category_sets if vs.matches_concept(concept)]
        classified[reference] = (resource, concept, matched)
        session.update(vs.id for vs in matched)
        if _string(resource.get("priority")) in urgent:
            session_urgent.update(vs.id for vs in matched)

    orders: list[SelectedOrder] = []
    for reference in dict.fromkeys(selections):
        if reference not in by_reference:
            log_event(log, "selection not in draftOrders", logging.INFO, reason="missing-selection")
            continue
        if reference not in classified:
            log_event(log, "selected order not reviewed", logging.INFO,
                      reason="other-patient, inactive or not an order")
            continue
        resource, concept, matched = classified[reference]
        if validate(resource) is None:
            fields = invalid_fields(resource)
            if fields == ["medication[x]"] and not matched:
                # The sandbox fires order-select on an Rx form before a drug is picked: nothing
                # to review yet, and nothing wrong with the EHR.
                log_event(log, "selected order has no medication yet", reason="empty-draft")
                continue
            log_event(log, "selected order is not valid FHIR R4; reviewed anyway", logging.WARNING,
                      reason="invalid-order", resource_type=resource.get("resourceType"),
                      fields=fields)
        resource_type, _, resource_id = reference.partition("/")
        resource = {**resource, "id": resource_id}
        dose = dosing(resource, concept) if resource_type == "MedicationRequest" else None
        orders.append(
            SelectedOrder(
                reference=reference,
                resource_type=resource_type,
                resource_id=resource_id,
                label=coded_label(concept, matched[0] if matched else None),
                status=_string(resource.get("status")),
                categories=frozenset(vs.id for vs in matched),
                priority=_string(resource.get("priority")),
                dose_mg=dose.dose_mg if dose else None,
                doses_per_day=dose.doses_per_day if dose else None,
                daily_dose_mg=dose.daily_dose_mg if dose else None,
                dosage_text=dose.text if dose else None,
                session_categories=frozenset(session),
                session_urgent_categories=frozenset(session_urgent),
                resource=resource,
            )
        )
    return orders


_CHOICE_NAMES = re.compile(r"\['([a-zA-Z]+)'")


def invalid_fields(resource: Mapping[str, Any]) -> list[str]:
    """The names (never the values) of the elements that make ``resource`` invalid FHIR R4:
    ``dosageInstruction``, ``medication[x]`` for a missing choice element."""
    try:
        model_class(str(resource.get("resourceType"))).model_validate(
            normalise_quirks(dict(resource)))
    except ValidationError as exc:
        names = []
        for error in exc.errors():
            location = ".".join(str(part) for part in error["loc"]
                                if not isinstance(part, int) and part != "root")
            if not location:  # a choice element ([x]) none of whose forms is present
                first = _CHOICE_NAMES.search(str(error.get("msg", "")))
                location = re.sub(r"[A-Z].*$", "", first.group(1)) + "[x]" if first else "?"
            names.append(location)
        return list(dict.fromkeys(names))
    except (KeyError, TypeError, ValueError):
        return ["resourceType"]
    return []
