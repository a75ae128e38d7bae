"""Team accounts: passwords (argon2id), roles, throttled sign-in, and the audit trail.

Every labeller is an account (``labelers`` row, migration 0007). An account signs in with its
name and password once an admin has set one (``python -m db users add|reset-password``); the
labelling app runs in *accounts mode* as soon as one account has a password
(:func:`accounts_enabled`). The first admin is made on the command line, never by the web page.

Sign-in (:func:`sign_in`) is throttled per name and per client: after ``FREE_FAILURES`` failed
attempts in ``THROTTLE_WINDOW`` (counted since the last successful sign-in of that name, or from that
client), each further attempt must wait ``BACKOFF_BASE_S * 2**(n - FREE_FAILURES)`` seconds after the
last failure (at most ``BACKOFF_MAX_S``); an attempt that comes too early is refused without the
password being checked. Every attempt, allowed or not, writes one row of ``audit_events``, and
nothing else. The throttle reads those rows, so it holds across app restarts and app processes.

Passwords are only ever passed as arguments: they are never logged, stored, or put in an audit row.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2 import exceptions as argon2_errors
from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.orm import Session

from common.errors import UserError
from db.engine import run_write
from db.models import ROLES, AuditEvent, Labeler, utcnow
from db.writes import dialect_insert, labeler_name_key, validate_labeler_name

PASSWORD_MIN = 12  # characters; NIST SP 800-63B asks for at least 8, we ask a little more
PASSWORD_MAX = 1024  # characters; argon2 hashes any length, this only bounds the work per attempt
FREE_FAILURES = 5  # failed attempts (per name, per client) before the back-off starts
BACKOFF_BASE_S = 1.0  # wait after the FREE_FAILURES-th failure; doubles with every further one
BACKOFF_MAX_S = 15 * 60.0
THROTTLE_WINDOW = timedelta(hours=24)  # failures older than this are forgotten
CLI_CLIENT = "cli"  # the audit rows' client for the command line
UNKNOWN_CLIENT = "local"  # the client of a browser on the same machine (Streamlit gives no address)

#: What the audit trail records (``audit_events.action``).
ACTIONS = (
    "sign_in",
    "sign_in_failed",
    "sign_in_throttled",
    "sign_out",
    "account_add",
    "account_disable",
    "account_enable",
    "account_role",
    "password_reset",
    "export",
    "import",
    "undo",
    "guidelines_edit",
    "refused",
    "session_refused",
    "sessions_revoke",
)

# argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: t=3, m=64 MiB, p=4).
HASHER = PasswordHasher()
WRONG = "Wrong name or password. If you have no password yet, ask an admin to set one for you."

_sign_in_lock = threading.Lock()  # one sign-in at a time per process: the throttle is checked, then counted
_dummy_hash: str | None = None


@dataclass(frozen=True)
class Account:
    """An account as the app and ``python -m db users list`` see it (never the hash itself)."""

    id: int
    name: str
    role: str
    has_password: bool
    created_at: datetime
    disabled_at: datetime | None
    password_set_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether this account can sign in: it has a password and is not disabled."""
        return self.has_password and self.disabled_at is None


@dataclass(frozen=True)
class SignIn:
    """What :func:`sign_in` decided: the account on success, else the message to show and how long to wait."""

    ok: bool
    account: Account | None = None
    problem: str | None = None
    wait_s: float = 0.0


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    action: str
    ok: bool
    actor: str | None
    target: str | None
    client: str | None
    detail: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "action": self.action,
            "ok": self.ok,
            "actor": self.actor,
            "target": self.target,
            "client": self.client,
            "detail": self.detail,
        }


# --------------------------------------------------------------------------------------------
# passwords


def check_password(password: Any) -> str:
    """``password`` if it may be used (text, ``PASSWORD_MIN``-``PASSWORD_MAX`` characters, no NUL), else a
    :class:`UserError` that says why without repeating it."""
    if not isinstance(password, str):
        raise UserError("the password must be text.", "type a password.")
    if not password.strip():
        raise UserError("the password is empty.", f"choose one of at least {PASSWORD_MIN} characters.")
    if len(password) < PASSWORD_MIN:
        raise UserError(
            f"the password is too short ({len(password)} characters).",
            f"choose one of at least {PASSWORD_MIN} characters (a few words make a good one).",
        )
    if len(password) > PASSWORD_MAX:
        raise UserError(f"the password is longer than {PASSWORD_MAX} characters.", "choose a shorter one.")
    if "\x00" in password:
        raise UserError("the password contains a NUL character.", "choose one without it.")
    return password


def hash_password(password: str) -> str:
    """The argon2id hash of a checked password (``$argon2id$v=19$...``, salted)."""
    return HASHER.hash(check_password(password))


def _verify(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored``; with no stored hash, the same work is done on a dummy
    one, so the time taken does not tell which names have a password."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = HASHER.hash("not the password of anyone here")
    try:
        return HASHER.verify(stored or _dummy_hash, password) and stored is not None
    except (argon2_errors.VerificationError, argon2_errors.InvalidHashError):
        return False


# --------------------------------------------------------------------------------------------
# the audit trail


def audit_in(
    s: Session,
    action: str,
    *,
    actor: str | None = None,
    actor_id: int | None = None,
    ok: bool = True,
    target: str | None = None,
    client: str | None = None,
    detail: str | None = None,
    at: datetime | None = None,
) -> None:
    """Add one audit row inside the caller's write transaction."""
    if action not in ACTIONS:
        raise UserError(f"audit action {action!r} is not one of {list(ACTIONS)}.", "use one of those.")
    actor = actor[:64] if isinstance(actor, str) else None
    s.add(
        AuditEvent(
            at=at or utcnow(),
            action=action,
            ok=ok,
            actor=actor,
            actor_key=labeler_name_key(actor)[:64] if actor else None,
            actor_id=actor_id,
            target=target[:200] if target else None,
            client=(client or UNKNOWN_CLIENT)[:64],
            detail=detail,
        )
    )


def audit(engine: Engine, action: str, **kw) -> None:
    """Record one event (``actor``, ``actor_id``, ``ok``, ``target``, ``client``, ``detail``) in its own transaction."""
    run_write(engine, lambda s: audit_in(s, action, **kw), what="record an audit event")


def audit_events(
    engine: Engine, *, limit: int | None = 100, action: str | None = None, actor: str | None = None
) -> list[AuditRow]:
    """The newest audit rows first (``limit`` None: all), optionally of one action or one actor (any case)."""
    q = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    if action is not None:
        q = q.where(AuditEvent.action == action)
    if actor is not None:
        q = q.where(AuditEvent.actor_key == labeler_name_key(actor))
    if limit is not None:
        q = q.limit(int(limit))
    with Session(engine) as s:
        return [AuditRow(e.id, e.at, e.action, e.ok, e.actor, e.target, e.client, e.detail) for e in s.scalars(q)]


# --------------------------------------------------------------------------------------------
# accounts


def _account(lab: Labeler) -> Account:
    return Account(
        lab.id, lab.name, lab.role, lab.password_hash is not None, lab.created_at, lab.disabled_at, lab.password_set_at
    )


def _find(s: Session, name: str) -> Labeler | None:
    """The labeller whose name is ``name`` compared case-insensitively (as sign-in compares names)."""
    key = labeler_name_key(name)
    for lab in s.scalars(select(Labeler)):  # a few hundred names at most
        if labeler_name_key(lab.name) == key:
            return lab
    return None


def accounts_enabled(engine: Engine) -> bool:
    """Whether the app runs in accounts mode: at least one account has a password."""
    with Session(engine) as s:
        return s.scalar(select(func.count(Labeler.id)).where(Labeler.password_hash.is_not(None))) > 0


def list_accounts(engine: Engine) -> list[Account]:
    """Every account (labeller), by name."""
    with Session(engine) as s:
        return [_account(lab) for lab in s.scalars(select(Labeler).order_by(Labeler.name))]


def get_account(engine: Engine, labeler_id: int) -> Account | None:
    """The account with id ``labeler_id`` as it is now (the app re-reads it before every admin action)."""
    with Session(engine) as s:
        lab = s.get(Labeler, labeler_id)
        return _account(lab) if lab is not None else None


def _check_role(role: Any) -> str:
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {list(ROLES)}.", "use --role admin or --role labeller.")
    return role


def _refused(engine: Engine, action: str, err: UserError, *, name: Any, by: str | None, client: str | None) -> None:
    """Record a refused account change (the only row it writes), then re-raise ``err``."""
    target = name if isinstance(name, str) else None
    audit(engine, action, actor=by, ok=False, target=target, client=client, detail=err.problem)
    raise err


def add_account(
    engine: Engine,
    name: str,
    password: str,
    *,
    role: str = "labeller",
    by: str | None = None,
    client: str = CLI_CLIENT,
) -> int:
    """Create an account with a password; returns its id. A name already taken (in any case), an
    existing labeller's included, is refused: give that labeller a password with :func:`set_password`.
    A refusal writes one ``account_add`` audit row with ``ok`` false, and nothing else."""
    try:
        shown = validate_labeler_name(name)
        role = _check_role(role)
        hashed = hash_password(password)
    except UserError as err:
        _refused(engine, "account_add", err, name=name, by=by, client=client)

    def work(s: Session) -> int | UserError:
        if _find(s, shown) is not None:
            return UserError(
                f"an account called {shown!r} already exists (names are compared ignoring case).",
                f"choose another name, or give the existing one a password: python -m db users reset-password {shown!r}.",
            )
        now = utcnow()
        s.execute(
            dialect_insert(s, Labeler).values(
                name=shown, created_at=now, password_hash=hashed, role=role, password_set_at=now
            )
        )
        lid = s.scalars(select(Labeler.id).where(Labeler.name == shown)).one()
        audit_in(s, "account_add", actor=by, target=shown, client=client, detail=f"role {role}")
        return lid

    out = run_write(engine, work, what="add an account")
    if isinstance(out, UserError):
        _refused(engine, "account_add", out, name=shown, by=by, client=client)
    return out


def no_account(name: object) -> UserError:
    """The one-line error for a name that is no account's."""
    return UserError(f"there is no account called {name!r}.", "check the name: python -m db users list shows them all.")


def _change(engine: Engine, name: str, action: str, values_for, *, by: str | None, client: str, detail: str | None):
    """Apply ``values_for(labeller) -> dict`` to the account called ``name``, with its audit row."""

    def work(s: Session) -> int | UserError:
        lab = _find(s, name) if isinstance(name, str) else None
        if lab is None:
            return no_account(name)
        s.execute(update(Labeler).where(Labeler.id == lab.id).values(**values_for(lab)))
        if action in ("password_reset", "account_disable"):  # ends its saved sessions too (db.sessions)
            from db.sessions import revoke_sessions_in

            revoke_sessions_in(s, lab.id)
        audit_in(s, action, actor=by, target=lab.name, client=client, detail=detail)
        return lab.id

    out = run_write(engine, work, what=action.replace("_", " "))
    if isinstance(out, UserError):
        _refused(engine, action, out, name=name, by=by, client=client)
    return out


def set_password(engine: Engine, name: str, password: str, *, by: str | None = None, client: str = CLI_CLIENT) -> int:
    """Give the account called ``name`` a new password (an existing labeller without one becomes usable)."""
    try:
        hashed = hash_password(password)
    except UserError as err:
        _refused(engine, "password_reset", err, name=name, by=by, client=client)
    return _change(
        engine,
        name,
        "password_reset",
        lambda lab: {"password_hash": hashed, "password_set_at": utcnow()},
        by=by,
        client=client,
        detail=None,
    )


def disable_account(engine: Engine, name: str, *, by: str | None = None, client: str = CLI_CLIENT) -> int:
    """Stop the account called ``name`` from signing in (at once: the app re-reads it on every page run).
    Its judgements stay attributed to it."""
    return _change(
        engine,
        name,
        "account_disable",
        lambda lab: {"disabled_at": lab.disabled_at or utcnow()},
        by=by,
        client=client,
        detail=None,
    )


def enable_account(engine: Engine, name: str, *, by: str | None = None, client: str = CLI_CLIENT) -> int:
    """Let a disabled account sign in again."""
    return _change(engine, name, "account_enable", lambda lab: {"disabled_at": None}, by=by, client=client, detail=None)


def set_role(engine: Engine, name: str, role: str, *, by: str | None = None, client: str = CLI_CLIENT) -> int:
    """Make the account called ``name`` an ``admin`` or a ``labeller``."""
    try:
        role = _check_role(role)
    except UserError as err:
        _refused(engine, "account_role", err, name=name, by=by, client=client)
    return _change(
        engine, name, "account_role", lambda lab: {"role": role}, by=by, client=client, detail=f"role {role}"
    )


# --------------------------------------------------------------------------------------------
# sign-in


def backoff_s(failures: int) -> float:
    """How long to wait after the last of ``failures`` failed attempts before the next may be checked."""
    if failures < FREE_FAILURES:
        return 0.0
    return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (failures - FREE_FAILURES))


def _wait(s: Session, column, value: str, now: datetime) -> float:
    """Seconds left before an attempt for ``column == value`` (a name key, or a client) may be checked."""
    since = now - THROTTLE_WINDOW
    last_ok = s.scalar(
        select(func.max(AuditEvent.at)).where(
            column == value,
            AuditEvent.action == "sign_in",
            AuditEvent.at > since,
            or_(AuditEvent.detail.is_(None), AuditEvent.detail != "session"),  # a cookie resume checks no password
        )
    )
    start = max(since, last_ok) if last_ok is not None else since
    n, last = s.execute(
        select(func.count(AuditEvent.id), func.max(AuditEvent.at)).where(
            column == value,
            AuditEvent.action == "sign_in_failed",
            AuditEvent.at > start,
            # an identity the provider vouched for but no account matched guessed no password
            or_(AuditEvent.detail.is_(None), ~AuditEvent.detail.startswith("identity provider")),
        )
    ).one()
    if last is None:
        return 0.0
    return max(0.0, backoff_s(int(n)) - (now - last).total_seconds())


def throttle_wait(engine: Engine, name: str, client: str | None, *, now: datetime | None = None) -> float:
    """Seconds before the next sign-in attempt for ``name`` from ``client`` would be checked (0: now)."""
    now = now or utcnow()
    with Session(engine) as s:
        by_name = _wait(s, AuditEvent.actor_key, labeler_name_key(name)[:64], now) if isinstance(name, str) else 0.0
        return max(by_name, _wait(s, AuditEvent.client, (client or UNKNOWN_CLIENT)[:64], now))


def sign_in(engine: Engine, name: Any, password: Any, *, client: str | None, now: datetime | None = None) -> SignIn:
    """Check ``name`` and ``password``; every call writes exactly one audit row and nothing else.

    Refused, with the same message whatever was wrong (an unknown name, no password set yet, a wrong
    password), so the page does not tell which names exist; a disabled account is named as such
    only when its password was right. Throttled per name and per client (see the module's docstring):
    an attempt within the back-off is refused unchecked, with the seconds to wait."""
    now = now or utcnow()
    client = (client or UNKNOWN_CLIENT)[:64]
    shown = name.strip()[:64] if isinstance(name, str) else ""
    with _sign_in_lock:
        wait = throttle_wait(engine, shown, client, now=now)
        if wait > 0:
            audit(engine, "sign_in_throttled", actor=shown or None, ok=False, client=client, at=now)
            return SignIn(
                False,
                problem=f"Too many failed sign-ins for this name or from this computer. Wait {wait:.0f} s, then try again.",
                wait_s=wait,
            )
        with Session(engine) as s:
            lab = _find(s, shown) if shown else None
            account = _account(lab) if lab is not None else None
            stored = lab.password_hash if lab is not None else None
        good = isinstance(password, str) and 0 < len(password) <= PASSWORD_MAX and _verify(stored, password)
        if good and account.disabled_at is None:
            if HASHER.check_needs_rehash(stored):
                _rehash(engine, account.id, password)
            audit(engine, "sign_in", actor=account.name, actor_id=account.id, client=client, at=now)
            return SignIn(True, account=account)
        reason = (
            "account disabled"
            if good
            else "unknown name"
            if account is None
            else "no password set"
            if stored is None
            else "wrong password"
        )
        audit(
            engine,
            "sign_in_failed",
            actor=shown or None,
            actor_id=account.id if account else None,
            ok=False,
            client=client,
            detail=reason,
            at=now,
        )
        if good:  # the right password for a disabled account: say so, it is theirs to know
            return SignIn(False, problem="This account is disabled. Ask an admin if you should still have access.")
        return SignIn(False, problem=WRONG)


def _rehash(engine: Engine, labeler_id: int, password: str) -> None:
    """Store the hash again with the current parameters (after the hasher's settings were raised)."""
    hashed = HASHER.hash(password)
    run_write(
        engine,
        lambda s: s.execute(update(Labeler).where(Labeler.id == labeler_id).values(password_hash=hashed)),
        what="update a password hash",
    )
