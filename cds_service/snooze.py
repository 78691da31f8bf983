"""Snooze: an override for a snoozing reason hides that recommendation for that patient a while.

- Patients are named by a keyed pseudonym (HMAC-SHA256), never by their id: feedback only names
  the card's uuid, so the pseudonym is recorded with every issued card and the snooze is keyed by
  it. The EHR's fhirServer is part of the pseudonym: two EHRs may use the same patient id.
- The snooze lives in the database, so every worker and instance sees it.
- Safety: a snoozed *critical* card comes back at once, still critical and saying it had been
  snoozed, when evidence newer than the override appears (a new red flag, a worse dorsiflexion
  grade, a record behind the card that was not there). Other cards stay hidden until it ends.
- Only an override whose reason the recommendation lists under ``snooze.reasons`` snoozes;
  accepted feedback never does.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cds_service.config import Settings, SettingsError
from cds_service.knowledge.loader import Knowledge
from cds_service.logs import log_event
from cds_service.rules.evaluate import RuleMatch
from cds_service.storage.db import Database, FeedbackEntry, SnoozeRecord

log = logging.getLogger(__name__)
KEY_FILE_NAME = "pseudonym.key"
RED_FLAG_FACTS = frozenset({"has_red_flag", "red_flag_progressive_weakness",
                            "red_flag_bilateral_foot_drop", "red_flag_cauda_equina",
                            "red_flag_multilevel_deficit"})


# ----------------------------------------------------------------------------- the pseudonym key
def resolve_pseudonym_key(settings: Settings) -> bytes:
    """CDS_PSEUDONYM_KEY; with SQLite and no key, a key file beside the database (0600), made on
    first start; with an in-memory database, a key for this process only."""
    if settings.pseudonym_key:
        return settings.pseudonym_key.encode()
    url = settings.database_url
    if not url.startswith("sqlite"):
        raise SettingsError(
            "CDS_PSEUDONYM_KEY must be set when the database is not SQLite: every instance "
            "sharing the database needs the same secret to recognise a patient's snoozes")
    path = sqlite_file(url)
    if path is None:
        return secrets.token_bytes(32)
    return _key_file(path.parent / KEY_FILE_NAME)


def sqlite_file(url: str) -> Path | None:
    name = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if not name or name == ":memory:":
        return None
    return Path(name)


def _key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written whole to a temporary file, then linked into place: workers starting together
        # never read a half-written key, and only the first link wins.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".pseudonym-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_hex(32).encode())
            os.close(fd)
            with contextlib.suppress(FileExistsError):  # another worker was first
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise SettingsError(f"{path}: the pseudonym key file is too short; delete it or set "
                            "CDS_PSEUDONYM_KEY")
    return key


def pseudonym(key: bytes, patient_id: str, fhir_server: str | None) -> str:
    subject = f"{(fhir_server or '').rstrip('/')}\x00{patient_id}"
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


# ----------------------------------------------------------------------------- evidence
@dataclass(frozen=True)
class Evidence:
    """What a card rested on, enough to tell whether newer evidence appeared since."""

    red_flags: tuple[str, ...] = ()
    worst_grade: float | None = None
    references: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"red_flags": list(self.red_flags), "worst_grade": self.worst_grade,
                           "references": list(self.references)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> Evidence:
        try:
            data = json.loads(text or "{}")
            return cls(tuple(data.get("red_flags") or ()), data.get("worst_grade"),
                       tuple(data.get("references") or ()))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def newer_than(self, before: Evidence) -> list[str]:
        """What is new compared with ``before``, phrased for the card; empty when nothing is."""
        news = [f"new red flag: {flag}" for flag in self.red_flags
                if flag not in before.red_flags]
        if self.worst_grade is not None and (
                before.worst_grade is None or self.worst_grade < before.worst_grade):
            was = "" if before.worst_grade is None else f" (was {before.worst_grade:g}/5)"
            news.append(f"ankle dorsiflexion is now {self.worst_grade:g}/5{was}")
        added = [r for r in self.references if r not in before.references]
        if added and not news:
            news.append(f"{len(added)} new record(s) behind this card")
        return news


def evidence_of(match: RuleMatch, key: bytes) -> Evidence:
    """Red flags, each side's latest grade, and the records behind the card; record references
    are kept only as keyed digests (resource ids may carry patient identifiers)."""
    facts = match.view.patient
    names = match.recommendation.fact_names | RED_FLAG_FACTS
    references = sorted({hmac.new(key, str(ref).encode(), hashlib.sha256).hexdigest()[:24]
                         for name in names for item in facts.why(name)
                         if (ref := getattr(item, "reference", None))})
    # Each side's latest grade: an old weak grade since recovered is not "worse".
    latest: dict[str, Any] = {}
    for grade in facts.dorsiflexion_grades:
        side = str(grade.side)
        if side not in latest or grade.order > latest[side].order:
            latest[side] = grade
    worst = min((g.grade for g in latest.values()), default=facts.dorsiflexion_latest_grade)
    return Evidence(tuple(sorted(facts.red_flag_names)), worst, tuple(references))


def decision_key(patient: str, match: RuleMatch, hook: str, now: datetime) -> str:
    """One clinical decision: per patient, recommendation and draft order(s) on order hooks, per
    patient, recommendation and day on patient-view (EHRs re-fire hooks on every change)."""
    scope = (",".join(sorted(o.reference for o in match.orders)) if hook != "patient-view"
             else now.date().isoformat())
    return hashlib.sha256(
        f"{patient}\x00{match.recommendation.id}\x00{scope}".encode()).hexdigest()


# ----------------------------------------------------------------------------- applying snoozes
@dataclass
class SnoozeOutcome:
    kept: list[RuleMatch]
    snoozed: list[str] = field(default_factory=list)  # recommendation ids hidden
    returned: dict[str, str] = field(default_factory=dict)  # recommendation id -> note for detail


class Snoozer:
    def __init__(self, database: Database, knowledge: Knowledge, key: bytes) -> None:
        self.database = database
        self.knowledge = knowledge
        self.key = key

    def pseudonym(self, patient_id: str, fhir_server: str | None) -> str:
        return pseudonym(self.key, patient_id, fhir_server)

    def evidence(self, match: RuleMatch) -> Evidence:
        return evidence_of(match, self.key)

    def apply(self, patient: str, matches: Sequence[RuleMatch], now: datetime) -> SnoozeOutcome:
        if not matches:
            return SnoozeOutcome([])
        try:
            active = self.database.active_snoozes(patient, now)
        except Exception as exc:  # fail open: a card shown twice beats a card lost
            # No traceback: a driver's message may quote the query's parameters.
            log_event(log, "could not read snoozes; showing every card", logging.ERROR,
                      error=type(exc).__name__)
            return SnoozeOutcome(list(matches))
        outcome = SnoozeOutcome([])
        for match in matches:
            snooze = active.get((match.recommendation.hook, match.recommendation.id))
            if snooze is None:
                outcome.kept.append(match)
                continue
            news = (self.evidence(match).newer_than(Evidence.from_json(snooze.evidence))
                    if match.indicator == "critical" else [])
            if news:
                outcome.kept.append(match)
                outcome.returned[match.recommendation.id] = self._note(snooze, news)
            else:
                outcome.snoozed.append(match.recommendation.id)
        return outcome

    def _note(self, snooze: SnoozeRecord, news: list[str]) -> str:
        reason = next((r.display for rec in self.knowledge.recommendations
                       for r in rec.override_reasons if r.code == snooze.reason_code),
                      snooze.reason_code)
        template = self.knowledge.snooze_returned_note or (
            "Snoozed on {snoozed_on} ({reason}); since then {evidence}.")
        return template.format(snoozed_on=snooze.snoozed_at.date().isoformat(),
                               reason=reason, evidence="; ".join(news))

    def record_from_feedback(self, entries: Iterable[FeedbackEntry], now: datetime) -> list[str]:
        """Snoozes for overrides with a snoozing reason; the recommendation ids snoozed."""
        overrides = [e for e in entries
                     if e.outcome == "overridden" and e.override_reason_code]
        if not overrides:
            return []
        issued = self.database.issued_cards(e.card_uuid for e in overrides)
        snoozed = []
        for entry in overrides:
            card = issued.get(entry.card_uuid)
            if card is None or not card.get("patient_pseudonym"):
                continue  # a card we did not issue (or issued before pseudonyms): no patient
            service = self.knowledge.services.get(card["service_id"])
            rec = self.knowledge.recommendation(card["recommendation_id"],
                                                service.hook if service else None)
            if rec is None or entry.override_reason_code not in rec.snooze.reasons:
                continue
            stored = self.database.add_snooze(SnoozeRecord(
                patient_pseudonym=card["patient_pseudonym"],
                recommendation_id=rec.id,
                hook=rec.hook,
                card_uuid=entry.card_uuid,
                reason_code=entry.override_reason_code,
                indicator=card["indicator"],
                evidence=card.get("evidence"),
                snoozed_at=now,
                snoozed_until=now + timedelta(days=rec.snooze.days),
            ))
            if stored:
                snoozed.append(rec.id)
        return snoozed
