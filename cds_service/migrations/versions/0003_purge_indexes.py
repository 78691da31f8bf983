"""Indexes on the columns the periodic purge compares with a cutoff (no full scans).

Revision ID: 0003_purge_indexes
Revises: 0002_snooze_and_pseudonym
Create Date: 2026-12-07
"""

from alembic import op

revision = "0003_purge_indexes"
down_revision = "0002_snooze_and_pseudonym"
branch_labels = None
depends_on = None

# (index, table, column): one per PurgeRule in cds_service/storage/db.py that had none.
INDEXES = (
    ("ix_feedback_received_at", "feedback", "received_at"),
    ("ix_issued_card_issued_at", "issued_card", "issued_at"),
    ("ix_snooze_snoozed_until", "snooze", "snoozed_until"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
