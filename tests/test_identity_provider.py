"""Sign-in with the organisation's identity provider (issue 18, ``label.identity_provider``): ``st.user``
mapped to an existing, enabled account, the same roles and audit rows as a password sign-in, refusals,
and the prerequisites (Authlib, ``[auth]``) checked on the page and at start-up.

Offline, AppTest's ``user`` dict stands in for ``st.user`` after a real provider's redirect; the redirect
itself (``st.login`` → provider → ``/oauth2callback``) cannot be tested here. Authlib is not installed in
this environment: the tests that need "set up" patch ``runtime.check_identity_provider``, the others check
the real absence."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import db
from common.errors import ConfigError
from db import accounts

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "labeling_app" / "app.py")
TIMEOUT = 60
ADMIN_PW = "admin horse battery staple"
LENA_PW = "lena's own long password"
ROOT, LENA = "root@example.org", "lena@example.org"  # account names are e-mail addresses here
AUTH = {  # a complete [auth] section for the unnamed ('default') provider
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a long random string for the cookie",
    "client_id": "rlhf-labelling",
    "client_secret": "not a real secret",
    "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
}


@pytest.fixture(autouse=True)
def quick_hasher(monkeypatch):
    """argon2id with small costs, so a test hashes in milliseconds."""
    monkeypatch.setattr(accounts, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    monkeypatch.setattr(accounts, "_dummy_hash", None)


def _profile(tmp_path, monkeypatch, **label) -> Path:
    """The smoke profile with ``label`` keys set (and no dwell check: AppTest clicks at once)."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["label"].update({"min_dwell_ms": 0, **label})
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("RLHF_CONFIG", str(profile))
    return profile


@pytest.fixture
def team(smoke_env, tmp_path, monkeypatch):
    """Accounts mode with ``identity_provider: default``, set up as far as the page can tell (Authlib and
    ``[auth]`` present): an admin and a labeller named by their e-mail addresses, six items."""
    from labeling_app import runtime

    _profile(tmp_path, monkeypatch, identity_provider="default")
    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    monkeypatch.setattr(runtime, "check_identity_provider", lambda provider: None)
    engine = db.connect(smoke_env["db_url"])
    db.add_account(engine, ROOT, ADMIN_PW, role="admin")
    db.add_account(engine, LENA, LENA_PW)
    db.add_completions(
        engine, [db.NewCompletion(f"This film {i}", f" was fine, number {i}.", None, {}) for i in range(6)]
    )
    yield engine
    engine.dispose()


def _app(user: dict | None = None):
    """A new page load whose ``st.user`` is ``user`` (AppTest's default, when None: an e-mail, not logged in)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if user is not None:
        at.user = user
    at.run()
    assert not at.exception, at.exception
    return at


def _identity(email: str, **claims) -> dict:
    return {"is_logged_in": True, "email": email, "name": "Someone", **claims}


def _signed_in_as(at) -> str | None:
    texts = [t.value for t in at.sidebar.text]
    return texts[0] if texts and any(b.label == "Sign out" for b in at.sidebar.button) else None


def _shown_id(at) -> int | None:
    for c in at.caption:
        if c.value.startswith("COMPLETION #"):
            return int(c.value.split("#")[1].split()[0])
    return None


def _rows_but_audit(db_file: Path) -> dict[str, list]:
    """Every row of every table except the audit trail (what a refusal must leave as it was)."""
    con = sqlite3.connect(db_file)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"'))) for t in tables if t != "audit_events"}
    finally:
        con.close()


# ------------------------------------------------------------------------------------ signed in by the identity


def test_a_matching_identity_signs_the_account_in_and_its_judgement_is_its_own(team, smoke_env, monkeypatch):
    pytest.importorskip("streamlit")
    from labeling_app import runtime

    monkeypatch.setenv(runtime.SESSION_COOKIES_ENV, "1")  # as under python -m labeling_app
    labelers_before = db.stats(team)["labelers"]
    at = _app(_identity("Lena@Example.ORG"))  # the claim's whole value, compared ignoring case
    assert _signed_in_as(at) == LENA and "labeller" in [c.value for c in at.sidebar.caption]
    (row,) = db.audit_events(team, action="sign_in")
    assert (row.actor, row.detail, row.ok) == (LENA, "identity provider", True)
    cid = _shown_id(at)
    at.button(key=f"good-{cid}").click().run()
    assert not at.exception, at.exception
    lena = db.sign_in(team, LENA, LENA_PW, client="c").account
    judged = [(r["labeler_id"], r["completion_id"], r["label"]) for r in db.judgement_rows(team)]
    assert judged == [(lena.id, cid, "good")]
    assert db.stats(team)["labelers"] == labelers_before  # nobody created
    # no saved session of ours: Streamlit's own identity cookie brings the sign-in back after a reload
    assert "auth_session" not in at.session_state and not _rows_but_audit(smoke_env["db_file"])["auth_sessions"]
    at.sidebar.button(key="sign_out").click().run()  # signing out ends the provider's sign-in too
    assert not at.exception, at.exception
    assert at.user == {"is_logged_in": False} and _signed_in_as(at) is None
    assert [b.label for b in at.button] == ["Sign in with your identity provider", "Start labelling"]
    assert [r.action for r in db.audit_events(team, limit=2)] == ["sign_out", "sign_in"]


def test_a_labeller_matched_by_identity_cannot_reach_the_data_page(team):
    pytest.importorskip("streamlit")
    at = _app(_identity(LENA))
    assert _signed_in_as(at) == LENA
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not in a labeller's navigation
        at.switch_page("views/data.py")
    root = _app(_identity(ROOT))  # the admin, matched the same way, has it
    assert "admin" in [c.value for c in root.sidebar.caption]
    root.switch_page("views/data.py").run()
    assert not root.exception, root.exception
    assert [b for b in root.button if b.key == "export"]
    db.set_role(team, ROOT, "labeller")  # roles are re-read on every run, as after a password sign-in
    root.run()
    assert not [b for b in root.button if b.key == "export"] and _shown_id(root) is not None


def test_the_button_calls_st_login_with_the_configured_provider(team, monkeypatch):
    pytest.importorskip("streamlit")
    import streamlit

    calls = []
    monkeypatch.setattr(streamlit, "login", lambda provider=None: calls.append(provider))
    n_audit = len(db.audit_events(team, limit=None))
    at = _app({"is_logged_in": False})
    assert _signed_in_as(at) is None
    at.button(key="identity_sign_in").click().run()
    assert not at.exception, at.exception
    assert calls == ["default"]
    assert len(db.audit_events(team, limit=None)) == n_audit  # nothing happens until the provider sends them back


# ------------------------------------------------------------------------------------ refused identities


@pytest.mark.parametrize(
    "identity,change,line,why",
    [
        (_identity("nobody@example.org"), None, "There is no account called nobody@example.org", "unknown account"),
        (_identity(LENA), "disable", "This account is disabled", "account disabled"),
        (_identity("olga@example.org"), "no password", "is not an account yet", "no password set"),
        (_identity(LENA, email_verified=False), None, "has not verified", "email not verified"),
        (_identity(LENA, provider="github"), None, "another identity provider", "another provider"),
        ({"is_logged_in": True, "name": "Lena"}, None, "did not give this app your email", "no email claim"),
    ],
)
def test_an_identity_without_an_enabled_account_is_refused_with_one_line_and_one_audit_row(
    team, smoke_env, identity, change, line, why
):
    pytest.importorskip("streamlit")
    if change == "disable":
        db.disable_account(team, LENA)
    if change == "no password":  # a labeller from before accounts
        db.get_or_create_labeler(team, "olga@example.org")
    before, n_audit = _rows_but_audit(smoke_env["db_file"]), len(db.audit_events(team, limit=None))
    at = _app(identity)
    assert _signed_in_as(at) is None and _shown_id(at) is None
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and line in errors[0], errors  # one line
    rows = db.audit_events(team, limit=None)
    assert len(rows) == n_audit + 1
    assert (rows[0].action, rows[0].ok, rows[0].detail) == ("sign_in_failed", False, f"identity provider: {why}")
    at.run()  # the next run of the page: the same line, no second row
    assert [e.value for e in at.error] and len(db.audit_events(team, limit=None)) == n_audit + 1
    assert _rows_but_audit(smoke_env["db_file"]) == before  # no labeller, no session, nothing else
    at.button(key="identity_sign_out").click().run()  # the page offers st.logout
    assert not at.exception, at.exception
    assert at.user == {"is_logged_in": False} and not at.error
    assert [b.key for b in at.button][:1] == ["identity_sign_in"]


def test_a_disabled_account_signed_in_by_identity_is_signed_out_at_its_next_click(team):
    pytest.importorskip("streamlit")
    at = _app(_identity(LENA))
    assert _signed_in_as(at) == LENA
    db.disable_account(team, LENA)
    at.run()
    assert _signed_in_as(at) is None and any("disabled" in e.value for e in at.error)
    at.run()  # and the identity, still there, is refused (it signs nobody back in)
    assert _signed_in_as(at) is None and [r.detail for r in db.audit_events(team, limit=1)] == [
        "identity provider: account disabled"
    ]


# ------------------------------------------------------------------------------------ off, or not set up


@pytest.mark.parametrize("how", ["provider off", "local mode"])
def test_without_the_provider_st_user_is_ignored(smoke_env, tmp_path, monkeypatch, how):
    pytest.importorskip("streamlit")
    from labeling_app import runtime

    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    monkeypatch.setattr(runtime, "check_identity_provider", lambda provider: None)
    engine = db.connect(smoke_env["db_url"])
    if how == "provider off":
        _profile(tmp_path, monkeypatch)
        db.add_account(engine, LENA, LENA_PW)
    else:  # no account has a password: local mode, where the provider has nothing to map to
        _profile(tmp_path, monkeypatch, identity_provider="default")
    at = _app(_identity(LENA))
    assert _signed_in_as(at) is None and not at.error
    assert not [b for b in at.button if b.key in ("identity_sign_in", "identity_sign_out")]
    assert not [r for r in db.audit_events(engine, limit=None) if r.action.startswith("sign_in")]
    assert db.stats(engine)["labelers"] == int(how == "provider off")


def test_without_authlib_the_page_says_so_in_one_line_and_signs_no_one_in(smoke_env, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from labeling_app import runtime

    if runtime.authlib_installed():
        pytest.skip("Authlib is installed here")
    _profile(tmp_path, monkeypatch, identity_provider="default")
    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    monkeypatch.setattr(runtime, "auth_secrets", lambda: dict(AUTH))
    engine = db.connect(smoke_env["db_url"])
    db.add_account(engine, LENA, LENA_PW)
    at = _app(_identity(LENA))
    assert _signed_in_as(at) is None
    (line,) = [e.value for e in at.error]
    assert "Authlib>=1.3.2 package is not installed" in line and "[auth]" not in line.split("Fix:")[0]
    assert "pip install 'Authlib>=1.3.2'" in line
    assert not [b for b in at.button if b.key == "identity_sign_in"] and [b.label for b in at.button] == [
        "Start labelling"
    ]
    assert not db.audit_events(engine, action="sign_in")
    at.text_input(key="sign_in_name").input(LENA)  # the password form still works
    at.text_input(key="sign_in_password").input(LENA_PW)
    at.button[0].click().run()
    assert _signed_in_as(at) == LENA


def test_only_the_provider_button_when_password_sign_in_is_off(team):
    pytest.importorskip("streamlit")
    import yaml

    profile = Path(os.environ["RLHF_CONFIG"])
    cfg = yaml.safe_load(profile.read_text())
    cfg["label"]["password_sign_in"] = False
    profile.write_text(yaml.safe_dump(cfg))
    at = _app({"is_logged_in": False})
    assert [b.key for b in at.button] == ["identity_sign_in"] and not at.text_input


# ------------------------------------------------------------------------------------ prerequisites and config


def test_the_missing_prerequisites_are_named():
    from labeling_app.runtime import identity_provider_missing

    assert identity_provider_missing("default", AUTH, authlib=True) == []
    assert identity_provider_missing("default", {}, authlib=False) == [
        "the Authlib>=1.3.2 package is not installed",
        "`.streamlit/secrets.toml` has no [auth] section",
    ]
    named = {k: AUTH[k] for k in ("redirect_uri", "cookie_secret")}
    assert identity_provider_missing("google", named, authlib=True) == [
        "`.streamlit/secrets.toml` lacks the [auth.google] section"
    ]
    named["google"] = {"client_id": "x", "client_secret": "y"}
    assert identity_provider_missing("google", named, authlib=True) == [
        "`.streamlit/secrets.toml` lacks [auth.google] server_metadata_url"
    ]
    partial = {k: v for k, v in AUTH.items() if k != "cookie_secret"}
    assert identity_provider_missing("default", partial, authlib=True) == [
        "`.streamlit/secrets.toml` lacks [auth] cookie_secret"
    ]


@pytest.mark.parametrize(
    "label,expect",
    [
        ({"identity_provider": "my_idp"}, "is not a provider name"),
        ({"identity_provider": "a b"}, "is not a provider name"),
        ({"identity_provider": "default", "identity_claim": ""}, "is not a claim"),
        ({"identity_provider": "default", "identity_claim": "tokens"}, "is not a claim"),
        ({"password_sign_in": False}, "nobody could sign in"),
    ],
)
def test_bad_identity_settings_are_refused_in_one_line(label, expect):
    from common.config import load_config
    from labeling_app.config import LabelConfig

    with pytest.raises(ConfigError) as err:
        load_config(LabelConfig, "label", profile={"label": label})
    assert expect in str(err.value) and "\n" not in str(err.value)


def _start(tmp_path, env, *args):
    return subprocess.run(
        [sys.executable, "-m", "labeling_app", "--port", "8599", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def test_the_start_names_a_missing_authlib_or_auth_section_in_one_line(smoke_env, tmp_path, monkeypatch):
    from labeling_app import runtime

    if runtime.authlib_installed():
        pytest.skip("Authlib is installed here")
    profile = _profile(tmp_path, monkeypatch, identity_provider="default")
    engine = db.connect(smoke_env["db_url"])
    db.add_account(engine, LENA, LENA_PW)
    engine.dispose()
    env = {**os.environ, "HOME": str(tmp_path), "RLHF_CONFIG": str(profile), "PYTHONPATH": str(REPO)}
    env.pop("RLHF_LABEL_TOKEN", None)
    bare = _start(tmp_path, env)  # neither Authlib nor .streamlit/secrets.toml
    lines = bare.stderr.strip().splitlines()
    assert bare.returncode == 2 and len(lines) == 1, bare.stderr
    assert "Authlib>=1.3.2 package is not installed" in lines[0] and "has no [auth] section" in lines[0]
    secrets = tmp_path / ".streamlit" / "secrets.toml"  # where `streamlit run` looks, from this folder
    secrets.parent.mkdir()
    secrets.write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in AUTH.items()))
    with_auth = _start(tmp_path, env)
    lines = with_auth.stderr.strip().splitlines()
    assert with_auth.returncode == 2 and len(lines) == 1, with_auth.stderr
    assert "Authlib>=1.3.2 package is not installed" in lines[0] and "[auth] section" not in lines[0]
    assert AUTH["client_secret"] not in with_auth.stderr and AUTH["cookie_secret"] not in with_auth.stderr


def test_the_start_goes_on_once_the_prerequisites_are_there(smoke_env, tmp_path, monkeypatch, capsys):
    import labeling_app.__main__ as cli
    from labeling_app import runtime

    class Exec(Exception):
        pass

    def fake_execv(*_args):
        raise Exec

    monkeypatch.setattr(cli.os, "execv", fake_execv)
    _profile(tmp_path, monkeypatch, identity_provider="default")
    db.add_account(db.connect(smoke_env["db_url"]), LENA, LENA_PW)  # accounts mode
    monkeypatch.setattr(runtime, "authlib_installed", lambda: True)
    monkeypatch.setattr(runtime, "auth_secrets", lambda: {})
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--port", "8599"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "has no [auth] section" in line and "Authlib" not in line.split("Fix:")[0]
    monkeypatch.setattr(runtime, "auth_secrets", lambda: dict(AUTH))
    with pytest.raises(Exec):  # set up: Streamlit starts
        cli.main(["--port", "8599"])
