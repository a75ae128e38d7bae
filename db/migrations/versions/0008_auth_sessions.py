"""Signed-in sessions that survive a page reload (issue 18).

``auth_sessions`` holds one row per browser session opened by a successful sign-in: the SHA-256 of
its token (the token itself lives only in the browser's HttpOnly cookie), the account, when it was
opened, when it expires, when it was last used, when it was revoked (sign-out, password reset,
account disabled) and from which client. ``claim_hash``/``claim_sealed``/``claim_expires_at`` are
the one-time claim the page hands to the browser (``db.sessions``), emptied once claimed.

A new table only: nothing existing is copied or changed, so every judgement is kept.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("labeler_id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("claim_hash", sa.String(length=64), nullable=True),
        sa.Column("claim_sealed", sa.String(length=64), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["labeler_id"], ["labelers.id"], name=op.f("fk_auth_sessions_labeler_id_labelers"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_sessions_token_hash")),
        sa.UniqueConstraint("claim_hash", name=op.f("uq_auth_sessions_claim_hash")),
    )
    op.create_index(op.f("ix_auth_sessions_labeler_id"), "auth_sessions", ["labeler_id"])


def downgrade() -> None:
    op.drop_table("auth_sessions")
