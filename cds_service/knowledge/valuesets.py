"""FHIR ValueSets compiled into constant-time lookups.

Semantics: ``compose.include.concept`` is an exact code match within its system; an ICD-10-CM
(or NDC) ``filter`` with op ``is-a`` matches the code and everything that starts with it (prefix);
the ``text-pattern`` extension holds regular expressions matched against CodeableConcept.text and
coding.display, used only where no verified code exists.

Text answers are remembered (``_TextMemo``): a chart repeats the same few hundred code texts and
displays thousands of times, and so do the charts of different patients, while each answer costs
dozens of regular-expression searches. The memo is bounded, keyed by the exact text, and holds
only short texts (long free text is rarely repeated).
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


class _TextMemo:
    """text -> bool, for texts up to ``MAX_TEXT`` characters; emptied when it reaches ``LIMIT``
    entries. Safe to share between threads (a race computes the same answer twice)."""

    MAX_TEXT = 256
    LIMIT = 4096

    __slots__ = ("answers",)

    def __init__(self) -> None:
        self.answers: dict[str, bool] = {}

    def get(self, text: str) -> bool | None:
        return self.answers.get(text)

    def put(self, text: str, answer: bool) -> bool:
        if len(text) <= self.MAX_TEXT:
            if len(self.answers) >= self.LIMIT:
                self.answers = {}
            self.answers[text] = answer
        return answer


@dataclass(frozen=True)
class CompiledValueSet:
    id: str
    url: str
    title: str
    exact: frozenset[tuple[str, str]]
    prefixes: Mapping[str, tuple[str, ...]]
    patterns: tuple[re.Pattern[str], ...]
    displays: Mapping[tuple[str, str], str] = field(default_factory=dict)
    _memo: _TextMemo = field(default_factory=_TextMemo, compare=False, repr=False)

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
        known = self._memo.get(text)
        if known is not None:
            return known
        return self._memo.put(text, self._search_text(text))

    def _search_text(self, text: str) -> bool:
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


class ValueSetIndex:
    """Does a concept (or a text) match *any* of several value sets?

    The same answer as ``any(vs.matches_concept(concept) for vs in sets)``, but a coding costs one
    set lookup (the codes of all the sets are merged) instead of one per value set, and a text
    already seen costs one dictionary lookup.

    Made for the relevance filter, which runs before FHIR validation: a member of the wrong type
    (a number where a code should be) answers True, "cannot rule it out", and is left to validation.
    """

    def __init__(self, sets: Iterable[CompiledValueSet]) -> None:
        self.sets = tuple(sets)
        exact: set[tuple[str, str]] = set()
        prefixes: dict[str, set[str]] = {}
        for vs in self.sets:
            exact.update(vs.exact)
            for system, values in vs.prefixes.items():
                prefixes.setdefault(system, set()).update(values)
        self.exact = frozenset(exact)
        self.prefixes = {system: tuple(sorted(values)) for system, values in prefixes.items()}
        self.text_sets = tuple(vs for vs in self.sets if vs.patterns)
        self._memo = _TextMemo()

    def matches_coding(self, system: Any, code: Any) -> bool:
        if not system or not code:
            return False
        if type(system) is not str or type(code) is not str:
            return True
        if (system, code) in self.exact:
            return True
        prefixes = self.prefixes.get(system)
        return bool(prefixes) and code.startswith(prefixes)

    def matches_text(self, text: Any) -> bool:
        if not text or not self.text_sets:
            return False
        if type(text) is not str:
            return True
        known = self._memo.answers.get(text)
        if known is not None:
            return known
        return self._memo.put(text, any(vs._search_text(text) for vs in self.text_sets))

    def matches_concept(self, concept: Any) -> bool:
        # Runs for every resource of a chart: dicts (what orjson makes) skip the ABC check.
        if not isinstance(concept, (dict, Mapping)):
            return False
        codings = concept.get("coding")
        if not isinstance(codings, list):
            codings = ()
        for coding in codings:
            if isinstance(coding, (dict, Mapping)) and self.matches_coding(
                coding.get("system"), coding.get("code")
            ):
                return True
        if self.text_sets:
            text = concept.get("text")
            if self.matches_text(text):
                return True
            for coding in codings:
                if isinstance(coding, (dict, Mapping)):
                    display = coding.get("display")
                    if display != text and self.matches_text(display):
                        return True
        return False
