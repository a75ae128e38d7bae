"""Signed-in sessions that survive a page reload (``auth_sessions``, migration 0008).

After a successful sign-in the app calls :func:`open_session`: it returns the session's token and a
one-time claim code. The page hands only the claim code to the browser, which posts it to the
server's claim route (``labeling_app/server.py``); :func:`claim_session` gives the token back once,
within ``CLAIM_TTL``, and the route sets it as an HttpOnly cookie. On a new page load the app reads
the cookie and :func:`resolve_session` turns it back into the account, or refuses it.

Neither the token nor the claim code is stored: a row holds their SHA-256 digests, and, until it is
claimed, the token XOR a key derived from the claim code (so the database alone cannot produce the
cookie). Sign-out revokes one session (:func:`revoke_session`); resetting a password or disabling an
account revokes all of that account's (:func:`revoke_sessions`, called by ``db.accounts``).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from common.errors import UserError
from db.accounts import CLI_CLIENT, Account, _account, _find, _refused, audit_in, no_account
from db.engine import run_write
from db.models import AuthSession, Labeler, utcnow

CLAIM_TTL = timedelta(seconds=60)  # how long the browser has to claim the cookie after a sign-in
SEEN_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session
ACCOUNTS_SCOPE = "accounts"  # the scope of a session opened by a name and password
_MAX_LEN = 128  # longer "tokens" and "codes" are refused unread


def digest(secret: str) -> str:
    """The SHA-256 (hex) stored in place of a token or claim code."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _seal_key(claim_code: str) -> bytes:
    return hashlib.sha256(b"rlhf-session-seal\x00" + claim_code.encode("utf-8")).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")  # the form of secrets.token_urlsafe


def _usable(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_LEN


def open_session(
    engine: Engine, labeler_id: int, *, client: str | None, ttl_s: float, scope: str = ACCOUNTS_SCOPE
) -> tuple[str, str]:
    """Open a session for ``labeler_id`` lasting ``ttl_s`` seconds; returns ``(token, claim_code)``,
    both 32 random bytes, URL-safe base64. ``scope`` is what the sign-in was checked against
    (``accounts``, or the shared token's fingerprint): :func:`resolve_session` asks for the same."""
    if not ttl_s > 0:
        raise ValueError(f"ttl_s={ttl_s} must be positive")
    raw = secrets.token_bytes(32)
    token, claim = _encode(raw), secrets.token_urlsafe(32)
    now = utcnow()
    row = AuthSession(
        token_hash=digest(token),
        labeler_id=labeler_id,
        scope=scope[:64],
        created_at=now,
        expires_at=now + timedelta(seconds=float(ttl_s)),
        last_seen_at=now,
        client=(client or "local")[:64],
        claim_hash=digest(claim),
        claim_sealed=_xor(raw, _seal_key(claim)).hex(),
        claim_expires_at=now + CLAIM_TTL,
    )
    run_write(engine, lambda s: s.add(row), what="open a session")
    return token, claim


def claim_session(engine: Engine, claim_code: object, *, now: datetime | None = None) -> str | None:
    """The token of the session whose claim code is ``claim_code``: once, within ``CLAIM_TTL`` of its
    opening, while the session is neither revoked nor expired; else None."""
    if not _usable(claim_code):
        return None
    now = now or utcnow()
    hashed = digest(claim_code)

    def work(s: Session) -> str | None:
        row = s.scalars(select(AuthSession).where(AuthSession.claim_hash == hashed)).one_or_none()
        if row is None or row.claim_sealed is None:
            return None
        sealed = row.claim_sealed
        fresh = row.claim_expires_at > now and row.revoked_at is None and row.expires_at > now
        done = s.execute(
            update(AuthSession)
            .where(AuthSession.id == row.id, AuthSession.claim_hash == hashed)
            .values(claim_hash=None, claim_sealed=None, claim_expires_at=None)
        )
        if done.rowcount != 1 or not fresh:  # claimed by a concurrent request, or too late: emptied either way
            return None
        return _encode(_xor(bytes.fromhex(sealed), _seal_key(claim_code)))

    return run_write(engine, work, what="claim a session")


def resolve_session(
    engine: Engine, token: object, *, scope: str = ACCOUNTS_SCOPE, now: datetime | None = None
) -> Account | None:
    """The account signed in by the session whose token is ``token``, or None when the token is unknown,
    the session was revoked, has expired or was opened under another ``scope``, or the account is
    disabled, has had its password reset since, or (accounts scope) has no password. Records when the
    session was last used, at most once per ``SEEN_EVERY``."""
    if not _usable(token):
        return None
    now = now or utcnow()
    with Session(engine) as s:
        found = s.execute(
            select(AuthSession, Labeler)
            .join(Labeler, Labeler.id == AuthSession.labeler_id)
            .where(AuthSession.token_hash == digest(token))
        ).one_or_none()
        if found is None:
            return None
        row, lab = found
        account = _account(lab)
        session_id, last_seen, opened = row.id, row.last_seen_at, row.created_at
        if row.revoked_at is not None or row.expires_at <= now or row.scope != scope[:64]:
            return None
    if account.disabled_at is not None or (scope == ACCOUNTS_SCOPE and not account.has_password):
        return None
    if account.password_set_at is not None and account.password_set_at > opened:
        return None
    if now - last_seen >= SEEN_EVERY:
        run_write(
            engine,
            lambda s: s.execute(update(AuthSession).where(AuthSession.id == session_id).values(last_seen_at=now)),
            what="note a session's use",
        )
    return account


def revoke_session(engine: Engine, token: object) -> bool:
    """End the session whose token is ``token`` (sign-out): a copy of its cookie is useless at once.
    Returns whether a live session was revoked."""
    if not _usable(token):
        return False
    out = run_write(
        engine,
        lambda s: (
            s.execute(
                update(AuthSession)
                .where(AuthSession.token_hash == digest(token), AuthSession.revoked_at.is_(None))
                .values(revoked_at=utcnow(), claim_hash=None, claim_sealed=None, claim_expires_at=None)
            ).rowcount
        ),
        what="revoke a session",
    )
    return out > 0


def revoke_sessions_in(s: Session, labeler_id: int) -> int:
    """Revoke every live session of ``labeler_id`` inside the caller's write transaction."""
    return s.execute(
        update(AuthSession)
        .where(AuthSession.labeler_id == labeler_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow(), claim_hash=None, claim_sealed=None, claim_expires_at=None)
    ).rowcount


def revoke_sessions(engine: Engine, labeler_id: int) -> int:
    """Revoke every live session of the account ``labeler_id``; returns how many."""
    return run_write(engine, lambda s: revoke_sessions_in(s, labeler_id), what="revoke sessions")


@dataclass(frozen=True)
class SessionInfo:
    """A live session as ``python -m db users sessions`` lists it (never its token or claim code)."""

    id: int
    account: str
    scope: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    client: str | None


def live_sessions(engine: Engine, name: str | None = None, *, now: datetime | None = None) -> list[SessionInfo]:
    """Sessions not revoked and not expired, newest first; only the account called ``name`` (any case) if given.
    An unknown ``name`` is a UserError naming the command that lists the accounts."""
    now = now or utcnow()
    with Session(engine) as s:
        q = (
            select(AuthSession, Labeler.name)
            .join(Labeler, Labeler.id == AuthSession.labeler_id)
            .where(AuthSession.revoked_at.is_(None), AuthSession.expires_at > now)
            .order_by(AuthSession.created_at.desc(), AuthSession.id.desc())
        )
        if name is not None:
            lab = _find(s, name)
            if lab is None:
                raise no_account(name)
            q = q.where(AuthSession.labeler_id == lab.id)
        return [
            SessionInfo(r.id, account, r.scope, r.created_at, r.last_seen_at, r.expires_at, r.client)
            for r, account in s.execute(q)
        ]


def sign_out_everywhere(engine: Engine, name: str, *, by: str | None = None, client: str = CLI_CLIENT) -> int:
    """Revoke every live session of the account called ``name`` (a lost laptop, a shared browser), with one
    ``sessions_revoke`` audit row; returns how many. Its password and judgements are untouched."""

    def work(s: Session) -> int | UserError:
        lab = _find(s, name) if isinstance(name, str) else None
        if lab is None:
            return no_account(name)
        n = revoke_sessions_in(s, lab.id)
        audit_in(s, "sessions_revoke", actor=by, target=lab.name, client=client, detail=f"{n} sessions")
        return n

    out = run_write(engine, work, what="revoke sessions")
    if isinstance(out, UserError):
        _refused(engine, "sessions_revoke", out, name=name, by=by, client=client)
    return out
