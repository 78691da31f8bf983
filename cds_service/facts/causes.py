"""Causes of the foot drop: central, peripheral, localising, radicular with a motor deficit, and
whether each timed cause began when it could have produced this foot drop."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta

from cds_service.facts.base import Dated
from cds_service.facts.model import Finding
from cds_service.facts.strength import StrengthMixin


class CausesMixin(StrengthMixin):
    """Whether a known cause explains the foot drop."""

    def _cause_timing(self, matches: Mapping[str, list[Dated]]) -> None:
        """A timed cause (facts.yaml ``cause_timing``) that began too long before the foot drop,
        or well after it, does not explain it: its fact is cleared (so it neither suppresses
        localisation nor offers FES) and it is kept as a remote cause for the card to name."""
        t, v, f = self.t, self.values, self.findings
        onset: date | None = v.get("foot_drop_onset")
        if not v.get("has_foot_drop") or onset is None:
            return
        grace = timedelta(days=int(t["cause_timing_grace_days"]))
        names: Mapping[str, str] = t["cause_names"]
        remote: list[Finding] = []
        for fact, timing in t["cause_timing"].items():
            hits = matches.get(fact, [])
            if not hits:
                continue
            window = int(timing["max_days_before_foot_drop"])
            fitting, too_early = [], []
            for hit in hits:
                began = hit.moment.date() if hit.moment is not None else None
                if began is None or onset - timedelta(days=window) <= began <= onset + grace:
                    fitting.append(hit)
                else:
                    too_early.append(hit)
            if fitting:
                f[fact] = [h.finding for h in fitting]
                continue
            v[fact] = False
            f.pop(fact, None)
            for hit in too_early:
                began = hit.finding.when
                assert began is not None  # undated hits always fit
                gap = (onset - began).days
                span = f"about {round(abs(gap) / 365.25)} years" if abs(gap) >= 730 else (
                    f"{abs(gap)} days")
                when = f"{span} before" if gap >= 0 else f"{span} after"
                remote.append(Finding(
                    label=hit.finding.label,
                    reference=hit.finding.reference,
                    when=began,
                    detail=(f"began {when} this foot drop, outside the {window}-day window for a "
                            f"{names.get(fact, fact)}"),
                ))
        if remote:
            v["remote_causes"] = True
            f["remote_causes"] = remote

    def _causes(self, matches: Mapping[str, list[Dated]]) -> None:
        t, v, f = self.t, self.values, self.findings
        self._cause_timing(matches)
        names: Mapping[str, str] = t["cause_names"]
        v["localising_cause_names"] = tuple(names[c] for c in t["localising_causes"])
        v["central_cause"] = any(v.get(c) for c in t["central_causes"])
        v["peripheral_cause"] = any(v.get(c) for c in t["peripheral_causes"])
        for fact, causes in (("central_cause", t["central_causes"]),
                             ("peripheral_cause", t["peripheral_causes"])):
            items = [item for c in causes for item in f.get(c, [])]
            if items:
                f[fact] = items
        localising = any(v.get(c) for c in t["localising_causes"])
        v["cause_known"] = localising or bool(v.get("has_peroneal_neuropathy"))
        v["cause_unknown_or_peroneal_only"] = not localising
        radicular = v.get("has_lumbar_radiculopathy") or v.get("has_lumbar_disc_herniation")
        weak = [
            g
            for muscle in self.strength
            for g in self.latest_by_side(muscle).values()
            if g.grade < 5
        ]
        v["has_radiculopathy_with_motor_deficit"] = bool(
            radicular and (weak or v.get("has_foot_drop"))
        )
