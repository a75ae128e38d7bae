"""Team accounts and the audit trail.

``labelers`` gains ``password_hash`` (argon2id, null = no password yet), ``role`` (``admin`` or
``labeller``), ``disabled_at`` and ``password_set_at``: every existing labeller becomes an account
with the role ``labeller`` and no password, unusable in accounts mode until an admin sets one
(``python -m db users reset-password NAME``); their judgements keep pointing at the same row, so
nothing is re-attributed. ``audit_events`` records sign-ins, failed attempts, exports, imports,
account changes and undo (``python -m db audit``); the sign-in throttle counts its rows.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN, never a batch "copy and move" of labelers: on SQLite that drops the
    # old table, and with foreign keys on, the drop would cascade to every judgement.
    op.add_column("labelers", sa.Column("password_hash", sa.String(length=255), nullable=True))
    if op.get_bind().dialect.name == "sqlite":  # SQLite takes a CHECK only inside the column's definition
        op.execute(
            "ALTER TABLE labelers ADD COLUMN role VARCHAR(16) DEFAULT 'labeller' NOT NULL "
            "CONSTRAINT ck_labelers_role CHECK (role IN ('admin', 'labeller'))"
        )
    else:
        op.add_column("labelers", sa.Column("role", sa.String(length=16), server_default="labeller", nullable=False))
        op.create_check_constraint(op.f("ck_labelers_role"), "labelers", "role IN ('admin', 'labeller')")
    op.add_column("labelers", sa.Column("disabled_at", sa.DateTime(), nullable=True))
    op.add_column("labelers", sa.Column("password_set_at", sa.DateTime(), nullable=True))

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=True),
        sa.Column("actor_key", sa.String(length=64), nullable=True),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["labelers.id"], name=op.f("fk_audit_events_actor_id_labelers"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_at"), "audit_events", ["at"])
    op.create_index(op.f("ix_audit_events_actor_key"), "audit_events", ["actor_key"])
    op.create_index(op.f("ix_audit_events_actor_id"), "audit_events", ["actor_id"])
    op.create_index(op.f("ix_audit_events_client"), "audit_events", ["client"])
    op.create_index("ix_audit_events_action_at", "audit_events", ["action", "at"])


def downgrade() -> None:
    op.drop_table("audit_events")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f("ck_labelers_role"), "labelers", type_="check")
    for column in ("password_set_at", "disabled_at", "role", "password_hash"):
        op.drop_column("labelers", column)  # SQLite >= 3.35 drops a column in place (no table copy)
