"""The labelling queue: which completion a labeller sees next.

Rules (``next_item``):

1. A (labeller, session) that holds an unexpired lease on an item it has not judged gets that
   item back (a page reload resumes where the labeller was).
2. Otherwise the candidates are the items this labeller has not judged (a skip counts as seen)
   and does not hold in another session (two tabs never show the same item), and whose
   good/bad labels plus the active leases of *other* labellers number fewer than ``overlap``
   (with overlap 1 no item is handed to two labellers; with k, to at most k).
3. Items with the fewest labels (+ leases) come first; among equals, ``random`` order, or
   ``uncertain`` (reward score closest to 0.5 first, unscored last).
4. The chosen item is leased to (labeller, session) for ``lease_seconds``; recording a
   judgement on it releases the lease.

Race freedom: on SQLite the whole choice is one ``BEGIN IMMEDIATE`` transaction, so choices are
serialised by the write lock. On PostgreSQL a labeller's calls are serialised with an advisory
lock, candidates are taken with ``SELECT ... FOR NO KEY UPDATE SKIP LOCKED`` (two labellers never
consider the same row at once), and the candidate is re-checked with a fresh snapshot after the
row lock is held, since a lease committed just before the lock was taken is invisible to the
first statement's snapshot.
"""
from __future__ import annotations

from sqlalchemy import Engine, and_, case, delete, exists, func, select, update
from sqlalchemy.orm import Session

from common.errors import UserError
from db.engine import run_write
from db.models import Completion, Judgement, Lease, Prompt, utcnow
from db.types import Item, Order
from db.writes import lock_labeler, put_lease

ORDERS = ("random", "uncertain")
PG_CANDIDATE_TRIES = 8


def _check_args(session_key: str, overlap: int, order: str, lease_seconds: float) -> None:
    if not isinstance(session_key, str) or not session_key or len(session_key) > 128:
        raise UserError("session_key must be 1-128 characters.", "pass a stable id of the browser session.")
    if not isinstance(overlap, int) or overlap < 1:
        raise UserError(f"overlap={overlap!r} must be a whole number >= 1.", "use 1 (each item once) or k (k labellers per item).")
    if order not in ORDERS:
        raise UserError(f"order {order!r} is not one of {list(ORDERS)}.", "use 'random' or 'uncertain'.")
    if not lease_seconds > 0:
        raise UserError(f"lease_seconds={lease_seconds!r} must be positive.", "use e.g. 600.")


def n_labels_expr():  # noqa: ANN201
    """Correlated count of good/bad judgements on ``Completion`` (skips excluded)."""
    return (select(func.count(Judgement.id))
            .where(Judgement.completion_id == Completion.id, Judgement.label != "skip")
            .correlate(Completion).scalar_subquery())


def _others_leases_expr(labeler_id: int, now):  # noqa: ANN001, ANN202
    return (select(func.count(Lease.id))
            .where(Lease.completion_id == Completion.id, Lease.labeler_id != labeler_id, Lease.expires_at > now)
            .correlate(Completion).scalar_subquery())


def _judged_by(labeler_id: int):  # noqa: ANN202
    return exists().where(Judgement.completion_id == Completion.id, Judgement.labeler_id == labeler_id)


def _eligible(labeler_id: int, session_key: str | None, overlap: int, now):  # noqa: ANN001, ANN202
    """(where clause, load expression) for items ``labeler_id`` may be handed in ``session_key``."""
    my_other_sessions = exists().where(Lease.completion_id == Completion.id, Lease.labeler_id == labeler_id,
                                       Lease.expires_at > now,
                                       *( [Lease.session_key != session_key] if session_key is not None else []))
    load = n_labels_expr() + _others_leases_expr(labeler_id, now)
    return and_(~_judged_by(labeler_id), ~my_other_sessions, load < overlap), load


def get_item(engine: Engine, completion_id: int) -> Item | None:
    """One completion as an :class:`Item` (None when it does not exist)."""
    with Session(engine) as s:
        return _item(s, completion_id)


def _item(s: Session, completion_id: int) -> Item | None:
    row = s.execute(select(Completion.id, Prompt.text, Completion.text, Completion.model_version_id,
                           n_labels_expr()).join(Prompt, Prompt.id == Completion.prompt_id)
                    .where(Completion.id == completion_id)).first()
    return Item(*row) if row is not None else None


def next_item(engine: Engine, labeler_id: int, *, session_key: str, overlap: int = 1, order: Order = "random",
              lease_seconds: float = 600) -> Item | None:
    """The item ``labeler_id`` should judge next in ``session_key`` (leased to that session), or None
    when nothing is left for them. See the module docstring for the rules."""
    _check_args(session_key, overlap, order, lease_seconds)

    def work(s: Session) -> Item | None:
        now = utcnow()
        pg = s.get_bind().dialect.name == "postgresql"
        lock_labeler(s, labeler_id)
        s.execute(delete(Lease).where(Lease.labeler_id == labeler_id, Lease.expires_at <= now))

        # 1. resume this session's item
        mine = s.scalar(select(Lease.completion_id).where(Lease.labeler_id == labeler_id,
                                                          Lease.session_key == session_key))
        if mine is not None:
            judged = s.scalar(select(exists().where(Judgement.completion_id == mine, Judgement.labeler_id == labeler_id)))
            if not judged:
                put_lease(s, labeler_id=labeler_id, session_key=session_key, completion_id=mine, seconds=lease_seconds)
                return _item(s, mine)

        # 2. choose a new one
        where, load = _eligible(labeler_id, session_key, overlap, now)
        if order == "uncertain":
            tie = (case((Completion.reward_score.is_(None), 1), else_=0),
                   func.abs(Completion.reward_score - 0.5), Completion.id)
        else:
            tie = (func.random(),)
        q = select(Completion.id).where(where).order_by(load, *tie).limit(1)
        if not pg:
            chosen = s.scalar(q)
        else:
            chosen = None
            q = q.with_for_update(of=Completion, skip_locked=True, key_share=True)
            for _ in range(PG_CANDIDATE_TRIES):
                cid = s.scalar(q)
                if cid is None:
                    break
                # fresh snapshot, now that we hold the row lock: is it still free?
                if s.scalar(select(func.count()).select_from(Completion).where(Completion.id == cid, where)):
                    chosen = cid
                    break
        if chosen is None:
            return None
        put_lease(s, labeler_id=labeler_id, session_key=session_key, completion_id=chosen, seconds=lease_seconds)
        return _item(s, chosen)

    return run_write(engine, work, what="fetch the next item")


def extend_lease(engine: Engine, labeler_id: int, session_key: str, lease_seconds: float = 600) -> bool:
    """Keep this session's item reserved for another ``lease_seconds``; False when it holds none."""
    from datetime import timedelta

    def work(s: Session) -> bool:
        res = s.execute(update(Lease).where(Lease.labeler_id == labeler_id, Lease.session_key == session_key)
                        .values(expires_at=utcnow() + timedelta(seconds=lease_seconds)))
        return bool(res.rowcount)

    return run_write(engine, work, what="extend a lease")


def queue_size(engine: Engine, labeler_id: int, overlap: int = 1) -> int:
    """How many items ``labeler_id`` could still be handed (including the ones they hold now)."""
    now = utcnow()
    where, _ = _eligible(labeler_id, None, overlap, now)
    mine = exists().where(Lease.completion_id == Completion.id, Lease.labeler_id == labeler_id, Lease.expires_at > now)
    load_ok = (n_labels_expr() + _others_leases_expr(labeler_id, now)) < overlap
    with Session(engine) as s:
        return s.scalar(select(func.count()).select_from(Completion)
                        .where(~_judged_by(labeler_id), mine | load_ok)) or 0
