"""Shared sends on PostgreSQL: the senders of an issue, and who claimed each ledger row

Several `digest send` / `digest run` replicas send one issue together (docs/operations.md):
each holds its own lease in `send_crew` (the process facts, the time zones it sends to, until
when) and stamps the rows it claims with its token (`deliveries.claimed_by`), so the batches of
a replica that died are known and taken over once its lease ends, or at once on proof of death.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_When = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
    op.create_table(
        "send_crew",
        sa.Column("issue_id", _Id, nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.JSON(), nullable=True),
        sa.Column("zones", sa.JSON(), nullable=True),
        sa.Column("joined_at", _When, nullable=False),
        sa.Column("until", _When, nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_send_crew_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issue_id", "token", name=op.f("pk_send_crew")),
    )


def downgrade() -> None:
    op.drop_table("send_crew")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
