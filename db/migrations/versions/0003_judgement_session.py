"""Remember which browser session gave each judgement, so undo reaches only that session's own.

``judgements.session_key`` is written by ``record_judgement`` (the session that held the item's
lease); judgements stored before this revision have none and can no longer be undone from the app.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("judgements") as batch:
        batch.add_column(sa.Column("session_key", sa.String(length=128), nullable=True))
    op.create_index("ix_judgements_labeler_session", "judgements", ["labeler_id", "session_key"])


def downgrade() -> None:
    op.drop_index("ix_judgements_labeler_session", table_name="judgements")
    with op.batch_alter_table("judgements") as batch:
        batch.drop_column("session_key")
