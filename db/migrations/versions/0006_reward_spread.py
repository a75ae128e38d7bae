"""The reward ensemble's disagreement on each completion, for "uncertain first" ordering.

``completions.reward_spread`` is the standard deviation of P(good) across the reward model's ensemble
members (null when the scoring model is a single model, or the completion is unscored); it is written
with ``reward_score`` by ``db.set_reward_scores``. Completions stored before this revision have none.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("completions") as batch:
        batch.add_column(sa.Column("reward_spread", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("completions") as batch:
        batch.drop_column("reward_spread")
