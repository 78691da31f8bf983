"""Causes of the foot drop: central, peripheral, localising, radicular with a motor deficit."""

from __future__ import annotations

from cds_service.facts.strength import StrengthMixin


class CausesMixin(StrengthMixin):
    """Whether a known cause explains the foot drop."""

    def _causes(self) -> None:
        t, v, f = self.t, self.values, self.findings
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
