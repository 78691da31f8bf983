"""Red flags: progressive weakness, new bilateral foot drop, cauda equina, multi-level deficit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta

from cds_service.facts.base import Dated
from cds_service.facts.model import Side, StrengthGrade
from cds_service.facts.strength import StrengthMixin


class RedFlagsMixin(StrengthMixin):
    """The red flags that call for urgent imaging, and since when."""

    def _red_flags(self, matches: Mapping[str, list[Dated]]) -> None:
        t, v, f = self.t, self.values, self.findings
        flags: list[tuple[str, date]] = []
        df = self.ex.dorsiflexion

        # Progressive weakness: same side, both recent, no more than the window apart, and the
        # later grade at least one MRC grade below the earlier one.
        window = timedelta(days=int(t["progression_window_days"]))
        drop = float(t["progression_min_drop"])
        recent = [g for g in self.strength.get(df, []) if self.recent(g.when)]
        # A grade recorded without a side is compared with the others when the record names only
        # one side for foot drop (grades and foot-drop Conditions): "left 4/5", then "2/5".
        known = {g.side for g in self.strength.get(df, [])}
        known |= {h.side for h in matches.get("has_foot_drop", [])}
        known.discard(Side.UNKNOWN)
        one_side = len(known) == 1 and known <= {Side.LEFT, Side.RIGHT}
        progression: list[StrengthGrade] = []
        for i, earlier in enumerate(recent):
            for later in recent[i + 1:]:
                fell = max(earlier.grade - later.grade, earlier.base_grade - later.base_grade)
                same_side = later.side == earlier.side or (
                    one_side and Side.UNKNOWN in (later.side, earlier.side)
                )
                if (
                    same_side
                    and later.order > earlier.order
                    and later.when - earlier.when <= window
                    and fell >= drop - 1e-9
                ):
                    progression = [earlier, later]
        if progression:
            v["red_flag_progressive_weakness"] = True
            f["red_flag_progressive_weakness"] = progression
            flags.append(("progressive weakness", progression[-1].day))

        # Bilateral foot drop that became bilateral recently.
        if self.bilateral_since is not None and self.recent(self.bilateral_since):
            v["red_flag_bilateral_foot_drop"] = True
            f["red_flag_bilateral_foot_drop"] = list(f.get("has_foot_drop", []))
            flags.append(("bilateral foot drop", self.bilateral_since.date()))

        # Cauda equina signs, recent and active, with foot drop or lumbar radicular disease.
        context = (
            v.get("has_foot_drop")
            or v.get("has_lumbar_radiculopathy")
            or v.get("has_lumbar_disc_herniation")
        )
        signs = [h for h in matches.get("ces_sign", []) if self.recent(h.moment)]
        if context and signs:
            v["red_flag_cauda_equina"] = True
            f["red_flag_cauda_equina"] = [h.finding for h in signs]
            # A sign appeared when it was first recorded in the window: charting the same sign
            # again (post-operative day 2) is not a new red flag, but a different sign is.
            first_seen: dict[str, datetime] = {}
            for hit in signs:
                if hit.moment is not None:
                    first_seen[hit.kind] = min(first_seen.get(hit.kind, hit.moment), hit.moment)
            flags.append(("cauda equina signs", max(first_seen.values()).date()))

        # Multi-level motor deficit: weak dorsiflexion and another weak lower-limb group, where
        # the combination began recently (a long-standing, stable deficit is not a red flag).
        limit = float(t["multilevel_max_grade"])
        weak_df = self.weak_latest(df, limit)
        other_groups = set(t["multilevel_other_groups"])
        weak_other = [
            g for muscle in self.strength if muscle in other_groups
            for g in self.weak_latest(muscle, limit)
        ]
        if weak_other:
            v["other_weak_muscles"] = tuple(weak_other)
        if weak_df and weak_other:
            since = max(
                min(self.weak_since(g, limit) for g in weak_df),
                min(self.weak_since(g, limit) for g in weak_other),
            )
            if self.recent(since):
                v["red_flag_multilevel_deficit"] = True
                f["red_flag_multilevel_deficit"] = weak_df + weak_other
                flags.append(("multi-level motor deficit", since.date()))

        v["has_red_flag"] = bool(flags)
        if flags:
            v["red_flag_names"] = tuple(name for name, _ in flags)
            # The latest red flag: an MRI done before it does not answer it.
            v["red_flag_since"] = max(day for _, day in flags)
            f["has_red_flag"] = [
                item for key in ("red_flag_progressive_weakness", "red_flag_bilateral_foot_drop",
                                 "red_flag_cauda_equina", "red_flag_multilevel_deficit")
                for item in f.get(key, [])
            ]
