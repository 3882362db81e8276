"""Honest numbers: tracked links per issue, readers' tracking opt-out, the engagement table

Click tracking (DIGEST_TRACK_CLICKS) redirects only to a link the issue contained: the targets
are stored with the issue (issues.links). A reader may opt out of tracking
(subscribers.tracking_opt_out). Opens and clicks are counted per issue, link and keyed reader
hash, machines apart (engagement), without a per-reader history unless chosen.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_When = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tracking_opt_out", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("links", sa.JSON(), nullable=True))
    op.create_table(
        "engagement",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("issue_id", _Id, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("link_index", sa.Integer(), nullable=False),
        sa.Column("reader_key", sa.String(length=64), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("subscriber_id", _Id, nullable=True),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("first_at", _When, nullable=False),
        sa.Column("last_at", _When, nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_engagement_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name=op.f("fk_engagement_subscriber_id_subscribers"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engagement")),
        sa.UniqueConstraint(
            "issue_id",
            "kind",
            "link_index",
            "reader_key",
            "machine",
            name=op.f("uq_engagement_issue_id_kind_link_index_reader_key_machine"),
        ),
    )


def downgrade() -> None:
    op.drop_table("engagement")
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_column("links")
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("tracking_opt_out")
