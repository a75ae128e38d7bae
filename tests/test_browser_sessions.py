"""A signed-in session survives a reload, in a real browser (Debian's chromium through Playwright), through
``python -m labeling_app``'s server (``labeling_app/server.py``): sign in, reload, still signed in and
labelling; sign out, reload, asked for the password; another server's cookie refused with one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import harness

pytestmark = harness.BROWSER_MARKS
pytest.importorskip("playwright")

REPO = Path(__file__).resolve().parent.parent
ADMIN_PW = "admin horse battery staple"
LENA_PW = "lena's own long password"


def _team(url: str):
    import db

    engine = db.connect(url)
    db.add_account(engine, "root", ADMIN_PW, role="admin")
    db.add_account(engine, "lena", LENA_PW)
    db.add_completions(
        engine, [db.NewCompletion(f"I watched film {i}", f" and it was fine {i}.", None, {}) for i in range(8)]
    )
    return engine


def _app_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp_path / "artifacts"),
    }


def _cookie(page, name: str) -> dict | None:
    return next((c for c in page.context.cookies() if c["name"] == name), None)


def _wait_cookie(page, name: str, *, present: bool, timeout_s: float = 20.0) -> dict | None:
    """Wait until the browser holds (or no longer holds) the cookie ``name``: the page's script posts the
    claim (or the clear) right after the run that signed in (or out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = _cookie(page, name)
        if (found is not None) is present:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"cookie {name} {'never came' if present else 'is still there'}")
        page.wait_for_timeout(200)


def _sign_in(page, url: str, name: str, password: str) -> None:
    harness.sign_in(page, url, name, password=password)


def test_a_session_survives_a_reload_and_ends_at_sign_out(tmp_path):
    import db
    from labeling_app import runtime

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    engine = _team(url)
    name = runtime.session_cookie_name(url)
    log = tmp_path / "streamlit.log"
    seen_urls: list[str] = []
    with harness.running_app(_app_env(url, tmp_path), log_path=log) as base, harness.chromium_page() as page:
        page.on("request", lambda r: seen_urls.append(r.url))
        _sign_in(page, base, "lena", LENA_PW)
        cookie = _wait_cookie(page, name, present=True)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
        assert not cookie["secure"]  # plain http on 127.0.0.1
        assert cookie["expires"] > time.time() + 11 * 3600  # label.session_hours, 12 by default
        assert page.evaluate("document.cookie").find(name) < 0  # HttpOnly: page scripts cannot read it
        token = cookie["value"]

        page.reload()  # a new page load: no form, the same account, and it can label
        harness.wait_ready(page)
        assert page.get_by_label("Password", exact=True).count() == 0
        page.get_by_text("Signed in as").wait_for(timeout=10_000)
        assert page.locator('[data-testid="stSidebar"]').get_by_text("lena", exact=True).count() == 1
        page.evaluate("document.activeElement && document.activeElement.blur()")
        first = harness.current_completion_id(page)
        assert first is not None
        harness.press_and_wait_next(page, "g", first)

        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Your name").wait_for(timeout=30_000)
        _wait_cookie(page, name, present=False)
        page.reload()  # signed out: asked for the password again
        page.get_by_label("Password", exact=True).wait_for(timeout=30_000)
        assert page.get_by_text("You today:").count() == 0
        assert page.get_by_text("not valid here").count() == 0  # no refusal: the cookie is gone, not refused

    assert db.resolve_session(engine, token) is None  # revoked in the database: a copied cookie is useless
    frame = db.judgements_frame(engine)
    assert frame["labeler"].tolist() == ["lena"] and frame["completion_id"].tolist() == [first]
    signed = [(r.actor, r.detail) for r in db.audit_events(engine, action="sign_in", limit=None)]
    assert sorted(signed, key=str) == sorted([("lena", None), ("lena", "session")], key=str)
    assert [r.actor for r in db.audit_events(engine, action="sign_out", limit=None)] == ["lena"]
    assert not db.audit_events(engine, action="session_refused")
    secrets_ = (LENA_PW, ADMIN_PW, token)
    assert not any(s in u for s in secrets_ for u in seen_urls)
    assert not any("password" in u.lower() or "claim=" in u for u in seen_urls)
    text = log.read_text(errors="replace")
    assert not any(s in text for s in secrets_)
    assert not any(s in str(r.as_dict()) for s in secrets_ for r in db.audit_events(engine, limit=None))


def test_another_servers_cookie_is_refused_with_one_line(tmp_path):
    import db
    from labeling_app import runtime, ui

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    engine = _team(url)
    other = db.connect(f"sqlite:///{tmp_path / 'other.sqlite'}")  # another server, its own "lena"
    foreign, _ = db.open_session(other, db.add_account(other, "lena", LENA_PW), client="c", ttl_s=3600)
    name = runtime.session_cookie_name(url)
    with harness.running_app(_app_env(url, tmp_path)) as base, harness.chromium_page() as page:
        page.context.add_cookies(
            [{"name": name, "value": foreign, "url": base, "httpOnly": True, "sameSite": "Strict"}]
        )
        page.goto(base)
        page.get_by_text(ui.SESSION_REFUSED).wait_for(timeout=30_000)
        assert page.get_by_label("Password", exact=True).input_value() == ""
        assert page.get_by_text("You today:").count() == 0
        _wait_cookie(page, name, present=False)  # the browser dropped it
        page.reload()
        page.get_by_label("Password", exact=True).wait_for(timeout=30_000)
        assert page.get_by_text(ui.SESSION_REFUSED).count() == 0  # refused once, then a plain form
        _sign_in(page, base, "lena", LENA_PW)  # and the password still works
        assert _wait_cookie(page, name, present=True)["value"] != foreign

    refused = db.audit_events(engine, action="session_refused", limit=None)
    assert len(refused) == 1 and not refused[0].ok and foreign not in str(refused[0].as_dict())
    assert [r.detail for r in db.audit_events(engine, action="sign_in", limit=None)] == [None]
