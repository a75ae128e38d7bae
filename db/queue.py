"""The labelling queue: which completion a labeller sees next.

Rules (``next_item``):

1. A (labeller, session) that holds an unexpired lease on an item it has not judged gets that
   item back (a page reload resumes where the labeller was).
2. Otherwise the candidates are the items this labeller has not judged (a skip counts as seen)
   and does not hold in another session (two tabs never show the same item), and whose
   good/bad labels plus the active leases of *other* labellers number fewer than ``overlap``
   (with overlap 1 no item is handed to two labellers; with k, to at most k).
3. Items with the fewest labels come first (``completions.n_labels``, kept in step with the
   judgements); among equals, ``random`` (the walk along the id index starts at a random id), or
   ``uncertain``: the reward ensemble's largest disagreement first (``reward_spread``, the std of
   P(good) across its heads), then, for items scored without a spread (a single-head model), the
   reward score closest to 0.5; unscored last; then by id.
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

from sqlalchemy import Engine, Integer, case, cast, exists, func, select, update
from sqlalchemy.orm import Session, aliased

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
        raise UserError(
            f"overlap={overlap!r} must be a whole number >= 1.", "use 1 (each item once) or k (k labellers per item)."
        )
    if order not in ORDERS:
        raise UserError(f"order {order!r} is not one of {list(ORDERS)}.", "use 'random' or 'uncertain'.")
    if not lease_seconds > 0:
        raise UserError(f"lease_seconds={lease_seconds!r} must be positive.", "use e.g. 600.")


def n_labels_expr():
    """Count of good/bad judgements on ``Completion`` (skips excluded), recounted from the judgements
    table; the queue uses the maintained column ``Completion.n_labels`` instead (a test checks they agree)."""
    return (
        select(func.count(Judgement.id))
        .where(Judgement.completion_id == Completion.id, Judgement.label != "skip")
        .correlate(Completion)
        .scalar_subquery()
    )


def _others_leases_expr(labeler_id: int, now):
    return (
        select(func.count(Lease.id))
        .where(Lease.completion_id == Completion.id, Lease.labeler_id != labeler_id, Lease.expires_at > now)
        .correlate(Completion)
        .scalar_subquery()
    )


def _judged_by(labeler_id: int):
    return exists().where(Judgement.completion_id == Completion.id, Judgement.labeler_id == labeler_id)


def _level_conditions(labeler_id: int, session_key: str, overlap: int, level: int, now) -> list:
    """Items with exactly ``level`` labels that this (labeller, session) may be handed."""
    my_other_sessions = exists().where(
        Lease.completion_id == Completion.id,
        Lease.labeler_id == labeler_id,
        Lease.expires_at > now,
        Lease.session_key != session_key,
    )
    room = overlap - level  # labellers that may still take it
    if room == 1:
        others = ~exists().where(
            Lease.completion_id == Completion.id, Lease.labeler_id != labeler_id, Lease.expires_at > now
        )
    else:
        others = _others_leases_expr(labeler_id, now) < room
    return [Completion.n_labels == level, ~_judged_by(labeler_id), ~my_other_sessions, others]


def get_item(engine: Engine, completion_id: int) -> Item | None:
    """One completion as an :class:`Item` (None when it does not exist)."""
    with Session(engine) as s:
        return _item(s, completion_id)


def _item_select():
    return select(Completion.id, Prompt.text, Completion.text, Completion.model_version_id, Completion.n_labels).join(
        Prompt, Prompt.id == Completion.prompt_id
    )


def _item(s: Session, completion_id: int) -> Item | None:
    row = s.execute(_item_select().where(Completion.id == completion_id)).first()
    return Item(*row) if row is not None else None


def next_item(
    engine: Engine,
    labeler_id: int,
    *,
    session_key: str,
    overlap: int = 1,
    order: Order = "random",
    lease_seconds: float = 600,
) -> Item | None:
    """The item ``labeler_id`` should judge next in ``session_key`` (leased to that session), or None
    when nothing is left for them. See the module docstring for the rules."""
    _check_args(session_key, overlap, order, lease_seconds)

    def work(s: Session) -> Item | None:
        now = utcnow()
        lock_labeler(s, labeler_id)

        # 1. resume this session's item (unexpired, not judged by this labeller meanwhile)
        row = s.execute(
            _item_select()
            .join(Lease, Lease.completion_id == Completion.id)
            .where(
                Lease.labeler_id == labeler_id,
                Lease.session_key == session_key,
                Lease.expires_at > now,
                ~_judged_by(labeler_id),
            )
        ).first()
        if row is None:
            # 2. choose a new one: fewest labels first
            row = _choose(s, labeler_id, session_key, overlap, order, now)
            if row is None:
                return None
        put_lease(s, labeler_id=labeler_id, session_key=session_key, completion_id=row[0], seconds=lease_seconds)
        return Item(*row)

    return run_write(engine, work, what="fetch the next item")


def hold_item(
    engine: Engine,
    labeler_id: int,
    *,
    session_key: str,
    completion_id: int,
    overlap: int = 1,
    lease_seconds: float = 600,
) -> Item | None:
    """Lease one particular item to (labeller, session) if it is still free for them, as ``next_item``
    would (not judged by this labeller, not held by their other sessions, room under ``overlap``).
    The app uses it to show again, in order, items undone earlier in the session; None when the
    item was taken or judged meanwhile."""
    _check_args(session_key, overlap, "random", lease_seconds)

    def work(s: Session) -> Item | None:
        now = utcnow()
        lock_labeler(s, labeler_id)
        level = s.scalar(select(Completion.n_labels).where(Completion.id == completion_id))
        if level is None or level >= overlap:
            return None
        mine = s.scalar(
            select(func.count(Lease.id)).where(
                Lease.completion_id == completion_id,
                Lease.labeler_id == labeler_id,
                Lease.session_key == session_key,
                Lease.expires_at > now,
            )
        )
        free = mine or s.scalar(
            select(func.count())
            .select_from(Completion)
            .where(Completion.id == completion_id, *_level_conditions(labeler_id, session_key, overlap, level, now))
        )
        if not free:
            return None
        put_lease(s, labeler_id=labeler_id, session_key=session_key, completion_id=completion_id, seconds=lease_seconds)
        return _item(s, completion_id)

    return run_write(engine, work, what="hold an item again")


def _random_pivot(dialect: str):
    """A random id between the smallest and the largest completion id, computed by the database."""
    c = aliased(Completion)
    lo = select(func.min(c.id)).scalar_subquery()  # separate min and max: each is one index lookup
    span = select(func.max(c.id)).scalar_subquery() - lo + 1
    if dialect == "postgresql":
        offset = cast(func.floor(func.random() * span), Integer)
    else:  # SQLite's random() is a signed 64-bit integer
        offset = func.abs(func.random() % span)
    return lo + offset


def _choose(s: Session, labeler_id: int, session_key: str, overlap: int, order: str, now):
    dialect = s.get_bind().dialect.name
    for level in range(overlap):
        base = _item_select().where(*_level_conditions(labeler_id, session_key, overlap, level, now))
        if order == "uncertain":
            queries = [
                base.order_by(
                    case((Completion.reward_spread.is_(None), 1), else_=0),
                    Completion.reward_spread.desc(),
                    case((Completion.reward_score.is_(None), 1), else_=0),
                    func.abs(Completion.reward_score - 0.5),
                    Completion.id,
                ).limit(1)
            ]
        else:
            # random: walk the (n_labels, id) index from a random id; if nothing is left above it, from the start
            queries = [
                base.where(Completion.id >= _random_pivot(dialect)).order_by(Completion.id).limit(1),
                base.order_by(Completion.id).limit(1),
            ]
        for q in queries:
            if dialect != "postgresql":
                row = s.execute(q).first()
                if row is not None:
                    return row
                continue
            q = q.with_for_update(of=Completion, skip_locked=True, key_share=True)
            for _ in range(PG_CANDIDATE_TRIES):
                row = s.execute(q).first()
                if row is None:
                    break
                # fresh snapshot, now that we hold the row lock: is it still free?
                recheck = (
                    select(func.count())
                    .select_from(Completion)
                    .where(Completion.id == row[0], *_level_conditions(labeler_id, session_key, overlap, level, now))
                )
                if s.scalar(recheck):
                    return row
    return None


def extend_lease(
    engine: Engine, labeler_id: int, session_key: str, lease_seconds: float = 600, *, completion_id: int | None = None
) -> bool:
    """Keep this session's item reserved for another ``lease_seconds`` (the app's heartbeat while the
    item is on screen); False when it holds none, or (with ``completion_id``) holds another item, or
    its lease ran out and someone else holds that item now."""
    from datetime import timedelta

    def work(s: Session) -> bool:
        now = utcnow()
        mine = (Lease.labeler_id == labeler_id) & (Lease.session_key == session_key)
        lease = s.execute(select(Lease.completion_id, Lease.expires_at).where(mine)).first()
        if lease is None or (completion_id is not None and lease.completion_id != completion_id):
            return False
        if lease.expires_at <= now:  # ran out: revive it only if nobody else holds the item now
            taken = exists().where(Lease.completion_id == lease.completion_id, Lease.expires_at > now, ~mine)
            if s.scalar(select(taken)):
                return False
        s.execute(update(Lease).where(mine).values(expires_at=now + timedelta(seconds=lease_seconds)))
        return True

    return run_write(engine, work, what="extend a lease")


def queue_size(engine: Engine, labeler_id: int, overlap: int = 1) -> int:
    """How many items ``labeler_id`` could still be handed (including the ones they hold now)."""
    now = utcnow()
    mine = exists().where(Lease.completion_id == Completion.id, Lease.labeler_id == labeler_id, Lease.expires_at > now)
    load_ok = (Completion.n_labels + _others_leases_expr(labeler_id, now)) < overlap
    with Session(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Completion).where(~_judged_by(labeler_id), mine | load_ok)) or 0
        )
