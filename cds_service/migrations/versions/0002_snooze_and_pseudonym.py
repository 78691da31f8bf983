"""Snooze: a keyed patient pseudonym, decision key and evidence on issued cards; a snooze table.

The raw patient id is never stored: ``patient_pseudonym`` is HMAC-SHA256 under CDS_PSEUDONYM_KEY.

Revision ID: 0002_snooze_and_pseudonym
Revises: 0001
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_snooze_and_pseudonym"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("issued_card") as batch:
        batch.add_column(sa.Column("patient_pseudonym", sa.String(64), nullable=True))
        batch.add_column(sa.Column("decision_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("evidence", sa.Text, nullable=True))
    op.create_index("ix_issued_card_decision_key", "issued_card", ["decision_key"])
    op.create_table(
        "snooze",
        # sha256 of the overridden card's uuid: the same feedback posted twice is one snooze.
        sa.Column("snooze_key", sa.String(64), primary_key=True),
        sa.Column("patient_pseudonym", sa.String(64), nullable=False),
        sa.Column("recommendation_id", sa.String(100), nullable=False),
        # the recommendation's first hook: patient-view and the order rules share some ids
        sa.Column("hook", sa.String(40), nullable=False),
        sa.Column("card_uuid", sa.String(64), nullable=False),
        sa.Column("reason_code", sa.String(100), nullable=False),
        sa.Column("indicator", sa.String(20), nullable=False),
        sa.Column("evidence", sa.Text, nullable=True),
        sa.Column("snoozed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_snooze_patient_recommendation", "snooze",
                    ["patient_pseudonym", "recommendation_id"])


def downgrade() -> None:
    op.drop_index("ix_snooze_patient_recommendation", table_name="snooze")
    op.drop_table("snooze")
    op.drop_index("ix_issued_card_decision_key", table_name="issued_card")
    with op.batch_alter_table("issued_card") as batch:
        batch.drop_column("evidence")
        batch.drop_column("decision_key")
        batch.drop_column("patient_pseudonym")
