"""What every topic module of fact extraction shares: the request's record, clock and results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from cds_service.facts.model import Finding, Side
from cds_service.facts.reading import concept_label, side_from_text
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.valuesets import canonical_coding

if TYPE_CHECKING:
    from cds_service.facts.extract import FactExtractor


@dataclass(frozen=True)
class Dated:
    finding: Finding
    moment: datetime | None
    side: Side
    kind: str  # the value set that matched: which finding this is


class ExtractionBase:
    """One request's extraction state; the topic mixins add the facts."""

    def __init__(self, ex: FactExtractor, record: PatientRecord, now: datetime) -> None:
        self.ex = ex
        self.t = ex.t
        self.record = record
        self.now = now
        self.findings: dict[str, list[Any]] = {}
        self.values: dict[str, Any] = {}
        self.bilateral_since: datetime | None = None

    def recent(self, moment: datetime | date | None) -> bool:
        """Within red_flag_recent_days before now (a day of clock skew into the future is fine)."""
        if moment is None:
            return False
        moment_day = moment.date() if isinstance(moment, datetime) else moment
        age = (self.now.date() - moment_day).days
        return -1 <= age <= int(self.t["red_flag_recent_days"])

    # -- sides ----------------------------------------------------------------------------------
    def side_of(self, resource: Mapping[str, Any], concept: Any) -> Side:
        """Laterality from the code itself, else bodySite (coded, then text), else the code text.
        Every coding counts: with no bilateral code, Epic/IMO send "bilateral foot drop" as one
        Condition coded both M21.371 and M21.372."""
        coded = set()
        for coding in (concept or {}).get("coding") or ():
            system, code = canonical_coding(str(coding.get("system")), str(coding.get("code")))
            side = self.ex.laterality_codes.get(system, {}).get(code)
            if side:
                coded.add(Side(side))
        if Side.BILATERAL in coded or {Side.LEFT, Side.RIGHT} <= coded:
            return Side.BILATERAL
        if coded:
            return coded.pop()
        sites = resource.get("bodySite")
        site_list = sites if isinstance(sites, list) else [sites] if sites else []
        for site in site_list:
            for valueset, side in self.ex.side_sets:
                if valueset.matches_concept(site):
                    return side
        for site in site_list:
            side = side_from_text(concept_label(site))
            if side is not Side.UNKNOWN:
                return side
        return side_from_text(concept_label(concept))
