"""Drop resources no rule can use before they are validated: the cost of a request should grow
with the data the rules need, not with the size of the chart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds_service.knowledge.loader import Knowledge
from cds_service.knowledge.valuesets import CompiledValueSet


class RelevanceFilter:
    def __init__(self, knowledge: Knowledge) -> None:
        t = knowledge.thresholds
        names: list[str] = [*t["muscle_groups"], *t["lab_categories"], *t["cauda_equina_signs"]]
        for sets in t["condition_facts"].values():
            names.extend(sets)
        self.observation_sets: tuple[CompiledValueSet, ...] = tuple(
            knowledge.valueset(n) for n in dict.fromkeys(names)
        )

    def __call__(self, resource: Mapping[str, Any]) -> bool:
        if resource.get("resourceType") != "Observation":
            return True
        code = resource.get("code")
        return any(vs.matches_concept(code) for vs in self.observation_sets)
