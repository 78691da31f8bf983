"""Render rule matches as CDS Hooks 2.0 cards, with FHIR R4 resources in the suggestions.

Every created or updated resource is validated with ``fhir.resources`` before it is offered; a
suggestion whose resource would be invalid is dropped (and logged), never sent to the EHR.
"""

from __future__ import annotations

import copy
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Template

from cds_service.fhir.record import model_class
from cds_service.knowledge.loader import (
    OVERRIDE_REASON_SYSTEM,
    TOPIC_SYSTEM,
    ActionSpec,
    Knowledge,
    Recommendation,
)
from cds_service.logs import log_event
from cds_service.render.text import CodeDisplays, clinical_text
from cds_service.rules.evaluate import RuleMatch

log = logging.getLogger(__name__)
SUMMARY_LIMIT = 139  # CDS Hooks: "<140-character summary"


@dataclass(frozen=True)
class RenderContext:
    patient_id: str
    user_id: str | None
    encounter_id: str | None
    now: datetime
    # Where the service's own pages live for the EHR user (CDS_PUBLIC_BASE_URL, never the Host
    # header, which a client chooses): the card's evidence link is an absolute URL under it.
    public_base_url: str = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class RenderedCard:
    recommendation_id: str
    card: dict[str, Any]


class RenderError(ValueError):
    pass


def render_cards(
    matches: Sequence[RuleMatch], knowledge: Knowledge, ctx: RenderContext
) -> list[RenderedCard]:
    return [_render(m, knowledge, ctx) for m in matches]


def _template_vars(match: RuleMatch, ctx: RenderContext) -> dict[str, Any]:
    return {
        "facts": match.view.patient,
        "order": match.view.order,
        "orders": match.orders,
        "patient_id": ctx.patient_id,
        "user_id": ctx.user_id,
        "encounter_id": ctx.encounter_id,
        "now": ctx.now,
        "today": ctx.now.date().isoformat(),
        "indicator": match.indicator,
    }


def _render(match: RuleMatch, knowledge: Knowledge, ctx: RenderContext) -> RenderedCard:
    rec = match.recommendation
    variables = _template_vars(match, ctx)
    words = _code_displays(knowledge)
    summary = words.humanize(clinical_text(" ".join(rec.summary.render(variables).split())))
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
    # The evidence is behind the card's links, not in the detail: a link inside the markdown
    # navigates the EHR's frame away and the session is lost.
    detail = words.humanize(clinical_text(rec.detail.render(variables).strip()))

    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "summary": summary,
        "indicator": match.indicator,
        "detail": detail,
        "source": {
            "label": rec.source["label"],
            "url": rec.source["url"],
            "topic": {"system": TOPIC_SYSTEM, "code": rec.id, "display": rec.title},
        },
    }
    suggestions = []
    for spec in match.suggestions:
        actions = []
        try:
            for action in spec.actions:
                actions.append(_render_action(action, match, variables, ctx))
        except RenderError as exc:
            log_event(log, "suggestion dropped", logging.ERROR, recommendation=rec.id,
                      suggestion=spec.key, reason=str(exc))
            continue
        suggestion: dict[str, Any] = {
            "label": " ".join(spec.label.render(variables).split()),
            "uuid": str(uuid.uuid4()),
            "actions": actions,
        }
        if spec.recommended:
            suggestion["isRecommended"] = True
        suggestions.append(suggestion)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = rec.selection_behavior
        if rec.selection_behavior == "at-most-one":
            _at_most_one_recommended(suggestions)
    reasons = list(rec.override_reasons) + [
        r for r in knowledge.default_override_reasons
        if r["code"] not in {o["code"] for o in rec.override_reasons}
    ]
    if reasons:
        card["overrideReasons"] = [
            {"system": OVERRIDE_REASON_SYSTEM, "code": r["code"], "display": r["display"]}
            for r in reasons
        ]
    card["links"] = evidence_links(rec, ctx)
    return RenderedCard(rec.id, card)


def evidence_url(base_url: str, recommendation_id: str) -> str:
    return f"{base_url.rstrip('/')}/evidence/{recommendation_id}"


def evidence_links(rec: Recommendation, ctx: RenderContext) -> list[dict[str, Any]]:
    """The card's ``links``: the service's evidence page for the recommendation, then the primary
    source. Other links (the SMART app) are appended by their own function."""
    return [
        {"label": "Evidence and sources", "url": evidence_url(ctx.public_base_url, rec.id),
         "type": "absolute"},
        {"label": rec.source.label, "url": rec.source.url, "type": "absolute"},
    ]


_DISPLAYS: dict[str, CodeDisplays] = {}


def _code_displays(knowledge: Knowledge) -> CodeDisplays:
    """Built once per knowledge version (the value sets do not change while it is loaded)."""
    found = _DISPLAYS.get(knowledge.version)
    if found is None:
        names: dict[str, set[str]] = {}
        for valueset in knowledge.valuesets.values():
            for (_system, code), display in valueset.displays.items():
                names.setdefault(code, set()).add(display)
        found = _DISPLAYS[knowledge.version] = CodeDisplays(names)
    return found


def _at_most_one_recommended(suggestions: list[dict[str, Any]]) -> None:
    seen = False
    for suggestion in suggestions:
        if suggestion.get("isRecommended"):
            if seen:
                del suggestion["isRecommended"]
            seen = True


def _render_action(
    action: ActionSpec, match: RuleMatch, variables: Mapping[str, Any], ctx: RenderContext
) -> dict[str, Any]:
    description = " ".join(action.description.render(variables).split())
    if action.type == "delete":
        order = match.order
        if order is None:
            raise RenderError("delete without a selected order")
        return {"type": "delete", "description": description, "resourceId": order.reference}
    if action.type == "update":
        order = match.order
        if order is None:
            raise RenderError("update without a selected order")
        # The draft as the EHR sent it, minus empty members (not allowed in FHIR JSON; the
        # sandbox's PAMA view sends "reasonCode": [] until a reason is picked), plus the patch.
        resource = _without_empty(copy.deepcopy(dict(order.resource)))
        _merge(resource, _render_structure(action.patch or {}, variables))
        resource.setdefault("id", order.resource_id)
    else:
        resource = _render_structure(action.resource, variables)
    _check_resource(resource)
    return {"type": action.type, "description": description, "resource": resource}


def _render_structure(node: Any, variables: Mapping[str, Any]) -> Any:
    if isinstance(node, Template):
        return node.render(variables)
    if isinstance(node, Mapping):
        rendered = {k: _render_structure(v, variables) for k, v in node.items()}
        return {k: v for k, v in rendered.items() if v not in (None, "", [], {})}
    if isinstance(node, list):
        return [_render_structure(v, variables) for v in node]
    return copy.deepcopy(node)


def _without_empty(node: Any) -> Any:
    """``node`` with empty strings, lists and objects (and nulls) removed, innermost first."""
    if isinstance(node, Mapping):
        pruned = {k: _without_empty(v) for k, v in node.items()}
        return {k: v for k, v in pruned.items() if v not in (None, "", [], {})}
    if isinstance(node, list):
        pruned_items = [_without_empty(v) for v in node]
        return [v for v in pruned_items if v not in (None, "", [], {})]
    return node


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        target[key] = copy.deepcopy(value)


def _check_resource(resource: Mapping[str, Any]) -> None:
    resource_type = resource.get("resourceType")
    try:
        model = model_class(str(resource_type))
    except KeyError as exc:
        raise RenderError(f"unsupported resource type {resource_type}") from exc
    try:
        model.model_validate(resource)
    except Exception as exc:
        raise RenderError(f"{resource_type} is not valid FHIR R4: {type(exc).__name__}") from exc
