"""Streamlit glue shared by the pages: cached resources, the error page, sign-in and the page context."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

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
    mode: str = "local"  # runtime.sign_in_mode: "accounts", "shared-token" or "local"


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
    mode = runtime.sign_in_mode(db.accounts_enabled(engine), runtime.required_token())
    return replace(ctx, mode=mode)


def _safe_url(url: str) -> str:
    """The URL with any password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def client_address() -> str:
    """The browser's address as this server sees it (``local`` for this machine): the sign-in throttle
    counts failures per client. Behind a reverse proxy this is the proxy's address (docs/security.md)."""
    ip = st.context.ip_address
    return ip if isinstance(ip, str) and ip else "local"  # (headless tests get no address at all)


def sign_in(ctx: Context, name: str, secret: str | None) -> str | None:
    """Sign in; return an error message or None.

    Accounts mode: ``name`` and ``secret`` (the password) checked by :func:`db.sign_in` (throttled,
    audited). Shared-token mode: ``secret`` is the token (throttled per client and name like a
    password, audited), then the labeller is found or created by name. Local mode: the name alone."""
    import db

    try:
        check_database(ctx)
    except db.DatabaseGone as err:
        log.error("%s", err)
        return DB_GONE
    client = client_address()
    if ctx.mode == "accounts":
        result = db.sign_in(ctx.engine, name, secret, client=client)
        if not result.ok:
            return result.problem
        _signed_in(ctx, result.account.id, result.account.name)
        return None
    if ctx.mode == "shared-token":
        who = name.strip()[:64] if isinstance(name, str) else None
        wait = db.accounts.throttle_wait(ctx.engine, who or "", client)
        if wait > 0:
            db.audit(ctx.engine, "sign_in_throttled", actor=who, ok=False, client=client, detail="shared token")
            return f"Too many wrong access tokens from this computer. Wait {wait:.0f} s, then try again."
        if not runtime.token_ok(secret, runtime.required_token()):
            db.audit(ctx.engine, "sign_in_failed", actor=who, ok=False, client=client, detail="wrong access token")
            return "Wrong access token. Ask whoever runs this app for it."
    try:
        labeler_id = db.get_or_create_labeler(ctx.engine, name)
    except UserError as err:
        return f"That name cannot be used: {err.problem} Please {err.fix}" if err.fix else str(err)
    shown = db.validate_labeler_name(name)
    if ctx.mode == "shared-token":
        db.audit(ctx.engine, "sign_in", actor=shown, actor_id=labeler_id, client=client, detail="shared token")
    _signed_in(ctx, labeler_id, shown)
    return None


def _signed_in(ctx: Context, labeler_id: int, name: str, *, resumed: str | None = None, via: str | None = None) -> None:
    state = st.session_state
    state.labeler_id = labeler_id
    state.labeler_name = name
    state.signed_in_mode = ctx.mode
    state.signed_in_via = via
    state.token_ok = True
    st.query_params[runtime.LABELER_PARAM] = name  # the name only (not a secret): the form is filled after a reload
    scope = _cookie_scope(ctx)
    if scope is None or via == IDENTITY:  # Streamlit's own identity cookie brings that sign-in back after a reload
        return
    if resumed is not None:  # signed in by the browser's cookie: that session goes on
        state.auth_session = resumed
        return
    import db

    try:
        session, claim = db.open_session(
            ctx.engine, labeler_id, client=client_address(), ttl_s=ctx.cfg.session_hours * 3600, scope=scope
        )
    except Exception as err:  # the sign-in stands; only a reload will ask again
        log.warning("could not open a saved session for labeller %s: %s", labeler_id, type(err).__name__)
        return
    state.auth_session = session
    state.browser_session = ("claim", claim, time.time() + db.sessions.CLAIM_TTL.total_seconds())


#: Shown on the sign-in form when the browser's saved session cookie does not resolve.
SESSION_REFUSED = (
    "Your saved session is not valid here (signed out, expired, or from another server): please sign in again."
)


def _cookie_scope(ctx: Context) -> str | None:
    """The scope of saved sessions in this mode (``runtime.session_scope``), or None when there are none:
    local mode, or no cookie routes (``streamlit run app.py``, AppTest)."""
    if ctx.mode == "local" or not runtime.session_cookies_enabled():
        return None
    return runtime.session_scope(ctx.mode, runtime.required_token())


def browser_cookies() -> dict[str, str]:
    """The cookies the browser sent when this tab connected (``st.context.cookies``, read-only)."""
    try:
        return dict(st.context.cookies)
    except Exception:  # no browser behind this run
        return {}


def _resume_from_cookie(ctx: Context) -> bool:
    """Sign the browser's saved session back in, once per tab connection (the cookies Streamlit shows are
    the connection's: after a sign-out in this tab they are stale). A cookie that does not resolve is
    refused with one line on the form and one ``session_refused`` audit row, and the browser drops it."""
    import db

    state = st.session_state
    scope = _cookie_scope(ctx)
    if scope is None or state.get("cookie_tried"):
        return False
    state.cookie_tried = True
    session = browser_cookies().get(runtime.session_cookie_name(ctx.url))
    if not session:
        return False
    client = client_address()
    account = db.resolve_session(ctx.engine, session, scope=scope)
    if account is None:
        db.audit(ctx.engine, "session_refused", ok=False, client=client, detail=runtime.MODE_NAMES[ctx.mode])
        state.sign_in_problem = SESSION_REFUSED
        state.browser_session = ("clear", "", time.time() + 60)
        return False
    db.audit(ctx.engine, "sign_in", actor=account.name, actor_id=account.id, client=client, detail="session")
    _signed_in(ctx, account.id, account.name, resumed=session)
    return True


def browser_session_script() -> None:
    """Hand the pending claim code to the browser (after a sign-in), or ask it to drop the cookie (after a
    sign-out or a refused cookie), for up to a minute. The script only posts to this server's own route
    (``labeling_app/server.py``): the claim code is the one secret it carries, never the token."""
    pending = st.session_state.get("browser_session")
    if not pending:
        return
    what, code, until = pending
    if time.time() > until:
        st.session_state.pop("browser_session", None)
        return
    _post_from_browser(runtime.CLAIM_ROUTE if what == "claim" else runtime.CLEAR_ROUTE, code)


def _post_from_browser(route: str, body: str) -> None:
    """A zero-height component whose script POSTs ``body`` to ``route``, same-origin (Streamlit's srcdoc
    iframe is sandboxed with ``allow-same-origin``). Only our two routes and a URL-safe code get in."""
    import json
    import re

    import streamlit.components.v1 as components

    if route not in (runtime.CLAIM_ROUTE, runtime.CLEAR_ROUTE) or not re.fullmatch(r"[A-Za-z0-9_-]{0,64}", body):
        raise ValueError("only a session route and a URL-safe code may be posted")
    js = f"fetch({json.dumps(route)}, {{method: 'POST', body: {json.dumps(body)}, credentials: 'same-origin'}});"
    components.html(f"<script>{js}</script>", height=0)


#: The detail of the audit rows of identity-provider sign-ins (refusals: ``identity provider: <why>``).
IDENTITY = "identity provider"


def identity_provider_problem(ctx: Context) -> str | None:
    """Why this app's identity provider cannot sign anyone in, in one line (None: it can, or it is off)."""
    if not ctx.cfg.identity_provider:
        return None
    try:
        runtime.check_identity_provider(ctx.cfg.identity_provider)
    except UserError as err:
        return str(err)
    return None


def provider_identity() -> dict:
    """``st.user`` as a plain dict while someone is signed in with the identity provider, else ``{}``."""
    user = st.user.to_dict()
    return dict(user) if user.get("is_logged_in") is True else {}


def sign_in_with_identity(ctx: Context, identity: dict) -> str | None:
    """Sign in the account whose name is the identity's ``label.identity_claim`` (its whole value, compared
    as names are: NFKC, ignoring case); return the refusal to show, or None. Only an existing, enabled
    account with a password (as the command line makes them) is signed in, never created; either way one
    audit row: ``sign_in`` (detail ``identity provider``) or ``sign_in_failed`` (``identity provider: <why>``)."""
    import db

    try:
        check_database(ctx)
    except db.DatabaseGone as err:
        log.error("%s", err)
        return DB_GONE
    claim = ctx.cfg.identity_claim
    value = identity.get(claim)
    value = value.strip() if isinstance(value, str) else ""
    key = db.labeler_name_key(value) if value else None
    account = next((a for a in db.list_accounts(ctx.engine) if db.labeler_name_key(a.name) == key), None)
    if identity.get("provider", ctx.cfg.identity_provider) != ctx.cfg.identity_provider:
        why, problem = "another provider", "You are signed in with another identity provider than this app's."
    elif not value:
        why, problem = f"no {claim} claim", f"Your identity provider did not give this app your {claim}."
    elif claim == "email" and identity.get("email_verified") in (False, "false"):
        why, problem = "email not verified", f"Your identity provider has not verified {value}."
    elif account is None:
        why, problem = "unknown account", f"There is no account called {value} here: ask an admin to make one."
    elif account.disabled_at is not None:
        why, problem = "account disabled", "This account is disabled. Ask an admin if you should still have access."
    elif not account.has_password:
        why, problem = "no password set", f"{account.name} is not an account yet: ask an admin to make it one."
    else:
        db.audit(
            ctx.engine, "sign_in", actor=account.name, actor_id=account.id, client=client_address(), detail=IDENTITY
        )
        _signed_in(ctx, account.id, account.name, via=IDENTITY)
        return None
    actor = account.name if account is not None else value or None
    db.audit(
        ctx.engine,
        "sign_in_failed",
        actor=actor,
        actor_id=account.id if account is not None else None,
        ok=False,
        client=client_address(),
        detail=f"{IDENTITY}: {why}",
    )
    return problem


def _sign_in_from_identity(ctx: Context) -> bool:
    """In accounts mode with ``label.identity_provider`` on and set up, sign in the account ``st.user`` names
    (:func:`sign_in_with_identity`), once per identity and tab: a refusal stays in ``identity_refused`` for
    the sign-in page, and its audit row is written once. Otherwise ``st.user`` is not even read."""
    state = st.session_state
    if ctx.mode != "accounts" or not ctx.cfg.identity_provider or identity_provider_problem(ctx) is not None:
        return False
    identity = provider_identity()
    tried = repr((identity.get("provider"), identity.get(ctx.cfg.identity_claim)))
    if not identity or state.get("identity_tried") == tried:
        return False
    state.identity_tried = tried
    problem = sign_in_with_identity(ctx, identity)
    if problem:
        state.identity_refused = problem
        return False
    state.pop("identity_refused", None)
    return True


def identity_sign_out() -> None:
    """End the identity provider's sign-in in this browser (``st.logout``: Streamlit drops its cookie)."""
    for name in ("identity_tried", "identity_refused"):
        st.session_state.pop(name, None)
    st.logout()


def try_resume_sign_in(ctx: Context) -> bool:
    """Whether this run is signed in. A signed-in session stays so while its mode holds and, in accounts
    mode, while its account is active (re-read from the database on every run: a disabled account is
    out at its next click). After a reload, local mode signs the remembered name back in; the other modes
    resume the browser's saved session (its HttpOnly cookie, ``labeling_app/server.py``); accounts mode with
    ``label.identity_provider`` then signs in the account ``st.user`` names (:func:`sign_in_with_identity`);
    else ask again."""
    import db

    state = st.session_state
    if state.get("labeler_id") is not None:
        if state.get("signed_in_mode", "local") != ctx.mode:  # e.g. the first account was made meanwhile
            sign_out(ctx, audit=False)
            state.sign_in_problem = f"This app now runs in {runtime.MODE_NAMES[ctx.mode]}: please sign in again."
            return False
        if ctx.mode == "accounts":
            account = db.get_account(ctx.engine, state.labeler_id)
            if account is None or not account.active:
                sign_out(ctx, audit=False)
                state.sign_in_problem = "Your account was disabled (or its password reset): you were signed out."
                return False
        return True
    if _resume_from_cookie(ctx) or _sign_in_from_identity(ctx):
        return True
    name = st.query_params.get(runtime.LABELER_PARAM)
    if not name or ctx.mode != "local":
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


#: The Compare page's keys in session state (labeling_app/views/compare.py), forgotten on sign-out.
PAIR_STATE = (
    "pair",
    "pair_left",
    "pair_shown_at",
    "pair_undo",
    "pair_comeback",
    "pair_last_action",
    "pair_flash",
    "pair_flash_before",
    "pair_notice",
    "pair_gate",
    "pair_session_count",
    "pair_owner",
    "pair_page_loaded",
)


def release_pair(ctx: Context) -> None:
    """Give back the comparison this tab holds (the labeller left the Compare page, or signed out), so
    it is free for others at once instead of when its lease runs out; it comes back first on return."""
    import db

    state = st.session_state
    key, pair = state.get("session_key"), state.get("pair")
    if ctx.labeler_id is None or not key or pair is None:
        return
    try:
        check_database(ctx)
        db.release_pair_leases(ctx.engine, ctx.labeler_id, key)
    except Exception as err:  # the lease runs out by itself; never break navigation for it
        log.warning("could not release the pair lease of labeller %s: %s", ctx.labeler_id, err)
        return
    state.pair = None
    state.setdefault("pair_comeback", []).insert(0, pair.comparison_id)


def is_admin(ctx: Context) -> bool:
    """Whether the signed-in person may use the admin pages and actions (Data, queue, guidelines editor).

    In accounts mode: the account's role as stored now (read on every call, so a demoted or disabled
    admin loses access at the next click). In local and shared-token mode everyone may, as before
    accounts existed: that is what "one trusted room" means."""
    if ctx.mode != "accounts":
        return True
    if ctx.labeler_id is None:
        return False
    import db

    account = db.get_account(ctx.engine, ctx.labeler_id)
    return account is not None and account.active and account.role == "admin"


def role_caption(ctx: Context) -> str:
    """The sidebar's line under the name: the role in accounts mode, else the mode."""
    if ctx.mode == "accounts":
        return "admin" if is_admin(ctx) else "labeller"
    return runtime.MODE_NAMES[ctx.mode]


def admin_action(ctx: Context, what: str) -> bool:
    """Check, on the server, that this person may do ``what`` now; when not, show why, write one
    ``refused`` audit row and return False. Called at the top of every admin page and before each action."""
    if is_admin(ctx):
        return True
    import db

    db.audit(
        ctx.engine,
        "refused",
        actor=ctx.labeler_name,
        actor_id=ctx.labeler_id,
        ok=False,
        target=what[:200],
        client=client_address(),
        detail="admin only",
    )
    log.warning("refused %s to %s: admins only", what, ctx.labeler_name)
    st.error(f"Only an admin may use {what}. Your account is a labeller account.", icon=":material/block:")
    return False


def require_admin(ctx: Context, what: str) -> None:
    """:func:`admin_action`, stopping the page when refused."""
    if not admin_action(ctx, what):
        st.stop()


def sign_out(ctx: Context, *, audit: bool = True) -> None:
    """Forget the labeller in this tab and give back the item this tab holds. A sign-out asked for
    (``audit``) of an account signed in by the identity provider ends that sign-in too (``st.logout``);
    one forced by a disabled account keeps it, so the sign-in page can say why."""
    import db

    if audit and ctx.labeler_id is not None and ctx.mode != "local":
        try:
            db.audit(ctx.engine, "sign_out", actor=ctx.labeler_name, actor_id=ctx.labeler_id, client=client_address())
        except Exception as err:  # signing out must work even when the database does not
            log.warning("could not record the sign-out of %s: %s", ctx.labeler_name, err)
    key = st.session_state.get("session_key")
    if ctx.labeler_id is not None and key:
        try:
            check_database(ctx)
            db.release_leases(ctx.engine, ctx.labeler_id, key)
            db.release_pair_leases(ctx.engine, ctx.labeler_id, key)
        except Exception as err:  # the lease runs out by itself
            log.warning("could not release the lease of labeller %s: %s", ctx.labeler_id, err)
        get_shown_times().forget(ctx.labeler_id, key)
    via = st.session_state.get("signed_in_via")
    session = st.session_state.pop("auth_session", None)
    if session:  # revoked in the database at once (a copied cookie is useless), and the browser drops it
        try:
            db.revoke_session(ctx.engine, session)
        except Exception as err:
            log.warning("could not revoke the saved session of %s: %s", ctx.labeler_name, type(err).__name__)
        st.session_state.browser_session = ("clear", "", time.time() + 60)
    for name in (
        "labeler_id",
        "labeler_name",
        "signed_in_mode",
        "signed_in_via",
        "identity_tried",
        "identity_refused",
        "export_file",
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
        *PAIR_STATE,
    ):
        st.session_state.pop(name, None)
    st.query_params.clear()
    if audit and via == IDENTITY:
        st.logout()


def context() -> Context:
    """The page context stored by ``app.py`` for this run."""
    return st.session_state["_ctx"]
