"""Typed, frozen facts. Rules read these by field name; card templates read them for the *why*."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from enum import StrEnum
from typing import Any


class Side(StrEnum):
    """Laterality of a finding."""

    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Finding:
    """One piece of patient data a fact rests on, phrased for a clinician."""

    label: str
    reference: str
    when: date | None = None
    detail: str | None = None

    def describe(self) -> str:
        parts = [self.label]
        if self.detail:
            parts.append(self.detail)
        if self.when:
            parts.append(f"({self.when.isoformat()})")
        return " ".join(parts)


@dataclass(frozen=True)
class StrengthGrade:
    """A manual muscle test result on the MRC 0-5 scale."""

    muscle: str
    side: Side
    grade: float
    recorded_as: str
    when: datetime
    reference: str
    muscle_label: str = ""
    # When the result was released: orders two grades charted for the same effective time (a
    # date-only exam recorded twice in one day).
    issued: datetime | None = None

    @property
    def order(self) -> tuple[datetime, datetime]:
        return (self.when, self.issued or self.when)

    @property
    def day(self) -> date:
        return self.when.date()

    @property
    def base_grade(self) -> int:
        """The MRC grade without its +/- modifier: 3 for "3-/5", "3/5" and "3+/5"."""
        head = self.recorded_as.split("/")[0].rstrip("+-").strip()
        try:
            return int(float(head))
        except ValueError:
            return int(self.grade)

    def describe(self) -> str:
        """'left ankle dorsiflexion 3-/5 on 2026-11-12'."""
        words = [] if self.side is Side.UNKNOWN else [self.side.value]
        if self.muscle_label:
            words.append(self.muscle_label)
        words.append(f"{self.recorded_as} on {self.day.isoformat()}")
        return " ".join(words)


@dataclass(frozen=True)
class LabValue:
    kind: str
    value: float
    unit: str
    when: datetime
    reference: str

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.value:g}{unit} on {self.when.date().isoformat()}"


@dataclass(frozen=True)
class OrderRecord:
    """Something already ordered or done (ServiceRequest, DeviceRequest, Procedure, report...)."""

    category: str
    resource_type: str
    reference: str
    status: str
    label: str
    priority: str | None
    when: date | None
    performed: bool

    def describe(self) -> str:
        what = "done" if self.performed else f"ordered ({self.status})"
        prio = f", priority {self.priority}" if self.priority else ""
        when = f" on {self.when.isoformat()}" if self.when else ""
        return f"{self.label}: {what}{prio}{when}"


@dataclass(frozen=True)
class PatientFacts:
    """Everything the foot-drop pathway needs to know about one patient at ``now``.

    Booleans default to False and optional values to None: absent data never fires a card.
    ``findings`` maps a fact name to the data behind it, for the card's *why*.
    """

    patient_id: str
    now: datetime
    age_years: int | None = None
    # Patient.deceased[x]: a chart opened after death (records review) gets no pathway card.
    patient_deceased: bool = False

    # Foot drop
    has_foot_drop: bool = False
    foot_drop_side: str = Side.UNKNOWN.value
    foot_drop_onset: date | None = None
    foot_drop_duration_days: int | None = None
    walking_difficulty: bool = False

    # Dorsiflexion strength (MRC grade)
    dorsiflexion_latest_grade: float | None = None
    dorsiflexion_improving: bool = False
    dorsiflexion_recovery_plateau: bool = False
    # Every side's latest dorsiflexion grade is full strength (5/5).
    dorsiflexion_recovered: bool = False
    dorsiflexion_grades: tuple[StrengthGrade, ...] = ()
    other_weak_muscles: tuple[StrengthGrade, ...] = ()

    # Causes
    has_lumbar_radiculopathy: bool = False
    has_lumbar_disc_herniation: bool = False
    has_radiculopathy_with_motor_deficit: bool = False
    has_thoracic_disc: bool = False
    has_peroneal_neuropathy: bool = False
    has_compressive_peroneal_neuropathy: bool = False
    has_sciatic_or_plexus_lesion: bool = False
    has_stroke: bool = False
    has_multiple_sclerosis: bool = False
    has_cerebral_palsy: bool = False
    has_spinal_cord_injury: bool = False
    has_spasticity: bool = False
    has_spondylolisthesis: bool = False
    habitual_leg_crossing: bool = False
    central_cause: bool = False
    peripheral_cause: bool = False
    cause_known: bool = False
    cause_unknown_or_peroneal_only: bool = False
    # A timed cause on record that began too long before (or after) the foot drop to explain it.
    remote_causes: bool = False
    # The localising causes' names (facts.yaml cause_names), for the card that lists them.
    localising_cause_names: tuple[str, ...] = ()
    chronic_axial_low_back_pain: bool = False

    # Red flags (recent and active only)
    red_flag_progressive_weakness: bool = False
    red_flag_bilateral_foot_drop: bool = False
    red_flag_cauda_equina: bool = False
    red_flag_multilevel_deficit: bool = False
    has_red_flag: bool = False
    red_flag_since: date | None = None
    red_flag_names: tuple[str, ...] = ()

    # Already done
    lumbar_mri_ordered: bool = False
    lumbar_mri_performed: bool = False
    lumbar_mri_urgent_pending: bool = False  # urgent/stat order still open, not done since
    lumbar_mri_urgent_since_red_flag: bool = False
    lumbar_mri_priority: str | None = None
    lumbar_mri_date: date | None = None
    ncs_emg_done: bool = False
    afo_or_fes_done: bool = False
    afo_done: bool = False
    fes_done: bool = False
    pt_referral_done: bool = False
    lumbar_decompression_done: bool = False
    prior_lumbar_decompression: bool = False  # at any time, not only this episode
    lumbar_decompression_ordered: bool = False
    spine_surgery_referral_done: bool = False
    spine_surgery_referral_since_red_flag: bool = False
    peroneal_decompression_done: bool = False
    tendon_transfer_or_arthrodesis_done: bool = False
    tendon_transfer_or_arthrodesis_ordered: bool = False
    botulinum_toxin_done: bool = False
    on_dalfampridine: bool = False

    # Dalfampridine safety
    seizure_history: bool = False
    crcl_latest: float | None = None
    crcl_superseded: bool = False  # a newer eGFR/creatinine than the latest CrCl
    egfr_latest: float | None = None
    ckd_stage_3b_or_worse: bool = False
    renal_function_known: bool = False
    crcl_at_or_below_limit: bool = False
    # crcl_latest is a Cockcroft-Gault estimate from the chart (facts.yaml cockcroft_gault).
    crcl_estimated: bool = False
    only_egfr_available: bool = False

    findings: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    done: tuple[OrderRecord, ...] = ()
    labs: tuple[LabValue, ...] = ()

    def value(self, name: str) -> Any:
        return getattr(self, name)

    def why(self, name: str) -> tuple[Any, ...]:
        return tuple(self.findings.get(name, ()))


@dataclass(frozen=True)
class SelectedOrder:
    """A draft order the clinician selected (order-select), classified against the value sets.

    ``session_categories`` / ``session_urgent_categories`` describe *all* draft orders of the order
    session (selected or not, this one included): rules read them as ``order.draft_has_<c>`` and
    ``order.draft_has_urgent_<c>`` to avoid suggesting what is already being ordered.
    """

    reference: str
    resource_type: str
    resource_id: str
    label: str
    status: str | None
    categories: frozenset[str]
    priority: str | None = None
    dose_mg: float | None = None
    doses_per_day: float | None = None
    daily_dose_mg: float | None = None
    dosage_text: str | None = None
    session_categories: frozenset[str] = frozenset()
    session_urgent_categories: frozenset[str] = frozenset()
    resource: Mapping[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> bool:
        # Only called for names that are not fields: is_<c>, draft_has_<c>, draft_has_urgent_<c>
        # (rules read them as order.<name>, card templates as attributes).
        if name.startswith("draft_has_urgent_"):
            return name[17:].replace("_", "-") in self.session_urgent_categories
        if name.startswith("draft_has_"):
            return name[10:].replace("_", "-") in self.session_categories
        if name.startswith("is_"):
            return name[3:].replace("_", "-") in self.categories
        raise AttributeError(name)

    def value(self, name: str) -> Any:
        return getattr(self, name)

    def describe(self) -> str:
        parts = [self.label]
        if self.dosage_text:
            parts.append(self.dosage_text)
        if self.priority:
            parts.append(f"priority {self.priority}")
        return f"{', '.join(parts)} ({self.reference})"


PATIENT_FACT_NAMES: frozenset[str] = frozenset(
    f.name for f in fields(PatientFacts) if f.name not in {"findings", "done", "labs", "now"}
)
_ORDER_FIELDS = ("label", "status", "priority", "dose_mg", "doses_per_day", "daily_dose_mg",
                 "resource_type")


def order_fact_names(categories: Iterable[str]) -> frozenset[str]:
    """What per-order rules can read: the order's own fields, and for each category a selected
    order is classified in (``selected_order_categories`` in cards/facts.yaml) is_<c>,
    draft_has_<c> and draft_has_urgent_<c>."""
    return frozenset(
        {f"order.{n}" for n in _ORDER_FIELDS}
        | {f"order.{prefix}{c.replace('-', '_')}"
           for c in categories
           for prefix in ("is_", "draft_has_", "draft_has_urgent_")}
    )


@dataclass(frozen=True)
class FactView:
    """What a condition tree reads: patient facts, plus the selected order on order-select."""

    patient: PatientFacts
    order: SelectedOrder | None = None

    def value(self, name: str) -> Any:
        if name.startswith("order."):
            return None if self.order is None else self.order.value(name[6:])
        return self.patient.value(name)
