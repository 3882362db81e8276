"""Record the send lease's holder process (issues.claimed_owner)

A sender killed with SIGKILL held its issue until the lease lapsed (five minutes by default),
because a lease cannot tell a dead holder from a slow one. The holder's host, boot id, pid
namespace, pid and start time let a claimant on that host prove it gone and take over at once
(digest.owner). Nullable: a lease taken by an older digest has none and is waited out.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_owner", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("issues", schema=None) as batch_op:
        batch_op.drop_column("claimed_owner")
