"""Turn prefetch values into the patient's validated resources.

Resources are checked cheaply first (type, patient, relevance by code) and only the survivors are
decoded in full (a request's prefetch arrives as skeletons, ``selective.py``) and validated with
``fhir.resources`` (its R4B models read R4 Conditions, Observations and orders).
A resource that fails validation is skipped and counted, never fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from typing import Any

from pydantic import ValidationError

from cds_service import deadline
from cds_service.fhir.selective import (
    UNSET,
    Skeleton,
    SkeletonEntry,
    relevance_decider,
    whole_resource,
)

log = logging.getLogger(__name__)

CLINICAL_TYPES = (
    "Condition",
    "Observation",
    "ServiceRequest",
    "DeviceRequest",
    "Procedure",
    "DiagnosticReport",
    "ImagingStudy",
    "MedicationRequest",
)
_MODULES = {
    "Patient": "patient",
    "Condition": "condition",
    "Observation": "observation",
    "ServiceRequest": "servicerequest",
    "DeviceRequest": "devicerequest",
    "Procedure": "procedure",
    "DiagnosticReport": "diagnosticreport",
    "ImagingStudy": "imagingstudy",
    "MedicationRequest": "medicationrequest",
}
# Where each type names its patient (a skeleton keeps ``subject``, see selective.py).
_PATIENT_FIELDS = {"Condition": "subject", "Observation": "subject", "ServiceRequest": "subject",
                   "DeviceRequest": "subject", "Procedure": "subject",
                   "DiagnosticReport": "subject", "ImagingStudy": "subject",
                   "MedicationRequest": "subject"}
assert set(_PATIENT_FIELDS.values()) == {"subject"}, "a skeleton keeps only subject's bytes"


@cache
def model_class(resource_type: str) -> Any:
    module = import_module(f"fhir.resources.R4B.{_MODULES[resource_type]}")
    return getattr(module, resource_type)


def warm_models() -> None:
    """Import and build the pydantic models once at start, not on the first request."""
    for resource_type in _MODULES:
        model_class(resource_type)


@dataclass
class ReadStats:
    invalid: int = 0
    other_patient: int = 0
    irrelevant: int = 0
    kept: int = 0
    unknown_elements: int = 0  # kept although they carry elements FHIR R4 does not define

    def as_fields(self) -> dict[str, int]:
        return {"skipped_invalid": self.invalid, "skipped_other_patient": self.other_patient,
                "skipped_irrelevant": self.irrelevant, "resources_kept": self.kept,
                "kept_with_unknown_elements": self.unknown_elements}


@dataclass
class PatientRecord:
    """The patient's resources that survived filtering and validation, as validated JSON dicts."""

    patient_id: str
    patient: dict[str, Any] | None = None
    by_type: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stats: ReadStats = field(default_factory=ReadStats)

    def of(self, resource_type: str) -> list[dict[str, Any]]:
        return self.by_type.get(resource_type, [])


def iter_resources(value: Any) -> Iterable[Mapping[str, Any]]:
    """Resources inside a prefetch value: a single resource or a Bundle of them."""
    if not isinstance(value, Mapping):
        return
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        if isinstance(entries, list):
            for entry in entries:
                if type(entry) is SkeletonEntry:  # a skeleton's resource is never a Bundle
                    if entry.resource is not UNSET:
                        yield entry.resource
                    continue
                # dicts (what orjson makes) skip the slower abstract-base-class check
                if isinstance(entry, (dict, Mapping)):
                    resource = entry.get("resource")
                    if isinstance(resource, (dict, Mapping)):
                        if resource.get("resourceType") == "Bundle":
                            yield from iter_resources(resource)
                        else:
                            yield resource
        return
    yield value


def refers_to_patient(reference: Any, patient_id: str) -> bool:
    """True for ``Patient/<id>`` (relative or absolute, optionally with _history)."""
    if not isinstance(reference, (dict, Mapping)):
        return False
    ref = reference.get("reference")
    if not isinstance(ref, str):
        return False
    target = f"Patient/{patient_id}"
    if ref == target:
        return True
    ref = ref.split("/_history/")[0]
    return ref == target or ref.endswith("/" + target)


def normalise_quirks(resource: dict[str, Any]) -> dict[str, Any]:
    """Known client quirks: the CDS Hooks sandbox sends MedicationRequest.reasonCode and
    .category as single objects instead of arrays."""
    if resource.get("resourceType") == "MedicationRequest":
        for name in ("reasonCode", "category", "dosageInstruction", "reasonReference"):
            if isinstance(resource.get(name), Mapping):
                resource = {**resource, name: [resource[name]]}
    return resource


def validate(
    resource: Mapping[str, Any], stats: ReadStats | None = None
) -> dict[str, Any] | None:
    """The resource, checked against its FHIR R4 model; None when it is not valid.

    Elements the model does not know (a vendor's extra member, an R5 element) are tolerated when
    they are the only problem: fact extraction never reads them, and dropping a whole Condition
    for one of them could hide a red flag. A known element of the wrong shape still rejects it.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or resource_type not in _MODULES:
        return None
    fixed = normalise_quirks(dict(resource))
    try:
        model_class(resource_type).model_validate(fixed)
    except ValidationError as exc:
        if not all(error["type"] == "extra_forbidden" for error in exc.errors()):
            return None
        if stats is not None:
            stats.unknown_elements += 1
    except Exception:  # fhir-core raises KeyError, among others, on some odd shapes: invalid
        return None
    return fixed


def read_patient_record(
    values: Iterable[Any],
    patient_id: str,
    is_relevant: Callable[[Mapping[str, Any]], bool],
) -> PatientRecord:
    record = PatientRecord(patient_id=patient_id)
    stats = record.stats
    seen: set[tuple[str, str]] = set()
    whose: dict[bytes, bool] = {}  # a skeleton's subject bytes: the patient's or not
    decide_relevance = relevance_decider(is_relevant)
    for value in values:
        for resource in iter_resources(value):
            deadline.check()
            if type(resource) is Skeleton:  # attributes: what .get reads, minus a call
                resource_type, rid = resource.resourceType, resource.id
            else:
                resource_type, rid = resource.get("resourceType"), resource.get("id")
            if resource_type == "Patient":
                if rid != patient_id:
                    stats.other_patient += 1
                    continue
                valid = validate(whole_resource(resource), stats)
                if valid is None:
                    stats.invalid += 1
                    continue
                record.patient = valid
                continue
            if not isinstance(resource_type, str) or resource_type not in _PATIENT_FIELDS:
                stats.irrelevant += 1
                continue
            if type(resource) is Skeleton:  # decided once per distinct reference (its bytes)
                reference_bytes = bytes(resource.subject)
                mine = whose.get(reference_bytes)
                if mine is None:
                    mine = whose[reference_bytes] = refers_to_patient(
                        resource.get("subject"), patient_id)
            else:
                mine = refers_to_patient(resource.get(_PATIENT_FIELDS[resource_type]), patient_id)
            if not mine:
                stats.other_patient += 1
                continue
            if isinstance(rid, str):
                if (resource_type, rid) in seen:
                    continue  # the same resource under two prefetch keys
                seen.add((resource_type, rid))
            if not decide_relevance(resource):
                stats.irrelevant += 1
                continue
            valid = validate(whole_resource(resource), stats)
            if valid is None:
                stats.invalid += 1
                continue
            stats.kept += 1
            record.by_type.setdefault(resource_type, []).append(valid)
    return record
