"""Load and check everything under ``cards/`` once, at start.

Knowledge fails at load: a schema error, an unknown fact, operator or value set, or a template
that does not compile stops the service from starting, instead of silently never firing a card.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jinja2 import StrictUndefined, Template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cds_service.facts.model import PATIENT_FACT_NAMES, order_fact_names
from cds_service.knowledge.valuesets import CompiledValueSet, ValueSetError, compile_valueset
from cds_service.rules.conditions import CompiledCondition, ConditionError, compile_condition

OVERRIDE_REASON_SYSTEM = "https://footdrop-cds.example.org/fhir/CodeSystem/override-reason"
TOPIC_SYSTEM = "https://footdrop-cds.example.org/fhir/CodeSystem/recommendation"


class KnowledgeError(ValueError):
    """The knowledge under cards/ is inconsistent; the service must not start with it."""


@dataclass(frozen=True)
class PrefetchSpec:
    key: str
    template: str
    on_failure: str  # "fail" | "omit"


@dataclass(frozen=True)
class ServiceSpec:
    id: str
    hook: str
    title: str
    description: str
    usage_requirements: str | None
    prefetch: tuple[PrefetchSpec, ...]

    def discovery(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
        }
        if self.usage_requirements:
            entry["usageRequirements"] = self.usage_requirements
        if self.prefetch:
            entry["prefetch"] = {p.key: p.template for p in self.prefetch}
        return entry


@dataclass(frozen=True)
class ActionSpec:
    type: str
    description: Template
    resource: Any  # nested dict/list of compiled templates and literals
    targets_selected_order: bool
    patch: Any


@dataclass(frozen=True)
class SuggestionSpec:
    key: str
    label: Template
    when: CompiledCondition | None
    recommended: bool
    actions: tuple[ActionSpec, ...]


@dataclass(frozen=True)
class Source:
    """One citable document from cards/sources.yaml, defined once and referred to by key."""

    key: str
    label: str
    url: str
    year: int

    def __getitem__(self, name: str) -> str:  # templates and older callers read source["url"]
        return str(getattr(self, name))


@dataclass(frozen=True)
class OverrideReasonSpec:
    """One override reason a card may offer; ``when`` limits it to the card variants it fits."""

    code: str
    display: str
    when: CompiledCondition | None = None


@dataclass(frozen=True)
class SnoozeSpec:
    """Overrides with one of ``reasons`` hide the card for that patient for ``days``."""

    reasons: frozenset[str]
    days: int


@dataclass(frozen=True)
class Recommendation:
    id: str
    hook: str  # the first of ``hooks``
    hooks: tuple[str, ...]
    title: str
    rank: int
    per_selected_order: bool
    indicator: str
    escalations: tuple[tuple[CompiledCondition, str], ...]
    when: CompiledCondition
    summary: Template
    detail: Template
    rationale: str
    source: Source
    citations: tuple[Source, ...]
    when_data: Mapping[str, Any]  # the rule as written, for the evidence page
    override_reasons: tuple[OverrideReasonSpec, ...]
    selection_behavior: str
    suggestions: tuple[SuggestionSpec, ...]
    path: Path
    snooze: SnoozeSpec = SnoozeSpec(frozenset(), 0)
    # Patient facts its conditions read: the evidence a snoozed card is compared on.
    fact_names: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Knowledge:
    root: Path
    services: Mapping[str, ServiceSpec]
    valuesets: Mapping[str, CompiledValueSet]
    thresholds: Mapping[str, Any]
    recommendations: tuple[Recommendation, ...]
    default_override_reasons: tuple[Mapping[str, str], ...]
    sources: Mapping[str, Source]
    version: str
    snooze_returned_note: str = ""
    # config.yaml applies_when: no recommendation of any hook fires unless it holds.
    applies: CompiledCondition | None = None

    def recommendation(self, rec_id: str, hook: str | None = None) -> Recommendation | None:
        """The recommendation with this id (and hook: ids repeat between patient-view and the
        order rules)."""
        return next((r for r in self.recommendations
                     if r.id == rec_id and (hook is None or hook in r.hooks)), None)

    def valueset(self, vs_id: str) -> CompiledValueSet:
        try:
            return self.valuesets[vs_id]
        except KeyError as exc:
            raise KnowledgeError(f"unknown value set {vs_id!r}") from exc

    def for_hook(self, hook: str) -> tuple[Recommendation, ...]:
        return tuple(r for r in self.recommendations if hook in r.hooks)


def template_environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["describe"] = _describe
    env.filters["isodate"] = lambda d: d.isoformat() if d is not None else "unknown date"
    env.filters["grade"] = lambda g: f"{g:g}/5" if g is not None else "not recorded"
    return env


def _describe(items: Any, sep: str = "; ") -> str:
    if items is None:
        return ""
    if hasattr(items, "describe"):
        return items.describe()
    return sep.join(i.describe() if hasattr(i, "describe") else str(i) for i in items)


_ENV = template_environment()


def load_knowledge(root: Path) -> Knowledge:
    root = Path(root)
    if not root.is_dir():
        raise KnowledgeError(f"cards directory not found: {root}")
    valuesets = _load_valuesets(root / "valuesets")
    thresholds = _read_yaml(root / "facts.yaml")
    config = _read_yaml(root / "config.yaml") if (root / "config.yaml").exists() else {}
    services = _load_services(root / "services.yaml")
    schema = json.loads((root / "schema" / "recommendation.schema.json").read_text())
    order_categories = thresholds.get("selected_order_categories") or []
    unknown = [c for c in order_categories if c not in valuesets]
    if unknown:
        raise KnowledgeError(f"facts.yaml selected_order_categories: unknown value sets {unknown}")
    order_facts = order_fact_names(order_categories)
    sources = load_sources(root / "sources.yaml", root / "schema" / "sources.schema.json")
    defaults = tuple(config.get("default_override_reasons", ()))
    snooze_default = config.get("snooze") or {}
    recommendations = []
    seen: set[tuple[str, str]] = set()
    for path in sorted((root / "recommendations").rglob("*.yaml")):
        data = _read_yaml(path)
        try:
            jsonschema.validate(data, schema)
        except jsonschema.ValidationError as exc:
            where = list(exc.absolute_path)
            raise KnowledgeError(f"{path.name}: {exc.message} at {where}") from exc
        if data.get("enabled", True) is False:
            continue
        hooks = _hooks_of(data)
        for hook in hooks:
            if (hook, data["id"]) in seen:
                raise KnowledgeError(f"{path.name}: duplicate recommendation id {data['id']}")
            seen.add((hook, data["id"]))
        recommendations.append(
            _compile_recommendation(data, path, order_facts, sources, defaults, snooze_default)
        )
    return Knowledge(
        root=root,
        services=services,
        valuesets=valuesets,
        thresholds=thresholds,
        recommendations=tuple(recommendations),
        default_override_reasons=defaults,
        sources=sources,
        version=knowledge_version(root),
        snooze_returned_note=_checked_note(snooze_default.get("returned_note")),
        applies=_compile_applies(config.get("applies_when")),
    )


def _compile_applies(condition: Any) -> CompiledCondition | None:
    if condition is None:
        return None
    try:
        return compile_condition(condition, PATIENT_FACT_NAMES, "config.yaml applies_when")
    except ConditionError as exc:
        raise KnowledgeError(f"config.yaml applies_when: {exc}") from exc


def knowledge_version(root: Path) -> str:
    """A digest of every file under cards/: the evidence pages name the knowledge they show."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_sources(path: Path, schema_path: Path) -> dict[str, Source]:
    """cards/sources.yaml: each source once; one URL under two keys (two labels) is an error."""
    data = _read_yaml(path)
    try:
        jsonschema.validate(data, json.loads(schema_path.read_text(encoding="utf-8")))
    except jsonschema.ValidationError as exc:
        raise KnowledgeError(f"{path.name}: {exc.message} at {list(exc.absolute_path)}") from exc
    sources: dict[str, Source] = {}
    by_url: dict[str, str] = {}
    for key, entry in data["sources"].items():
        url = entry["url"]
        if url in by_url:
            raise KnowledgeError(
                f"{path.name}: {url} is defined twice ({by_url[url]!r} and {key!r}); "
                "one URL, one label")
        by_url[url] = key
        sources[key] = Source(key=key, label=entry["label"], url=url, year=entry["year"])
    return sources


def _checked_note(note: Any) -> str:
    text = str(note or "").strip()
    try:
        text.format(snoozed_on="", reason="", evidence="")
    except (KeyError, IndexError, ValueError) as exc:
        raise KnowledgeError(
            f"config.yaml snooze.returned_note: only {{snoozed_on}}, {{reason}} and "
            f"{{evidence}} may be used ({exc})") from exc
    return text


ORDER_HOOKS = frozenset({"order-select", "order-sign"})


def _hooks_of(data: Mapping[str, Any]) -> tuple[str, ...]:
    """``hook: order-select`` or ``hook: [order-select, order-sign]``: one rule, several hooks."""
    hook = data["hook"]
    return (hook,) if isinstance(hook, str) else tuple(hook)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeError(f"{path}: {exc}") from exc


def _load_valuesets(folder: Path) -> dict[str, CompiledValueSet]:
    compiled: dict[str, CompiledValueSet] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            vs = compile_valueset(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, ValueSetError) as exc:
            raise KnowledgeError(f"{path.name}: {exc}") from exc
        if vs.id != path.stem:
            raise KnowledgeError(f"{path.name}: id {vs.id!r} does not match the file name")
        compiled[vs.id] = vs
    return compiled


def _load_services(path: Path) -> dict[str, ServiceSpec]:
    data = _read_yaml(path)
    services = {}
    for service_id, spec in (data.get("services") or {}).items():
        prefetch = tuple(
            PrefetchSpec(key, entry["template"], entry.get("on_failure", "fail"))
            for key, entry in (spec.get("prefetch") or {}).items()
        )
        for p in prefetch:
            if p.on_failure not in ("fail", "omit"):
                raise KnowledgeError(f"{service_id}.{p.key}: on_failure must be fail or omit")
        services[service_id] = ServiceSpec(
            id=service_id,
            hook=spec["hook"],
            title=spec["title"],
            description=spec["description"].strip(),
            usage_requirements=(spec.get("usageRequirements") or "").strip() or None,
            prefetch=prefetch,
        )
    return services


def _compile_override_reasons(
    data: Mapping[str, Any], known: frozenset[str], where: str,
    defaults: tuple[Mapping[str, str], ...],
) -> tuple[OverrideReasonSpec, ...]:
    """The card's own reasons (a bare code names one of config.yaml's defaults), then the defaults
    it does not list, unless ``default_override_reasons: false``. Unknown codes fail at load."""
    catalogue = {d["code"]: d["display"] for d in defaults}
    reasons: list[OverrideReasonSpec] = []
    for entry in data.get("override_reasons", ()):
        code = entry["code"]
        display = entry.get("display") or catalogue.get(code)
        if display is None:
            raise KnowledgeError(
                f"{where}: override reason {code!r} has no display and is not a default reason")
        if any(r.code == code and "when" not in entry for r in reasons):
            raise KnowledgeError(f"{where}: override reason {code!r} listed twice")
        when = compile_condition(entry["when"], known, f"{where} override reason {code}") if (
            "when" in entry) else None
        reasons.append(OverrideReasonSpec(code, display, when))
    if data.get("default_override_reasons", True):
        listed = {r.code for r in reasons}
        reasons.extend(OverrideReasonSpec(d["code"], d["display"]) for d in defaults
                       if d["code"] not in listed)
    return tuple(reasons)


def _compile_snooze(
    data: Mapping[str, Any], reasons: tuple[OverrideReasonSpec, ...], where: str,
    snooze_default: Mapping[str, Any],
) -> SnoozeSpec:
    spec = {**snooze_default, **(data.get("snooze") or {})}
    offered = {r.code for r in reasons}
    wanted = frozenset(spec.get("reasons") or ())
    if "snooze" not in data:
        wanted = wanted & offered  # the default applies to the reasons this card offers
    unknown = sorted(wanted - offered)
    if unknown:
        raise KnowledgeError(f"{where}: snooze reasons {unknown} are not override reasons of it")
    days = int(spec.get("days", 14))
    if wanted and days < 1:
        raise KnowledgeError(f"{where}: snooze days must be at least 1")
    return SnoozeSpec(wanted, days)


def _compile_recommendation(
    data: Mapping[str, Any], path: Path, order_facts: frozenset[str],
    sources: Mapping[str, Source],
    defaults: tuple[Mapping[str, str], ...] = (), snooze_default: Mapping[str, Any] | None = None,
) -> Recommendation:
    where = path.name
    unknown = [k for k in [data["source"], *data["citations"]] if k not in sources]
    if unknown:
        raise KnowledgeError(f"{where}: unknown source keys {unknown} (see cards/sources.yaml)")
    if data["source"] not in data["citations"]:
        raise KnowledgeError(f"{where}: the primary source must also be among the citations")
    per_order = data.get("for_each") == "selected-order"
    hooks = _hooks_of(data)
    if per_order and not set(hooks) <= ORDER_HOOKS:
        raise KnowledgeError(f"{where}: for_each selected-order needs order-select/order-sign")
    known = PATIENT_FACT_NAMES | (order_facts if per_order else frozenset())
    try:
        when = compile_condition(data["when"], known, where)
        escalations = tuple(
            (compile_condition(e["when"], known, f"{where} escalate"), e["indicator"])
            for e in data.get("escalate", ())
        )
        suggestions = tuple(
            _compile_suggestion(s, known, f"{where} suggestion {s['key']}", per_order)
            for s in data.get("suggestions", ())
        )
        summary = _ENV.from_string(data["summary"].strip())
        detail = _ENV.from_string(data["detail"].strip())
        override_reasons = _compile_override_reasons(data, known, where, defaults)
    except ConditionError as exc:
        raise KnowledgeError(str(exc)) from exc
    except Exception as exc:  # jinja2 TemplateSyntaxError and friends
        raise KnowledgeError(f"{where}: template error: {exc}") from exc
    if suggestions and "selection_behavior" not in data:
        raise KnowledgeError(f"{where}: suggestions need selection_behavior")
    return Recommendation(
        id=data["id"],
        hook=hooks[0],
        hooks=hooks,
        title=data["title"],
        rank=int(data.get("rank", 50)),
        per_selected_order=per_order,
        indicator=data["indicator"],
        escalations=escalations,
        when=when,
        summary=summary,
        detail=detail,
        rationale=data["rationale"].strip(),
        source=sources[data["source"]],
        citations=tuple(sources[k] for k in data["citations"]),
        when_data=data["when"],
        override_reasons=override_reasons,
        selection_behavior=data.get("selection_behavior", "at-most-one"),
        suggestions=suggestions,
        path=path,
        snooze=_compile_snooze(data, override_reasons, where, snooze_default or {}),
        fact_names=frozenset(_facts_read(
            [data["when"], *(e["when"] for e in data.get("escalate", ()))]
        )),
    )


def _facts_read(node: Any) -> set[str]:
    """Patient fact names a condition tree reads (``order.*`` facts belong to the order)."""
    if isinstance(node, Mapping):
        found = {node["fact"]} if isinstance(node.get("fact"), str) else set()
        for value in node.values():
            found |= _facts_read(value)
        return {f for f in found if not f.startswith("order.")}
    if isinstance(node, list):
        return set().union(*(_facts_read(v) for v in node)) if node else set()
    return set()


def _compile_suggestion(
    data: Mapping[str, Any], known: frozenset[str], where: str, per_order: bool
) -> SuggestionSpec:
    actions = []
    for action in data["actions"]:
        targets = action.get("target") == "selected-order"
        if targets and not per_order:
            raise KnowledgeError(f"{where}: target selected-order only on per-order rules")
        if action["type"] == "create" and "resource" not in action:
            raise KnowledgeError(f"{where}: create needs a resource")
        if action["type"] in ("update", "delete") and not targets:
            raise KnowledgeError(f"{where}: update/delete must target the selected order")
        actions.append(
            ActionSpec(
                type=action["type"],
                description=_ENV.from_string(action["description"]),
                resource=_compile_structure(action.get("resource")),
                targets_selected_order=targets,
                patch=_compile_structure(action.get("patch")),
            )
        )
    when = compile_condition(data["when"], known, where) if "when" in data else None
    return SuggestionSpec(
        key=data["key"],
        label=_ENV.from_string(data["label"]),
        when=when,
        recommended=bool(data.get("recommended", False)),
        actions=tuple(actions),
    )


def _compile_structure(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {k: _compile_structure(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_compile_structure(v) for v in node]
    if isinstance(node, str) and "{{" in node:
        return _ENV.from_string(node)
    return node
