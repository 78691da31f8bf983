"""FHIR ValueSets compiled into constant-time lookups.

Semantics: ``compose.include.concept`` is an exact code match within its system; an ICD-10-CM
(or NDC) ``filter`` with op ``is-a`` matches the code and everything that starts with it (prefix);
the ``text-pattern`` extension holds regular expressions matched against CodeableConcept.text and
coding.display, used only where no verified code exists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TEXT_PATTERN_URL = "https://footdrop-cds.example.org/fhir/StructureDefinition/text-pattern"
PREFIX_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/icd-10-cm", "http://hl7.org/fhir/sid/ndc"})
# A clause that negates the finding ("no saddle anaesthesia", "denies leg crossing").
_NEGATION = re.compile(
    r"\b(no|not|denies|denied|without|negative for|absence of|free of)\b[^.;,]*$", re.IGNORECASE
)


class ValueSetError(ValueError):
    pass


@dataclass(frozen=True)
class CompiledValueSet:
    id: str
    url: str
    title: str
    exact: frozenset[tuple[str, str]]
    prefixes: Mapping[str, tuple[str, ...]]
    patterns: tuple[re.Pattern[str], ...]
    displays: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def matches_coding(self, system: str | None, code: str | None) -> bool:
        if not system or not code:
            return False
        if (system, code) in self.exact:
            return True
        prefixes = self.prefixes.get(system)
        return bool(prefixes) and code.startswith(prefixes)

    def matches_text(self, text: str | None) -> bool:
        if not text or not self.patterns:
            return False
        for pattern in self.patterns:
            found = pattern.search(text)
            if found and not _NEGATION.search(text[: found.start()]):
                return True
        return False

    def matches_concept(self, concept: Mapping[str, Any] | None) -> bool:
        """True when any coding is in the set, or (for text-defined sets) the text matches."""
        if not isinstance(concept, Mapping):
            return False
        codings = concept.get("coding")
        if isinstance(codings, list):
            for coding in codings:
                if isinstance(coding, Mapping) and self.matches_coding(
                    coding.get("system"), coding.get("code")
                ):
                    return True
        if self.patterns:
            if self.matches_text(concept.get("text")):
                return True
            if isinstance(codings, list):
                for coding in codings:
                    if isinstance(coding, Mapping) and self.matches_text(coding.get("display")):
                        return True
        return False

    def matching_codings(self, concept: Mapping[str, Any] | None) -> Iterable[Mapping[str, Any]]:
        if not isinstance(concept, Mapping) or not isinstance(concept.get("coding"), list):
            return ()
        return [
            c for c in concept["coding"]
            if isinstance(c, Mapping) and self.matches_coding(c.get("system"), c.get("code"))
        ]


def compile_valueset(resource: Mapping[str, Any]) -> CompiledValueSet:
    if resource.get("resourceType") != "ValueSet":
        raise ValueSetError("not a ValueSet")
    vs_id = resource.get("id")
    if not isinstance(vs_id, str):
        raise ValueSetError("ValueSet without id")
    exact: set[tuple[str, str]] = set()
    displays: dict[tuple[str, str], str] = {}
    prefixes: dict[str, list[str]] = {}
    for include in resource.get("compose", {}).get("include", []):
        system = include.get("system")
        if not system:
            raise ValueSetError(f"{vs_id}: include without system")
        for concept in include.get("concept", []):
            exact.add((system, concept["code"]))
            if concept.get("display"):
                displays[(system, concept["code"])] = concept["display"]
        for flt in include.get("filter", []):
            if flt.get("op") != "is-a" or flt.get("property") != "concept":
                raise ValueSetError(f"{vs_id}: only 'concept is-a' filters are supported")
            if system not in PREFIX_SYSTEMS:
                raise ValueSetError(f"{vs_id}: is-a is read as a prefix only for ICD-10-CM/NDC")
            prefixes.setdefault(system, []).append(flt["value"])
    patterns = []
    for ext in resource.get("extension", []):
        if ext.get("url") == TEXT_PATTERN_URL:
            try:
                patterns.append(re.compile(ext["valueString"], re.IGNORECASE))
            except re.error as exc:
                raise ValueSetError(f"{vs_id}: bad text pattern: {exc}") from exc
    return CompiledValueSet(
        id=vs_id,
        url=resource.get("url", ""),
        title=resource.get("title", vs_id),
        exact=frozenset(exact),
        prefixes={k: tuple(v) for k, v in prefixes.items()},
        patterns=tuple(patterns),
        displays=displays,
    )
