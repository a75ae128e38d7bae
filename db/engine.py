"""Opening the database: URL checks, SQLite settings, Alembic migrations, and retried writes.

``connect()`` is the only way the project opens the feedback database. It

- resolves the URL (argument, else ``RLHF_DB_URL``, else ``sqlite:///data/feedback.sqlite``);
- on SQLite creates the missing folder, and on every new connection turns on WAL, foreign keys
  and a busy timeout; transactions are begun explicitly (``BEGIN``, or ``BEGIN IMMEDIATE`` for
  writes, so a writer takes the write lock first and never fails half-way with "database is locked");
- runs the Alembic migrations shipped in ``db/migrations`` up to head (never ``create_all``);
- turns every way this can fail into a one-line :class:`DatabaseError` naming the database and the fix.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from common.errors import EXPLAINERS, UserError
from common.paths import DEFAULT_DB_URL, check_writable_dirs

# Alembic logs every plugin it sets up, when it is first imported, at INFO: noise on every command.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from alembic.script import ScriptDirectory  # noqa: E402

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Same number on every PostgreSQL advisory lock this package takes (the other key says what for).
PG_LOCK_NAMESPACE = 7_341_001


class DatabaseError(UserError):
    """The feedback database cannot be opened or used; the message names it and the fix."""


# --------------------------------------------------------------------------------------------
# URLs


_SCHEME_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/@\s]*):\S*@")  # up to the last @
_BARE_PASSWORD = re.compile(r"^(?P<head>[^:/@\s]+):\S*@")


def mask_password(text: str) -> str:
    """``text`` with the password of any ``user:password@`` masked as ``***``: for every message that
    shows a database URL, parseable or not (``postgresql://u:pw@host:notaport/db``, or ``u:pw@host/db``
    with the scheme forgotten)."""
    if "://" in text:
        return _SCHEME_PASSWORD.sub(lambda m: f"{m['head']}:***@", text)
    return _BARE_PASSWORD.sub(lambda m: f"{m['head']}:***@", text)


def resolve_url(url: str | None = None) -> tuple[URL, str]:
    """Parse the database URL; returns it and a description of where it came from (for messages).
    Blanks around it (a pasted newline) are stripped."""
    origin = "the database URL"
    if url is None:
        raw = os.environ.get("RLHF_DB_URL")
        if raw and raw.strip():
            url, origin = raw, "RLHF_DB_URL"
        else:
            url = DEFAULT_DB_URL
    if isinstance(url, str):
        url = url.strip()
    fix_var = "set RLHF_DB_URL" if origin == "RLHF_DB_URL" else "pass a URL"
    if not isinstance(url, str) or "://" not in url:
        raise DatabaseError(
            f"{origin}={mask_password(str(url))!r} is not a database URL.",
            f"{fix_var} to sqlite:///path/to/feedback.sqlite or postgresql+psycopg://user:pass@host:5432/dbname.",
        )
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise DatabaseError(
            f"{origin}={mask_password(url)!r} cannot be parsed as a database URL.",
            f"{fix_var} to sqlite:///path/to/feedback.sqlite or postgresql+psycopg://user:pass@host:5432/dbname.",
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        # psycopg 3 is the driver we ship; plain postgresql:// would look for psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend != "sqlite":
        raise DatabaseError(
            f"{origin} names the backend {backend!r}, which this project does not support.",
            f"{fix_var} to a sqlite:/// or postgresql+psycopg:// URL.",
        )
    return parsed, origin


def describe(url: URL | Engine) -> str:
    """The URL with its password masked, or for SQLite the file, for messages."""
    if isinstance(url, Engine):
        url = url.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database!r}" if _sqlite_file(url) else "in-memory SQLite database"
    return url.render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> str | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file::memory:") or url.query.get("mode") == "memory":
        return None
    return db


# --------------------------------------------------------------------------------------------
# Engine


def _install_sqlite_events(engine: Engine) -> None:
    """WAL, foreign keys and busy timeout on every connection, and explicit BEGIN / BEGIN IMMEDIATE.

    pysqlite's own transaction handling is switched off (``isolation_level = None``) so that
    SQLAlchemy's "begin" event emits the BEGIN itself: ``BEGIN IMMEDIATE`` when the connection
    carries the execution option ``sqlite_immediate=True`` (all writes here), plain ``BEGIN``
    otherwise. A writer thus takes the write lock at its first statement, waits for it with the
    busy timeout, and never has to upgrade a read snapshot (which SQLite refuses with "database is locked").
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys = ON")
            if _sqlite_file(engine.url):
                cur.execute("PRAGMA journal_mode = WAL")
                cur.execute("PRAGMA synchronous = FULL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def make_engine(url: URL) -> Engine:
    """An Engine for a parsed URL, with this project's settings (no checks, no migrations)."""
    if url.get_backend_name() == "sqlite":
        kwargs: dict = {}
        if not _sqlite_file(url):
            kwargs = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
        else:
            kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}}
        engine = create_engine(url, **kwargs)
        _install_sqlite_events(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 5})


def write_engine(engine: Engine) -> Engine:
    """The same engine, flagged so that its SQLite transactions begin with BEGIN IMMEDIATE."""
    return engine.execution_options(sqlite_immediate=True)


# --------------------------------------------------------------------------------------------
# Retried writes


def _is_retryable(err: BaseException) -> bool:
    orig = getattr(err, "orig", None)
    if isinstance(err, sa_exc.OperationalError):
        msg = str(orig or err).lower()
        if "database is locked" in msg or "database is busy" in msg or "database table is locked" in msg:
            return True
    sqlstate = getattr(orig, "sqlstate", None)
    # PostgreSQL: serialization failure, deadlock detected, lock not available.
    return sqlstate in ("40001", "40P01", "55P03")


def retrying(
    fn: Callable[[], T],
    *,
    what: str,
    engine: Engine,
    attempts: int = 12,
    base_delay: float = 0.02,
    give_up_after: float = 60.0,
) -> T:
    """Run ``fn`` (one whole transaction), retrying with jittered exponential backoff when the
    database reports a lock or serialization conflict. Each SQLite attempt already waits up to the
    busy timeout for the lock; retries cover the cases SQLite reports at once. After ``attempts``
    tries or ``give_up_after`` seconds the caller gets a :class:`DatabaseError` naming the
    database, never a raw "database is locked"."""
    start = time.monotonic()
    for attempt in range(attempts):
        try:
            return fn()
        except (sa_exc.OperationalError, sa_exc.DBAPIError) as err:
            if not _is_retryable(err):
                raise
            if attempt == attempts - 1 or time.monotonic() - start > give_up_after:
                raise DatabaseError(
                    f"{describe(engine)} stayed busy while trying to {what} "
                    f"({attempt + 1} attempts, {time.monotonic() - start:.0f} s).",
                    "check for a process holding a long write transaction, then try again.",
                ) from err
            delay = min(2.0, base_delay * 2**attempt) * (0.5 + random.random())
            log.debug("database busy during %s, retry %d in %.3fs", what, attempt + 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One write transaction (BEGIN IMMEDIATE on SQLite): ``with write_session(engine) as s: ...``."""
    with Session(write_engine(engine)) as s, s.begin():
        yield s


def run_write(engine: Engine, fn: Callable[[Session], T], *, what: str) -> T:
    """Run ``fn(session)`` in one write transaction, retried as a whole on lock conflicts."""

    def attempt() -> T:
        with write_session(engine) as s:
            return fn(s)

    return retrying(attempt, what=what, engine=engine)


# --------------------------------------------------------------------------------------------
# Migrations


def alembic_config(connection=None):
    """An Alembic Config built in code, pointing at the migrations inside this package
    (works from any working directory and from an installed package)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest schema revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@functools.cache
def known_revisions() -> frozenset[str]:
    return frozenset(rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions())


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic logs every plugin and context at INFO; keep that for --verbose (DEBUG) only."""
    alembic_log = logging.getLogger("alembic")
    if alembic_log.isEnabledFor(logging.DEBUG):
        yield
        return
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_log.setLevel(level)


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database (None for an empty database)."""
    with _quiet_alembic(), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` with the shipped Alembic migrations.

    Concurrent callers are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory lock),
    so eight processes starting at once against an empty database all succeed."""
    before = _check_not_newer(engine)
    if before == head_revision() and revision == "head":
        return
    with _quiet_alembic(), write_engine(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": PG_LOCK_NAMESPACE})
        command.upgrade(alembic_config(conn), revision)
    after = current_revision(engine)
    if after != before:
        log.info("%s: schema migrated %s -> %s", describe(engine), before or "(empty)", after)


def _check_not_newer(engine: Engine) -> str | None:
    rev = current_revision(engine)
    if rev is not None and rev not in known_revisions():
        raise DatabaseError(
            f"{describe(engine)} has schema revision {rev!r}, newer than this code knows "
            f"(newest known: {head_revision()!r}).",
            "update this project's code (git pull; make setup), or point RLHF_DB_URL at another database.",
        )
    return rev


# --------------------------------------------------------------------------------------------
# connect()


def connect(url: str | None = None, *, upgrade: bool = True) -> Engine:
    """Open the feedback database and return an Engine.

    ``url`` defaults to ``RLHF_DB_URL`` (else ``sqlite:///data/feedback.sqlite``). With
    ``upgrade=True`` (the default) the schema is migrated to the newest revision; with
    ``upgrade=False`` a database that is not at the newest revision is an error telling the user
    to run ``python -m db upgrade``.
    """
    parsed, origin = resolve_url(url)
    where = describe(parsed)
    db_file = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if db_file is not None:
        path = Path(db_file)
        if path.is_dir():
            raise DatabaseError(
                f"{where} is a folder, not a database file.", f"{_fix(origin)} to a file path inside it."
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatabaseError(
                f"cannot create the folder {str(path.parent)!r} for {where} ({err.strerror}).",
                f"{_fix(origin)} to a writable location.",
            ) from None
    engine = make_engine(parsed)
    try:
        with _quiet_alembic(), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if upgrade:
            migrate(engine)
        else:
            rev = _check_not_newer(engine)
            if rev != head_revision():
                raise DatabaseError(
                    f"{where} is at schema revision {rev!r}, not the newest ({head_revision()!r}).",
                    "run `python -m db upgrade` (or connect with upgrade=True).",
                )
    except DatabaseError:
        engine.dispose()
        raise
    except sa_exc.DBAPIError as err:
        engine.dispose()
        raise _explain(err, parsed, origin) from None
    return engine


def _fix(origin: str) -> str:
    return "set RLHF_DB_URL" if origin == "RLHF_DB_URL" else "point the URL"


def _explain(err: sa_exc.DBAPIError, url: URL, origin: str) -> DatabaseError:
    where = describe(url)
    msg = str(err.orig or err).strip().splitlines()[0] if (err.orig or err) else ""
    low = msg.lower()
    if url.get_backend_name() == "sqlite":
        if "file is not a database" in low or "not a database" in low or "malformed" in low:
            return DatabaseError(
                f"{where} is not a SQLite database (or is damaged).",
                f"move that file away, or {_fix(origin)} to another file; a missing file is created.",
            )
        if "unable to open" in low or "readonly" in low or "read-only" in low:
            return DatabaseError(
                f"cannot open {where} ({msg}).", f"check its permissions, or {_fix(origin)} elsewhere."
            )
        if "locked" in low:
            return DatabaseError(f"{where} stayed locked ({msg}).", "stop the process holding it, then try again.")
        return DatabaseError(f"cannot use {where} ({msg}).", f"check the file, or {_fix(origin)} to another one.")
    if isinstance(err, sa_exc.OperationalError) and "does not exist" in low and "database" in low:
        return DatabaseError(
            f"the PostgreSQL server at {where} has no database {url.database!r} ({msg}).",
            f"create it (e.g. `createdb {url.database}` as a user allowed to), or {_fix(origin)}.",
        )
    if isinstance(err, sa_exc.OperationalError) and "password authentication failed" in low:
        return DatabaseError(
            f"the PostgreSQL server at {where} refused the login ({msg}).",
            f"check the user name and password in the URL, or {_fix(origin)}.",
        )
    if isinstance(err, sa_exc.OperationalError):
        return DatabaseError(
            f"cannot reach the PostgreSQL server at {where} ({msg}).",
            f"start the server / check host, port, user, password and database name, or {_fix(origin)}.",
        )
    return DatabaseError(f"cannot use the database at {where} ({msg}).", f"check the server, or {_fix(origin)}.")


# --------------------------------------------------------------------------------------------
# Writability: checked before a stage works, explained when a write fails anyway


def _current_where() -> str:
    """The database the environment names, for a message (password masked)."""
    try:
        return describe(resolve_url()[0])
    except UserError:
        return f"the database at {mask_password(os.environ.get('RLHF_DB_URL', '').strip())!r}"


def explain_write_error(err: BaseException, where: str | None = None) -> DatabaseError | None:
    """One line for a database error that escaped a stage (a read-only or full database, a lost
    server), or None when ``err`` is not one. Registered with :data:`common.errors.EXPLAINERS`,
    so every command's :func:`common.errors.cli_entry` shows it."""
    if not isinstance(err, sa_exc.DBAPIError):
        return None
    msg = str(err.orig or err).strip().splitlines()[0] if str(err.orig or err).strip() else type(err).__name__
    low = msg.lower()
    where = where or _current_where()
    if "readonly" in low or "read-only" in low or "read only" in low or "permission denied" in low:
        return DatabaseError(
            f"{where} refused a write ({mask_password(msg)}).",
            "make the database file and its folder writable (or give the user write rights), "
            "or set RLHF_DB_URL to a writable database.",
        )
    if "disk is full" in low or "no space" in low or "disk full" in low:
        return DatabaseError(
            f"the disk of {where} is full ({mask_password(msg)}).",
            "free some space on that disk (`python -m db clean-runs --yes` removes unfinished runs), "
            "or set RLHF_DB_URL to a database on another disk.",
        )
    if isinstance(err, sa_exc.OperationalError):
        return DatabaseError(
            f"{where} failed ({mask_password(msg)}).",
            "check the database (file, disk, server), then run the command again.",
        )
    return None


EXPLAINERS.append(explain_write_error)


def check_writable(engine: Engine, *, need_mb: float = 20.0, stage: str = "this stage") -> None:
    """Before a stage does any work: the database accepts a write (one rolled-back update) and, for
    SQLite, its folder takes new files (the journal) and has ``need_mb`` free. A
    :class:`DatabaseError` naming the database and the fix otherwise."""
    where = describe(engine)
    db_file = _sqlite_file(engine.url) if engine.url.get_backend_name() == "sqlite" else None
    if db_file is not None:
        try:
            check_writable_dirs([Path(db_file).parent], need_mb=need_mb, stage=stage)
        except UserError as err:
            raise DatabaseError(f"{where}: {err.problem}", err.fix) from None
    try:
        with _quiet_alembic(), write_engine(engine).connect() as conn:
            trans = conn.begin()
            try:
                conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            finally:
                trans.rollback()
    except sa_exc.DBAPIError as err:
        found = explain_write_error(err, where)
        raise (found or _explain(err, engine.url, "RLHF_DB_URL")) from None
