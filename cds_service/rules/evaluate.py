"""Apply the recommendations of one hook to the facts: which fire, at which indicator.

Per-order rules (``for_each: selected-order``) are evaluated once per selected draft order. A
per-order rule none of whose actions targets the selected order (it only creates resources, or
has no suggestions) would give the same card once per triggering order; such matches are folded
into one card: the most severe indicator, the suggestions of all matches (each once, in file
order), and ``orders`` listing every order that triggered it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from cds_service.facts.model import FactView, PatientFacts, SelectedOrder
from cds_service.knowledge.loader import (
    Knowledge,
    OverrideReasonSpec,
    Recommendation,
    SuggestionSpec,
)

SEVERITY = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class RuleMatch:
    recommendation: Recommendation
    indicator: str
    view: FactView
    suggestions: tuple[SuggestionSpec, ...]
    orders: tuple[SelectedOrder, ...] = ()
    override_reasons: tuple[OverrideReasonSpec, ...] = ()

    @property
    def order(self) -> SelectedOrder | None:
        return self.view.order


def targets_selected_order(rec: Recommendation) -> bool:
    return any(a.targets_selected_order for s in rec.suggestions for a in s.actions)


def evaluate(
    knowledge: Knowledge,
    hook: str,
    facts: PatientFacts,
    selected_orders: Sequence[SelectedOrder] = (),
) -> list[RuleMatch]:
    matches: list[RuleMatch] = []
    if knowledge.applies is not None and not knowledge.applies(FactView(facts)):
        return matches
    for rec in knowledge.for_hook(hook):
        views = (
            [FactView(facts, order) for order in selected_orders]
            if rec.per_selected_order
            else [FactView(facts)]
        )
        rec_matches: list[RuleMatch] = []
        for view in views:
            if not rec.when(view):
                continue
            indicator = rec.indicator
            for condition, escalated in rec.escalations:
                if condition(view) and SEVERITY[escalated] < SEVERITY[indicator]:
                    indicator = escalated
            suggestions = tuple(s for s in rec.suggestions if s.when is None or s.when(view))
            orders = (view.order,) if view.order is not None else ()
            reasons = tuple(r for r in rec.override_reasons if r.when is None or r.when(view))
            rec_matches.append(RuleMatch(rec, indicator, view, suggestions, orders, reasons))
        if rec.per_selected_order and len(rec_matches) > 1 and not targets_selected_order(rec):
            rec_matches = [_fold(rec_matches)]
        matches.extend(rec_matches)
    matches.sort(key=lambda m: (SEVERITY[m.indicator], m.recommendation.rank,
                                m.recommendation.id))
    return matches


def _fold(same_rule: list[RuleMatch]) -> RuleMatch:
    """One card for a per-order rule whose suggestions do not depend on which order fired it."""
    lead = min(same_rule, key=lambda m: SEVERITY[m.indicator])
    keys = {s.key for m in same_rule for s in m.suggestions}
    suggestions = tuple(s for s in lead.recommendation.suggestions if s.key in keys)
    orders = tuple(o for m in same_rule for o in m.orders)
    codes = {r.code for m in same_rule for r in m.override_reasons}
    reasons = tuple(r for r in lead.recommendation.override_reasons if r.code in codes)
    return replace(lead, suggestions=suggestions, orders=orders, override_reasons=reasons)
