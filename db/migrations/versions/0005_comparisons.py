"""Pairwise comparisons: two completions of one prompt, who preferred which, and who holds which pair.

``comparisons`` holds each pair once (``a_id < b_id``); ``pair_judgements`` one row per labeller
and pair, with the choice (``a``, ``b``, ``tie`` or ``skip``) and which completion was shown on the
left (``left_side``, drawn at random per item, so position bias can be measured); ``pair_leases``
holds the pair a browser session is looking at, like ``leases`` for good/bad items. Databases
before this revision have none of these tables, and their judgements are untouched.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "comparisons",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("a_id", sa.Integer(), nullable=False),
        sa.Column("b_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("n_labels", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("a_id < b_id", name=op.f("ck_comparisons_ordered")),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_comparisons_prompt_id_prompts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["a_id"], ["completions.id"], name=op.f("fk_comparisons_a_id_completions"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["b_id"], ["completions.id"], name=op.f("fk_comparisons_b_id_completions"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comparisons")),
        sa.UniqueConstraint("a_id", "b_id", name="uq_comparisons_a_b"),
    )
    op.create_index(op.f("ix_comparisons_prompt_id"), "comparisons", ["prompt_id"])
    op.create_index(op.f("ix_comparisons_a_id"), "comparisons", ["a_id"])
    op.create_index(op.f("ix_comparisons_b_id"), "comparisons", ["b_id"])
    op.create_index("ix_comparisons_n_labels_id", "comparisons", ["n_labels", "id"])

    op.create_table(
        "pair_judgements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(length=8), nullable=False),
        sa.Column("left_side", sa.String(length=1), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("session_key", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("choice IN ('a', 'b', 'tie', 'skip')", name=op.f("ck_pair_judgements_choice")),
        sa.CheckConstraint("left_side IN ('a', 'b')", name=op.f("ck_pair_judgements_left_side")),
        sa.ForeignKeyConstraint(
            ["comparison_id"],
            ["comparisons.id"],
            name=op.f("fk_pair_judgements_comparison_id_comparisons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name=op.f("fk_pair_judgements_labeler_id_labelers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pair_judgements")),
        sa.UniqueConstraint("comparison_id", "labeler_id", name="uq_pair_judgements_comparison_labeler"),
    )
    op.create_index("ix_pair_judgements_labeler_updated", "pair_judgements", ["labeler_id", "updated_at"])
    op.create_index("ix_pair_judgements_labeler_session", "pair_judgements", ["labeler_id", "session_key"])

    op.create_table(
        "pair_leases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("comparison_id", sa.Integer(), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("session_key", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["comparison_id"],
            ["comparisons.id"],
            name=op.f("fk_pair_leases_comparison_id_comparisons"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name=op.f("fk_pair_leases_labeler_id_labelers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pair_leases")),
        sa.UniqueConstraint("labeler_id", "session_key", name="uq_pair_leases_labeler_session"),
    )
    op.create_index(op.f("ix_pair_leases_comparison_id"), "pair_leases", ["comparison_id"])
    op.create_index(op.f("ix_pair_leases_expires_at"), "pair_leases", ["expires_at"])


def downgrade() -> None:
    op.drop_table("pair_leases")
    op.drop_table("pair_judgements")
    op.drop_table("comparisons")
