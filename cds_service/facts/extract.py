"""From a patient's validated FHIR resources to ``PatientFacts``.

Every threshold and code list comes from ``cards/`` (facts.yaml and the value sets); this module
only knows how FHIR records dates, statuses, laterality and muscle grades.
Each topic sits in its own module (findings, strength, causes, red_flags, done, renal); this one
compiles the knowledge once and assembles ``PatientFacts``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from functools import cached_property
from typing import Any

from cds_service.facts.causes import CausesMixin
from cds_service.facts.done import DoneMixin
from cds_service.facts.findings import FindingsMixin
from cds_service.facts.model import PatientFacts, Side
from cds_service.facts.reading import coded_label, parse_fhir_datetime
from cds_service.facts.red_flags import RedFlagsMixin
from cds_service.facts.renal import RenalMixin
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.loader import Knowledge
from cds_service.knowledge.valuesets import CompiledValueSet

__all__ = ["FactExtractor", "coded_label", "parse_fhir_datetime"]


class FactExtractor:
    """Compiled once from the knowledge; ``extract`` runs per request."""

    def __init__(self, knowledge: Knowledge) -> None:
        self.knowledge = knowledge
        t = knowledge.thresholds
        self.t = t
        self.vs = knowledge.valueset
        self.condition_facts: dict[str, tuple[CompiledValueSet, ...]] = {
            fact: tuple(self.vs(v) for v in sets) for fact, sets in t["condition_facts"].items()
        }
        self.history_facts = {
            fact: tuple(self.vs(v) for v in sets) for fact, sets in t["history_facts"].items()
        }
        self.ces_signs = tuple(self.vs(v) for v in t["cauda_equina_signs"])
        self.text_only = frozenset(t["text_only_findings"])
        self.observation_findings = frozenset(
            self.vs(v).id for v in t.get("observation_findings", ())
        )
        self.muscles = tuple(self.vs(v) for v in t["muscle_groups"])
        self.dorsiflexion = t["dorsiflexion_group"]
        for group in t["multilevel_other_groups"]:
            self.vs(group)  # an unknown name fails at load, like every other knowledge reference
        self.order_sets = tuple(self.vs(v) for v in t["order_categories"])
        self.lab_sets = tuple(self.vs(v) for v in t["lab_categories"])
        self.cockcroft_gault: Mapping[str, Any] = t["cockcroft_gault"]
        self.weight_set = self.vs(self.cockcroft_gault["weight_valueset"])
        unnamed = [c for c in (*t["localising_causes"], *t["cause_timing"])
                   if c not in t["cause_names"]]
        if unnamed:  # a cause the cards would list or time must have a name, checked at load
            raise ValueError(f"cards/facts.yaml cause_names lacks {', '.join(unnamed)}")
        self.side_sets = tuple(
            (self.vs(vs_id), Side(side)) for vs_id, side in t["body_site_sides"].items()
        )
        self.muscle_labels: Mapping[str, str] = t.get("muscle_labels", {})
        self.laterality_codes: Mapping[str, Mapping[str, str]] = t.get("laterality_codes", {})
        self.not_strength = re.compile(t["not_strength_pattern"])
        self.generic_strength = re.compile(t.get("generic_strength_pattern") or r"(?!)")
        self.grade_units = frozenset(u.lower() for u in t["grade_units"])

    # -- main entry -----------------------------------------------------------------------------
    def extract(self, record: PatientRecord, now: datetime) -> PatientFacts:
        return _Extraction(self, record, now).facts


class _Extraction(FindingsMixin, CausesMixin, RedFlagsMixin, DoneMixin, RenalMixin):
    """One request: the topic mixins each add their facts; ``facts`` runs them in order."""

    @cached_property
    def facts(self) -> PatientFacts:
        v = self.values
        f = self.findings
        matches = self.condition_matches

        for fact in (*self.ex.condition_facts, *self.ex.history_facts):
            hits = matches.get(fact, [])
            v[fact] = bool(hits)
            if hits:
                f[fact] = [h.finding for h in hits]

        self._foot_drop(matches)
        self._causes(matches)
        self._red_flags(matches)
        self._already_done()
        self._renal()
        v["age_years"] = self._age()
        v["patient_deceased"] = self._deceased()

        return PatientFacts(
            patient_id=self.record.patient_id,
            now=self.now,
            findings={k: tuple(items) for k, items in f.items()},
            done=tuple(self.done),
            labs=tuple(self.labs),
            **v,
        )

    def _deceased(self) -> bool:
        patient = self.record.patient or {}
        return patient.get("deceasedBoolean") is True or bool(patient.get("deceasedDateTime"))

    def _age(self) -> int | None:
        patient = self.record.patient or {}
        born = parse_fhir_datetime(patient.get("birthDate"))
        if born is None:
            return None
        today = self.now.date()
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))
