"""Keep the number of good/bad labels on each completion, so the queue finds work without counting.

``completions.n_labels`` is maintained by ``record_judgement`` and ``undo_last`` in the same
transaction as the judgement; this migration backfills it from the judgements table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("completions") as batch:
        batch.add_column(sa.Column("n_labels", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE completions SET n_labels = (SELECT count(*) FROM judgements "
        "WHERE judgements.completion_id = completions.id AND judgements.label <> 'skip')"
    )
    op.create_index("ix_completions_n_labels_id", "completions", ["n_labels", "id"])


def downgrade() -> None:
    op.drop_index("ix_completions_n_labels_id", table_name="completions")
    with op.batch_alter_table("completions") as batch:
        batch.drop_column("n_labels")
