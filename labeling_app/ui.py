"""Streamlit glue shared by the pages: cached resources, the error page, sign-in and the page context."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import streamlit as st

from common.errors import UserError
from labeling_app import runtime
from labeling_app.config import LabelConfig

log = logging.getLogger(__name__)

# Said to labellers when the database file went away; the operator's fix goes to the page's
# "for whoever runs this app" line and to the server log.
DB_GONE = (
    "The database this app saves to has gone missing, so nothing more can be saved. "
    "The judgements you made before this were saved. Please stop here and tell whoever runs this app."
)


@dataclass(frozen=True)
class Context:
    """Everything a page needs, built once per script run."""

    engine: object
    cfg: LabelConfig
    url: str
    db_file_id: tuple[int, int] | None = None  # (device, inode) of the SQLite file opened (None: PostgreSQL)
    labeler_id: int | None = None
    labeler_name: str | None = None


# Said to labellers when the app cannot start (bad profile, database that cannot be opened); the
# details go to the "for whoever runs this app" line and to the server log.
CANNOT_START = "Labelling cannot start right now. Please tell whoever runs this app; nothing you did caused this."


@st.cache_resource(show_spinner=False)
def get_engine(url: str):
    """One engine per database URL for the whole app process, and the identity (device, inode) of
    the SQLite file it opened, checked before every write. A missing SQLite file is created only
    at the default path (``runtime.check_database_may_be_created``); any other missing database
    is refused, so a deleted or mistyped database is never silently replaced by an empty one."""
    import db

    created = runtime.check_database_may_be_created(url)
    engine = db.connect(url)
    if created is not None:
        log.warning("created a new, empty database at %s", created)
    return engine, db.database_file_id(engine)


@st.cache_resource(show_spinner=False)
def get_shown_times() -> runtime.ShownTimes:
    """When each session's item was first shown, kept across reloads of a tab (one per app process)."""
    return runtime.ShownTimes()


def check_database(ctx: Context) -> None:
    """Raise ``db.DatabaseGone`` when the SQLite file opened is no longer the one at its path."""
    import db

    db.check_database_file(ctx.engine, ctx.db_file_id)


def database_gone_page(err: Exception) -> None:
    """The labeller's plain message, the operator's recovery, and a stop."""
    log.error("%s", err)
    st.error(DB_GONE, icon="⚠️")
    st.caption(f"For whoever runs this app: {getattr(err, 'fix', '') or err}")
    st.stop()


@st.cache_resource(show_spinner=False)
def get_refiller(url: str) -> runtime.Refiller:
    """The refill guard for one database: one background refill at a time, whatever the sessions."""
    return runtime.Refiller()


@st.cache_resource(show_spinner=False)
def _load_config(profile: str, mtime: float) -> LabelConfig:
    from common.config import load_config

    return load_config(LabelConfig, "label", profile=profile)


def load_label_config() -> LabelConfig:
    """The ``label`` section of the profile, re-read when the file changes."""
    from common.paths import profile_path

    path = profile_path()
    mtime = path.stat().st_mtime if path.is_file() else 0.0
    return _load_config(str(path), mtime)


def error_page(title: str, message: str, operator: str | None = None) -> None:
    """Show one clear error (no traceback) and stop the run; ``operator`` (the technical detail and
    the fix) goes to the server log and to a "for whoever runs this app" line."""
    st.title(title)
    st.error(message, icon="⚠️")
    if operator:
        log.error("%s", operator)
        st.caption(f"For whoever runs this app: {operator}")
    st.stop()


def bootstrap() -> Context:
    """Config and engine, or an error page that names the problem (and the URL) and the fix."""
    from common.paths import db_url

    try:
        cfg = load_label_config()
    except UserError as err:
        error_page("Configuration error", CANNOT_START, f"the profile's label section: {err}")
    try:
        url = db_url()
    except UserError as err:
        error_page("Database error", CANNOT_START, str(err))
    try:
        engine, file_id = get_engine(url)
    except UserError as err:
        error_page("Database error", CANNOT_START, f"cannot open the database at {_safe_url(url)}: {err}")
    except Exception as err:  # an unexpected driver error still gets a page, not a traceback
        log.exception("cannot open the database at %s", _safe_url(url))
        error_page(
            "Database error",
            CANNOT_START,
            f"cannot open the database at {_safe_url(url)}: {type(err).__name__}: {err}",
        )
    state = st.session_state
    ctx = Context(
        engine=engine,
        cfg=cfg,
        url=url,
        db_file_id=file_id,
        labeler_id=state.get("labeler_id"),
        labeler_name=state.get("labeler_name"),
    )
    import db

    try:
        check_database(ctx)
    except db.DatabaseGone as err:
        st.title("The database is gone")
        database_gone_page(err)
    return ctx


def _safe_url(url: str) -> str:
    """The URL with any password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def sign_in(ctx: Context, name: str, token: str | None) -> str | None:
    """Check the token, then create or find the labeller; return an error message or None."""
    expected = runtime.required_token()
    if not runtime.token_ok(token, expected):
        return "Wrong access token. Ask whoever runs this app for it."
    import db

    try:
        check_database(ctx)
        labeler_id = db.get_or_create_labeler(ctx.engine, name)
    except db.DatabaseGone as err:
        log.error("%s", err)
        return DB_GONE
    except UserError as err:
        return f"That name cannot be used: {err.problem} Please {err.fix}" if err.fix else str(err)
    shown = db.validate_labeler_name(name)
    st.session_state.labeler_id = labeler_id
    st.session_state.labeler_name = shown
    st.session_state.token_ok = True
    st.query_params[runtime.LABELER_PARAM] = shown
    return None


def try_resume_sign_in(ctx: Context) -> bool:
    """After a reload: sign the remembered labeller back in when no token is required."""
    if st.session_state.get("labeler_id") is not None:
        return True
    name = st.query_params.get(runtime.LABELER_PARAM)
    if not name or runtime.required_token() is not None:
        return False
    problem = sign_in(ctx, name, None)
    if problem:  # shown on the sign-in form: a refused name in the URL is never silent
        st.session_state.sign_in_problem = problem
        return False
    return True


def release_item(ctx: Context, *, keep_in_line: bool = True) -> None:
    """Give back the item this tab holds (the labeller moved to another page, or signed out), so it
    is free for others at once instead of when its lease runs out. With ``keep_in_line`` it comes
    back first when this tab returns to labelling, if nobody took it meanwhile."""
    import db

    state = st.session_state
    key = state.get("session_key")
    item = state.get("item")
    if ctx.labeler_id is None or not key or item is None:
        return
    try:
        check_database(ctx)
        db.release_leases(ctx.engine, ctx.labeler_id, key)
    except Exception as err:  # the lease runs out by itself; never break navigation for it
        log.warning("could not release the lease of labeller %s: %s", ctx.labeler_id, err)
        return
    state.item = None
    get_shown_times().forget(ctx.labeler_id, key)
    if keep_in_line:
        state.setdefault("comeback", []).insert(0, item.completion_id)


def sign_out(ctx: Context) -> None:
    """Forget the labeller in this tab and give back the item this tab holds."""
    import db

    key = st.session_state.get("session_key")
    if ctx.labeler_id is not None and key:
        try:
            check_database(ctx)
            db.release_leases(ctx.engine, ctx.labeler_id, key)
        except Exception as err:  # the lease runs out by itself
            log.warning("could not release the lease of labeller %s: %s", ctx.labeler_id, err)
        get_shown_times().forget(ctx.labeler_id, key)
    for name in (
        "labeler_id",
        "labeler_name",
        "token_ok",
        "item",
        "undo_stack",
        "counts",
        "session_key",
        "flash",
        "gate",
        "comeback",
        "last_action",
        "session_count",
        "notice",
        "flash_before",
        "shown_at",
    ):
        st.session_state.pop(name, None)
    st.query_params.clear()


def context() -> Context:
    """The page context stored by ``app.py`` for this run."""
    return st.session_state["_ctx"]
