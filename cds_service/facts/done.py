"""What was already done or ordered: orders, procedures, reports, imaging, medications."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

from cds_service.facts.base import ExtractionBase
from cds_service.facts.model import OrderRecord
from cds_service.facts.reading import (
    coded_label,
    parse_fhir_datetime,
    reference_of,
    referenced_concept,
)


class DoneMixin(ExtractionBase):
    """Orders, procedures, reports, studies and medications matched to the order categories."""

    @cached_property
    def done(self) -> list[OrderRecord]:
        t = self.t
        records: list[OrderRecord] = []

        def add(resource: Mapping[str, Any], concept: Any, status: str, performed: bool,
                moment: datetime | None, priority: str | None) -> None:
            for vs in self.ex.order_sets:
                if vs.matches_concept(concept):
                    records.append(
                        OrderRecord(
                            category=vs.id,
                            resource_type=str(resource.get("resourceType")),
                            reference=reference_of(resource),
                            status=status,
                            label=coded_label(concept, vs),
                            priority=priority,
                            when=moment.date() if moment else None,
                            performed=performed,
                        )
                    )

        def occurrence(resource: Mapping[str, Any]) -> datetime | None:
            return parse_fhir_datetime(resource.get("occurrenceDateTime")) or parse_fhir_datetime(
                (resource.get("occurrencePeriod") or {}).get("start")
            )

        for sr in self.record.of("ServiceRequest"):
            status = str(sr.get("status"))
            if status in t["order_statuses_ordered"]:
                performed = status in t["order_statuses_performed"]
                authored = parse_fhir_datetime(sr.get("authoredOn"))
                # A completed order dates from when it was done; an open one from when ordered.
                moment = (occurrence(sr) or authored) if performed else (authored or occurrence(sr))
                add(sr, sr.get("code"), status, performed, moment, sr.get("priority"))
        for dr in self.record.of("DeviceRequest"):
            status = str(dr.get("status"))
            if status in t["order_statuses_ordered"]:
                concept = dr.get("codeCodeableConcept") or referenced_concept(dr, "codeReference")
                add(dr, concept, status, status in t["order_statuses_performed"],
                    parse_fhir_datetime(dr.get("authoredOn")) or occurrence(dr),
                    dr.get("priority"))
        for proc in self.record.of("Procedure"):
            status = str(proc.get("status"))
            moment = parse_fhir_datetime(proc.get("performedDateTime")) or parse_fhir_datetime(
                (proc.get("performedPeriod") or {}).get("start")
            )
            if status in t["procedure_statuses_done"]:
                add(proc, proc.get("code"), status, True, moment, None)
        for report in self.record.of("DiagnosticReport"):
            status = str(report.get("status"))
            if status in t["report_statuses_final"]:
                moment = (
                    parse_fhir_datetime(report.get("effectiveDateTime"))
                    or parse_fhir_datetime((report.get("effectivePeriod") or {}).get("start"))
                    or parse_fhir_datetime(report.get("issued"))
                )
                add(report, report.get("code"), status, True, moment, None)
        for study in self.record.of("ImagingStudy"):
            if str(study.get("status")) not in t["imaging_statuses_done"]:
                continue
            moment = parse_fhir_datetime(study.get("started"))
            concepts = list(study.get("procedureCode") or ())
            if study.get("description"):
                concepts.append({"text": study["description"]})
            for concept in concepts:
                before = len(records)
                add(study, concept, str(study.get("status")), True, moment, None)
                if len(records) > before:
                    break
        for med in self.record.of("MedicationRequest"):
            status = str(med.get("status"))
            if status in t["medication_statuses_current"]:
                concept = med.get("medicationCodeableConcept") or referenced_concept(
                    med, "medicationReference"
                )
                add(med, concept, status, False, parse_fhir_datetime(med.get("authoredOn")),
                    med.get("priority"))
        return records

    def of_category(self, *categories: str) -> list[OrderRecord]:
        return [r for r in self.done if r.category in categories]

    def current_episode(self, records: list[OrderRecord]) -> list[OrderRecord]:
        """The records that can belong to the current foot drop: dated on or after its onset
        (less ``episode_grace_days``, for an onset charted late), or undated. An NCS, a discectomy
        or a referral from years before this foot drop began says nothing about it. Medication
        orders are current by their status, whatever their date."""
        onset = self.values.get("foot_drop_onset")
        if onset is None:
            return records
        start = onset - timedelta(days=int(self.t["episode_grace_days"]))
        return [r for r in records
                if r.when is None or r.when >= start or r.resource_type == "MedicationRequest"]

    def _already_done(self) -> None:
        t, v, f = self.t, self.values, self.findings
        mri = self.current_episode(self.of_category("lumbar-mri"))
        if mri:
            newest = max(mri, key=lambda r: r.when or date.min)
            v["lumbar_mri_ordered"] = True
            v["lumbar_mri_priority"] = newest.priority
            v["lumbar_mri_date"] = newest.when
            f["lumbar_mri_ordered"] = mri
        performed = [r for r in mri if r.performed]
        v["lumbar_mri_performed"] = bool(performed)
        if performed:
            f["lumbar_mri_performed"] = performed
        urgent = set(t["urgent_priorities"])
        open_statuses = set(t["order_statuses_ordered"]) - set(t["order_statuses_performed"])
        pending = [
            r for r in mri
            if not r.performed and r.status in open_statuses and r.priority in urgent
            and not any(p.when and r.when and p.when >= r.when for p in performed)
        ]
        v["lumbar_mri_urgent_pending"] = bool(pending)
        if pending:
            f["lumbar_mri_urgent_pending"] = pending
        since = v.get("red_flag_since")
        if since is not None:
            # Answered only by an MRI done, or ordered urgent/stat, on or after the latest red flag.
            answering = [
                r for r in mri
                if r.when is not None and r.when >= since and (r.performed or r.priority in urgent)
            ]
            v["lumbar_mri_urgent_since_red_flag"] = bool(answering)
            if answering:
                f["lumbar_mri_urgent_since_red_flag"] = answering
            referred = [
                r for r in self.of_category("spine-surgery-referral")
                if r.when is not None and r.when >= since and r.priority in urgent
            ]
            v["spine_surgery_referral_since_red_flag"] = bool(referred)
            if referred:
                f["spine_surgery_referral_since_red_flag"] = referred
        any_status = {
            "ncs_emg_done": ("ncs-emg",),
            "afo_done": ("afo",),
            "fes_done": ("fes",),
            "afo_or_fes_done": ("afo", "fes"),
            "pt_referral_done": ("physical-therapy",),
            "botulinum_toxin_done": ("botulinum-toxin",),
            "lumbar_decompression_ordered": ("lumbar-decompression",),
            "spine_surgery_referral_done": ("spine-surgery-referral",),
            "peroneal_decompression_done": ("peroneal-nerve-decompression",),
            "tendon_transfer_or_arthrodesis_ordered": ("tendon-transfer", "ankle-arthrodesis"),
        }
        for fact, categories in any_status.items():
            hits = self.current_episode(self.of_category(*categories))
            v[fact] = bool(hits)
            if hits:
                f[fact] = hits
        performed_only = {
            "lumbar_decompression_done": ("lumbar-decompression",),
            "tendon_transfer_or_arthrodesis_done": ("tendon-transfer", "ankle-arthrodesis"),
        }
        for fact, categories in performed_only.items():
            hits = [r for r in self.current_episode(self.of_category(*categories))
                    if r.performed]
            v[fact] = bool(hits)
            if hits:
                f[fact] = hits
        # History, whatever the episode: a discectomy years ago makes a new herniation a
        # recurrence (the fusion rule's exception).
        prior = [r for r in self.of_category("lumbar-decompression") if r.performed]
        v["prior_lumbar_decompression"] = bool(prior)
        if prior:
            f["prior_lumbar_decompression"] = prior
        dalfampridine = [
            r for r in self.of_category("dalfampridine") if r.resource_type == "MedicationRequest"
        ]
        v["on_dalfampridine"] = bool(dalfampridine)
        if dalfampridine:
            f["on_dalfampridine"] = dalfampridine
