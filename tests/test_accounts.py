"""Team accounts (issue 18): argon2id passwords, roles, throttled sign-in, the audit trail, and the
labelling app in accounts mode (AppTest). The real browser is in ``test_browser_accounts.py``."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import db
from common.errors import UserError
from db import accounts
from db.models import utcnow

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "labeling_app" / "app.py")
TIMEOUT = 60
ADMIN_PW = "admin horse battery staple"
LENA_PW = "lena's own long password"


@pytest.fixture(autouse=True)
def quick_hasher(monkeypatch):
    """argon2id with small costs, so a test hashes in milliseconds (the CLI subprocesses use the real ones)."""
    monkeypatch.setattr(accounts, "HASHER", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    monkeypatch.setattr(accounts, "_dummy_hash", None)


@pytest.fixture
def engine(smoke_env):
    e = db.connect(smoke_env["db_url"])
    yield e
    e.dispose()


def seed(engine, n: int = 6) -> list[int]:
    return db.add_completions(
        engine,
        [db.NewCompletion(f"This film {i}", f" was fine, number {i}.", None, {}) for i in range(n)],
    )


def rows_but_audit(db_file: Path) -> dict[str, list]:
    """Every row of every table except the audit trail (what a refused input must leave as it was)."""
    con = sqlite3.connect(db_file)
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {
            t: sorted(map(repr, con.execute(f'SELECT * FROM "{t}"')))  # test-only: names from sqlite_master
            for t in tables
            if t != "audit_events"
        }
    finally:
        con.close()


def n_audit(engine) -> int:
    return len(db.audit_events(engine, limit=None))


# ------------------------------------------------------------------------------------ passwords and accounts


def test_passwords_are_argon2id_and_never_stored_exported_or_audited_in_clear(engine, smoke_env, tmp_path):
    ids = seed(engine, 2)
    lid = db.add_account(engine, "Ana", ADMIN_PW, role="admin")
    db.record_judgement(engine, labeler_id=lid, completion_id=ids[0], label="good")
    assert db.sign_in(engine, "ana", ADMIN_PW, client="10.0.0.7").ok
    assert not db.sign_in(engine, "ana", ADMIN_PW + "x", client="10.0.0.7").ok
    with sqlite3.connect(smoke_env["db_file"]) as con:
        (stored,) = con.execute("SELECT password_hash FROM labelers WHERE id = ?", (lid,)).fetchone()
    assert stored.startswith("$argon2id$") and ADMIN_PW not in stored
    engine.dispose()  # the WAL checkpointed into the file
    raw = smoke_env["db_file"].read_bytes() + b"".join(
        p.read_bytes() for p in smoke_env["db_file"].parent.glob("*-wal")
    )
    assert ADMIN_PW.encode() not in raw
    for fmt in ("jsonl", "csv", "hf"):
        out = db.export_labels(engine, fmt, tmp_path / f"out-{fmt}")
        files = [out] if out.is_file() else [p for p in out.rglob("*") if p.is_file()]
        blob = b"".join(p.read_bytes() for p in files)
        assert ADMIN_PW.encode() not in blob and b"$argon2" not in blob
    audit = json.dumps([r.as_dict() for r in db.audit_events(engine, limit=None)])
    assert ADMIN_PW not in audit and "argon2" not in audit


@pytest.mark.parametrize(
    "name,password,expect",
    [
        ("bob", "", "empty"),
        ("bob", "   ", "empty"),
        ("bob", "pw42", "too short"),
        ("bob", "x" * 11, "too short"),
        ("bob", "nul\x00 in the password", "NUL"),
        ("ANA", "another long password", "already exists"),  # names compared ignoring case
        ("", "another long password", "empty"),
        ("a\nb", "another long password", "control"),
    ],
)
def test_bad_account_inputs_are_refused_leaving_only_the_audit_row(engine, smoke_env, name, password, expect):
    db.add_account(engine, "ana", ADMIN_PW, role="admin")
    before, n_before = rows_but_audit(smoke_env["db_file"]), n_audit(engine)
    with pytest.raises(UserError) as err:
        db.add_account(engine, name, password)
    assert expect in str(err.value)
    assert not password.strip() or password not in str(err.value)  # the message never repeats the password
    assert rows_but_audit(smoke_env["db_file"]) == before
    newest = db.audit_events(engine, limit=1)[0]
    assert n_audit(engine) == n_before + 1 and newest.action == "account_add" and not newest.ok


def test_a_short_password_reset_and_an_unknown_account_are_refused(engine, smoke_env):
    db.add_account(engine, "ana", ADMIN_PW)
    before = rows_but_audit(smoke_env["db_file"])
    with pytest.raises(UserError, match="too short"):
        db.set_password(engine, "ana", "tiny")
    with pytest.raises(UserError, match="no account called"):
        db.disable_account(engine, "nobody")
    assert rows_but_audit(smoke_env["db_file"]) == before
    assert [r.action for r in db.audit_events(engine, limit=2)] == ["account_disable", "password_reset"]


def test_a_disabled_account_cannot_sign_in_and_keeps_its_judgements(engine, smoke_env):
    ids = seed(engine, 1)
    lid = db.add_account(engine, "lena", LENA_PW)
    db.record_judgement(engine, labeler_id=lid, completion_id=ids[0], label="bad")
    db.disable_account(engine, "Lena")
    before = rows_but_audit(smoke_env["db_file"])
    right = db.sign_in(engine, "lena", LENA_PW, client="c1")
    assert not right.ok and "disabled" in right.problem
    wrong = db.sign_in(engine, "lena", "not her password at all", client="c1")
    assert not wrong.ok and wrong.problem == accounts.WRONG  # a wrong password does not learn it is disabled
    assert rows_but_audit(smoke_env["db_file"]) == before
    assert [r.detail for r in db.audit_events(engine, action="sign_in_failed")] == [
        "wrong password",
        "account disabled",
    ]
    assert db.judgements_frame(engine)["labeler"].tolist() == ["lena"]
    # a key press already on its way when the account was disabled stores nothing, and neither does undo
    with pytest.raises(db.AccountDisabled, match="disabled"):
        db.record_judgement(engine, labeler_id=lid, completion_id=ids[0], label="good")
    with pytest.raises(db.AccountDisabled):
        db.next_item(engine, lid, session_key="s1")
    assert rows_but_audit(smoke_env["db_file"]) == before
    db.enable_account(engine, "lena")
    assert db.sign_in(engine, "lena", LENA_PW, client="c1").ok
    db.record_judgement(engine, labeler_id=lid, completion_id=ids[0], label="good")
    assert db.judgements_frame(engine)["label"].tolist() == ["good"]


def test_unknown_names_and_accounts_without_a_password_get_the_same_answer(engine):
    db.get_or_create_labeler(engine, "olga")  # a labeller from before accounts: no password
    db.add_account(engine, "ana", ADMIN_PW)
    answers = {
        db.sign_in(engine, n, "some long password here", client=f"c-{n}").problem for n in ("olga", "zed", "ana")
    }
    assert answers == {accounts.WRONG}


def test_a_brute_force_loop_of_50_attempts_is_throttled_and_writes_only_audit_rows(engine, smoke_env, monkeypatch):
    ids = seed(engine, 1)
    lid = db.add_account(engine, "ana", ADMIN_PW)
    db.record_judgement(engine, labeler_id=lid, completion_id=ids[0], label="good")
    checked = []
    real_verify = accounts._verify
    monkeypatch.setattr(accounts, "_verify", lambda stored, pw: checked.append(pw) or real_verify(stored, pw))
    before, n_before = rows_but_audit(smoke_env["db_file"]), n_audit(engine)
    now = utcnow()  # the clock stands still: the whole loop falls inside the back-off
    results = [db.sign_in(engine, "ana", f"guess number {i:04d}", client="203.0.113.9", now=now) for i in range(50)]
    assert not any(r.ok for r in results)
    assert len(checked) == accounts.FREE_FAILURES  # only 5 guesses were ever checked against the hash
    assert all(r.wait_s > 0 and "Wait" in r.problem for r in results[accounts.FREE_FAILURES :])
    assert rows_but_audit(smoke_env["db_file"]) == before
    actions = [r.action for r in db.audit_events(engine, limit=None)]
    assert n_audit(engine) == n_before + 50
    assert actions.count("sign_in_failed") == 5 and actions.count("sign_in_throttled") == 45
    # the right password is refused too while the back-off runs, per name (from another client) ...
    assert not db.sign_in(engine, "ana", ADMIN_PW, client="198.51.100.1", now=now).ok
    # ... and per client (another name from the attacker's address)
    db.add_account(engine, "ben", LENA_PW)
    assert not db.sign_in(engine, "ben", LENA_PW, client="203.0.113.9", now=now).ok
    assert db.sign_in(engine, "ben", LENA_PW, client="198.51.100.1", now=now).ok
    # once the back-off has passed, the right password works and resets the count for that name
    later = now + timedelta(seconds=accounts.backoff_s(5) + 1)
    assert db.sign_in(engine, "ana", ADMIN_PW, client="198.51.100.1", now=later).ok
    assert accounts.throttle_wait(engine, "ana", "198.51.100.1", now=later) == 0


def test_the_back_off_doubles_after_five_failures_up_to_a_cap():
    waits = [accounts.backoff_s(n) for n in range(12)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:9] == [1.0, 2.0, 4.0, 8.0]
    assert accounts.backoff_s(40) == accounts.BACKOFF_MAX_S


def test_refused_identities_are_audited_but_do_not_throttle_password_sign_ins(engine):
    # a provider's identity with no account guessed no password: ten of them leave the back-off at zero
    for _ in range(10):
        db.audit(
            engine, "sign_in_failed", actor="lena", ok=False, client="10.0.0.9", detail="identity provider: no account"
        )
    assert db.accounts.throttle_wait(engine, "lena", "10.0.0.9") == 0.0
    for _ in range(accounts.FREE_FAILURES + 1):  # wrong passwords do count
        db.audit(engine, "sign_in_failed", actor="lena", ok=False, client="10.0.0.9", detail="wrong password")
    assert db.accounts.throttle_wait(engine, "lena", "10.0.0.9") > 0.0
    assert n_audit(engine) == 10 + accounts.FREE_FAILURES + 1


def test_undo_is_in_the_audit_trail(engine):
    ids = seed(engine, 1)
    lid = db.add_account(engine, "ana", ADMIN_PW)
    item = db.next_item(engine, lid, session_key="tab1")
    db.record_judgement(engine, labeler_id=lid, completion_id=item.completion_id, label="good", session_key="tab1")
    assert db.undo_last(engine, lid, session_key="tab1") == ids[0]
    (row,) = db.audit_events(engine, action="undo")
    assert (row.actor, row.target, row.detail) == ("ana", f"completion {ids[0]}", "good")


# ------------------------------------------------------------------------------------ migrating an old database


def test_an_existing_database_migrates_with_every_judgement_kept(tmp_path):
    from db.engine import make_engine, resolve_url

    path = tmp_path / "old.sqlite"
    url = f"sqlite:///{path}"
    old = make_engine(resolve_url(url)[0])
    db.migrate(old, "0006")  # a database from before accounts, written as that code wrote it
    old.dispose()
    con = sqlite3.connect(path)
    with con:
        con.execute(
            "INSERT INTO prompts (id, text, text_sha256, source, created_at) VALUES (1, 'p', 'h', 'imdb', '2026-01-01')"
        )
        for cid in range(1, 5):
            con.execute(
                "INSERT INTO completions (id, prompt_id, text, gen_params, n_labels, created_at) "
                "VALUES (?, 1, ?, '{}', 2, '2026-01-01')",
                (cid, f" c{cid}"),
            )
        people = {"ana": 1, "Bea": 2}
        for name, lid in people.items():
            con.execute("INSERT INTO labelers (id, name, created_at) VALUES (?, ?, '2026-01-01')", (lid, name))
            for cid in range(1, 5):
                con.execute(
                    "INSERT INTO judgements (completion_id, labeler_id, label, seconds, session_key, created_at, "
                    "updated_at) VALUES (?, ?, ?, 1.5, 'tab', '2026-01-02', '2026-01-02')",
                    (cid, lid, "good" if (cid + lid) % 2 else "bad"),
                )
    con.close()
    before = db.judgement_rows(make_engine(resolve_url(url)[0]))

    engine = db.connect(url)  # migrates to head
    assert db.current_revision(engine) == db.head_revision()
    assert db.judgement_rows(engine) == before and len(before) == 8
    listed = {a.name: a for a in db.list_accounts(engine)}
    assert set(listed) == {"ana", "Bea"}
    assert all(a.role == "labeller" and not a.has_password and not a.active for a in listed.values())
    assert not db.accounts_enabled(engine)  # still local / shared-token mode until a password is set
    assert not db.sign_in(engine, "ana", "any long password here", client="c").ok  # unusable without one
    db.set_password(engine, "ana", ADMIN_PW)
    signed = db.sign_in(engine, "ana", ADMIN_PW, client="c")
    assert signed.ok and signed.account.id == people["ana"]  # the same row: her judgements are still hers
    assert db.accounts_enabled(engine)


# ------------------------------------------------------------------------------------ the command line


def _db_cli(args: list[str], smoke_env, stdin: str = "") -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(smoke_env["artifacts"].parent),
        "RLHF_DB_URL": smoke_env["db_url"],
        "RLHF_ARTIFACTS": str(smoke_env["artifacts"]),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "db", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_users_and_audit_commands(smoke_env):
    add = _db_cli(["users", "add", "root", "--role", "admin", "--password-stdin"], smoke_env, ADMIN_PW + "\n")
    assert add.returncode == 0, add.stderr
    short = _db_cli(["users", "add", "lena", "--password-stdin"], smoke_env, "short\n")
    assert short.returncode == 2 and "too short" in short.stderr and "Traceback" not in short.stderr
    dup = _db_cli(["users", "add", "ROOT", "--password-stdin"], smoke_env, LENA_PW + "\n")
    assert dup.returncode == 2 and "already exists" in dup.stderr
    no_password = _db_cli(["users", "add", "lena"], smoke_env)  # stdin is not a terminal: refused, not hung
    assert no_password.returncode == 2 and "--password-stdin" in no_password.stderr
    assert _db_cli(["users", "add", "lena", "--password-stdin"], smoke_env, LENA_PW + "\n").returncode == 0
    assert _db_cli(["users", "disable", "lena"], smoke_env).returncode == 0
    listed = _db_cli(["users", "list"], smoke_env).stdout.splitlines()
    assert [line.split()[:3] for line in listed] == [["lena", "labeller", "disabled"], ["root", "admin", "active"]]
    audit = _db_cli(["audit", "--json"], smoke_env)
    rows = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [(r["action"], r["ok"], r["target"]) for r in rows] == [
        ("account_disable", True, "lena"),
        ("account_add", True, "lena"),
        ("account_add", False, "ROOT"),
        ("account_add", False, "lena"),
        ("account_add", True, "root"),
    ]
    assert all(r["client"] == "cli" and r["actor"].endswith("cli") for r in rows)
    everything = "".join(p.stdout + p.stderr for p in (add, short, dup, no_password, audit))
    assert ADMIN_PW not in everything and LENA_PW not in everything


# ------------------------------------------------------------------------------------ the app in accounts mode


@pytest.fixture
def team(engine, smoke_env, tmp_path, monkeypatch):
    """An admin (root) and a labeller (lena), and six items; no dwell check (AppTest clicks at once)."""
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["label"]["min_dwell_ms"] = 0
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("RLHF_CONFIG", str(profile))
    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    db.add_account(engine, "root", ADMIN_PW, role="admin")
    db.add_account(engine, "lena", LENA_PW)
    seed(engine, 6)
    return engine


def app_signed_in(name: str, password: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def shown_id(at) -> int | None:
    for c in at.caption:
        if c.value.startswith("COMPLETION #"):
            return int(c.value.split("#")[1].split()[0])
    return None


def test_accounts_mode_asks_for_a_password_and_creates_no_one(team, caplog):
    pytest.importorskip("streamlit")
    caplog.set_level(logging.DEBUG)
    n_labelers = db.stats(team)["labelers"]
    at = app_signed_in("nobody", "a long guess at a password")
    assert any(e.value == accounts.WRONG for e in at.error) and shown_id(at) is None
    at = app_signed_in("lena", "x" * 20)
    assert any(e.value == accounts.WRONG for e in at.error) and shown_id(at) is None
    assert db.stats(team)["labelers"] == n_labelers  # the page never makes an account
    at = app_signed_in("LENA", LENA_PW)
    assert shown_id(at) is not None
    assert "password" not in json.dumps(dict(at.query_params)).lower() and LENA_PW not in str(at.query_params)
    assert LENA_PW not in caplog.text
    ok = db.audit_events(team, action="sign_in")
    assert [(r.actor, r.client) for r in ok] == [("lena", "local")]


def test_a_labeller_cannot_reach_export_or_import_even_by_url(team, smoke_env):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from labeling_app.config import LabelConfig
    from labeling_app.ui import Context

    at = app_signed_in("lena", LENA_PW)
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not in a labeller's navigation
        at.switch_page("views/data.py")
    # and the page itself refuses on the server, whoever runs it (as a URL typed by hand would)
    lena = db.get_account(team, db.sign_in(team, "lena", LENA_PW, client="c").account.id)
    page = AppTest.from_file(str(REPO / "labeling_app" / "views" / "data.py"), default_timeout=TIMEOUT)
    page.session_state["_ctx"] = Context(
        engine=team,
        cfg=LabelConfig(),
        url=smoke_env["db_url"],
        labeler_id=lena.id,
        labeler_name="lena",
        mode="accounts",
    )
    page.run()
    assert not page.exception, page.exception
    assert any("Only an admin" in e.value for e in page.error)
    assert not [b for b in page.button if b.key in ("export", "import", "refill")]
    assert "export_file" not in page.session_state
    assert not db.audit_events(team, action="export")
    (refused,) = db.audit_events(team, action="refused")
    assert (refused.actor, refused.target, refused.ok) == ("lena", "the Data page", False)


def test_a_replayed_admin_action_is_refused_once_the_role_is_gone(team):
    pytest.importorskip("streamlit")
    at = app_signed_in("root", ADMIN_PW)
    at.switch_page("views/data.py").run()
    assert not at.exception, at.exception
    at.button(key="export").click().run()
    assert at.session_state["export_file"][0] == "labels.jsonl"
    assert [r.actor for r in db.audit_events(team, action="export")] == ["root"]
    del at.session_state["export_file"]
    db.set_role(team, "root", "labeller")  # demoted while the Data page is open in this tab
    at.button(key="export").click().run()  # the same widget action, sent again
    assert not at.exception, at.exception
    assert "export_file" not in at.session_state
    assert len(db.audit_events(team, action="export")) == 1  # nothing exported
    assert not [b for b in at.button if b.key == "export"]  # the Data page is gone from this tab
    assert shown_id(at) is not None  # the labelling page instead


def test_the_admin_exports_and_imports_and_both_are_audited(team, tmp_path):
    pytest.importorskip("streamlit")
    at = app_signed_in("root", ADMIN_PW)
    at.switch_page("views/data.py").run()
    at.radio(key="export_fmt").set_value("csv").run()
    at.button(key="export").click().run()
    assert at.session_state["export_file"][0] == "labels.csv"
    assert ADMIN_PW.encode() not in at.session_state["export_file"][1]
    (row,) = db.audit_events(team, action="export")
    assert (row.actor, row.target, row.detail) == ("root", "labels.csv", "csv")


def test_two_accounts_labelling_at_once_keep_their_attribution(team):
    pytest.importorskip("streamlit")
    ana = app_signed_in("root", ADMIN_PW)
    lena = app_signed_in("lena", LENA_PW)
    done = {"root": [], "lena": []}
    for _ in range(2):
        for who, at, label in (("root", ana, "good"), ("lena", lena, "bad")):
            cid = shown_id(at)
            at.button(key=f"{label}-{cid}").click().run()
            assert not at.exception, at.exception
            done[who].append((cid, label))
    frame = db.judgements_frame(team)
    got = {who: sorted(zip(g["completion_id"], g["label"])) for who, g in frame.groupby("labeler")}
    assert got == {who: sorted(v) for who, v in done.items()}
    assert not set(done["root"]) & set(done["lena"])


def test_a_disabled_account_is_signed_out_at_the_next_run_of_the_page(team):
    pytest.importorskip("streamlit")
    at = app_signed_in("lena", LENA_PW)
    assert shown_id(at) is not None
    db.disable_account(team, "lena")
    at.run()  # the next run of the page (a click, a reload) signs the session out
    assert shown_id(at) is None and at.title[0].value == "Sign in to label"
    assert any("disabled" in e.value for e in at.error)
    again = app_signed_in("lena", LENA_PW)
    assert shown_id(again) is None and any("disabled" in e.value for e in again.error)


def test_a_labeller_sees_only_their_own_figures_and_the_admin_everyones(team):
    pytest.importorskip("streamlit")
    ids = list(range(1, 7))
    root_id = db.sign_in(team, "root", ADMIN_PW, client="c").account.id
    lena_id = db.sign_in(team, "lena", LENA_PW, client="c").account.id
    for cid in ids:
        db.record_judgement(team, labeler_id=root_id, completion_id=cid, label="good")
        db.record_judgement(team, labeler_id=lena_id, completion_id=cid, label="good" if cid % 2 else "bad")
    lena = app_signed_in("lena", LENA_PW)
    lena.switch_page("views/stats.py").run()
    assert not lena.exception, lena.exception
    assert {m.label: m.value for m in lena.metric}["Your judgements"] == "6"
    assert not lena.dataframe  # no table of everyone's judgements
    assert not any("root" in str(m.value) for m in lena.metric)
    root = app_signed_in("root", ADMIN_PW)
    root.switch_page("views/stats.py").run()
    assert set(root.dataframe[0].value["labeller"]) == {"root", "lena"}


def test_only_an_admin_can_edit_the_guidelines(team, tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    guide = tmp_path / "guidelines.md"
    guide.write_text("# Good\nPositive and about the film.\n")
    monkeypatch.setenv("RLHF_GUIDELINES", str(guide))
    lena = app_signed_in("lena", LENA_PW)
    lena.switch_page("views/guidelines.py").run()
    assert not lena.exception and not lena.text_area
    root = app_signed_in("root", ADMIN_PW)
    root.switch_page("views/guidelines.py").run()
    root.text_area(key="guidelines_text").input("# Good\nPositive, about the film, fluent.\n")
    root.button(key="guidelines_save").click().run()
    assert not root.exception, root.exception
    assert guide.read_text() == "# Good\nPositive, about the film, fluent.\n"
    assert [r.actor for r in db.audit_events(team, action="guidelines_edit")] == ["root"]


def test_shared_token_attempts_are_throttled_per_client(smoke_env, engine, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RLHF_LABEL_TOKEN", "the-room-token")
    seed(engine, 1)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert any("shared-token mode (one trusted room)" in c.value for c in at.caption)
    for i in range(accounts.FREE_FAILURES + 1):
        at.text_input(key="sign_in_name").input(f"guesser{i}")
        at.text_input(key="sign_in_token").input(f"wrong-{i}")
        at.button[0].click().run()
    assert any("Too many wrong access tokens" in e.value for e in at.error)
    actions = [r.action for r in db.audit_events(engine, limit=None)]
    assert actions.count("sign_in_failed") == accounts.FREE_FAILURES and actions[0] == "sign_in_throttled"
    assert db.stats(engine)["labelers"] == 0
