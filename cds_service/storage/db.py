"""Database access through SQLAlchemy Core: SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from cds_service.storage import tables

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# pg_advisory_xact_lock key held while migrating: any constant shared by every instance
# ("footdrop" in ASCII as a 64-bit integer).
MIGRATION_LOCK_KEY = 0x666F6F7464726F70
# Seconds to wait for a PostgreSQL connection before the call fails (database down, network
# partition): a hook answers without its bookkeeping instead of hanging.
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class PurgeRule:
    """How old rows of a table leave the database: ``column`` compared with the current time
    ("expired": the row says when it stops being needed) or with now minus the retention
    ("retention": the row says when it was written)."""

    column: str
    kind: str  # "expired" | "retention"


# Every table the service writes, and what the periodic purge removes from it. A new table must
# be added here (tests/storage checks that none is missing).
# A snooze stays until its end is past the retention too: feedback-report counts the snoozes
# its overrides started for as long as it counts the feedback.
PURGED: dict[str, PurgeRule] = {
    "seen_jti": PurgeRule("expires_at", "expired"),
    "issued_card": PurgeRule("issued_at", "retention"),
    "feedback": PurgeRule("received_at", "retention"),
    "snooze": PurgeRule("snoozed_until", "retention"),
}


@dataclass(frozen=True)
class FeedbackEntry:
    service_id: str
    card_uuid: str
    outcome: str
    accepted_suggestions: tuple[str, ...]
    override_reason_system: str | None
    override_reason_code: str | None
    override_comment: str | None
    outcome_timestamp: datetime

    def key(self) -> str:
        canonical = json.dumps(
            [
                self.service_id,
                self.card_uuid,
                self.outcome,
                sorted(self.accepted_suggestions),
                self.override_reason_system,
                self.override_reason_code,
                self.override_comment,
                self.outcome_timestamp.isoformat(),
            ]
        )
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedCard:
    card_uuid: str
    service_id: str
    recommendation_id: str
    indicator: str
    issued_at: datetime
    patient_pseudonym: str | None = None
    decision_key: str | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class SnoozeRecord:
    patient_pseudonym: str
    recommendation_id: str
    hook: str  # the recommendation's first hook (ids repeat between patient-view and orders)
    card_uuid: str
    reason_code: str
    indicator: str
    evidence: str | None
    snoozed_at: datetime
    snoozed_until: datetime


@dataclass
class RecommendationStats:
    recommendation_id: str
    issued: int  # decisions a card was issued for
    accepted: int
    overridden: int
    override_reasons: dict[str, int]
    decided: int = 0  # decisions with feedback (their latest feedback counts)
    snoozed: int = 0  # overrides that started a snooze
    cards: int = 0  # cards issued (several per decision when a hook is re-fired)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        connect_args: dict[str, Any] = {}
        if url.startswith("sqlite"):
            connect_args = {"timeout": 30, "check_same_thread": False}
        elif url.startswith("postgresql"):
            connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        self.engine: Engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent).

        Safe when several instances start together on one database: the upgrade runs under a
        lock (a transaction-scoped advisory lock on PostgreSQL, a lock file next to a SQLite
        file), so the first instance migrates and the others then find the schema at head.
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self._migration_lock() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[Connection]:
        if self.is_postgresql:
            # Released when the transaction ends: a crashed migrator never leaves it held.
            with self.engine.begin() as connection:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": MIGRATION_LOCK_KEY})
                yield connection
            return
        lock_path = self._sqlite_file()
        with contextlib.ExitStack() as stack:
            if lock_path is not None:
                handle = stack.enter_context(open(f"{lock_path}.migrate-lock", "a"))
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
            connection = stack.enter_context(self.engine.begin())
            yield connection

    def _sqlite_file(self) -> str | None:
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            return self.url.removeprefix("sqlite:///")
        return None

    def ping(self) -> None:
        """Raise when the database cannot be reached (readiness)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def purge(self, now: datetime, retention: timedelta) -> dict[str, int]:
        """Delete expired JWT ids and rows older than ``retention``; rows deleted per table.
        Run by the periodic purge thread and the ``purge`` command, never inside a request."""
        deleted: dict[str, int] = {}
        for name, rule in PURGED.items():
            table = tables.metadata.tables[name]
            cutoff = now if rule.kind == "expired" else now - retention
            with self.engine.begin() as conn:
                result = conn.execute(delete(table).where(table.c[rule.column] < cutoff))
            deleted[name] = int(result.rowcount or 0)
        return deleted

    def dispose(self) -> None:
        self.engine.dispose()

    # -- feedback -------------------------------------------------------------------------------
    def store_feedback(self, entries: Sequence[FeedbackEntry], received_at: datetime) -> int:
        """Store entries once each; returns how many were new. Safe under concurrent writers."""
        stored = 0
        for entry in entries:
            row = {
                "entry_key": entry.key(),
                "service_id": entry.service_id,
                "card_uuid": entry.card_uuid,
                "outcome": entry.outcome,
                "accepted_suggestions": json.dumps(list(entry.accepted_suggestions))
                if entry.accepted_suggestions
                else None,
                "override_reason_system": entry.override_reason_system,
                "override_reason_code": entry.override_reason_code,
                "override_comment": entry.override_comment,
                "outcome_timestamp": entry.outcome_timestamp,
                "received_at": received_at,
            }
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(tables.feedback).values(**row))
                stored += 1
            except IntegrityError:
                continue  # already stored: feedback is idempotent
        return stored

    def count_feedback(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(tables.feedback)).scalar_one())

    def feedback_rows(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(tables.feedback))]

    # -- issued cards ---------------------------------------------------------------------------
    def record_issued(self, cards: Iterable[IssuedCard]) -> None:
        rows = [
            {
                "card_uuid": c.card_uuid,
                "service_id": c.service_id,
                "recommendation_id": c.recommendation_id,
                "indicator": c.indicator,
                "issued_at": c.issued_at,
                "patient_pseudonym": c.patient_pseudonym,
                "decision_key": c.decision_key,
                "evidence": c.evidence,
            }
            for c in cards
        ]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(tables.issued_card), rows)

    def issued_cards(self, card_uuids: Iterable[str]) -> dict[str, dict[str, Any]]:
        uuids = list(dict.fromkeys(card_uuids))
        if not uuids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tables.issued_card).where(tables.issued_card.c.card_uuid.in_(uuids))
            )
            return {r.card_uuid: dict(r._mapping) for r in rows}

    def decision_rows(self) -> list[dict[str, Any]]:
        """Every issued card with its feedback (if any), for the decision report."""
        issued, fb = tables.issued_card, tables.feedback
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(issued.c.card_uuid, issued.c.recommendation_id, issued.c.decision_key,
                       fb.c.outcome, fb.c.override_reason_code, fb.c.outcome_timestamp)
                .select_from(issued.outerjoin(fb, fb.c.card_uuid == issued.c.card_uuid))
            )
            return [dict(r._mapping) for r in rows]

    # -- snooze ---------------------------------------------------------------------------------
    def add_snooze(self, record: SnoozeRecord) -> bool:
        """Store a snooze once per overridden card; False when it was already stored."""
        row = {
            "snooze_key": hashlib.sha256(record.card_uuid.encode()).hexdigest(),
            **record.__dict__,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(tables.snooze).values(**row))
        except IntegrityError:
            return False
        return True

    def active_snoozes(
        self, patient_pseudonym: str, now: datetime
    ) -> dict[tuple[str, str], SnoozeRecord]:
        """(hook, recommendation id) -> the latest snooze still running for this patient."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tables.snooze)
                .where(tables.snooze.c.patient_pseudonym == patient_pseudonym,
                       tables.snooze.c.snoozed_until > now)
                .order_by(tables.snooze.c.snoozed_at)
            )
            found: dict[tuple[str, str], SnoozeRecord] = {}
            for r in rows:
                values = {k: v for k, v in r._mapping.items() if k != "snooze_key"}
                values["snoozed_at"] = _utc(values["snoozed_at"])
                values["snoozed_until"] = _utc(values["snoozed_until"])
                found[(r.hook, r.recommendation_id)] = SnoozeRecord(**values)
            return found

    def snooze_counts(self) -> dict[str, int]:
        snooze = tables.snooze
        with self.engine.connect() as conn:
            rows = conn.execute(select(snooze.c.recommendation_id, func.count())
                                .group_by(snooze.c.recommendation_id))
            return {rec_id: int(n) for rec_id, n in rows}

    def recommendation_stats(self) -> list[RecommendationStats]:
        """Figures per recommendation, one decision per patient, recommendation and draft order
        (patient-view: per day): EHRs re-fire a hook on every change, and each call issues a new
        card. A decision's outcome is its latest feedback. Cards recorded before decision keys
        existed count one decision each."""
        decisions: dict[str, dict[str, Any]] = {}
        for row in self.decision_rows():
            key = row["decision_key"] or f"card:{row['card_uuid']}"
            decision = decisions.setdefault(
                key, {"rec": row["recommendation_id"], "cards": set(), "latest": None})
            decision["cards"].add(row["card_uuid"])
            if row["outcome"] is not None:
                moment = _utc(row["outcome_timestamp"])
                latest = decision["latest"]
                if latest is None or moment >= latest[0]:
                    decision["latest"] = (moment, row["outcome"], row["override_reason_code"])
        for row in self.unknown_card_feedback():
            decisions.setdefault(f"unknown:{row['card_uuid']}", {
                "rec": "(unknown card)", "cards": set(),
                "latest": (_utc(row["outcome_timestamp"]), row["outcome"],
                           row["override_reason_code"])})
        snoozed = self.snooze_counts()
        stats: dict[str, RecommendationStats] = {}
        for decision in decisions.values():
            rec_id = decision["rec"]
            current = stats.setdefault(
                rec_id, RecommendationStats(rec_id, 0, 0, 0, {}, snoozed=snoozed.get(rec_id, 0)))
            current.cards += len(decision["cards"])
            if decision["cards"]:
                current.issued += 1
            if decision["latest"] is None:
                continue
            current.decided += 1
            _, outcome, reason = decision["latest"]
            if outcome == "accepted":
                current.accepted += 1
            else:
                current.overridden += 1
                label = reason or "(no reason given)"
                current.override_reasons[label] = current.override_reasons.get(label, 0) + 1
        return sorted(stats.values(), key=lambda s: s.recommendation_id)

    def unknown_card_feedback(self) -> list[dict[str, Any]]:
        """Feedback on cards this database did not record, latest first per card."""
        issued, fb = tables.issued_card, tables.feedback
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(fb.c.card_uuid, fb.c.outcome, fb.c.override_reason_code,
                       fb.c.outcome_timestamp)
                .select_from(fb.outerjoin(issued, fb.c.card_uuid == issued.c.card_uuid))
                .where(issued.c.card_uuid.is_(None))
                .order_by(fb.c.outcome_timestamp.desc())
            )
            return [dict(r._mapping) for r in rows]

    # -- JWT replay -----------------------------------------------------------------------------
    def remember_jti(self, issuer: str, jti: str, expires_at: datetime, now: datetime) -> bool:
        """Record a token id; False when it was seen before (a replay), whichever worker saw it."""
        key = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(tables.seen_jti).values(jti_key=key, expires_at=expires_at))
            return True
        except IntegrityError:
            pass
        # Expired ids are deleted by the periodic purge, not here (no delete in every hook
        # call's transaction). Until then an id whose token has expired may be taken by a new
        # token: one conditional update, so of two concurrent callers only one gets it.
        seen = tables.seen_jti
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(seen).where(seen.c.jti_key == key, seen.c.expires_at < now)
                .values(expires_at=expires_at)
            )
        return bool(taken.rowcount)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
