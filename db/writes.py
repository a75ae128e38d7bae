"""Everything that changes the feedback database (except the labelling queue, in ``db.queue``).

Every write is one transaction (``BEGIN IMMEDIATE`` on SQLite), retried as a whole with backoff
when the database is busy, so callers never see "database is locked".
"""

from __future__ import annotations

import logging
import math
import os
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from common.errors import UserError
from db.engine import PG_LOCK_NAMESPACE, DatabaseError, run_write
from db.models import (
    COMMENT_MAX,
    FLAGS,
    LABELS,
    MODEL_KINDS,
    Completion,
    Judgement,
    Labeler,
    Lease,
    ModelVersion,
    Prompt,
    text_sha256,
    utcnow,
)
from db.types import NewCompletion

log = logging.getLogger(__name__)

CHUNK = 500  # rows per IN (...) list; well under SQLite's bound-parameter limit
LOCK_LABELER = 1  # advisory-lock kinds (PostgreSQL): one labeller's queue/undo operations
LOCK_SIGN_IN = 2  # advisory-lock kind (PostgreSQL): creating labellers (names compared case-insensitively)


class LeaseLost(UserError):
    """A judgement of an item this browser session no longer holds: refused, nothing stored.

    ``reason`` is ``"judged"`` (this labeller already judged it, e.g. in another tab with the same
    session), ``"moved_on"`` (this session now holds another item) or ``"taken"`` (the lease ran out
    and someone else holds the item, or has given it all the labels ``overlap`` asks for)."""

    def __init__(self, problem: str, fix: str, *, reason: str):
        super().__init__(problem, fix)
        self.reason = reason


class AccountDisabled(UserError):
    """A queue, judgement or undo operation of an account an admin has disabled: refused, nothing stored."""


class DatabaseGone(DatabaseError):
    """The SQLite file this process opened is no longer the file at its path (deleted, moved or replaced)."""


# --------------------------------------------------------------------------------------------
# helpers


def dialect_insert(session: Session, entity):
    """``INSERT`` with ``on_conflict_do_*`` for the session's backend (SQLite or PostgreSQL)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(entity)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(entity)


def lock_labeler(session: Session, labeler_id: int) -> None:
    """Serialise one labeller's queue operations on PostgreSQL (SQLite's BEGIN IMMEDIATE already does),
    and refuse them for a disabled account (:class:`AccountDisabled`): a key press already on its way when
    an admin disables the account stores nothing."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, :key)"),
            {"ns": PG_LOCK_NAMESPACE + LOCK_LABELER, "key": int(labeler_id)},
        )
    if session.scalar(select(Labeler.disabled_at).where(Labeler.id == labeler_id)) is not None:
        raise AccountDisabled(
            "this account is disabled: nothing was saved.",
            "ask an admin to enable it (`python -m db users enable NAME`).",
        )


def put_lease(session: Session, *, labeler_id: int, session_key: str, completion_id: int, seconds: float) -> None:
    """Give (labeller, session) the lease on ``completion_id`` (replacing that session's previous lease)."""
    ins = dialect_insert(session, Lease).values(
        labeler_id=labeler_id,
        session_key=session_key,
        completion_id=completion_id,
        expires_at=utcnow() + timedelta(seconds=seconds),
    )
    session.execute(
        ins.on_conflict_do_update(
            index_elements=["labeler_id", "session_key"],
            set_={"completion_id": ins.excluded.completion_id, "expires_at": ins.excluded.expires_at},
        )
    )


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf replaced by None (PostgreSQL's JSON rejects them) and tuples as lists."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "item"):  # numpy / torch scalars
        return json_safe(obj.item())
    return str(obj)


def _chunks(seq: Sequence, n: int = CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _check_text(value: Any, what: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise UserError(f"{what} must be text, got {type(value).__name__}.", "pass a str.")
    if "\x00" in value:
        raise UserError(f"{what} contains a NUL character, which databases cannot store.", "remove it.")
    if not allow_empty and not value.strip():
        raise UserError(f"{what} is empty.", "give a non-empty text.")
    return value


def _ids(session: Session, column, wanted: set[int]) -> set[int]:
    found: set[int] = set()
    for chunk in _chunks(sorted(wanted)):
        found.update(session.scalars(select(column).where(column.in_(chunk))))
    return found


# --------------------------------------------------------------------------------------------
# prompts and completions


def _prompt_ids(session: Session, texts: Sequence[str], source: str) -> tuple[list[int], int]:
    """Ids for ``texts`` in order, inserting the new ones; returns (ids, number inserted)."""
    keys = {t: text_sha256(t) for t in dict.fromkeys(texts)}
    found: dict[str, int] = {}
    for chunk in _chunks(list(keys.values())):
        found.update(session.execute(select(Prompt.text_sha256, Prompt.id).where(Prompt.text_sha256.in_(chunk))).all())
    missing = [t for t, k in keys.items() if k not in found]
    if missing:
        now = utcnow()
        ins = dialect_insert(session, Prompt).on_conflict_do_nothing(index_elements=["text_sha256"])
        session.execute(
            ins, [{"text": t, "text_sha256": keys[t], "source": source, "created_at": now} for t in missing]
        )
        for chunk in _chunks([keys[t] for t in missing]):
            found.update(
                session.execute(select(Prompt.text_sha256, Prompt.id).where(Prompt.text_sha256.in_(chunk))).all()
            )
    return [found[keys[t]] for t in texts], len(missing)


def add_prompts_counted(engine: Engine, texts: list[str], source: str = "imdb") -> tuple[list[int], int]:
    """Like :func:`add_prompts`, also returning how many prompts were new."""
    texts = [_check_text(t, f"prompt #{i}") for i, t in enumerate(texts)]
    source = _check_text(source, "prompt source")[:32]
    if not texts:
        return [], 0
    return run_write(engine, lambda s: _prompt_ids(s, texts, source), what="add prompts")


def add_prompts(engine: Engine, texts: list[str], source: str = "imdb") -> list[int]:
    """Store prompt texts; returns their ids in input order (texts already stored are reused)."""
    return add_prompts_counted(engine, texts, source)[0]


def add_completions(engine: Engine, items: list[NewCompletion]) -> list[int]:
    """Store completions (creating their prompts when new); returns their ids in input order."""
    rows = []
    for i, it in enumerate(items):
        _check_text(it.prompt, f"completion #{i}'s prompt")
        _check_text(it.text, f"completion #{i}'s text", allow_empty=True)
        if not isinstance(it.gen_params, dict):
            raise UserError(f"completion #{i}'s gen_params must be a dict.", "pass the generation settings as a dict.")
        rows.append(it)
    if not rows:
        return []

    def work(s: Session) -> list[int]:
        versions = {it.model_version_id for it in rows if it.model_version_id is not None}
        unknown = versions - _ids(s, ModelVersion.id, versions)
        if unknown:
            raise UserError(
                f"model version(s) {sorted(unknown)} do not exist.",
                "register the model with db.register_model_version first.",
            )
        prompt_ids, _ = _prompt_ids(s, [it.prompt for it in rows], "generated")
        now = utcnow()
        values = [
            {
                "prompt_id": pid,
                "text": it.text,
                "model_version_id": it.model_version_id,
                "gen_params": json_safe(it.gen_params),
                "created_at": now,
            }
            for pid, it in zip(prompt_ids, rows)
        ]
        ids: list[int] = []
        stmt = insert(Completion).returning(Completion.id, sort_by_parameter_order=True)
        for chunk in _chunks(values):
            ids.extend(s.scalars(stmt, list(chunk)))
        return ids

    return run_write(engine, work, what="add completions")


def set_reward_scores(
    engine: Engine, scores: dict[int, float], model_version_id: int, *, spreads: dict[int, float] | None = None
) -> None:
    """Store a reward model's probability of "good" per completion (for "uncertain first" ordering) and,
    for an ensemble, its spread (std of P(good) across members, ``completions.reward_spread``); a
    completion scored without a spread has its old spread cleared."""
    clean: dict[int, float] = {}
    for cid, score in scores.items():
        score = float(score)
        if not math.isfinite(score):
            raise UserError(
                f"reward score for completion {cid} is {score}.",
                "check the reward model's output; scores must be finite probabilities.",
            )
        clean[int(cid)] = score
    spread: dict[int, float] = {}
    for cid, value in (spreads or {}).items():
        value = float(value)
        if not (math.isfinite(value) and value >= 0) or int(cid) not in clean:
            raise UserError(
                f"reward spread for completion {cid} is {value} (or it has no score).",
                "pass a finite spread >= 0 for completions that are scored too.",
            )
        spread[int(cid)] = value
    if not clean:
        return

    def work(s: Session) -> None:
        if s.get(ModelVersion, model_version_id) is None:
            raise UserError(f"model version {model_version_id} does not exist.", "register the reward model first.")
        unknown = set(clean) - _ids(s, Completion.id, set(clean))
        if unknown:
            raise UserError(
                f"completion(s) {sorted(unknown)[:10]} do not exist.", "score completions read from the database."
            )
        s.execute(
            update(Completion),
            [
                {
                    "id": cid,
                    "reward_score": sc,
                    "reward_spread": spread.get(cid),
                    "reward_model_version_id": model_version_id,
                }
                for cid, sc in clean.items()
            ],
        )

    run_write(engine, work, what="store reward scores")


# --------------------------------------------------------------------------------------------
# model versions and labellers


def register_model_version(
    engine: Engine, *, kind: str, name: str, path: str, parent_id: int | None = None, metrics: dict | None = None
) -> int:
    """Record a saved policy or reward model; returns its id."""
    if kind not in MODEL_KINDS:
        raise UserError(f"model kind {kind!r} is not one of {list(MODEL_KINDS)}.", "use 'policy' or 'reward'.")
    _check_text(name, "model name")
    if metrics is not None and not isinstance(metrics, dict):
        raise UserError("model metrics must be a dict.", "pass metrics as {name: value}.")

    def work(s: Session) -> int:
        if parent_id is not None and s.get(ModelVersion, parent_id) is None:
            raise UserError(
                f"parent model version {parent_id} does not exist.", "pass the id of a registered model, or None."
            )
        mv = ModelVersion(
            kind=kind,
            name=name[:200],
            path=str(path),
            parent_id=parent_id,
            metrics=json_safe(metrics) if metrics is not None else None,
            created_at=utcnow(),
        )
        s.add(mv)
        s.flush()
        return mv.id

    return run_write(engine, work, what="register a model version")


def _script(ch: str) -> str | None:
    """The writing system of a letter (LATIN, CYRILLIC, GREEK, ...; Chinese and Japanese as one), None
    for characters of no script (digits, spaces, punctuation, marks)."""
    if not ch.isalpha():
        return None
    first = unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]
    return "CJK" if first in ("CJK", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC") else first


def validate_labeler_name(name: Any) -> str:
    """A labeller name: NFKC-normalised, stripped, 1-64 printable characters, letters of one script.

    NFKC folds look-alike forms (fullwidth ``ａｌｉｃｅ``, ligatures) into their plain letters; a
    name mixing scripts (a Cyrillic ``а`` inside ``alice``) is refused, because it cannot be told
    apart from another labeller's name on screen. Names are compared case-insensitively
    (:func:`labeler_name_key`)."""
    if not isinstance(name, str):
        raise UserError("the labeller name must be text.", "type your name.")
    name = unicodedata.normalize("NFKC", name).strip()
    if not name:
        raise UserError("the labeller name is empty.", "type your name (1-64 characters).")
    if len(name) > 64:
        raise UserError(f"the labeller name is {len(name)} characters long.", "use at most 64 characters.")
    if not name.isprintable():
        raise UserError(
            "the labeller name contains control characters.", "use letters, digits, spaces and punctuation."
        )
    scripts = sorted({sc for sc in map(_script, name) if sc is not None})
    if len(scripts) > 1:
        raise UserError(
            f"the labeller name mixes letters of different alphabets ({', '.join(s.title() for s in scripts)}), "
            "so it could be mistaken for another name.",
            "type it with the letters of one alphabet.",
        )
    return name


def labeler_name_key(name: str) -> str:
    """What makes two names the same labeller: NFKC, then case folded (``Alice`` = ``alice``)."""
    return unicodedata.normalize("NFKC", name).strip().casefold()


def get_or_create_labeler(engine: Engine, name: str) -> int:
    """The id of the labeller called ``name`` (validated; compared case-insensitively, so ``Alice``
    signs in as an existing ``alice``), created on first use."""
    name = validate_labeler_name(name)
    key = labeler_name_key(name)

    def work(s: Session) -> int:
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": PG_LOCK_NAMESPACE + LOCK_SIGN_IN})
        for lid, existing in s.execute(select(Labeler.id, Labeler.name)):  # a few hundred names at most
            if labeler_name_key(existing) == key:
                return lid
        s.execute(
            dialect_insert(s, Labeler)
            .values(name=name, created_at=utcnow())
            .on_conflict_do_nothing(index_elements=["name"])
        )
        return s.scalars(select(Labeler.id).where(Labeler.name == name)).one()

    return run_write(engine, work, what="sign in a labeller")


# --------------------------------------------------------------------------------------------
# judgements


def record_judgement(
    engine: Engine,
    *,
    labeler_id: int,
    completion_id: int,
    label: str,
    seconds: float | None = None,
    session_key: str | None = None,
    overlap: int = 1,
    flag: str | None = None,
    comment: str | None = None,
) -> None:
    """Store (or change) ``labeler_id``'s label on ``completion_id`` and release their lease on it.

    One row per labeller and completion: repeating the same call (a double click) changes
    nothing; a different label (or flag, or comment) updates the row. ``flag`` (one of
    ``db.models.FLAGS``, e.g. ``"offensive"``) and ``comment`` (free text, stripped, at most
    ``COMMENT_MAX`` characters; blank = none) are optional and stored in the same write as the label.

    With ``session_key`` (the labelling app) the judgement is accepted only from the session that
    holds the item: :class:`LeaseLost` (nothing stored) when this session now holds another item or
    this labeller already judged it (a second tab sharing the session), or when the session's lease
    ran out and the item is now held by someone else or has the ``overlap`` labels it needs. Without
    it (scripts, the simulator) the judgement is stored under the session that held the lease, if any."""
    if label not in LABELS:
        raise UserError(f"label {label!r} is not one of {list(LABELS)}.", "use 'good', 'bad' or 'skip'.")
    if seconds is not None:
        seconds = float(seconds)
        if not math.isfinite(seconds) or seconds < 0:
            seconds = None
    flag, comment = check_note(flag, comment)

    def work(s: Session) -> None:
        now = utcnow()
        lock_labeler(s, labeler_id)  # this labeller's previous label below stays accurate on PostgreSQL
        old = s.scalar(
            select(Judgement.label).where(Judgement.completion_id == completion_id, Judgement.labeler_id == labeler_id)
        )
        if session_key is not None:
            _check_held(s, labeler_id, session_key, completion_id, overlap, already_judged=old is not None, now=now)
            held_by = session_key
        else:
            held_by = s.scalar(
                select(Lease.session_key).where(Lease.labeler_id == labeler_id, Lease.completion_id == completion_id)
            )
        ins = dialect_insert(s, Judgement).values(
            completion_id=completion_id,
            labeler_id=labeler_id,
            label=label,
            seconds=seconds,
            session_key=held_by,
            flag=flag,
            comment=comment,
            created_at=now,
            updated_at=now,
        )
        s.execute(
            ins.on_conflict_do_update(
                index_elements=["completion_id", "labeler_id"],
                set_={
                    "label": ins.excluded.label,
                    "seconds": ins.excluded.seconds,
                    "session_key": func.coalesce(ins.excluded.session_key, Judgement.session_key),
                    "flag": ins.excluded.flag,
                    "comment": ins.excluded.comment,
                    "updated_at": ins.excluded.updated_at,
                },
                where=(Judgement.label != ins.excluded.label)
                | Judgement.flag.is_distinct_from(ins.excluded.flag)
                | Judgement.comment.is_distinct_from(ins.excluded.comment),
            )
        )
        _count_label(s, completion_id, int(label != "skip") - int(old is not None and old != "skip"))
        # release the lease on this item, and tidy this labeller's expired ones
        s.execute(
            delete(Lease).where(
                Lease.labeler_id == labeler_id, (Lease.completion_id == completion_id) | (Lease.expires_at <= now)
            )
        )

    try:
        run_write(engine, work, what="record a judgement")
    except sa_exc.IntegrityError:
        _missing(engine, labeler_id=labeler_id, completion_id=completion_id)
        raise


def check_note(flag: Any, comment: Any) -> tuple[str | None, str | None]:
    """A judgement's optional flag and comment as stored: ``flag`` one of ``FLAGS`` or None, ``comment``
    stripped text of at most ``COMMENT_MAX`` characters, or None when blank."""
    if flag is not None and flag not in FLAGS:
        raise UserError(f"flag {flag!r} is not one of {list(FLAGS)}.", "leave it out, or use one of those.")
    if comment is not None:
        comment = _check_text(comment, "the comment", allow_empty=True).strip() or None
        if comment is not None and len(comment) > COMMENT_MAX:
            raise UserError(f"the comment is {len(comment)} characters long.", f"keep it to {COMMENT_MAX} characters.")
    return flag, comment


def _check_held(
    s: Session, labeler_id: int, session_key: str, completion_id: int, overlap: int, *, already_judged: bool, now
) -> None:
    """Raise :class:`LeaseLost` unless (labeller, session) may still judge ``completion_id``."""
    lease = s.execute(
        select(Lease.completion_id, Lease.expires_at).where(
            Lease.labeler_id == labeler_id, Lease.session_key == session_key
        )
    ).first()
    if lease is None or lease.completion_id != completion_id:
        if already_judged:
            raise LeaseLost(
                f"completion {completion_id} was already judged in another tab.",
                "judge the item shown now; use one tab per labeller.",
                reason="judged",
            )
        raise LeaseLost(
            f"this session no longer holds completion {completion_id}.",
            "judge the item shown now; use one tab per labeller.",
            reason="moved_on",
        )
    if lease.expires_at > now:
        return
    # The lease ran out: the judgement still counts if nobody took the item meanwhile.
    others = s.scalar(
        select(func.count(Lease.id)).where(
            Lease.completion_id == completion_id,
            Lease.expires_at > now,
            (Lease.labeler_id != labeler_id) | (Lease.session_key != session_key),
        )
    )
    labelled = s.scalar(
        select(func.count(Judgement.id)).where(
            Judgement.completion_id == completion_id, Judgement.labeler_id != labeler_id, Judgement.label != "skip"
        )
    )
    mine_elsewhere = s.scalar(
        select(func.count(Lease.id)).where(
            Lease.completion_id == completion_id,
            Lease.expires_at > now,
            Lease.labeler_id == labeler_id,
            Lease.session_key != session_key,
        )
    )
    if mine_elsewhere or (others or 0) + (labelled or 0) >= overlap:
        raise LeaseLost(
            f"the reservation of completion {completion_id} ran out and it went to someone else.",
            "judge the item shown now.",
            reason="taken",
        )


def _count_label(s: Session, completion_id: int, delta: int) -> None:
    """Keep ``completions.n_labels`` in step (an atomic increment, safe under concurrent labellers)."""
    if delta:
        s.execute(
            update(Completion)
            .where(Completion.id == completion_id)
            .values(n_labels=Completion.n_labels + delta)
            .execution_options(synchronize_session=False)
        )


def _missing(engine: Engine, *, labeler_id: int, completion_id: int) -> None:
    with Session(engine) as s:
        if s.get(Completion, completion_id) is None:
            raise UserError(f"completion {completion_id} does not exist.", "judge an item returned by db.next_item.")
        if s.get(Labeler, labeler_id) is None:
            raise UserError(f"labeller {labeler_id} does not exist.", "sign in with db.get_or_create_labeler first.")


def undo_last(engine: Engine, labeler_id: int, *, session_key: str, lease_seconds: float = 600) -> int | None:
    """Delete the newest judgement ``labeler_id`` gave in browser session ``session_key``; returns its
    completion id, or None when this session has none left.

    Only this session's judgements are reached, never the labeller's older work from other tabs or
    days. The item is leased back to that session, so ``next_item`` shows it again there and no
    other labeller takes it meanwhile. Each undo writes an ``undo`` row of the audit trail."""

    def work(s: Session) -> int | None:
        lock_labeler(s, labeler_id)
        row = s.execute(
            select(Judgement.id, Judgement.completion_id, Judgement.label)
            .where(Judgement.labeler_id == labeler_id, Judgement.session_key == session_key)
            .order_by(Judgement.updated_at.desc(), Judgement.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        s.execute(delete(Judgement).where(Judgement.id == row.id))
        _count_label(s, row.completion_id, -int(row.label != "skip"))
        from db.accounts import audit_in  # the audit trail records every undo, in the same transaction

        who = s.scalar(select(Labeler.name).where(Labeler.id == labeler_id))
        audit_in(s, "undo", actor=who, actor_id=labeler_id, target=f"completion {row.completion_id}", detail=row.label)
        put_lease(
            s, labeler_id=labeler_id, session_key=session_key, completion_id=row.completion_id, seconds=lease_seconds
        )
        return row.completion_id

    return run_write(engine, work, what="undo a judgement")


def release_leases(engine: Engine, labeler_id: int, session_key: str | None = None) -> int:
    """Give back a labeller's leased items (all sessions, or one); returns how many were released."""

    def work(s: Session) -> int:
        q = delete(Lease).where(Lease.labeler_id == labeler_id)
        if session_key is not None:
            q = q.where(Lease.session_key == session_key)
        return s.execute(q).rowcount or 0

    return run_write(engine, work, what="release leases")


# --------------------------------------------------------------------------------------------
# the database file itself


def database_file_id(engine: Engine) -> tuple[int, int] | None:
    """(device, inode) of the SQLite file ``engine`` opened, None for PostgreSQL or in-memory SQLite.

    Take it right after :func:`db.connect`; :func:`check_database_file` compares it before writes."""
    path = _sqlite_path(engine)
    if path is None:
        return None
    st = os.stat(path)
    return st.st_dev, st.st_ino


def check_database_file(engine: Engine, expected: tuple[int, int] | None) -> None:
    """Raise :class:`DatabaseGone` when the SQLite file at the configured path is not the one opened
    (deleted, moved or replaced while this process runs): writing on would go into a file nobody
    will read, or into a new empty one. A few microseconds (one ``stat``)."""
    path = _sqlite_path(engine)
    if expected is None or path is None:
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        what = "was deleted or moved"
    else:
        if (st.st_dev, st.st_ino) == expected:
            return
        what = "was replaced by another file"
    raise DatabaseGone(
        f"the SQLite file {path!r} this app opened {what} while the app was running; nothing more is written.",
        "stop the app, put the database file back at that path (or restore it from a backup, or copy it "
        "out of /proc/<pid>/fd of the running app before stopping it), then start the app again.",
    )


def missing_database_file(url: str | None = None) -> Path | None:
    """The absolute path of the SQLite file ``url`` names (default: ``RLHF_DB_URL``, else the default
    database) when that file does not exist yet, else None (it exists, or the URL is PostgreSQL or an
    in-memory database). Lets a caller refuse to create a database it was not asked to create, since
    :func:`db.connect` creates a missing SQLite file."""
    from db.engine import resolve_url

    parsed, _ = resolve_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    path = Path(os.path.abspath(name))
    return None if path.exists() else path


def _sqlite_path(engine: Engine) -> str | None:
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return None
    name = url.database
    if not name or name == ":memory:" or name.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return os.path.abspath(name)
