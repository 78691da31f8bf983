"""FHIR ValueSets compiled into constant-time lookups.

Semantics: ``compose.include.concept`` is an exact code match within its system; an ICD-10-CM
(or NDC) ``filter`` with op ``is-a`` matches the code and everything that starts with it (prefix);
the ``text-pattern`` extension holds regular expressions matched against CodeableConcept.text and
coding.display, used where no verified code exists or where records often carry only a local code
and its display (the cauda equina red flags). A text match counts only where the sentence asserts
it (``is_asserted``: not negated, not hypothetical or advice, not answered "absent" after it).
A coding is also tried in its canonical form (``canonical_coding``: OID and edition-URI systems,
ICD-10-CM codes without their dot).

Text answers are remembered (``_TextMemo``): a chart repeats the same few hundred code texts and
displays thousands of times, and so do the charts of different patients, while each answer costs
dozens of regular-expression searches. The memo is bounded, keyed by the exact text, and holds
only short texts (long free text is rarely repeated).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cds_service import deadline

TEXT_PATTERN_URL = "https://footdrop-cds.example.org/fhir/StructureDefinition/text-pattern"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
PREFIX_SYSTEMS = frozenset({ICD10CM, "http://hl7.org/fhir/sid/ndc"})
_HCPCS = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
# Other spellings of the code systems the value sets use, as EHR exports write them: HL7 OIDs
# (C-CDA heritage, some Epic and Cerner feeds), https or a trailing slash.
_SYSTEM_ALIASES = {
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
    "urn:oid:2.16.840.1.113883.6.1": "http://loinc.org",
    "urn:oid:2.16.840.1.113883.6.12": "http://www.ama-assn.org/go/cpt",
    "urn:oid:2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "urn:oid:2.16.840.1.113883.6.69": "http://hl7.org/fhir/sid/ndc",
    "urn:oid:2.16.840.1.113883.6.14": _HCPCS,
    "urn:oid:2.16.840.1.113883.6.285": _HCPCS,
    "https://loinc.org": "http://loinc.org",
    "https://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
}
# A SNOMED CT edition or version URI written where the system belongs
# ("http://snomed.info/sct/731000124108/version/20250301").
_SNOMED_URI = re.compile(r"^https?://snomed\.info/(?:sct|id)(?:/\d+)?(?:/version/\d+)?$")
# --- Is a text match an assertion? (NegEx-style, after Chapman et al. 2001, much simplified) -----
# A pattern match counts only when the sentence around it asserts the finding. Three checks:
#  1. pre-negation: a trigger ("no", "denies", "negative for" ...) earlier in the same sentence
#     negates everything after it, across commas and "and/or/nor" lists ("Denies fever, urinary
#     retention, saddle anaesthesia"), until a termination word ("but", "reports", "new" ...);
#  2. hypothetical: a conditional or safety-netting trigger earlier in the sentence ("attend ED if",
#     "advice given re", "risk of", "?saddle anaesthesia") makes the mention not an assertion;
#  3. post-negation: an answer right after the match, or after the label list it ends
#     ("Saddle anaesthesia: absent", "... - pt denies", "Retention, incontinence: none").
# Sentences end at ". ; ! newline" (and at a "?" closing a question, for the look back).
# Red flags must not be missed, so every trigger list is kept narrow: an unclear context asserts.
_PRE_SENTENCE_END = re.compile(r"[;!\n\r]|\.(?!\d)|(?<=[\w)\]])\?")
_POST_SENTENCE_END = re.compile(r"[;!\n\r]|\.(?!\d)")
_PRE_NEGATION = re.compile(
    r"\b(?:no|not|never|neither|nor|none\s+of|denie[sd]|deny(?:ing)?|without|w/o"
    r"|neg(?:ative)?\s+for|absence\s+of|free\s+of|nil|ruled?\s+out|rules\s+out|r/o|to\s+exclude)\b",
    re.IGNORECASE,
)
# Not negations although they contain a trigger: "no change in ...", "not improving", "MRI
# without contrast", and the answer to an earlier item of a checklist ("Fever: no, retention: yes").
_PSEUDO_NEGATION = re.compile(
    r"\bno\s+(?:change|improvement|increase|worsening|resolution|relief|better)\b"
    r"|\bnot\s+(?:only|improv\w*|resolv\w*|better|changed)\b"
    r"|\bwithout\s+(?:any\s+)?(?:change|improvement|relief|resolution)\b"
    r"|\bnil\s+by\s+mouth\b|\bgram[\s-]negative\b|\b(?:no|without|w/o)\s+(?:iv\s+)?contrast\b"
    r"|(?:[:=?]|\s[-\u2013\u2014]+)\s*(?:no|n|none|nil|neg(?:ative)?|-ve|absent|denied)\s*(?=[,/])",
    re.IGNORECASE,
)
# "If", "should X develop", "in case of", safety-netting and advice to the patient, "risk of", and
# "?" or "query" directly before the finding. Their scope ends only at a termination word, not at
# "new" ("advised to return if new saddle anaesthesia"). "should" followed by a verb of care
# ("should be catheterised for retention", "should have an MRI") plans for a present finding.
_CONDITIONAL = re.compile(
    r"\bif\b|\bunless\b|\bwhether\b|\bin\s+(?:the\s+)?(?:case|event)\s+of\b"
    r"|\bshould\b(?!\s+(?:be|have|undergo|receive|get|go|proceed|see|attend|continue|remain|stay"
    r"|need|require|start|stop|take|use|wear|avoid|keep)\b)"
    r"|\bwarning\s+signs?\b|\b(?:watch|look|monitor)(?:ing)?\s+(?:out\s+)?for\b"
    r"|\bsafety[\s-]*net\w*|\brisk\s+(?:of|for)\b"
    r"|\badvi[cs](?:e[sd]?|ing)\b|\bexplain(?:ed|s)?\b|\bcounsell?(?:ed|ing)\b|\beducated\b"
    r"|(?<![\w)\]])\?\s*(?:(?:new|any|acute|possible|early)\s+)?$|\bquery\s*$",
    re.IGNORECASE,
)
# Discussion about a finding, also ended by "new": "discussed with the spinal team re new urinary
# retention" asserts it.
_TOPIC = re.compile(
    r"\bre\s*:|\bre\s+(?=\w)|\bregarding\b|\bdiscuss(?:ed|es|ion)?\b",
    re.IGNORECASE,
)
# Words that end the scope of a trigger: a contrast, the patient now having something, a reason
# ("given new retention"; but "advice given re ..." is advice).
_TERMINATION_WORDS = (
    r"\b(?:but|however|although|though|whereas|yet|except|apart\s+from|aside\s+from|other\s+than"
    r"|reports|reported|complain(?:s|ing)?\s+of|c/o|present(?:s|ing)\s+with"
    r"|admits?(?:\s+to)?|endorses?|pos(?:itive)?\s+for|now\s+(?:has|reports|with)|because"
    r"|o/e|on\s+exam\w*|noted|found"
    r"|due\s+to|secondary\s+to|in\s+(?:view|light)\s+of"
    r"|given(?!\s+(?:re\b|regarding|about|on|to|for|in\b)))\b|(?<![\w+])\+(?=\s*\w)|\+ve\b"
)
_HYPOTHETICAL_END = re.compile(_TERMINATION_WORDS, re.IGNORECASE)
_NEGATION_END = re.compile(
    _TERMINATION_WORDS + r"|\b(?:new|newly|now|has|had|having|still)\b", re.IGNORECASE
)
_POST_WORDS = (
    r"(?:absent|denie[sd]|neg(?:ative)?|-ve|not\s+present|none|nil|ruled\s+out|resolved|excluded)"
)
# The answer must end there ("absent.", "absent bilaterally"), not qualify the next finding
# ("saddle anaesthesia, absent ankle reflexes" asserts both).
_POST_END = (
    r"(?=\s*(?:$|[^\w\s]|(?:and|or|but|on|in|at|to|with|by|per|since|today|now|currently|any"
    r"|bilaterally|throughout|clinically|reported|noted|elicited|found|seen|detected|documented)\b))"
)
_POST_FILLER = (
    r"(?:(?:pt|patient|the\s+patient|is|was|are|were|has|have|had|been|now|currently|all|both"
    r"|clinically|it)\s+){0,3}"
)
_POST_NEGATION = re.compile(
    # right after the finding: "absent", ", resolved", "(denied)", " - pt denies"
    r"^(?:\s*[:=,(?]\s*|\s*[-\u2013\u2014]+\s*|\s+)" + _POST_FILLER + _POST_WORDS + _POST_END
    # the answer to a labelled list the finding belongs to: "Saddle anaesthesia, retention: no"
    # Each list item is an atomic group that stops before a separator, so the item and the next
    # separator's \s* never share whitespace: with backtracking between them, a text such as
    # "saddle anaesthesia ,      ,      ..." took exponential time (75 s for 49 characters).
    + r"|^(?:(?>\s*(?:,|/|&|\band\b|\bor\b|\bnor\b)\s*"
    r"(?:(?!\b(?:and|or|nor)\b)(?!\s+[-\u2013\u2014])(?!\s*[,/&:=?])[^,.;:=?/&\n]){1,40})){0,6}"
    r"(?:\s*[:=?]\s*|\s+[-\u2013\u2014]+\s*)" + _POST_FILLER + r"(?:" + _POST_WORDS + r"|no|n)"
    + _POST_END,
    re.IGNORECASE,
)
_POST_WINDOW = 200  # characters after the match that are looked at
_PRE_WINDOW = 300  # characters before the match: a sentence's reach, generously
# Clinical code texts, displays, answers and notes are far shorter; a longer text is read up to
# here (documented in docs/robustness.md).
MAX_SCANNED_TEXT = 8_000
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


def _last_end(pattern: re.Pattern[str], text: str) -> int:
    end = 0
    for found in pattern.finditer(text):
        end = found.end()
    return end


def is_asserted(text: str, start: int, end: int) -> bool:
    """Does the sentence around ``text[start:end]`` (a value-set pattern match) assert it, rather
    than negate it, ask about it, or mention it in advice? See the comment above. Only the
    ``_PRE_WINDOW`` characters before the match are read: every match of a long text is checked,
    and an unbounded look back would make that quadratic."""
    window_start = max(0, start - _PRE_WINDOW)
    before = text[window_start:start]
    before = before[_last_end(_PRE_SENTENCE_END, before):]
    if before.strip():
        before = _PSEUDO_NEGATION.sub(" ", before)
        if _PRE_NEGATION.search(before, _last_end(_NEGATION_END, before)):
            return False
        scope = _last_end(_HYPOTHETICAL_END, before)
        if _CONDITIONAL.search(before, scope):
            return False
        if _TOPIC.search(before, max(scope, _last_end(_NEGATION_END, before))):
            return False
    after = text[end : end + _POST_WINDOW]
    stop = _POST_SENTENCE_END.search(after)
    return not _POST_NEGATION.match(after[: stop.start()] if stop else after)


class ValueSetError(ValueError):
    pass


@lru_cache(maxsize=1024)
def canonical_system(system: str) -> str:
    """The system URI the value sets use for a known alias (OID, https, trailing slash, a SNOMED
    CT edition/version URI); anything else unchanged."""
    canonical = system.strip().split("|", 1)[0].rstrip("/")
    canonical = _SYSTEM_ALIASES.get(canonical, canonical)
    if canonical != SNOMED and _SNOMED_URI.match(canonical):
        canonical = SNOMED
    return canonical


def canonical_coding(system: str, code: str) -> tuple[str, str]:
    """The (system, code) the value sets are written in: known system aliases resolved, and an
    ICD-10-CM code upper-cased with its dot restored ("M21372" -> "M21.372"; claims and many
    exports drop the dot). Anything else is returned unchanged."""
    system = canonical_system(system)
    if system == ICD10CM:
        code = code.strip().upper()
        if "." not in code and len(code) > 3:
            code = f"{code[:3]}.{code[3:]}"
    return system, code


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
    # All the patterns in one expression: most texts match none, and one search says so faster.
    any_pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)
    _memo: _TextMemo = field(default_factory=_TextMemo, compare=False, repr=False)

    def matches_coding(self, system: str | None, code: str | None) -> bool:
        if not system or not code:
            return False
        if self._matches_exactly(system, code):
            return True
        if not isinstance(system, str) or not isinstance(code, str):
            return False
        canonical = canonical_coding(system, code)
        return canonical != (system, code) and self._matches_exactly(*canonical)

    def _matches_exactly(self, system: str, code: str) -> bool:
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
        """True when a pattern matches somewhere the text asserts it (``is_asserted``): every
        match is tried, so "no retention last week; retention today" is found. Only the first
        ``MAX_SCANNED_TEXT`` characters are read, so that one text costs milliseconds at most."""
        deadline.check()
        text = text[:MAX_SCANNED_TEXT]
        if self.any_pattern is not None and not self.any_pattern.search(text):
            return False
        for pattern in self.patterns:
            for found in pattern.finditer(text):
                if is_asserted(text, found.start(), found.end()):
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
        if len(include.get("filter", [])) > 1:
            # FHIR combines the filters of one include with AND; the codes of several is-a
            # filters are meant as alternatives, which FHIR writes as one include each.
            raise ValueSetError(f"{vs_id}: one filter per include (FHIR ANDs the filters of an "
                                "include); write each is-a as its own include")
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
        any_pattern=_any_of(patterns),
    )


def _any_of(patterns: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    """One expression matching where any of ``patterns`` matches (None when it cannot be built
    safely: a single pattern, flags other than a leading "(?i)", or backreferences)."""
    if len(patterns) < 2:
        return None
    parts = []
    for pattern in patterns:
        if pattern.flags & ~(re.IGNORECASE | re.UNICODE) or _BACKREFERENCE.search(pattern.pattern):
            return None
        parts.append(f"(?:{pattern.pattern.removeprefix('(?i)')})")
    try:
        return re.compile("|".join(parts), re.IGNORECASE)
    except re.error:
        return None


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
        self.systems = frozenset({system for system, _ in exact} | set(prefixes))
        # Systems whose codes canonical_coding never changes (ICD-10-CM codes may lack their dot).
        self.plain_systems = self.systems - {ICD10CM}
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
        if prefixes and code.startswith(prefixes):
            return True
        if system in self.plain_systems:
            return False  # already canonical (the common case)
        if system == ICD10CM and code.isupper() and ("." in code or len(code) <= 3):
            return False
        if system != ICD10CM and canonical_system(system) not in self.systems:
            return False  # a code system no value set uses
        alias_system, alias_code = canonical_coding(system, code)
        if (alias_system, alias_code) == (system, code):
            return False
        if (alias_system, alias_code) in self.exact:
            return True
        prefixes = self.prefixes.get(alias_system)
        return bool(prefixes) and alias_code.startswith(prefixes)

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
