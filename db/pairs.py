"""Pairwise comparisons: making pairs, the pair queue, pair judgements and what they add up to.

A comparison is two completions of one prompt (``a_id < b_id``), either two samples of one policy
version (``same_policy``) or one from each of two versions (``versions``: base against tuned is
what shows progress). A labeller says which one is better (``a`` or ``b``), ``tie`` or ``skip``;
which completion was on the left is stored with the choice (``left_side``), so position bias can
be measured.

The pair queue keeps the guarantees of the good/bad queue (``db.queue``), with ``pair_leases``
for ``leases``:

1. A (labeller, session) with an unexpired lease on a pair it has not judged gets it back.
2. Otherwise the candidates are the pairs this labeller has not judged (a skip counts as seen),
   does not hold in another session, and whose non-skip judgements plus the active leases of
   *other* labellers number fewer than ``overlap`` (with 1, no pair goes to two labellers at once).
3. Fewest labels first (``comparisons.n_labels``, kept in step by the writes here); among equals
   the walk along the (n_labels, id) index starts at a random id.
4. The chosen pair is leased for ``lease_seconds``; recording a judgement on it releases the lease.

Race freedom is as in ``db.queue``: one ``BEGIN IMMEDIATE`` transaction on SQLite; on PostgreSQL
an advisory lock per labeller, ``FOR NO KEY UPDATE SKIP LOCKED`` and a re-check with a fresh
snapshot once the row lock is held.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from itertools import combinations

from sqlalchemy import Engine, Integer, cast, delete, exists, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, aliased

from common.errors import UserError
from db.engine import run_write
from db.models import (
    CHOICES,
    SIDES,
    Comparison,
    Completion,
    Labeler,
    ModelVersion,
    PairJudgement,
    PairLease,
    Prompt,
    utcnow,
)
from db.types import PairItem, PreferencePair
from db.writes import LeaseLost, dialect_insert, lock_labeler

MODES = ("same_policy", "versions")
PG_CANDIDATE_TRIES = 8
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile

# --------------------------------------------------------------------------------------------
# making comparisons


def _check_pair(s: Session, a_id: int, b_id: int) -> int:
    """The prompt id two completions share; UserError for the same completion twice, a missing one,
    or two different prompts."""
    if a_id == b_id:
        raise UserError(
            f"a comparison of completion {a_id} with itself: the same completion on both sides.",
            "pair two different completions of one prompt.",
        )
    prompts = dict(s.execute(select(Completion.id, Completion.prompt_id).where(Completion.id.in_((a_id, b_id)))).all())
    missing = sorted({a_id, b_id} - set(prompts))
    if missing:
        raise UserError(f"completion(s) {missing} do not exist.", "pair completions stored in the database.")
    if prompts[a_id] != prompts[b_id]:
        raise UserError(
            f"completions {a_id} and {b_id} continue different prompts ({prompts[a_id]} and {prompts[b_id]}).",
            "pair two completions of the same prompt.",
        )
    return prompts[a_id]


def _insert_pairs(s: Session, pairs: Sequence[tuple[int, int]], source: str) -> int:
    """Insert the pairs (each checked, ordered so ``a_id < b_id``; pairs already stored are kept as
    they are); returns how many are new. A bad pair raises before anything is written."""
    rows = []
    for x, y in pairs:
        prompt_id = _check_pair(s, int(x), int(y))
        a, b = sorted((int(x), int(y)))
        rows.append({"prompt_id": prompt_id, "a_id": a, "b_id": b, "source": source})
    if not rows:
        return 0
    before = s.scalar(select(func.count()).select_from(Comparison)) or 0
    now = utcnow()
    ins = dialect_insert(s, Comparison).on_conflict_do_nothing(index_elements=["a_id", "b_id"])
    s.execute(ins, [{**r, "created_at": now} for r in rows])
    return (s.scalar(select(func.count()).select_from(Comparison)) or 0) - before


def add_comparisons(engine: Engine, pairs: Sequence[tuple[int, int]], *, source: str = "same_policy") -> int:
    """Store comparisons of the given completion pairs (in either order); returns how many are new.

    Refused, with nothing written, when a pair has the same completion on both sides or two
    completions of different prompts."""
    if source not in MODES:
        raise UserError(f"comparison source {source!r} is not one of {list(MODES)}.", "use one of those.")
    return run_write(engine, lambda s: _insert_pairs(s, list(pairs), source), what="add comparisons")


def plan_pairs(
    completions: Sequence[tuple[int, int, int | None]], *, mode: str, versions: tuple[int, int] | None = None
) -> list[tuple[int, int]]:
    """Which completions to pair, from (completion id, prompt id, model version id) rows.

    ``same_policy``: per prompt and version, consecutive completions in id order (1-2, 3-4, ...),
    so every completion is in at most one pair and more samples later add pairs without changing
    the old ones. ``versions``: per prompt, the i-th completion of ``versions[0]`` with the i-th of
    ``versions[1]``. Pure (no database), deterministic."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for cid, prompt_id, version in sorted(completions):
        groups[(prompt_id, version)].append(cid)
    out: list[tuple[int, int]] = []
    if mode == "same_policy":
        for (_, _), ids in sorted(groups.items(), key=lambda kv: kv[1][0]):
            out.extend((ids[i], ids[i + 1]) for i in range(0, len(ids) - 1, 2))
    else:
        va, vb = versions
        for prompt_id in sorted({p for p, _ in groups}):
            out.extend(zip(groups.get((prompt_id, va), []), groups.get((prompt_id, vb), [])))
    return sorted(out, key=min)


def make_comparisons(
    engine: Engine, *, mode: str = "same_policy", versions: Sequence[int] | None = None, limit: int | None = None
) -> int:
    """Pair completions of one prompt into comparisons (see :func:`plan_pairs`); returns how many are new.

    ``versions`` (two model version ids) is required with ``mode="versions"`` and, with
    ``same_policy``, optionally restricts the pairs to those versions. ``limit`` caps the number of
    new comparisons. Running it again adds only the pairs new completions allow."""
    if mode not in MODES:
        raise UserError(f"pairing mode {mode!r} is not one of {list(MODES)}.", "use same_policy or versions.")
    if versions is not None:
        versions = tuple(int(v) for v in versions)
    if mode == "versions" and (versions is None or len(versions) != 2 or versions[0] == versions[1]):
        raise UserError(
            f"pairing two versions needs two different model version ids, got {versions!r}.",
            "pass e.g. --versions 1 2 (base, tuned).",
        )
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise UserError(f"limit={limit!r} must be a whole number >= 1.", "leave it out, or use e.g. 500.")

    def work(s: Session) -> int:
        if versions is not None:
            unknown = sorted(
                set(versions) - set(s.scalars(select(ModelVersion.id).where(ModelVersion.id.in_(versions))))
            )
            if unknown:
                raise UserError(f"model version(s) {unknown} do not exist.", "see `python -m db stats` for the ids.")
        q = select(Completion.id, Completion.prompt_id, Completion.model_version_id)
        if versions is not None:
            q = q.where(Completion.model_version_id.in_(versions))
        planned = plan_pairs(s.execute(q).all(), mode=mode, versions=versions)
        stored = set(s.execute(select(Comparison.a_id, Comparison.b_id)).all())
        new = [p for p in planned if tuple(sorted(p)) not in stored]
        if limit is not None:
            new = new[:limit]
        return _insert_pairs(s, new, mode)

    return run_write(engine, work, what="make comparisons")


# --------------------------------------------------------------------------------------------
# the pair queue


def _check_args(session_key: str, overlap: int, lease_seconds: float) -> None:
    if not isinstance(session_key, str) or not session_key or len(session_key) > 128:
        raise UserError("session_key must be 1-128 characters.", "pass a stable id of the browser session.")
    if not isinstance(overlap, int) or overlap < 1:
        raise UserError(
            f"overlap={overlap!r} must be a whole number >= 1.", "use 1 (each pair once) or k (k labellers per pair)."
        )
    if not lease_seconds > 0:
        raise UserError(f"lease_seconds={lease_seconds!r} must be positive.", "use e.g. 600.")


def shown_left(comparison_id: int, session_key: str) -> str:
    """Which completion (``"a"`` or ``"b"``) a session sees on the left: a fair coin per pair and
    session, the same on every redraw (a reload shows the same layout)."""
    digest = hashlib.sha256(f"{int(comparison_id)}:{session_key}".encode()).digest()
    return SIDES[digest[0] & 1]


def _pair_select():
    a, b = aliased(Completion), aliased(Completion)
    return (
        select(
            Comparison.id,
            Prompt.text,
            Comparison.a_id,
            a.text,
            Comparison.b_id,
            b.text,
            a.model_version_id,
            b.model_version_id,
            Comparison.source,
            Comparison.n_labels,
        )
        .select_from(Comparison)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .join(a, a.id == Comparison.a_id)
        .join(b, b.id == Comparison.b_id)
    )


def _judged_by(labeler_id: int):
    return exists().where(PairJudgement.comparison_id == Comparison.id, PairJudgement.labeler_id == labeler_id)


def _others_leases_expr(labeler_id: int, now):
    return (
        select(func.count(PairLease.id))
        .where(PairLease.comparison_id == Comparison.id, PairLease.labeler_id != labeler_id, PairLease.expires_at > now)
        .correlate(Comparison)
        .scalar_subquery()
    )


def _level_conditions(labeler_id: int, session_key: str, overlap: int, level: int, now) -> list:
    """Pairs with exactly ``level`` labels that this (labeller, session) may be handed."""
    my_other_sessions = exists().where(
        PairLease.comparison_id == Comparison.id,
        PairLease.labeler_id == labeler_id,
        PairLease.expires_at > now,
        PairLease.session_key != session_key,
    )
    room = overlap - level
    if room == 1:
        others = ~exists().where(
            PairLease.comparison_id == Comparison.id, PairLease.labeler_id != labeler_id, PairLease.expires_at > now
        )
    else:
        others = _others_leases_expr(labeler_id, now) < room
    return [Comparison.n_labels == level, ~_judged_by(labeler_id), ~my_other_sessions, others]


def _put_lease(s: Session, *, labeler_id: int, session_key: str, comparison_id: int, seconds: float) -> None:
    ins = dialect_insert(s, PairLease).values(
        labeler_id=labeler_id,
        session_key=session_key,
        comparison_id=comparison_id,
        expires_at=utcnow() + timedelta(seconds=seconds),
    )
    s.execute(
        ins.on_conflict_do_update(
            index_elements=["labeler_id", "session_key"],
            set_={"comparison_id": ins.excluded.comparison_id, "expires_at": ins.excluded.expires_at},
        )
    )


def _random_pivot(dialect: str):
    c = aliased(Comparison)
    lo = select(func.min(c.id)).scalar_subquery()
    span = select(func.max(c.id)).scalar_subquery() - lo + 1
    if dialect == "postgresql":
        offset = cast(func.floor(func.random() * span), Integer)
    else:
        offset = func.abs(func.random() % span)
    return lo + offset


def _choose(s: Session, labeler_id: int, session_key: str, overlap: int, now):
    dialect = s.get_bind().dialect.name
    for level in range(overlap):
        base = _pair_select().where(*_level_conditions(labeler_id, session_key, overlap, level, now))
        queries = [
            base.where(Comparison.id >= _random_pivot(dialect)).order_by(Comparison.id).limit(1),
            base.order_by(Comparison.id).limit(1),
        ]
        for q in queries:
            if dialect != "postgresql":
                row = s.execute(q).first()
                if row is not None:
                    return row
                continue
            q = q.with_for_update(of=Comparison, skip_locked=True, key_share=True)
            for _ in range(PG_CANDIDATE_TRIES):
                row = s.execute(q).first()
                if row is None:
                    break
                recheck = (
                    select(func.count())
                    .select_from(Comparison)
                    .where(Comparison.id == row[0], *_level_conditions(labeler_id, session_key, overlap, level, now))
                )
                if s.scalar(recheck):
                    return row
    return None


def next_pair(
    engine: Engine, labeler_id: int, *, session_key: str, overlap: int = 1, lease_seconds: float = 600
) -> PairItem | None:
    """The comparison ``labeler_id`` should judge next in ``session_key`` (leased to that session), or
    None when none is left for them. See the module docstring for the rules."""
    _check_args(session_key, overlap, lease_seconds)

    def work(s: Session) -> PairItem | None:
        now = utcnow()
        lock_labeler(s, labeler_id)
        row = s.execute(
            _pair_select()
            .join(PairLease, PairLease.comparison_id == Comparison.id)
            .where(
                PairLease.labeler_id == labeler_id,
                PairLease.session_key == session_key,
                PairLease.expires_at > now,
                ~_judged_by(labeler_id),
            )
        ).first()
        if row is None:
            row = _choose(s, labeler_id, session_key, overlap, now)
            if row is None:
                return None
        _put_lease(s, labeler_id=labeler_id, session_key=session_key, comparison_id=row[0], seconds=lease_seconds)
        return PairItem(*row)

    return run_write(engine, work, what="fetch the next comparison")


def hold_pair(
    engine: Engine,
    labeler_id: int,
    *,
    session_key: str,
    comparison_id: int,
    overlap: int = 1,
    lease_seconds: float = 600,
) -> PairItem | None:
    """Lease one particular comparison to (labeller, session) if it is still free for them, as
    :func:`next_pair` would; the Compare page uses it to show again, in order, pairs undone earlier
    in the session. None when the pair was taken or judged meanwhile."""
    _check_args(session_key, overlap, lease_seconds)

    def work(s: Session) -> PairItem | None:
        now = utcnow()
        lock_labeler(s, labeler_id)
        level = s.scalar(select(Comparison.n_labels).where(Comparison.id == comparison_id))
        if level is None or level >= overlap:
            return None
        mine = s.scalar(
            select(func.count(PairLease.id)).where(
                PairLease.comparison_id == comparison_id,
                PairLease.labeler_id == labeler_id,
                PairLease.session_key == session_key,
                PairLease.expires_at > now,
            )
        )
        free = mine or s.scalar(
            select(func.count())
            .select_from(Comparison)
            .where(Comparison.id == comparison_id, *_level_conditions(labeler_id, session_key, overlap, level, now))
        )
        if not free:
            return None
        _put_lease(
            s, labeler_id=labeler_id, session_key=session_key, comparison_id=comparison_id, seconds=lease_seconds
        )
        row = s.execute(_pair_select().where(Comparison.id == comparison_id)).first()
        return PairItem(*row)

    return run_write(engine, work, what="hold a comparison again")


def get_pair(engine: Engine, comparison_id: int) -> PairItem | None:
    """One comparison as a :class:`PairItem` (None when it does not exist)."""
    with Session(engine) as s:
        row = s.execute(_pair_select().where(Comparison.id == comparison_id)).first()
        return PairItem(*row) if row is not None else None


def extend_pair_lease(
    engine: Engine, labeler_id: int, session_key: str, lease_seconds: float = 600, *, comparison_id: int | None = None
) -> bool:
    """Keep this session's pair reserved for another ``lease_seconds``; False when it holds none (or,
    with ``comparison_id``, another one), or its lease ran out and someone else holds the pair now."""

    def work(s: Session) -> bool:
        now = utcnow()
        mine = (PairLease.labeler_id == labeler_id) & (PairLease.session_key == session_key)
        lease = s.execute(select(PairLease.comparison_id, PairLease.expires_at).where(mine)).first()
        if lease is None or (comparison_id is not None and lease.comparison_id != comparison_id):
            return False
        if lease.expires_at <= now:
            taken = exists().where(PairLease.comparison_id == lease.comparison_id, PairLease.expires_at > now, ~mine)
            if s.scalar(select(taken)):
                return False
        s.execute(update(PairLease).where(mine).values(expires_at=now + timedelta(seconds=lease_seconds)))
        return True

    return run_write(engine, work, what="extend a comparison lease")


def release_pair_leases(engine: Engine, labeler_id: int, session_key: str | None = None) -> int:
    """Give back a labeller's leased pairs (all sessions, or one); returns how many were released."""

    def work(s: Session) -> int:
        q = delete(PairLease).where(PairLease.labeler_id == labeler_id)
        if session_key is not None:
            q = q.where(PairLease.session_key == session_key)
        return s.execute(q).rowcount or 0

    return run_write(engine, work, what="release comparison leases")


def pair_queue_size(engine: Engine, labeler_id: int, overlap: int = 1) -> int:
    """How many comparisons ``labeler_id`` could still be handed (including the ones they hold now)."""
    now = utcnow()
    mine = exists().where(
        PairLease.comparison_id == Comparison.id, PairLease.labeler_id == labeler_id, PairLease.expires_at > now
    )
    load_ok = (Comparison.n_labels + _others_leases_expr(labeler_id, now)) < overlap
    with Session(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Comparison).where(~_judged_by(labeler_id), mine | load_ok)) or 0
        )


# --------------------------------------------------------------------------------------------
# pair judgements


def _check_held(
    s: Session, labeler_id: int, session_key: str, comparison_id: int, overlap: int, *, already_judged: bool, now
) -> None:
    """Raise :class:`db.LeaseLost` unless (labeller, session) may still judge ``comparison_id``."""
    lease = s.execute(
        select(PairLease.comparison_id, PairLease.expires_at).where(
            PairLease.labeler_id == labeler_id, PairLease.session_key == session_key
        )
    ).first()
    if lease is None or lease.comparison_id != comparison_id:
        if already_judged:
            raise LeaseLost(
                f"comparison {comparison_id} was already judged in another tab.",
                "judge the pair shown now; use one tab per labeller.",
                reason="judged",
            )
        raise LeaseLost(
            f"this session no longer holds comparison {comparison_id}.",
            "judge the pair shown now; use one tab per labeller.",
            reason="moved_on",
        )
    if lease.expires_at > now:
        return
    others = s.scalar(
        select(func.count(PairLease.id)).where(
            PairLease.comparison_id == comparison_id,
            PairLease.expires_at > now,
            (PairLease.labeler_id != labeler_id) | (PairLease.session_key != session_key),
        )
    )
    labelled = s.scalar(
        select(func.count(PairJudgement.id)).where(
            PairJudgement.comparison_id == comparison_id,
            PairJudgement.labeler_id != labeler_id,
            PairJudgement.choice != "skip",
        )
    )
    mine_elsewhere = s.scalar(
        select(func.count(PairLease.id)).where(
            PairLease.comparison_id == comparison_id,
            PairLease.expires_at > now,
            PairLease.labeler_id == labeler_id,
            PairLease.session_key != session_key,
        )
    )
    if mine_elsewhere or (others or 0) + (labelled or 0) >= overlap:
        raise LeaseLost(
            f"the reservation of comparison {comparison_id} ran out and it went to someone else.",
            "judge the pair shown now.",
            reason="taken",
        )


def _count_label(s: Session, comparison_id: int, delta: int) -> None:
    """Keep ``comparisons.n_labels`` in step (an atomic increment)."""
    if delta:
        s.execute(
            update(Comparison)
            .where(Comparison.id == comparison_id)
            .values(n_labels=Comparison.n_labels + delta)
            .execution_options(synchronize_session=False)
        )


def record_pair_judgement(
    engine: Engine,
    *,
    labeler_id: int,
    comparison_id: int,
    choice: str,
    left_side: str,
    seconds: float | None = None,
    session_key: str | None = None,
    overlap: int = 1,
) -> None:
    """Store (or change) ``labeler_id``'s choice on ``comparison_id`` and release their lease on it.

    ``choice`` is ``a``, ``b`` (the completion preferred, by id order, not by side), ``tie`` or
    ``skip``; ``left_side`` is the completion that was shown on the left. One row per labeller and
    comparison: repeating the call changes nothing, a different choice updates the row. With
    ``session_key`` (the app) only the session that holds the pair may judge it (:class:`db.LeaseLost`,
    nothing stored, otherwise), as :func:`db.record_judgement` does for items."""
    if choice not in CHOICES:
        raise UserError(f"choice {choice!r} is not one of {list(CHOICES)}.", "use 'a', 'b', 'tie' or 'skip'.")
    if left_side not in SIDES:
        raise UserError(f"left_side {left_side!r} is not 'a' or 'b'.", "pass the completion shown on the left.")
    if seconds is not None:
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            seconds = None

    def work(s: Session) -> None:
        now = utcnow()
        lock_labeler(s, labeler_id)
        old = s.scalar(
            select(PairJudgement.choice).where(
                PairJudgement.comparison_id == comparison_id, PairJudgement.labeler_id == labeler_id
            )
        )
        if session_key is not None:
            _check_held(s, labeler_id, session_key, comparison_id, overlap, already_judged=old is not None, now=now)
            held_by = session_key
        else:
            held_by = s.scalar(
                select(PairLease.session_key).where(
                    PairLease.labeler_id == labeler_id, PairLease.comparison_id == comparison_id
                )
            )
        ins = dialect_insert(s, PairJudgement).values(
            comparison_id=comparison_id,
            labeler_id=labeler_id,
            choice=choice,
            left_side=left_side,
            seconds=seconds,
            session_key=held_by,
            created_at=now,
            updated_at=now,
        )
        s.execute(
            ins.on_conflict_do_update(
                index_elements=["comparison_id", "labeler_id"],
                set_={
                    "choice": ins.excluded.choice,
                    "left_side": ins.excluded.left_side,
                    "seconds": ins.excluded.seconds,
                    "session_key": func.coalesce(ins.excluded.session_key, PairJudgement.session_key),
                    "updated_at": ins.excluded.updated_at,
                },
                where=(PairJudgement.choice != ins.excluded.choice)
                | (PairJudgement.left_side != ins.excluded.left_side),
            )
        )
        _count_label(s, comparison_id, int(choice != "skip") - int(old is not None and old != "skip"))
        s.execute(
            delete(PairLease).where(
                PairLease.labeler_id == labeler_id,
                (PairLease.comparison_id == comparison_id) | (PairLease.expires_at <= now),
            )
        )

    try:
        run_write(engine, work, what="record a comparison")
    except sa_exc.IntegrityError:
        with Session(engine) as s:
            if s.get(Comparison, comparison_id) is None:
                raise UserError(
                    f"comparison {comparison_id} does not exist.", "judge a pair returned by db.next_pair."
                ) from None
            if s.get(Labeler, labeler_id) is None:
                raise UserError(
                    f"labeller {labeler_id} does not exist.", "sign in with db.get_or_create_labeler first."
                ) from None
        raise


def undo_last_pair(engine: Engine, labeler_id: int, *, session_key: str, lease_seconds: float = 600) -> int | None:
    """Delete the newest pair judgement ``labeler_id`` gave in ``session_key``; returns its comparison
    id (leased back to that session, so :func:`next_pair` shows it again), or None when this
    session has none left. Never reaches other sessions' judgements."""

    def work(s: Session) -> int | None:
        lock_labeler(s, labeler_id)
        row = s.execute(
            select(PairJudgement.id, PairJudgement.comparison_id, PairJudgement.choice)
            .where(PairJudgement.labeler_id == labeler_id, PairJudgement.session_key == session_key)
            .order_by(PairJudgement.updated_at.desc(), PairJudgement.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        s.execute(delete(PairJudgement).where(PairJudgement.id == row.id))
        _count_label(s, row.comparison_id, -int(row.choice != "skip"))
        _put_lease(
            s, labeler_id=labeler_id, session_key=session_key, comparison_id=row.comparison_id, seconds=lease_seconds
        )
        return row.comparison_id

    return run_write(engine, work, what="undo a comparison")


def session_pair_count(engine: Engine, labeler_id: int, session_key: str) -> int:
    """How many pair judgements ``labeler_id`` has standing from ``session_key``."""
    with Session(engine) as s:
        return (
            s.scalar(
                select(func.count(PairJudgement.id)).where(
                    PairJudgement.labeler_id == labeler_id, PairJudgement.session_key == session_key
                )
            )
            or 0
        )


# --------------------------------------------------------------------------------------------
# reads: rows, preference pairs, stats

PAIR_COLUMNS = [
    "judgement_id",
    "comparison_id",
    "prompt_id",
    "labeler_id",
    "labeler",
    "choice",
    "left_side",
    "seconds",
    "created_at",
    "updated_at",
    "source",
    "prompt",
    "a_id",
    "a",
    "a_model_version_id",
    "b_id",
    "b",
    "b_model_version_id",
]


def pair_judgement_rows(engine: Engine) -> list[dict]:
    """Every pair judgement (ties and skips included) with its labeller, prompt and both completions,
    in comparison-id order, then judgement id."""
    a, b = aliased(Completion), aliased(Completion)
    q = (
        select(
            PairJudgement.id,
            PairJudgement.comparison_id,
            Comparison.prompt_id,
            PairJudgement.labeler_id,
            Labeler.name,
            PairJudgement.choice,
            PairJudgement.left_side,
            PairJudgement.seconds,
            PairJudgement.created_at,
            PairJudgement.updated_at,
            Comparison.source,
            Prompt.text,
            Comparison.a_id,
            a.text,
            a.model_version_id,
            Comparison.b_id,
            b.text,
            b.model_version_id,
        )
        .join(Comparison, Comparison.id == PairJudgement.comparison_id)
        .join(Prompt, Prompt.id == Comparison.prompt_id)
        .join(a, a.id == Comparison.a_id)
        .join(b, b.id == Comparison.b_id)
        .join(Labeler, Labeler.id == PairJudgement.labeler_id)
        .order_by(PairJudgement.comparison_id, PairJudgement.id)
    )
    with Session(engine) as s:
        return [dict(zip(PAIR_COLUMNS, row)) for row in s.execute(q)]


def preference_pairs(engine: Engine) -> list[PreferencePair]:
    """One :class:`PreferencePair` per pair judgement that chose ``a`` or ``b`` (ties and skips left
    out), in comparison-id order: what DPO and a Bradley-Terry reward model train on."""
    out = []
    for r in pair_judgement_rows(engine):
        if r["choice"] not in SIDES:
            continue
        chosen, rejected = (r["a"], r["b"]) if r["choice"] == "a" else (r["b"], r["a"])
        out.append(PreferencePair(r["prompt"], chosen, rejected, r["comparison_id"], r["labeler"]))
    return out


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``successes / n`` (95% by default); (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def position_bias_of(rows: Sequence[dict]) -> dict:
    """Share of decisive choices (``a``/``b``) that picked the completion shown on the left, with a
    95% Wilson interval; 0.5 means no position bias. Pure, over :func:`pair_judgement_rows` rows."""
    decisive = [r for r in rows if r["choice"] in SIDES]
    left = sum(r["choice"] == r["left_side"] for r in decisive)
    n = len(decisive)
    lo, hi = wilson_interval(left, n)
    return {"n": n, "left": left, "share_left": left / n if n else None, "interval": [lo, hi]}


def agreement_of(rows: Sequence[dict]) -> dict:
    """Pairwise agreement between labellers: over every two labellers who both judged one comparison
    (skips left out), the share that made the same choice (``a``, ``b`` or ``tie``), with a Wilson
    interval; also per comparison-labeller count. Pure."""
    by_pair: dict[int, list[str]] = defaultdict(list)
    for r in rows:
        if r["choice"] != "skip":
            by_pair[r["comparison_id"]].append(r["choice"])
    n = same = 0
    for choices in by_pair.values():
        for x, y in combinations(choices, 2):
            n += 1
            same += x == y
    lo, hi = wilson_interval(same, n)
    shared = sum(len(c) >= 2 for c in by_pair.values())
    return {"comparisons": shared, "n": n, "agree": same, "agreement": same / n if n else None, "interval": [lo, hi]}


def win_rate_of(rows: Sequence[dict], version: int, other: int) -> dict:
    """How often completions of model ``version`` were preferred to those of ``other``, over the
    non-skip judgements of comparisons with one completion of each; a tie counts half a win. The
    interval is Wilson's at the tie-adjusted rate (a little wide when there are ties). Pure."""
    wins = losses = ties = 0
    for r in rows:
        sides = {r["a_model_version_id"]: "a", r["b_model_version_id"]: "b"}
        if r["choice"] == "skip" or set(sides) != {version, other}:
            continue
        if r["choice"] == "tie":
            ties += 1
        elif r["choice"] == sides[version]:
            wins += 1
        else:
            losses += 1
    n = wins + losses + ties
    rate = (wins + 0.5 * ties) / n if n else None
    lo, hi = wilson_interval(wins + 0.5 * ties, n)
    return {
        "version": version,
        "other": other,
        "n": n,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "win_rate": rate,
        "interval": [lo, hi],
    }


def version_pairs_of(rows: Sequence[dict]) -> list[tuple[int, int]]:
    """The (older, newer) model version id pairs that some judged comparison sets against each other."""
    seen = set()
    for r in rows:
        a, b = r["a_model_version_id"], r["b_model_version_id"]
        if a is not None and b is not None and a != b:
            seen.add((min(a, b), max(a, b)))
    return sorted(seen)


def pair_stats(engine: Engine) -> dict:
    """Counts and figures for the stats page and ``python -m db pairs stats`` (JSON-serialisable):
    comparisons, judgements by choice, agreement, position bias, and the win rate of the newer
    version over the older for every two versions compared."""
    rows = pair_judgement_rows(engine)
    with Session(engine) as s:
        n_comparisons = s.scalar(select(func.count()).select_from(Comparison)) or 0
        judged = s.scalar(select(func.count()).select_from(Comparison).where(Comparison.n_labels > 0)) or 0
    by_choice = dict.fromkeys(CHOICES, 0)
    for r in rows:
        by_choice[r["choice"]] += 1
    return {
        "comparisons": n_comparisons,
        "judged_comparisons": judged,
        "pair_judgements": len(rows),
        "by_choice": by_choice,
        "agreement": agreement_of(rows),
        "position_bias": position_bias_of(rows),
        "win_rates": [win_rate_of(rows, newer, older) for older, newer in version_pairs_of(rows)],
    }
