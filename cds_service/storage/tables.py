"""Table definitions. The schema itself is created by the Alembic migrations in ``migrations/``."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text

metadata = MetaData()

feedback = Table(
    "feedback",
    metadata,
    # sha256 of the canonical entry: the same entry posted twice maps to the same key.
    Column("entry_key", String(64), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("card_uuid", String(64), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),
    Column("override_reason_system", String(255), nullable=True),
    Column("override_reason_code", String(100), nullable=True),
    Column("override_comment", Text, nullable=True),
    Column("outcome_timestamp", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_feedback_card_uuid", "card_uuid"),
    Index("ix_feedback_received_at", "received_at"),  # the purge's cutoff (migration 0003)
)

issued_card = Table(
    "issued_card",
    metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("recommendation_id", String(100), nullable=False),
    Column("indicator", String(20), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    # HMAC-SHA256 of the patient (never the raw id), one key per clinical decision, and the
    # evidence the card rested on (for snooze): migration 0002.
    Column("patient_pseudonym", String(64), nullable=True),
    Column("decision_key", String(64), nullable=True),
    Column("evidence", Text, nullable=True),
    Index("ix_issued_card_recommendation", "recommendation_id"),
    Index("ix_issued_card_decision_key", "decision_key"),
    Index("ix_issued_card_issued_at", "issued_at"),
)

snooze = Table(
    "snooze",
    metadata,
    Column("snooze_key", String(64), primary_key=True),
    Column("patient_pseudonym", String(64), nullable=False),
    Column("recommendation_id", String(100), nullable=False),
    Column("hook", String(40), nullable=False),
    Column("card_uuid", String(64), nullable=False),
    Column("reason_code", String(100), nullable=False),
    Column("indicator", String(20), nullable=False),
    Column("evidence", Text, nullable=True),
    Column("snoozed_at", DateTime(timezone=True), nullable=False),
    Column("snoozed_until", DateTime(timezone=True), nullable=False),
    Index("ix_snooze_patient_recommendation", "patient_pseudonym", "recommendation_id"),
    Index("ix_snooze_snoozed_until", "snoozed_until"),
)

seen_jti = Table(
    "seen_jti",
    metadata,
    # issuer + jti: two EHRs may pick the same jti.
    Column("jti_key", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_seen_jti_expires_at", "expires_at"),
)
