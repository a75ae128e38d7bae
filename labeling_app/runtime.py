"""What the pages share: the engine, the config, the signed-in labeller and the background refill.

Streamlit-facing but free of SQL: every read and write goes through ``db``. The pure parts
(token check, policy choice, the refill guard) are plain functions and classes, tested alone.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UserError
from labeling_app.config import LabelConfig

log = logging.getLogger(__name__)

TOKEN_ENV = "RLHF_LABEL_TOKEN"
SESSION_PARAM = "s"  # query parameter holding this tab's session key (a reload resumes it)
LABELER_PARAM = "u"  # query parameter remembering the labeller's name across reloads


# ---------------------------------------------------------------------------- pure helpers


def required_token() -> str | None:
    """The access token labellers must enter, or None when the app is open (no ``RLHF_LABEL_TOKEN``)."""
    token = os.environ.get(TOKEN_ENV, "")
    return token or None


def token_ok(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison of the entered token with the configured one."""
    if expected is None:
        return True
    return hmac.compare_digest((given or "").encode("utf-8"), expected.encode("utf-8"))


#: How the app lets people in (``sign_in_mode``), as docs/security.md names them.
MODE_NAMES = {
    "accounts": "accounts mode",
    "shared-token": "shared-token mode (one trusted room)",
    "local": "local mode (one person on this machine)",
}
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def sign_in_mode(accounts: bool, token: str | None) -> str:
    """``accounts`` when the database has an account with a password (name + password, roles), else
    ``shared-token`` when ``RLHF_LABEL_TOKEN`` is set (any name, one shared secret), else ``local``."""
    if accounts:
        return "accounts"
    return "shared-token" if token else "local"


def check_serving(address: str, mode: str, *, insecure_open: bool) -> str | None:
    """Refuse to serve the network without accounts (a :class:`UserError`); returns the warning to print
    when ``insecure_open`` lets it start anyway, else None."""
    if address in LOCAL_ADDRESSES or mode == "accounts":
        return None
    if not insecure_open:
        raise UserError(
            f"--address {address} would serve the labelling app to the network in {MODE_NAMES[mode]}, "
            "where nothing tells people apart.",
            "create accounts first (python -m db users add NAME --role admin; see docs/security.md), or, for one "
            "trusted room, set RLHF_LABEL_TOKEN and add --insecure-open.",
        )
    if mode == "shared-token":
        return (
            f"warning: serving on {address} in {MODE_NAMES[mode]}: whoever has the token can label under any name, "
            "export and import. Use accounts beyond one trusted room (see docs/security.md)."
        )
    return (
        f"warning: serving on {address} without accounts or RLHF_LABEL_TOKEN (--insecure-open): anyone who can "
        "reach this port can label, export and import (see docs/security.md)."
    )


#: What ``st.login`` needs (Streamlit 1.67 checks it with ``streamlit.auth_util.is_authlib_installed``).
AUTHLIB = "Authlib>=1.3.2"
AUTH_KEYS = ("redirect_uri", "cookie_secret")  # in [auth] itself, whichever the provider
PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")  # in [auth] ('default') or [auth.NAME]


def identity_provider_missing(provider: str, auth: Mapping[str, Any], *, authlib: bool) -> list[str]:
    """What ``st.login(provider)`` lacks here (empty: nothing), given the ``[auth]`` section of Streamlit's
    secrets (``{}`` when absent) and whether Authlib is installed: the keys Streamlit's
    ``validate_auth_credentials`` asks for, the ``default`` provider's in ``[auth]`` itself."""
    missing = [] if authlib else [f"the {AUTHLIB} package is not installed"]
    if not auth:
        return [*missing, "`.streamlit/secrets.toml` has no [auth] section"]
    keys = [f"[auth] {key}" for key in AUTH_KEYS if key not in auth]
    section = auth.get(provider)
    if section is None and provider == "default":
        section = auth
    if not isinstance(section, Mapping):
        keys.append(f"the [auth.{provider}] section")
    else:
        where = "[auth]" if section is auth else f"[auth.{provider}]"
        keys += [f"{where} {key}" for key in PROVIDER_KEYS if key not in section]
    if keys:
        missing.append(f"`.streamlit/secrets.toml` lacks {', '.join(keys)}")
    return missing


def auth_secrets() -> Mapping[str, Any]:
    """The ``[auth]`` section of Streamlit's secrets (``st.secrets``: ``.streamlit/secrets.toml`` in the folder
    the app is started from, or ``~/.streamlit/``), ``{}`` when there is none."""
    import streamlit as st

    if not st.secrets.load_if_toml_exists():
        return {}
    section = st.secrets.get("auth")
    return section if isinstance(section, Mapping) else {}


def authlib_installed() -> bool:
    """Whether ``st.login`` would find Authlib (Streamlit's own check)."""
    from streamlit.auth_util import is_authlib_installed

    return is_authlib_installed()


def check_identity_provider(provider: str) -> None:
    """Raise a one-line :class:`UserError` naming every missing prerequisite of ``label.identity_provider``
    (checked at start-up and on the sign-in page)."""
    missing = identity_provider_missing(provider, auth_secrets(), authlib=authlib_installed())
    if missing:
        raise UserError(
            f"label.identity_provider is {provider!r}, but {' and '.join(missing)}.",
            f"pip install '{AUTHLIB}' and fill in [auth] (docs/security.md), or set label.identity_provider: ''.",
        )


def provider_label(provider: str) -> str:
    """How the sign-in button names the provider: ``Sign in with <this>``."""
    return "your identity provider" if provider == "default" else provider[:1].upper() + provider[1:]


#: Set by ``labeling_app/server.py``: the session cookie routes exist (absent under ``streamlit run app.py``
#: and AppTest, where a reload asks for the password again, as before).
SESSION_COOKIES_ENV = "RLHF_SESSION_COOKIES"
CLAIM_ROUTE = "/_rlhf/session/claim"  # POST the claim code: answers with the HttpOnly session cookie
CLEAR_ROUTE = "/_rlhf/session/clear"  # POST: expires it


def session_cookies_enabled() -> bool:
    """Whether this process serves the session cookie routes (``python -m labeling_app`` does)."""
    return os.environ.get(SESSION_COOKIES_ENV) == "1"


def session_cookie_name(url: str) -> str:
    """The session cookie's name for the database at ``url``: ``rlhf_session_`` and 8 hex characters of
    the SHA-256 of the database (a SQLite file's absolute path; other URLs without their password), so
    two apps on one host (cookies ignore the port) keep their cookies apart."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url.strip())
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            where = str(Path(parsed.database).expanduser().resolve())
        else:
            where = parsed.render_as_string(hide_password=True)
    except Exception:  # an unparseable URL never reaches the app (db.connect refuses it); any stable name will do
        where = url
    return "rlhf_session_" + hashlib.sha256(where.encode("utf-8")).hexdigest()[:8]


@functools.lru_cache(maxsize=4)
def _token_fingerprint(token: str) -> str:
    # slow on purpose (PBKDF2, 200k rounds, about 0.1 s once per process): the database holds this, not the token
    return hashlib.pbkdf2_hmac("sha256", token.encode("utf-8"), b"rlhf-shared-token-scope", 200_000).hex()[:16]


def session_scope(mode: str, token: str | None) -> str:
    """What a saved session is bound to (``db.open_session``'s ``scope``): ``accounts`` in accounts mode;
    in shared-token mode a fingerprint of the token, so a new ``RLHF_LABEL_TOKEN`` ends the old sessions."""
    if mode == "accounts" or not token:
        return "accounts" if mode == "accounts" else mode
    return f"shared-token:{_token_fingerprint(token)}"


def new_session_key() -> str:
    """A random key for one browser tab (its lease in the queue)."""
    return uuid.uuid4().hex[:16]


def valid_session_key(key: object) -> bool:
    return isinstance(key, str) and 8 <= len(key) <= 64 and key.isalnum()


def is_default_database(path: Path) -> bool:
    """Whether ``path`` is the default SQLite file (``data/feedback.sqlite`` under the working directory)."""
    from sqlalchemy.engine import make_url

    from common.paths import DEFAULT_DB_URL

    return Path(path).resolve() == Path(make_url(DEFAULT_DB_URL).database).resolve()


def check_database_may_be_created(url: str, *, create: bool = False) -> Path | None:
    """Before opening ``url``: the SQLite file that opening it will create, or None when it exists (or
    the URL is PostgreSQL). A missing file is created only at the default path (so ``make label``
    works on a fresh clone) or with ``create`` (``python -m labeling_app --create-db``); any other
    missing database is a :class:`UserError`, because a database that was deleted, moved or mistyped
    must never be silently replaced by an empty one."""
    import db

    missing = db.missing_database_file(url)
    if missing is None or create or is_default_database(missing):
        return missing
    raise UserError(
        f"the database file {str(missing)!r} (from RLHF_DB_URL) does not exist.",
        "check the path, or put the file back if it was moved; to start a new, empty database there run "
        "`python -m db upgrade` first, or start the app with `python -m labeling_app --create-db`.",
    )


def save_guidelines(path: Path, text: str) -> None:
    """Replace the guidelines file with ``text`` atomically (a temporary file beside it, then a rename),
    so readers see the old file or the new one, never half of it."""
    if not isinstance(text, str) or not text.strip():
        raise UserError("the guidelines are empty.", "write what good and bad mean before saving.")
    if "\x00" in text:
        raise UserError("the guidelines contain a NUL character.", "remove it.")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({err.strerror}).", "check that the app may write that file.") from None


#: ``label.policy`` value: refill from the newest policy registered in the database.
NEWEST_REGISTERED = "newest_registered"


def refill_policy(engine, policy: str) -> Path | None:
    """The policy folder used for refills, or None when there is none yet.

    ``newest_registered`` = the newest policy registered in the database whose folder exists, else
    the newest PPO policy, else the base policy. Any other value (``base``, ``latest`` = the newest
    PPO policy, a folder) means what it means everywhere: :func:`base_policy.loading.resolve_policy`."""
    import db
    from common.paths import base_policy_dir, policies_dir, resolve_latest

    if policy != NEWEST_REGISTERED:
        from base_policy.loading import resolve_policy

        try:
            path = Path(resolve_policy(policy))
        except UserError:  # "latest" before the first PPO run
            return None
        return path if path.is_dir() else None
    newest = db.latest_model_version(engine, "policy")
    if newest is not None and Path(newest.path).is_dir():
        return Path(newest.path)
    ppo = resolve_latest(policies_dir())
    if ppo is not None:
        return ppo
    base = base_policy_dir()
    return base if (base / "config.json").is_file() else None


def heartbeat_seconds(lease_seconds: float) -> float:
    """How often the page renews the lease on the item on screen: three times per lease."""
    return max(1.0, lease_seconds / 3)


# ---------------------------------------------------------------------------- when an item was first shown


@dataclass
class ShownTimes:
    """When each browser session's item was first shown, across reloads of the tab (one app process).

    A reload starts a new Streamlit session that resumes the same leased item; the key gate's dwell
    time and the seconds stored with the judgement count from when the item was first drawn for that
    session, so the first key after a reload of an item the labeller has been reading is not refused
    as too quick. Keeps the newest item per (labeller, session key), at most ``max_sessions``."""

    max_sessions: int = 10_000
    _shown: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shown(self, labeler_id: int, session_key: str, completion_id: int, now: float, *, fresh: bool = False) -> float:
        """When ``completion_id`` was first shown to (labeller, session): ``now`` unless it is the item
        that session was already showing (and not ``fresh``, as for an item shown again after an undo)."""
        key = (labeler_id, session_key)
        with self._lock:
            before = self._shown.pop(key, None)
            if before is not None and before[0] == completion_id and not fresh:
                since = before[1]
            else:
                since = now
            self._shown[key] = (completion_id, since)  # (re)inserted last: the dict is oldest first
            while len(self._shown) > self.max_sessions:
                self._shown.pop(next(iter(self._shown)))
            return since

    def forget(self, labeler_id: int, session_key: str) -> None:
        with self._lock:
            self._shown.pop((labeler_id, session_key), None)


# ---------------------------------------------------------------------------- background refill


@dataclass
class RefillStatus:
    running: bool = False
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    added_total: int = 0
    last_error: str | None = None


@dataclass
class Refiller:
    """At most one background refill per app process: ``start`` returns False while one runs.

    The work itself (``job``) runs in a daemon thread so a page never waits for generation;
    the app process stays responsive because generation releases the GIL inside torch.
    """

    retry_seconds: float = 60.0
    status: RefillStatus = field(default_factory=RefillStatus)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def recently_tried(self) -> bool:
        done = self.status.finished_at
        return done is not None and time.time() - done < self.retry_seconds

    def start(self, job, *, reason: str = "") -> bool:
        """Run ``job() -> int`` (completions added) in a daemon thread unless one is running."""
        with self._lock:
            if self.running():
                return False
            self.status.running = True
            self.status.started_at = time.time()
            self.status.message = f"generating more completions{' (' + reason + ')' if reason else ''}…"
            self._thread = threading.Thread(target=self._run, args=(job,), name="label-refill", daemon=True)
            self._thread.start()
            return True

    def note(self, message: str) -> None:
        """Record why no refill ran (e.g. no policy yet), without retrying for ``retry_seconds``."""
        with self._lock:
            self.status.message = message
            self.status.finished_at = time.time()

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, job) -> None:
        try:
            added = int(job() or 0)
            self.status.added_total += added
            self.status.message = f"added {added} completions to the queue"
            self.status.last_error = None
        except UserError as err:
            self.status.message = f"refill failed: {err}"
            self.status.last_error = str(err)
        except Exception as err:  # a background thread must never die silently
            log.exception("queue refill failed")
            self.status.message = f"refill failed: {type(err).__name__}: {err}"
            self.status.last_error = str(err)
        finally:
            self.status.running = False
            self.status.finished_at = time.time()


def refill_job(engine, policy_path: Path, n: int, prompts: list[str] | None = None):
    """The work of one refill: ``n`` completions from ``policy_path`` (for ``prompts``, or fresh
    prompts chosen by ``base_policy.generate`` from the ``generate`` section of the profile)."""

    def job() -> int:
        from base_policy.generate import GenerateConfig, fill_queue  # heavy imports, off the page thread
        from common.config import load_config

        cfg = load_config(GenerateConfig, "generate")
        return fill_queue(engine, policy_path, n, cfg, prompts=prompts)

    return job


def maybe_refill(
    refiller: Refiller,
    engine,
    cfg: LabelConfig,
    queue_left: int,
    *,
    force: bool = False,
    prompts: list[str] | None = None,
) -> str | None:
    """Start a background refill when the queue is low (or when ``force``); return a message to show.

    With ``prompts`` (e.g. just imported), the refill writes one completion per prompt for them."""
    if refiller.running():
        return refiller.status.message
    if not force:
        if not cfg.auto_refill or queue_left >= cfg.prefetch:
            return None
        if refiller.recently_tried():
            return refiller.status.message or None
    policy_path = refill_policy(engine, cfg.policy)
    if policy_path is None:
        refiller.note(
            "No policy to generate more completions with: run `make base-model` (or `python -m rl_finetune "
            "pretrain`), or `python -m base_policy generate`, or set label.policy to a model folder."
        )
        return refiller.status.message
    n = len(prompts) if prompts else cfg.refill_batch
    refiller.start(refill_job(engine, policy_path, n, prompts), reason=f"{n} from {policy_path.name}")
    return refiller.status.message


def labeler_progress(engine, labeler_id: int) -> dict[str, int]:
    """This labeller's judgements today (UTC) and in total, skips included.

    Read once per browser session (the page then counts locally), from ``db.judgements_frame``.
    """
    import db
    from db.models import utcnow

    frame = db.judgements_frame(engine)
    mine = frame[frame["labeler_id"] == labeler_id]
    today = utcnow().date()
    n_today = int((mine["created_at"].dt.date == today).sum()) if len(mine) else 0
    return {"today": n_today, "total": int(len(mine))}
