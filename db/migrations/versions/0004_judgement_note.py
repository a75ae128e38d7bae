"""An optional flag and comment on a judgement: what the labeller noticed beyond good/bad.

``judgements.flag`` is one of ``db.models.FLAGS`` (``offensive``, ``broken_text``) or null, and
``judgements.comment`` a free text (at most ``db.models.COMMENT_MAX`` characters) or null; both are
written by ``record_judgement`` in the same write as the label, deleted with it by ``undo_last``,
and exported. Judgements stored before this revision have neither.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("judgements") as batch:
        batch.add_column(sa.Column("flag", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("comment", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("judgements") as batch:
        batch.drop_column("comment")
        batch.drop_column("flag")
