"""Streamlit glue shared by the pages: cached resources, the error page, sign-in and the page context."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from common.errors import UserError
from labeling_app import runtime
from labeling_app.config import LabelConfig


@dataclass(frozen=True)
class Context:
    """Everything a page needs, built once per script run."""

    engine: object
    cfg: LabelConfig
    url: str
    labeler_id: int | None = None
    labeler_name: str | None = None


@st.cache_resource(show_spinner=False)
def get_engine(url: str):
    """One engine per database URL for the whole app process (creates a missing SQLite db)."""
    import db

    return db.connect(url)


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


def error_page(title: str, message: str) -> None:
    """Show one clear error (no traceback) and stop the run."""
    st.title(title)
    st.error(message, icon="⚠️")
    st.stop()


def bootstrap() -> Context:
    """Config and engine, or an error page that names the problem (and the URL) and the fix."""
    from common.paths import db_url

    try:
        cfg = load_label_config()
    except UserError as err:
        error_page("Configuration error", str(err))
    try:
        url = db_url()
    except UserError as err:
        error_page("Database error", str(err))
    try:
        engine = get_engine(url)
    except UserError as err:
        error_page("Database error", f"Cannot open the database at {_safe_url(url)}: {err}")
    except Exception as err:  # an unexpected driver error still gets a page, not a traceback
        error_page("Database error", f"Cannot open the database at {_safe_url(url)}: {type(err).__name__}: {err}")
    state = st.session_state
    return Context(
        engine=engine, cfg=cfg, url=url, labeler_id=state.get("labeler_id"), labeler_name=state.get("labeler_name")
    )


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
        return "Wrong access token. Ask whoever runs this app for the token in RLHF_LABEL_TOKEN."
    import db

    try:
        labeler_id = db.get_or_create_labeler(ctx.engine, name)
    except UserError as err:
        return str(err)
    st.session_state.labeler_id = labeler_id
    st.session_state.labeler_name = name.strip()
    st.session_state.token_ok = True
    st.query_params[runtime.LABELER_PARAM] = name.strip()
    return None


def try_resume_sign_in(ctx: Context) -> bool:
    """After a reload: sign the remembered labeller back in when no token is required."""
    if st.session_state.get("labeler_id") is not None:
        return True
    name = st.query_params.get(runtime.LABELER_PARAM)
    if not name or runtime.required_token() is not None:
        return False
    return sign_in(ctx, name, None) is None


def sign_out(ctx: Context) -> None:
    """Forget the labeller in this tab and give back the item this tab holds."""
    import db

    key = st.session_state.get("session_key")
    if ctx.labeler_id is not None and key:
        db.release_leases(ctx.engine, ctx.labeler_id, key)
    for name in ("labeler_id", "labeler_name", "token_ok", "item", "undo_stack", "counts", "session_key", "flash"):
        st.session_state.pop(name, None)
    st.query_params.clear()


def context() -> Context:
    """The page context stored by ``app.py`` for this run."""
    return st.session_state["_ctx"]
