"""The draft orders a clinician selected (order-select), classified against the value sets.

Only ``context.selections`` are reviewed; a selection missing from ``draftOrders`` is skipped, as
is an order about another patient or one that fails FHIR validation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cds_service.facts.extract import concept_label
from cds_service.facts.model import ORDER_CATEGORIES, SelectedOrder
from cds_service.fhir.record import iter_resources, refers_to_patient, validate
from cds_service.knowledge.loader import Knowledge
from cds_service.logs import log_event

log = logging.getLogger(__name__)

ORDER_CODE_FIELDS = {
    "ServiceRequest": "code",
    "DeviceRequest": "codeCodeableConcept",
    "MedicationRequest": "medicationCodeableConcept",
}
_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0,
                "a": 365.0}
_TIMING_CODES = {"QD": 1, "QOD": 0.5, "BID": 2, "TID": 3, "QID": 4, "Q4H": 6, "Q6H": 4,
                 "Q8H": 3, "AM": 1, "PM": 1}


def order_concept(resource: Mapping[str, Any]) -> Any:
    field = ORDER_CODE_FIELDS.get(str(resource.get("resourceType")))
    concept = resource.get(field) if field else None
    if concept is None and resource.get("resourceType") == "MedicationRequest":
        display = (resource.get("medicationReference") or {}).get("display")
        concept = {"text": display} if display else None
    if concept is None and resource.get("resourceType") == "DeviceRequest":
        display = (resource.get("codeReference") or {}).get("display")
        concept = {"text": display} if display else None
    return concept


def dose_mg(resource: Mapping[str, Any]) -> float | None:
    for dosage in resource.get("dosageInstruction") or ():
        for dose_rate in dosage.get("doseAndRate") or ():
            quantity = dose_rate.get("doseQuantity")
            if isinstance(quantity, Mapping) and isinstance(quantity.get("value"), int | float):
                unit = str(quantity.get("code") or quantity.get("unit") or "").lower()
                value = float(quantity["value"])
                if unit in ("mg", "milligram", "milligrams"):
                    return value
                if unit in ("g", "gram"):
                    return value * 1000
    return None


def doses_per_day(resource: Mapping[str, Any]) -> float | None:
    for dosage in resource.get("dosageInstruction") or ():
        timing = dosage.get("timing") or {}
        repeat = timing.get("repeat") or {}
        frequency = repeat.get("frequencyMax") or repeat.get("frequency")
        period = repeat.get("period")
        unit = repeat.get("periodUnit")
        if isinstance(frequency, int | float) and isinstance(period, int | float) and period > 0:
            days = period * _PERIOD_DAYS.get(str(unit), 1.0)
            return float(frequency) / days
        for coding in (timing.get("code") or {}).get("coding") or ():
            code = str(coding.get("code", "")).upper()
            if code in _TIMING_CODES:
                return float(_TIMING_CODES[code])
        text = str((timing.get("code") or {}).get("text") or dosage.get("text") or "").upper()
        for code, per_day in _TIMING_CODES.items():
            if f" {code}" in f" {text}".replace(".", ""):
                return float(per_day)
        if "TWICE" in text:
            return 2.0
        if "ONCE" in text or "DAILY" in text:
            return 1.0
    return None


def selected_orders(
    draft_orders: Mapping[str, Any] | None,
    selections: Sequence[str],
    patient_id: str,
    knowledge: Knowledge,
) -> list[SelectedOrder]:
    wanted = set(selections)
    by_reference: dict[str, Mapping[str, Any]] = {}
    for resource in iter_resources(draft_orders or {}):
        reference = f"{resource.get('resourceType')}/{resource.get('id')}"
        if reference in wanted:
            by_reference.setdefault(reference, resource)
    categories_sets = [knowledge.valueset(c) for c in ORDER_CATEGORIES]
    orders: list[SelectedOrder] = []
    for reference in selections:
        raw = by_reference.get(reference)
        if raw is None:
            log_event(log, "selection not in draftOrders", logging.INFO, reason="missing-selection")
            continue
        if raw.get("resourceType") not in ORDER_CODE_FIELDS:
            continue
        if not refers_to_patient(raw.get("subject"), patient_id):
            log_event(log, "selected order about another patient ignored", logging.WARNING,
                      reason="other-patient")
            continue
        resource = validate(raw)
        if resource is None:
            log_event(log, "selected order failed FHIR validation", logging.WARNING,
                      reason="invalid-order")
            continue
        concept = order_concept(resource)
        categories = frozenset(vs.id for vs in categories_sets if vs.matches_concept(concept))
        orders.append(
            SelectedOrder(
                reference=reference,
                resource_type=str(resource["resourceType"]),
                resource_id=str(resource["id"]),
                label=concept_label(concept),
                status=resource.get("status"),
                categories=categories,
                priority=resource.get("priority"),
                dose_mg=dose_mg(resource),
                doses_per_day=doses_per_day(resource),
                resource=resource,
            )
        )
    return orders
