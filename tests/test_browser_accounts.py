"""Accounts mode in a real browser (Debian's chromium through Playwright): name and password, no
secret in the URL, a labeller who types the Data page's URL gets no Data page, a reload asks again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import harness

pytestmark = harness.BROWSER_MARKS
pytest.importorskip("playwright")

REPO = Path(__file__).resolve().parent.parent
ADMIN_PW = "admin horse battery staple"
LENA_PW = "lena's own long password"


def _app_env(url: str, tmp_path: Path) -> dict[str, str]:
    """The app's environment: this database, the smoke profile, artefacts under ``tmp_path``."""
    return {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp_path / "artifacts"),
    }


def _close_page_not_found(page) -> None:
    """Streamlit answers an address that is not in this person's navigation with a "Page not found"
    dialog over the default page; close it."""
    dialog = page.get_by_role("dialog")
    if dialog.count():
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached", timeout=10_000)


def _sign_in(page, url: str, name: str, password: str) -> None:
    page.context.clear_cookies()  # a browser without a saved session (that one: test_browser_sessions.py)

    def close_dialog(page) -> None:
        page.wait_for_timeout(500)  # (the dialog, if any, comes with the page's first run)
        _close_page_not_found(page)

    harness.sign_in(page, url, name, password=password, before_fill=close_dialog)


def test_a_labeller_signs_in_labels_and_cannot_open_the_data_page(tmp_path):
    import db

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    engine = db.connect(url)
    db.add_account(engine, "root", ADMIN_PW, role="admin")
    db.add_account(engine, "lena", LENA_PW)
    db.add_completions(
        engine, [db.NewCompletion(f"I watched film {i}", f" and it was fine {i}.", None, {}) for i in range(8)]
    )
    log = tmp_path / "streamlit.log"
    seen_urls: list[str] = []
    with harness.running_app(_app_env(url, tmp_path), log_path=log) as base, harness.chromium_page() as page:
        page.on("request", lambda r: seen_urls.append(r.url))
        _sign_in(page, base, "lena", LENA_PW)
        first = harness.current_completion_id(page)
        assert first is not None
        harness.press_and_wait_next(page, "g", first)
        assert page.get_by_role("link", name="Data").count() == 0  # not in a labeller's navigation
        # typing the Data page's address: a new page load, so sign in again; no Data page after it
        page.context.clear_cookies()
        page.goto(f"{base}/data")
        page.get_by_label("Your name").wait_for(timeout=30_000)
        assert page.get_by_label("Password", exact=True).input_value() == ""  # a reload asks again (docs/security.md)
        _sign_in(page, f"{base}/data", "lena", LENA_PW)
        assert page.get_by_text("Export labels").count() == 0
        assert page.get_by_role("button", name="Prepare export").count() == 0
        # the admin, in the same browser, has the Data page in the navigation
        _sign_in(page, f"{base}/data", "root", ADMIN_PW)
        page.get_by_role("link", name="Data").click()
        page.get_by_text("Export labels").wait_for(timeout=30_000)

    frame = db.judgements_frame(engine)
    assert frame["labeler"].tolist() == ["lena"] and frame["completion_id"].tolist() == [first]
    assert not any(LENA_PW in u or ADMIN_PW in u or "password" in u.lower() for u in seen_urls)
    assert LENA_PW not in log.read_text(errors="replace") and ADMIN_PW not in log.read_text(errors="replace")
    signed = [(r.actor, r.ok) for r in db.audit_events(engine, action="sign_in", limit=None)]
    assert signed.count(("lena", True)) == 2 and signed.count(("root", True)) == 1
