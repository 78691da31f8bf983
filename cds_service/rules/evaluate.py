"""Apply the recommendations of one hook to the facts: which fire, at which indicator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cds_service.facts.model import FactView, PatientFacts, SelectedOrder
from cds_service.knowledge.loader import Knowledge, Recommendation, SuggestionSpec

SEVERITY = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class RuleMatch:
    recommendation: Recommendation
    indicator: str
    view: FactView
    suggestions: tuple[SuggestionSpec, ...]

    @property
    def order(self) -> SelectedOrder | None:
        return self.view.order


def evaluate(
    knowledge: Knowledge,
    hook: str,
    facts: PatientFacts,
    selected_orders: Sequence[SelectedOrder] = (),
) -> list[RuleMatch]:
    matches: list[RuleMatch] = []
    for rec in knowledge.for_hook(hook):
        views = (
            [FactView(facts, order) for order in selected_orders]
            if rec.per_selected_order
            else [FactView(facts)]
        )
        for view in views:
            if not rec.when(view):
                continue
            indicator = rec.indicator
            for condition, escalated in rec.escalations:
                if condition(view) and SEVERITY[escalated] < SEVERITY[indicator]:
                    indicator = escalated
            suggestions = tuple(s for s in rec.suggestions if s.when is None or s.when(view))
            matches.append(RuleMatch(rec, indicator, view, suggestions))
    matches.sort(key=lambda m: (SEVERITY[m.indicator], m.recommendation.rank,
                                m.recommendation.id))
    return matches
