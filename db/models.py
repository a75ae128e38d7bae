"""The feedback database's tables, as SQLAlchemy 2.0 typed ORM models.

The schema itself is created and upgraded by the Alembic migrations in ``db/migrations/``
(never by ``create_all``); a test checks that these models and the migrations agree.

All timestamps are naive UTC (``datetime.now(UTC)`` without the tzinfo), the same on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

LABELS = ("good", "bad", "skip")
# What a labeller may flag an item as, beside the label (judgements.flag, migration 0004).
FLAGS = ("offensive", "broken_text")
COMMENT_MAX = 1000  # characters of a labeller's free comment on an item
MODEL_KINDS = ("policy", "reward")
ROLES = ("admin", "labeller")  # labelers.role (migration 0007)

# Stable constraint names, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Now, as naive UTC (what every timestamp column holds)."""
    return datetime.now(UTC).replace(tzinfo=None)


def text_sha256(text: str) -> str:
    """The key that makes prompt texts unique (an index on long texts would not fit PostgreSQL's btree)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON}


class Labeler(Base):
    """A person (or a simulated labeller) who judges completions, and their account (migration 0007).

    Every labeller is an account: ``password_hash`` (argon2id, ``db.accounts``) is null until an admin
    sets a password, and an account without one cannot sign in when the app runs in accounts mode.
    ``disabled_at`` set = the account can no longer sign in; its judgements stay attributed to it."""

    __tablename__ = "labelers"
    __table_args__ = (CheckConstraint("role IN ('admin', 'labeller')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="labeller", server_default="labeller")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime)
    password_set_at: Mapped[datetime | None] = mapped_column(DateTime)


class AuditEvent(Base):
    """One line of the audit trail (migration 0007): who did what, when, from where, and whether it
    was allowed. Sign-ins and failed attempts, exports, imports, account changes and undo.

    ``actor`` is the name as given (kept when the account is gone, or never existed: a failed
    sign-in under an unknown name); ``client`` is the browser's address as the server saw it, or
    ``cli`` for the command line. ``detail`` never holds a password."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32))
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    # casefolded name (db.labeler_name_key), for throttling by name whatever the case typed
    actor_key: Mapped[str | None] = mapped_column(String(64), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("labelers.id", ondelete="SET NULL"), index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    client: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class AuthSession(Base):
    """A signed-in browser session that survives a reload (migration 0008, ``db.sessions``).

    Only the SHA-256 of its token is stored (the token is the browser's HttpOnly cookie). ``scope``
    is what it was opened under (``accounts``, or the shared token's fingerprint). ``claim_*`` is the
    one-time, 60-second claim through which the browser gets the token, emptied once claimed."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime)
    client: Mapped[str | None] = mapped_column(String(64))
    claim_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    claim_sealed: Mapped[str | None] = mapped_column(String(64))  # the token, XOR a key only the claim code gives
    claim_expires_at: Mapped[datetime | None] = mapped_column(DateTime)


class Prompt(Base):
    """The opening a completion continues (an IMDB review opening or a custom prompt)."""

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    text_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(32), default="imdb")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModelVersion(Base):
    """A saved policy or reward model, with the model it was trained from and its metrics."""

    __tablename__ = "model_versions"
    __table_args__ = (CheckConstraint("kind IN ('policy', 'reward')", name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"), index=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Completion(Base):
    """A text the policy wrote after a prompt; what labellers judge."""

    __tablename__ = "completions"
    __table_args__ = (Index("ix_completions_n_labels_id", "n_labels", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), index=True
    )
    gen_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Probability of "good" under a reward model, for "uncertain first" ordering.
    reward_score: Mapped[float | None] = mapped_column(Float)
    reward_model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="SET NULL"))
    # The ensemble's spread (std of P(good) across members; migration 0006), for "uncertain first".
    reward_spread: Mapped[float | None] = mapped_column(Float)
    # Good/bad judgements on this completion (skips excluded), kept in step by record_judgement/undo_last.
    n_labels: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    prompt: Mapped[Prompt] = relationship(lazy="joined")


class Judgement(Base):
    """One labeller's verdict on one completion (re-labelling updates the row)."""

    __tablename__ = "judgements"
    __table_args__ = (
        UniqueConstraint("completion_id", "labeler_id", name="uq_judgements_completion_labeler"),
        CheckConstraint("label IN ('good', 'bad', 'skip')", name="label"),
        Index("ix_judgements_labeler_updated", "labeler_id", "updated_at"),
        Index("ix_judgements_labeler_session", "labeler_id", "session_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"))
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(8))
    seconds: Mapped[float | None] = mapped_column(Float)
    # The browser session (tab) that gave the judgement: undo only ever reaches this session's own.
    session_key: Mapped[str | None] = mapped_column(String(128))
    # Optional, given with the label: one of FLAGS, and a free comment (migration 0004).
    flag: Mapped[str | None] = mapped_column(String(32))
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Lease(Base):
    """Who is looking at what right now: one item per (labeller, browser session), until ``expires_at``."""

    __tablename__ = "leases"
    __table_args__ = (UniqueConstraint("labeler_id", "session_key", name="uq_leases_labeler_session"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    completion_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    session_key: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


# ---------------------------------------------------------------------------------------------
# Pairwise comparisons (migration 0005): two completions of one prompt, and who preferred which.

CHOICES = ("a", "b", "tie", "skip")
SIDES = ("a", "b")


class Comparison(Base):
    """Two completions of the same prompt to be compared (the queue's item in pairwise mode).

    ``a_id < b_id`` always, so one pair is one row whichever order it was proposed in; which one
    a labeller saw on the left is recorded per judgement (``PairJudgement.left``)."""

    __tablename__ = "comparisons"
    __table_args__ = (
        UniqueConstraint("a_id", "b_id", name="uq_comparisons_a_b"),
        CheckConstraint("a_id < b_id", name="ordered"),
        Index("ix_comparisons_n_labels_id", "n_labels", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"), index=True)
    a_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), index=True)
    b_id: Mapped[int] = mapped_column(ForeignKey("completions.id", ondelete="CASCADE"), index=True)
    # How the pair was made: "same_policy" (two samples of one version) or "versions" (two versions).
    source: Mapped[str] = mapped_column(String(32), default="same_policy")
    # Non-skip pair judgements on this comparison, kept in step by the writes (like completions.n_labels).
    n_labels: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    a: Mapped[Completion] = relationship(foreign_keys=[a_id], lazy="joined")
    b: Mapped[Completion] = relationship(foreign_keys=[b_id], lazy="joined")


class PairJudgement(Base):
    """One labeller's choice on one comparison: ``a``, ``b``, ``tie`` or ``skip`` (re-labelling updates it).

    ``left`` is the completion ("a" or "b") the labeller saw on the left, chosen at random per
    item, so the share of "left" wins measures position bias."""

    __tablename__ = "pair_judgements"
    __table_args__ = (
        UniqueConstraint("comparison_id", "labeler_id", name="uq_pair_judgements_comparison_labeler"),
        CheckConstraint("choice IN ('a', 'b', 'tie', 'skip')", name="choice"),
        CheckConstraint("left_side IN ('a', 'b')", name="left_side"),
        Index("ix_pair_judgements_labeler_updated", "labeler_id", "updated_at"),
        Index("ix_pair_judgements_labeler_session", "labeler_id", "session_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"))
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    choice: Mapped[str] = mapped_column(String(8))
    left_side: Mapped[str] = mapped_column(String(1))
    seconds: Mapped[float | None] = mapped_column(Float)
    session_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PairLease(Base):
    """Who is comparing what right now: one comparison per (labeller, browser session), until ``expires_at``."""

    __tablename__ = "pair_leases"
    __table_args__ = (UniqueConstraint("labeler_id", "session_key", name="uq_pair_leases_labeler_session"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), index=True)
    labeler_id: Mapped[int] = mapped_column(ForeignKey("labelers.id", ondelete="CASCADE"))
    session_key: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
