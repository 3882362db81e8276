"""The SMTP transport's per-recipient journal

An SMTP relay answers each message on its own; `smtp_journal` keeps, per batch and recipient
(an address hash), whether the message was being sent, accepted, refused or deferred, so a run
that resumes a batch cut short settles each reader as the relay did. See docs/delivery.md.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "smtp_journal",
        sa.Column("batch_key", sa.String(length=160), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_key", "recipient", name=op.f("pk_smtp_journal")),
    )
    op.create_index(op.f("ix_smtp_journal_at"), "smtp_journal", ["at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_smtp_journal_at"), table_name="smtp_journal")
    op.drop_table("smtp_journal")
