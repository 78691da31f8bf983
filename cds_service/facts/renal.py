"""Renal function for the dalfampridine rules: CrCl, eGFR, serum creatinine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cds_service.facts.base import ExtractionBase
from cds_service.facts.model import LabValue
from cds_service.facts.reading import observation_time, reference_of


class RenalMixin(ExtractionBase):
    """Renal labs and the CrCl the dalfampridine rules decide from."""

    def _lab_value(self, kind: str, quantity: Mapping[str, Any], moment: datetime,
                   obs: Mapping[str, Any]) -> LabValue | None:
        """A lab value in the unit the rules compare with. A creatinine clearance in mL/s is
        converted to mL/min; one normalised to 1.73 m2 is an eGFR-like value, not the CrCl the
        dalfampridine label uses, so it is read as eGFR. A value with a comparator (">60") is
        kept only as a bound that cannot cross the CrCl limit the wrong way: "<" bounds and
        ">" bounds at or below the limit decide nothing and are dropped."""
        value = float(quantity["value"])
        unit = str(quantity.get("unit") or quantity.get("code") or "")
        compact = unit.replace(" ", "").lower()
        if kind == "creatinine-clearance":
            if "1.73" in compact:
                kind = "egfr"
            elif compact in {"ml/s", "ml/sec"}:
                value, unit = value * 60, "mL/min"
        comparator = str(quantity.get("comparator") or "")
        if comparator:
            limit = float(self.t["crcl_limit_ml_min"])
            if not (comparator in (">", ">=") and value > limit):
                return None
            unit = f"{unit} ({comparator}{quantity['value']:g})".strip()
        return LabValue(kind=kind, value=value, unit=unit, when=moment,
                        reference=reference_of(obs))

    @cached_property
    def labs(self) -> list[LabValue]:
        values: list[LabValue] = []
        for obs in self.record.of("Observation"):
            if obs.get("status") not in self.t["observation_statuses"]:
                continue
            quantity = obs.get("valueQuantity")
            if not isinstance(quantity, Mapping) or not isinstance(
                quantity.get("value"), int | float
            ):
                continue
            moment = observation_time(obs)
            if moment is None:
                continue
            for vs in self.ex.lab_sets:
                if vs.matches_concept(obs.get("code")):
                    lab = self._lab_value(vs.id, quantity, moment, obs)
                    if lab is not None:
                        values.append(lab)
                    break
        values.sort(key=lambda v: v.when)
        return values

    def _renal(self) -> None:
        t, v, f = self.t, self.values, self.findings
        lookback = timedelta(days=int(t["renal_lookback_days"]))
        recent = [lab for lab in self.labs if self.now - lab.when <= lookback]
        crcl = [lab for lab in recent if lab.kind == "creatinine-clearance"]
        egfr = [lab for lab in recent if lab.kind == "egfr"]
        v["renal_function_known"] = bool(recent)  # CrCl, eGFR or serum creatinine
        if recent:
            f["renal_function_known"] = recent[-1:]
        # A CrCl older than an eGFR or serum creatinine taken since (another day) no longer
        # describes the kidneys: a CrCl of 85 from last winter must not clear a drug this week
        # when this week's eGFR is 25. It is set aside and the cards ask for a new estimate.
        if crcl:
            newer = [lab for lab in recent if lab.kind != "creatinine-clearance"
                     and lab.when.date() > crcl[-1].when.date()]
            if newer:
                v["crcl_superseded"] = True
                f["crcl_superseded"] = [crcl[-1], newer[-1]]
                crcl = []
        if crcl:
            v["crcl_latest"] = crcl[-1].value
            f["crcl_latest"] = crcl[-1:]
            v["crcl_at_or_below_limit"] = crcl[-1].value <= float(t["crcl_limit_ml_min"])
        if egfr:
            v["egfr_latest"] = egfr[-1].value
            f["egfr_latest"] = egfr[-1:]
        v["only_egfr_available"] = bool(egfr) and not crcl
