"""Renal function for the dalfampridine rules: CrCl, eGFR, serum creatinine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cds_service.facts.base import ExtractionBase
from cds_service.facts.model import Finding, LabValue
from cds_service.facts.reading import observation_time, parse_fhir_datetime, reference_of


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
        else:
            # No CrCl measured (or only a superseded one): estimate it from the chart when every
            # input is there; otherwise the cards ask for an estimate, as before.
            superseded = f.get("crcl_superseded")
            after = superseded[0].when if superseded else None
            estimated = self._cockcroft_gault(recent, after)
            if estimated is not None:
                value, finding = estimated
                v["crcl_latest"] = value
                v["crcl_estimated"] = True
                f["crcl_latest"] = [finding]
                v["crcl_at_or_below_limit"] = value <= float(t["crcl_limit_ml_min"])
        if egfr:
            v["egfr_latest"] = egfr[-1].value
            f["egfr_latest"] = egfr[-1:]
        v["only_egfr_available"] = bool(egfr) and v.get("crcl_latest") is None

    # -- Cockcroft-Gault ------------------------------------------------------------------------
    @cached_property
    def weights(self) -> list[LabValue]:
        """Body weights in kg, oldest first (units in facts.yaml cockcroft_gault.weight_units_kg;
        a weight in another unit is not read)."""
        units: Mapping[str, float] = self.ex.cockcroft_gault["weight_units_kg"]
        found: list[LabValue] = []
        for obs in self.record.of("Observation"):
            if obs.get("status") not in self.t["observation_statuses"]:
                continue
            if not self.ex.weight_set.matches_concept(obs.get("code")):
                continue
            quantity = obs.get("valueQuantity")
            moment = observation_time(obs)
            if not isinstance(quantity, Mapping) or moment is None or quantity.get("comparator"):
                continue
            value = quantity.get("value")
            unit = str(quantity.get("code") or quantity.get("unit") or "")
            if not isinstance(value, int | float) or isinstance(value, bool) or unit not in units:
                continue
            kg = float(value) * units[unit]
            if kg > 0:
                found.append(LabValue(kind="body-weight", value=round(kg, 1), unit="kg",
                                      when=moment, reference=reference_of(obs)))
        found.sort(key=lambda w: w.when)
        return found

    def _creatinine_mg_dl(self, lab: LabValue) -> float | None:
        cg = self.ex.cockcroft_gault
        unit = lab.unit.strip()
        if unit in cg["creatinine_units_mg_dl"]:
            return lab.value
        if unit in cg["creatinine_units_umol_l"]:
            return lab.value / float(cg["umol_per_mg_dl"])
        return None

    def _cockcroft_gault(
        self, recent: list[LabValue], after: datetime | None,
    ) -> tuple[float, Finding] | None:
        """CrCl estimated from the latest serum creatinine, the body weight measured nearest it
        (within the window), age on the day of the creatinine and sex; None when one is missing."""
        cg = self.ex.cockcroft_gault
        creatinines = [lab for lab in recent if lab.kind == "serum-creatinine"
                       and (after is None or lab.when > after)]
        patient = self.record.patient or {}
        born = parse_fhir_datetime(patient.get("birthDate"))
        sex = patient.get("gender")
        if not creatinines or born is None or sex not in ("male", "female"):
            return None
        creatinine = creatinines[-1]
        mg_dl = self._creatinine_mg_dl(creatinine)
        if mg_dl is None or mg_dl <= 0:
            return None
        window = timedelta(days=int(cg["weight_window_days"]))
        near = [w for w in self.weights if abs(w.when - creatinine.when) <= window]
        if not near:
            return None
        weight = min(near, key=lambda w: abs(w.when - creatinine.when))
        day = creatinine.when.date()
        age = day.year - born.year - ((day.month, day.day) < (born.month, born.day))
        estimate = ((float(cg["numerator"]) - age) * weight.value
                    / (float(cg["denominator"]) * mg_dl))
        if sex == "female":
            estimate *= float(cg["female_factor"])
        if estimate <= 0:
            return None
        estimate = round(estimate, 1)
        finding = Finding(
            label=f"{estimate:g} mL/min estimated (Cockcroft-Gault)",
            reference=creatinine.reference,
            detail=(f"from serum creatinine {creatinine.describe()}, weight {weight.describe()}, "
                    f"age {age} and {sex} sex"),
        )
        return estimate, finding
