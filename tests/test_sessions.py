"""Signed-in sessions that survive a reload (issue 18): ``db.sessions``, migration 0008, the cookie
routes of ``labeling_app/server.py``, and the pages' resume and refusal (AppTest, with the browser's
cookies patched in, since AppTest cannot send any). The real browser is in ``test_browser_sessions.py``."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

import db
from db.models import AuthSession, utcnow

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "labeling_app" / "app.py")
TIMEOUT = 60
ADMIN_PW = "admin horse battery staple"
LENA_PW = "lena's own long password"
HOUR = 3600


@pytest.fixture
def engine(db_engine):
    return db_engine


def _lena(engine) -> int:
    return db.add_account(engine, "lena", LENA_PW)


def _rows(engine) -> list[AuthSession]:
    with Session(engine) as s:
        return list(s.scalars(select(AuthSession)))


# ------------------------------------------------------------------------------------ db.sessions


def test_tokens_and_claim_codes_are_never_stored_in_clear(engine, backend_url):
    lena = _lena(engine)
    token, claim = db.open_session(engine, lena, client="10.0.0.7", ttl_s=HOUR)
    assert len(token) == 43 and len(claim) == 43 and token != claim  # 32 random bytes each, URL-safe base64
    (row,) = _rows(engine)
    stored = " ".join(str(v) for v in vars(row).values())
    assert token not in stored and claim not in stored
    assert row.token_hash == db.sessions.digest(token) and row.claim_hash == db.sessions.digest(claim)
    assert row.labeler_id == lena and row.client == "10.0.0.7" and row.revoked_at is None
    assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)
    if backend_url.startswith("sqlite"):  # the file and its WAL, byte for byte
        engine.dispose()
        path = Path(backend_url.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert token.encode() not in raw and claim.encode() not in raw
    assert db.claim_session(engine, claim) == token
    stored = " ".join(str(v) for v in vars(_rows(engine)[0]).values())
    assert token not in stored and claim not in stored


def test_a_claim_works_once_and_only_within_a_minute(engine):
    lena = _lena(engine)
    token, claim = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    assert db.claim_session(engine, claim) == token
    assert db.claim_session(engine, claim) is None  # replayed
    late_token, late = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    assert db.claim_session(engine, late, now=utcnow() + timedelta(seconds=61)) is None
    assert db.claim_session(engine, late) is None  # a late try used it up
    assert db.resolve_session(engine, late_token) is not None  # the session itself (the page's) still stands
    for junk in (None, "", "x" * 500, 42, "not-a-claim-code"):
        assert db.claim_session(engine, junk) is None
    _, revoked = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    db.revoke_sessions(engine, lena)
    assert db.claim_session(engine, revoked) is None


def test_revoked_expired_disabled_and_reset_sessions_resolve_to_none(engine):
    lena = _lena(engine)
    token, _ = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    account = db.resolve_session(engine, token)
    assert account is not None and account.id == lena and account.name == "lena"
    assert db.resolve_session(engine, token, now=utcnow() + timedelta(hours=1, seconds=1)) is None  # expired
    assert db.resolve_session(engine, token, scope="shared-token:abc") is None  # opened under another scope
    for junk in (None, "", "x" * 500, 42, token[:-1] + ("A" if token[-1] != "A" else "B")):
        assert db.resolve_session(engine, junk) is None
    assert db.revoke_session(engine, token) and db.resolve_session(engine, token) is None  # sign-out
    assert not db.revoke_session(engine, token)

    kept, _ = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    db.disable_account(engine, "lena")
    assert db.resolve_session(engine, kept) is None
    db.enable_account(engine, "lena")
    assert db.resolve_session(engine, kept) is None  # disabling revoked it for good
    again, _ = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    assert db.resolve_session(engine, again) is not None
    db.set_password(engine, "lena", "a brand new long password")
    assert db.resolve_session(engine, again) is None
    assert all(r.revoked_at is not None for r in _rows(engine))

    olga = db.get_or_create_labeler(engine, "olga")  # no password: shared-token mode only
    shared, _ = db.open_session(engine, olga, client="c", ttl_s=HOUR, scope="shared-token:abc")
    assert db.resolve_session(engine, shared) is None  # accounts scope needs a password
    assert db.resolve_session(engine, shared, scope="shared-token:abc").name == "olga"
    with pytest.raises(ValueError):
        db.open_session(engine, lena, client="c", ttl_s=0)


def test_last_seen_is_written_at_most_once_a_minute(engine):
    lena = _lena(engine)
    token, _ = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    (row,) = _rows(engine)
    opened = row.last_seen_at
    db.resolve_session(engine, token, now=opened + timedelta(seconds=30))
    assert _rows(engine)[0].last_seen_at == opened
    later = opened + timedelta(seconds=90)
    db.resolve_session(engine, token, now=later)
    assert _rows(engine)[0].last_seen_at == later


def test_a_session_resume_does_not_reset_the_sign_in_throttle(engine):
    lena = _lena(engine)
    for _ in range(db.accounts.FREE_FAILURES):
        db.sign_in(engine, "lena", "a wrong long password", client="attacker")
    before = db.accounts.throttle_wait(engine, "lena", "elsewhere")
    assert before > 0
    db.audit(engine, "sign_in", actor="lena", actor_id=lena, client="home", detail="session")
    assert db.accounts.throttle_wait(engine, "lena", "elsewhere") > 0


# ------------------------------------------------------------------------------------ migration 0008


def _old_database_with_judgements(url: str, revision: str) -> list:
    """A database made at ``revision`` (before sessions), with prompts, completions, two labellers and
    their judgements written as that code wrote them; returns its judgement rows."""
    from db.engine import make_engine, resolve_url

    old = make_engine(resolve_url(url)[0])
    db.migrate(old, revision)
    with old.begin() as con:
        con.execute(
            text("INSERT INTO prompts (id, text, text_sha256, source, created_at) VALUES (1, 'p', 'h', 'imdb', :t)"),
            {"t": "2026-01-01"},
        )
        for cid in range(1, 5):
            con.execute(
                text(
                    "INSERT INTO completions (id, prompt_id, text, gen_params, n_labels, created_at) "
                    "VALUES (:id, 1, :text, '{}', 2, :t)"
                ),
                {"id": cid, "text": f" c{cid}", "t": "2026-01-01"},
            )
        for lid, name in ((1, "ana"), (2, "Bea")):
            con.execute(
                text("INSERT INTO labelers (id, name, created_at) VALUES (:id, :name, :t)"),
                {"id": lid, "name": name, "t": "2026-01-01"},
            )
            for cid in range(1, 5):
                con.execute(
                    text(
                        "INSERT INTO judgements (completion_id, labeler_id, label, seconds, session_key, created_at, "
                        "updated_at) VALUES (:cid, :lid, :label, 1.5, 'tab', :t, :t)"
                    ),
                    {"cid": cid, "lid": lid, "label": "good" if (cid + lid) % 2 else "bad", "t": "2026-01-02"},
                )
        if revision >= "0007":  # accounts and their audit rows exist already
            con.execute(
                text("UPDATE labelers SET password_hash = :h, role = 'admin' WHERE id = 1"), {"h": "$argon2id$x"}
            )
            con.execute(
                text(
                    "INSERT INTO audit_events (at, action, ok, actor, client) VALUES (:t, 'sign_in', :ok, 'ana', 'c')"
                ),
                {"t": "2026-01-02", "ok": True},
            )
    before = db.judgement_rows(old)
    old.dispose()
    return before


def _check_upgraded(url: str, before: list) -> None:
    engine = db.connect(url)  # migrates to head
    try:
        assert db.current_revision(engine) == db.head_revision() == "0008"
        assert db.judgement_rows(engine) == before and len(before) == 8
        assert {a.name for a in db.list_accounts(engine)} == {"ana", "Bea"}
        token, claim = db.open_session(engine, 2, client="c", ttl_s=HOUR, scope="shared-token:abc")
        assert db.claim_session(engine, claim) == token
        assert db.resolve_session(engine, token, scope="shared-token:abc").name == "Bea"
    finally:
        engine.dispose()


@pytest.mark.parametrize("revision", ["0006", "0007"])
def test_an_existing_sqlite_database_upgrades_with_every_judgement_kept(tmp_path, revision):
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    before = _old_database_with_judgements(url, revision)
    _check_upgraded(url, before)
    con = sqlite3.connect(tmp_path / "old.sqlite")
    assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    con.close()


@pytest.mark.postgres
@pytest.mark.parametrize("revision", ["0006", "0007"])
def test_an_existing_postgres_database_upgrades_with_every_judgement_kept(postgres_server, revision):
    url = postgres_server.empty_database()
    before = _old_database_with_judgements(url, revision)
    _check_upgraded(url, before)


# ------------------------------------------------------------------------------------ the cookie routes


@pytest.fixture
def server(smoke_env):
    """``labeling_app.server`` (importing it builds the st.App but starts nothing)."""
    import os

    from labeling_app import runtime, server

    assert os.environ.get(runtime.SESSION_COOKIES_ENV) is None  # only the app's start-up sets it
    return server


def _client(server, engine, *, https: bool = False):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    routes = server.session_routes(lambda: engine, "rlhf_session_test", lambda: 2 * HOUR)
    return TestClient(Starlette(routes=routes), base_url="https://app.example" if https else "http://app.example")


def _cookie_attrs(header: str) -> dict[str, str]:
    parts = [p.strip() for p in header.split(";")]
    name, _, value = parts[0].partition("=")
    attrs = {p.partition("=")[0].lower(): p.partition("=")[2] for p in parts[1:]}
    return {"name": name, "value": value, **attrs}


def test_a_claim_sets_an_http_only_same_site_strict_cookie_once(server, engine):
    lena = _lena(engine)
    token, claim = db.open_session(engine, lena, client="c", ttl_s=2 * HOUR)
    client = _client(server, engine)
    same = {"Origin": "http://app.example"}
    got = client.post("/_rlhf/session/claim", content=claim, headers=same)
    assert got.status_code == 204
    cookie = _cookie_attrs(got.headers["set-cookie"])
    assert cookie["name"] == "rlhf_session_test" and cookie["value"] == token
    assert "httponly" in cookie and cookie["samesite"].lower() == "strict" and cookie["path"] == "/"
    assert cookie["max-age"] == str(2 * HOUR) and "secure" not in cookie  # plain http here
    assert got.headers["cache-control"] == "no-store"
    assert client.post("/_rlhf/session/claim", content=claim, headers=same).status_code == 403  # replayed

    cleared = client.post("/_rlhf/session/clear", headers=same)
    assert cleared.status_code == 204
    gone = _cookie_attrs(cleared.headers["set-cookie"])
    assert gone["name"] == "rlhf_session_test" and gone["max-age"] == "0" and "httponly" in gone

    _, secure_claim = db.open_session(engine, lena, client="c", ttl_s=2 * HOUR)
    over_tls = _client(server, engine, https=True)
    got = over_tls.post("/_rlhf/session/claim", content=secure_claim, headers={"Origin": "https://app.example"})
    assert got.status_code == 204 and "secure" in _cookie_attrs(got.headers["set-cookie"])


def test_cross_site_and_malformed_posts_are_refused(server, engine):
    lena = _lena(engine)
    token, claim = db.open_session(engine, lena, client="c", ttl_s=HOUR)
    client = _client(server, engine)
    refused = [
        {"Origin": "http://evil.example"},
        {"Origin": "http://app.example.evil.example"},
        {"Origin": "null"},
        {},  # no Origin at all
        {"Origin": "http://app.example", "Sec-Fetch-Site": "cross-site"},
    ]
    for headers in refused:
        got = client.post("/_rlhf/session/claim", content=claim, headers=headers)
        assert got.status_code == 403 and "set-cookie" not in got.headers, headers
        got = client.post("/_rlhf/session/clear", headers=headers)
        assert got.status_code == 403 and "set-cookie" not in got.headers, headers
    same = {"Origin": "http://app.example"}
    assert client.post("/_rlhf/session/claim", content="", headers=same).status_code == 403
    assert client.post("/_rlhf/session/claim", content="a" * 5000, headers=same).status_code == 403
    assert client.get("/_rlhf/session/claim").status_code == 405
    # none of the refusals used the claim up: the page's own request still gets the cookie
    got = client.post("/_rlhf/session/claim", content=claim, headers=same)
    assert got.status_code == 204 and _cookie_attrs(got.headers["set-cookie"])["value"] == token


def test_the_cookie_name_is_per_database(tmp_path):
    from labeling_app import runtime

    a = runtime.session_cookie_name(f"sqlite:///{tmp_path / 'a.sqlite'}")
    b = runtime.session_cookie_name(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert a != b and a.startswith("rlhf_session_") and len(a) == len("rlhf_session_") + 8
    assert a == runtime.session_cookie_name(f" sqlite:///{tmp_path / 'a.sqlite'} ")
    pg = runtime.session_cookie_name("postgresql+psycopg://u:secret@db.example/rlhf")
    assert pg == runtime.session_cookie_name("postgresql+psycopg://u:other@db.example/rlhf")  # not the password
    assert runtime.session_scope("accounts", "tok") == "accounts"
    assert runtime.session_scope("shared-token", "tok") != runtime.session_scope("shared-token", "tok2")


def test_the_one_script_carries_only_a_route_and_a_url_safe_code(monkeypatch):
    from labeling_app import runtime, ui

    shown = []
    monkeypatch.setattr("streamlit.components.v1.html", lambda html, **kw: shown.append(html))
    ui._post_from_browser(runtime.CLAIM_ROUTE, "abc-DEF_123")
    assert shown == [
        '<script>fetch("/_rlhf/session/claim", {method: \'POST\', body: "abc-DEF_123", '
        "credentials: 'same-origin'});</script>"
    ]
    for route, body in (
        ("/elsewhere", "abc"),
        (runtime.CLAIM_ROUTE, '"</script><script>alert(1)'),
        (runtime.CLEAR_ROUTE, "a b"),
    ):
        with pytest.raises(ValueError):
            ui._post_from_browser(route, body)
    assert len(shown) == 1


# ------------------------------------------------------------------------------------ the pages (AppTest)


@pytest.fixture
def team(smoke_env, monkeypatch):
    """The app's own (SQLite) database with an admin, a labeller and six items, and the cookie routes
    announced (as server.py does at start-up)."""
    from labeling_app import runtime

    engine = db.connect(smoke_env["db_url"])
    monkeypatch.setenv(runtime.SESSION_COOKIES_ENV, "1")
    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    db.add_account(engine, "root", ADMIN_PW, role="admin")
    db.add_account(engine, "lena", LENA_PW)
    db.add_completions(
        engine, [db.NewCompletion(f"I watched film {i}", f" and it was fine {i}.", None, {}) for i in range(6)]
    )
    return engine


def _browser_sends(monkeypatch, cookies: dict[str, str]) -> None:
    """What ``st.context.cookies`` would hold (AppTest cannot send cookies; its docs say so)."""
    from labeling_app import ui

    monkeypatch.setattr(ui, "browser_cookies", lambda: dict(cookies))


def _apptest():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def _signed_in_as(at) -> str | None:
    texts = [t.value for t in at.sidebar.text]
    return texts[0] if texts and any(b.label == "Sign out" for b in at.sidebar.button) else None


def _table_counts(engine) -> dict[str, int]:
    s = db.stats(engine)
    return {"labelers": s["labelers"], "judgements": len(db.judgement_rows(engine)), "sessions": len(_rows(engine))}


def test_a_password_sign_in_opens_a_session_and_hands_over_only_the_claim(team, monkeypatch, smoke_env):
    pytest.importorskip("streamlit")
    _browser_sends(monkeypatch, {})
    at = _apptest()
    at.text_input(key="sign_in_name").input("lena")
    at.text_input(key="sign_in_password").input(LENA_PW)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert _signed_in_as(at) == "lena"
    (row,) = _rows(team)
    what, claim, _ = at.session_state["browser_session"]
    assert what == "claim" and row.claim_hash == db.sessions.digest(claim)
    token = at.session_state["auth_session"]
    assert db.resolve_session(team, token).name == "lena"
    assert token not in str(at.query_params) and claim not in str(at.query_params)
    assert all(token not in (r.detail or "") and claim not in (r.detail or "") for r in db.audit_events(team))
    at.sidebar.button(key="sign_out").click().run()
    assert not at.exception, at.exception
    assert db.resolve_session(team, token) is None  # revoked at once: a copied cookie is useless
    assert at.session_state["browser_session"][0] == "clear"


def test_a_valid_cookie_signs_the_account_back_in(team, monkeypatch, smoke_env):
    pytest.importorskip("streamlit")
    from labeling_app import runtime

    lena = db.get_account(team, 2)
    token, _ = db.open_session(team, lena.id, client="c", ttl_s=HOUR)
    _browser_sends(monkeypatch, {runtime.session_cookie_name(smoke_env["db_url"]): token})
    at = _apptest()  # a new page load: no form, no password
    assert _signed_in_as(at) == "lena"
    assert any(c.value.startswith("COMPLETION #") for c in at.caption)
    resumed = db.audit_events(team, action="sign_in")
    assert [(r.actor, r.detail) for r in resumed] == [("lena", "session")]
    assert "browser_session" not in at.session_state  # nothing to claim: the cookie is there already


def test_a_foreign_cookie_is_refused_with_one_line_and_one_audit_row(team, monkeypatch, smoke_env, tmp_path):
    pytest.importorskip("streamlit")
    from labeling_app import runtime, ui

    other = db.connect(f"sqlite:///{tmp_path / 'other.sqlite'}")  # another server's database
    foreign, _ = db.open_session(other, db.add_account(other, "lena", LENA_PW), client="c", ttl_s=HOUR)
    _browser_sends(monkeypatch, {runtime.session_cookie_name(smoke_env["db_url"]): foreign})
    before, audit_before = _table_counts(team), len(db.audit_events(team, limit=None))
    at = _apptest()
    assert _signed_in_as(at) is None and at.title[0].value == "Sign in to label"
    assert [e.value for e in at.error] == [ui.SESSION_REFUSED]
    assert _table_counts(team) == before  # nothing else written
    rows = db.audit_events(team, limit=None)
    assert len(rows) == audit_before + 1 and rows[0].action == "session_refused" and not rows[0].ok
    assert foreign not in str(rows[0].as_dict())
    assert at.session_state["browser_session"][0] == "clear"  # the browser is told to drop it
    at.run()  # the next run of the same page: no second refusal
    assert len(db.audit_events(team, limit=None)) == audit_before + 1


def test_without_the_cookie_routes_nothing_changes(team, monkeypatch, smoke_env):
    pytest.importorskip("streamlit")
    from labeling_app import runtime

    monkeypatch.delenv(runtime.SESSION_COOKIES_ENV)
    token, _ = db.open_session(team, 2, client="c", ttl_s=HOUR)
    _browser_sends(monkeypatch, {runtime.session_cookie_name(smoke_env["db_url"]): token})
    at = _apptest()
    assert _signed_in_as(at) is None and not at.error  # as before: a reload asks for the password
    at.text_input(key="sign_in_name").input("lena")
    at.text_input(key="sign_in_password").input(LENA_PW)
    at.button[0].click().run()
    assert _signed_in_as(at) == "lena" and len(_rows(team)) == 1  # no session opened


def test_shared_token_mode_resumes_until_the_token_changes(smoke_env, monkeypatch):
    pytest.importorskip("streamlit")
    from labeling_app import runtime, ui

    engine = db.connect(smoke_env["db_url"])
    monkeypatch.setenv(runtime.SESSION_COOKIES_ENV, "1")
    monkeypatch.setenv("RLHF_LABEL_TOKEN", "the room's token")
    olga = db.get_or_create_labeler(engine, "olga")  # no password: this is shared-token mode
    scope = runtime.session_scope("shared-token", "the room's token")
    token, _ = db.open_session(engine, olga, client="c", ttl_s=HOUR, scope=scope)
    _browser_sends(monkeypatch, {runtime.session_cookie_name(smoke_env["db_url"]): token})
    at = _apptest()
    assert _signed_in_as(at) == "olga"
    monkeypatch.setenv("RLHF_LABEL_TOKEN", "a new token for the room")  # the operator changed the token
    at = _apptest()
    assert _signed_in_as(at) is None and [e.value for e in at.error] == [ui.SESSION_REFUSED]
    assert [r.action for r in db.audit_events(engine, limit=2)] == ["session_refused", "sign_in"]


# ------------------------------------------------------------------- python -m db users sessions / sign-out


def test_users_sessions_lists_live_sessions_and_sign_out_ends_them(tmp_path, monkeypatch, capsys):
    """An admin sees who is signed in where (never a token) and ends one account's sessions everywhere,
    with one audit row; the other account's session and every password stay as they were."""
    from db.__main__ import main

    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    monkeypatch.setenv("RLHF_DB_URL", url)
    engine = db.connect(url)
    lena, mo = _lena(engine), db.add_account(engine, "mo", LENA_PW + " too")
    t1, _ = db.open_session(engine, lena, client="10.0.0.7", ttl_s=HOUR)
    t2, _ = db.open_session(engine, lena, client="10.0.0.8", ttl_s=HOUR)
    t3, _ = db.open_session(engine, mo, client="10.0.0.9", ttl_s=HOUR)
    gone, _ = db.open_session(engine, mo, client="old", ttl_s=HOUR)
    db.revoke_session(engine, gone)

    assert main(["users", "sessions"]) == 0
    out = capsys.readouterr().out
    assert "3 live sessions" in out and "10.0.0.9" in out and "old" not in out
    assert not any(t in out for t in (t1, t2, t3, gone))
    assert main(["users", "sessions", "LENA"]) == 0  # names compare as sign-in compares them
    out = capsys.readouterr().out
    assert "2 live sessions" in out and "10.0.0.9" not in out

    assert main(["users", "sign-out", "lena"]) == 0
    assert "ended 2 sessions of 'lena'" in capsys.readouterr().out
    assert db.resolve_session(engine, t1, scope=db.sessions.ACCOUNTS_SCOPE) is None
    assert db.resolve_session(engine, t2, scope=db.sessions.ACCOUNTS_SCOPE) is None
    assert db.resolve_session(engine, t3, scope=db.sessions.ACCOUNTS_SCOPE).name == "mo"
    assert db.sign_in(engine, "lena", LENA_PW, client="x").account.name == "lena"  # the password still works
    (row,) = db.audit_events(engine, action="sessions_revoke")
    assert row.ok and row.target == "lena" and row.detail == "2 sessions" and row.client == "cli"

    with pytest.raises(SystemExit) as exit_:
        main(["users", "sign-out", "nobody"])
    assert exit_.value.code == 2 and "no account called 'nobody'" in capsys.readouterr().err
    refused = db.audit_events(engine, action="sessions_revoke")[0]
    assert not refused.ok and refused.target == "nobody"
    with pytest.raises(SystemExit) as exit_:
        main(["users", "sessions", "nobody"])
    assert exit_.value.code == 2
    engine.dispose()
