"""Card text in clinical words: no code-system codes and no FHIR ids on the card.

The fact layer phrases each finding with the code that matched and the resource it came from
("Foot drop, left foot (ICD-10-CM M21.372)", "Dalfampridine 10 mg (MedicationRequest/rx-1)"),
which the evidence page and the logs want. A clinician reading the sidebar wants the words: this
module removes the code and reference parts when a card is rendered. The codes stay available in
the suggested resources and on the evidence page.
"""

from __future__ import annotations

import pkgutil
import re
from functools import cache

import fhir.resources.R4B as fhir_r4b

# Names the fact layer gives code systems in a label ("(SNOMED CT 267064002)"), plus "code" for a
# local system it cannot name. Display names, not clinical knowledge.
_SYSTEM_NAMES = ("ICD-10-CM", "ICD-10", "SNOMED CT", "LOINC", "CPT", "HCPCS", "RxNorm", "NDC",
                 "code")
_CODE_IN_PARENS = re.compile(
    r"\s*\((?:" + "|".join(re.escape(n) for n in _SYSTEM_NAMES) + r") [^()\s]+\)"
)
# FHIR resource types start upper case and are CamelCase words ("MedicationRequest"); a
# reference is Type/id, relative or at the end of an absolute URL.
_RESOURCE_TYPE = r"[A-Z][a-z]+(?:[A-Z][a-z]+)*"
_TYPE_AND_ID = _RESOURCE_TYPE + r"/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]+)?"
_REFERENCE = re.compile(r"(?:https?://\S*?/)?\b" + _TYPE_AND_ID)
_REFERENCE_IN_PARENS = re.compile(r"\s*\((?:https?://\S*?/)?" + _TYPE_AND_ID + r"\)")


def is_fhir_reference(token: str) -> bool:
    """'Condition/abc-1' or 'https://ehr/fhir/Condition/abc-1' (not 'NCS/EMG', 'mL/min')."""
    match = _REFERENCE.fullmatch(token)
    if not match:
        return False
    parts = token.split("/")
    return is_resource_type(parts[-4] if "/_history/" in token else parts[-2])


@cache
def _resource_modules() -> frozenset[str]:
    return frozenset(m.name for m in pkgutil.iter_modules(fhir_r4b.__path__))


@cache
def is_resource_type(name: str) -> bool:
    """A FHIR R4 resource type name (``Condition``), not a data type or any other word."""
    if name.lower() not in _resource_modules():
        return False
    try:
        model = fhir_r4b.get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError, ImportError):
        return False
    return any(base.__name__ == "Resource" for base in model.__mro__)


def clinical_text(text: str) -> str:
    """``text`` without "(SNOMED CT 123)"-style code parts and without FHIR references."""
    text = _CODE_IN_PARENS.sub("", text)
    return readable_units(_REFERENCE_IN_PARENS.sub(_drop_if_reference, text))


def _drop_if_reference(match: re.Match[str]) -> str:
    inner = match.group(0).strip()[1:-1]
    return "" if is_fhir_reference(inner) else match.group(0)


# UCUM annotations in units ("mL/min/{1.73_m2}") read as "mL/min/1.73 m2".
_UCUM_ANNOTATION = re.compile(r"\{([^{}\s]{1,32})\}")


def readable_units(text: str) -> str:
    return _UCUM_ANNOTATION.sub(lambda m: m.group(1).replace("_", " "), text)


class CodeDisplays:
    """Names for bare codes: an order or a result charted with a code and no text ("30679-5",
    "L1930") is shown by the display the value sets give that code. Only codes with one display
    across all value sets, and at least five characters (so a dose or a year is never taken for
    a code)."""

    def __init__(self, displays: dict[str, set[str]]) -> None:
        self.by_code = {code: next(iter(names)) for code, names in displays.items()
                        if len(names) == 1 and len(code) >= 5}
        codes = sorted(self.by_code, key=len, reverse=True)
        self.pattern = re.compile(
            r"(?<![\w.\-/])(" + "|".join(re.escape(c) for c in codes) + r")(?![\w\-/]|\.\w)"
        ) if codes else None

    def humanize(self, text: str) -> str:
        if self.pattern is None:
            return text
        return self.pattern.sub(lambda m: self.by_code[m.group(1)], text)
