"""Two languages: a reader's chosen language, an issue's renditions in other languages, and
which rendition each ledger row was claimed for

`subscribers.language` is a locale of digest/locale (NULL: the newsletter's own, DIGEST_LOCALE).
`issue_renditions` holds an issue's mail in each other language its readers chose, built with
it. `deliveries.locale` names the rendition a reader was claimed for (NULL: the issue's own),
so a batch resumed after a crash sends the content it was claimed with.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("locale", sa.String(length=16), nullable=True))
    op.create_table(
        "issue_renditions",
        sa.Column("issue_id", _Id, nullable=False),
        sa.Column("locale", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("preheader", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("archive_html", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["issues.id"],
            name=op.f("fk_issue_renditions_issue_id_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issue_id", "locale", name=op.f("pk_issue_renditions")),
    )


def downgrade() -> None:
    op.drop_table("issue_renditions")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("locale")
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("language")
