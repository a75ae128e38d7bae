"""Drive the real app in a real browser: start ``streamlit run`` on a free port, open Debian's
chromium through Playwright. Used by ``tests/test_browser_labeling.py`` and
``benchmarks/bench_labeling.py`` (Playwright is a dev dependency; never ``playwright install``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

# CI sets RLHF_REQUIRE_BROWSER=1: there a missing chromium fails the run instead of skipping it.
_NO_BROWSER = not CHROMIUM.exists() and os.environ.get("RLHF_REQUIRE_BROWSER") != "1"
#: ``pytestmark`` of every real-browser test module.
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(_NO_BROWSER, reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Where things are on the labelling page (stable keys set in views/label.py). The completion is shown
# inside one passage, prompt first, the model's part between markers: see completion_part.
COMPLETION_CAPTION = ".st-key-completion_box [data-testid='stCaptionContainer']"
COMPLETION_TEXT = ".st-key-completion_box [data-testid='stText']"


def completion_part(shown: str) -> str:
    """The completion exactly as stored, from the passage's text (``labeling_app.display``)."""
    from labeling_app.display import parse_passage

    return parse_passage(shown)[1]


# A press counts once the item has been on screen for label.min_dwell_ms (300 by default): a scripted
# labeller waits this long before each key.
DWELL_S = 0.35


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(
    env: dict[str, str], *, port: int | None = None, log_path: Path | None = None, timeout: float = 60.0
) -> Iterator[str]:
    """Start the app as a subprocess with ``env`` added to the environment; yield its base URL."""
    from labeling_app.__main__ import streamlit_args

    port = port or free_port()
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(streamlit_args(port, "127.0.0.1"), env=full_env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode} (log: {log_path})")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer on {url} within {timeout:.0f} s (log: {log_path})")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()


@contextlib.contextmanager
def chromium_page(viewport: tuple[int, int] = (1100, 900)):
    """A Playwright page in Debian's chromium (headless)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


def apptest_signed_in(name: str | None = "alice", token: str | None = None, timeout: float = 60):
    """The app run headless (``streamlit.testing.v1.AppTest``), signed in as ``name`` (with
    ``token`` when given); ``name=None`` stops at the sign-in form."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(
        str(Path(__file__).resolve().parents[2] / "labeling_app" / "app.py"), default_timeout=timeout
    ).run()
    assert not at.exception, at.exception
    if name is not None:
        at.text_input(key="sign_in_name").input(name)
        if token is not None:
            at.text_input(key="sign_in_token").input(token)
        at.button[0].click().run()
        assert not at.exception, at.exception
    return at


def sign_in(
    page,
    url: str,
    name: str,
    token: str | None = None,
    timeout_ms: int = 30_000,
    *,
    password: str | None = None,
    before_fill=None,
) -> None:
    """Open the app and sign in with the keyboard only (type, Tab, Enter): the name, and the shared
    ``token`` or the account's ``password`` when given. ``before_fill(page)`` runs once the form shows."""
    page.goto(url)
    box = page.get_by_label("Your name")
    box.wait_for(timeout=timeout_ms)
    if before_fill is not None:
        before_fill(page)
    box.fill(name)
    if token is not None:
        page.get_by_label("Access token").fill(token)
    if password is not None:
        secret = page.get_by_label("Password", exact=True)
        secret.fill(password)
        secret.press("Enter")
    else:
        box.press("Enter")
    wait_ready(page, timeout_ms)
    # Keyboard shortcuts must work without clicking into the page: move focus off the form.
    page.evaluate("document.activeElement && document.activeElement.blur()")


def wait_ready(page, timeout_ms: int = 30_000) -> None:
    """Wait until the labelling page has finished its first full run (the progress line is drawn).

    (Measured here: after a page load the browser shows texts 25-90 ms before it can take a key on
    a button, which loads its code lazily; the page therefore draws the item's text after its buttons,
    ``views/label.py``'s ``FIRST_DRAW_PAUSE_S``, so a key pressed as soon as the item is readable counts.)
    """
    page.get_by_text("You today:").wait_for(timeout=timeout_ms)


def current_completion_id(page) -> int | None:
    """The id shown in the completion box's caption ("COMPLETION #12 ..."), or None."""
    loc = page.locator(COMPLETION_CAPTION)
    if loc.count() == 0:
        return None
    text = loc.first.inner_text()
    return int(text.split("#", 1)[1].split()[0]) if "#" in text else None


def press_and_wait_next(
    page, key: str, previous: int | None, timeout_ms: int = 10_000, dwell_s: float = DWELL_S
) -> int | None:
    """Wait ``dwell_s`` (the item must be seen before it is judged), press ``key`` and wait until a
    different item (or the empty-queue message) is on screen."""
    time.sleep(dwell_s)
    page.keyboard.press(key)
    page.wait_for_function(
        """([sel, prev]) => {
            const el = document.querySelector(sel);
            if (!el) return document.body.innerText.includes('Nothing left for you to label');
            const m = el.textContent.match(/#(\\d+)/);
            return m && Number(m[1]) !== prev;
        }""",
        arg=[COMPLETION_CAPTION, previous],
        timeout=timeout_ms,
    )
    return current_completion_id(page)


def hold_key(page, key: str, seconds: float, *, delay: float = 0.5, interval: float = 0.033) -> int:
    """Hold ``key`` down as a keyboard does: one keydown, ``delay`` s of nothing (the OS's repeat
    delay), then a keydown with ``repeat=true`` every ``interval`` s, for ``seconds`` in all;
    returns how many keydowns were sent."""
    page.keyboard.down(key)
    sent, t0 = 1, time.monotonic()
    time.sleep(delay)
    while time.monotonic() - t0 < seconds:
        page.keyboard.down(key)  # Playwright marks a keydown of a key already down as a repeat
        sent += 1
        time.sleep(interval)
    page.keyboard.up(key)
    return sent


def tap_keys(page, key: str, n: int, interval: float) -> None:
    """``n`` separate presses of ``key``, ``interval`` s apart (a fast, impatient labeller)."""
    for _ in range(n):
        page.keyboard.press(key)
        time.sleep(interval)


# Latency probe: time from keydown (capture phase, before Streamlit sees it) to the DOM showing a new item.
LATENCY_PROBE = """([sel]) => {
  window.__lat = []; window.__t0 = null;
  const read = () => { const el = document.querySelector(sel); return el ? el.textContent : null; };
  window.__last = read();
  document.addEventListener('keydown', () => { window.__t0 = performance.now(); }, true);
  new MutationObserver(() => {
    const t = read();
    if (t && t !== window.__last) {
      window.__last = t;
      if (window.__t0 !== null) { window.__lat.push(performance.now() - window.__t0); window.__t0 = null; }
    }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""
