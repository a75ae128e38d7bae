"""The Compare page in a real browser: Debian's chromium driven by Playwright, keyboard only."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import harness

pytestmark = harness.BROWSER_MARKS
pytest.importorskip("playwright")

REPO = Path(__file__).resolve().parent.parent
NASTY = "<script>document.title='pwned'</script> **bold** [link](http://x)"

# Where things are on the Compare page (stable keys set in views/compare.py).
PAIR_CAPTION = ".st-key-pair_box [data-testid='stCaptionContainer']"
LEFT_TEXT = ".st-key-pair_left_box [data-testid='stText']"
RIGHT_TEXT = ".st-key-pair_right_box [data-testid='stText']"
READY = "Compared this session:"


def _app_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp_path / "artifacts"),
    }


def _seed(url: str, n: int) -> None:
    import db

    engine = db.connect(url)
    for i in range(n):
        second = NASTY if i == n - 1 else f" and the second take of film {i} was slow."
        db.add_completions(
            engine,
            [
                db.NewCompletion(f"I watched film {i}", f" and the first take of film {i} was fine."),
                db.NewCompletion(f"I watched film {i}", second),
            ],
        )
    assert db.make_comparisons(engine) == n


def sign_in_to_compare(page, base: str, name: str, timeout_ms: int = 30_000) -> None:
    """Sign in with the keyboard (``harness.sign_in``), open the Compare page from the navigation, and
    move focus off it: the keys must work without clicking into the page."""
    harness.sign_in(page, base, name, timeout_ms=timeout_ms)
    page.get_by_role("link", name="Compare").click()
    page.get_by_text(READY).wait_for(timeout=timeout_ms)
    page.evaluate("document.activeElement && document.activeElement.blur()")


def current_pair_id(page) -> int | None:
    loc = page.locator(PAIR_CAPTION)
    if loc.count() == 0:
        return None
    text = loc.first.inner_text()
    return int(text.split("#", 1)[1].split()[0]) if "#" in text else None


def shown_completion(page, selector: str) -> str:
    return harness.completion_part(page.locator(selector).inner_text())


def press_and_wait_next(page, key: str, previous: int | None, timeout_ms: int = 10_000) -> int | None:
    """Wait the dwell time, press ``key`` and wait until another pair (or the empty-queue message) shows."""
    time.sleep(harness.DWELL_S)
    page.keyboard.press(key)
    page.wait_for_function(
        """([sel, prev]) => {
            const el = document.querySelector(sel);
            if (!el) return document.body.innerText.includes('Nothing left for you to compare');
            const m = el.textContent.match(/#(\\d+)/);
            return m && Number(m[1]) !== prev;
        }""",
        arg=[PAIR_CAPTION, previous],
        timeout=timeout_ms,
    )
    return current_pair_id(page)


def test_compare_pairs_with_the_keyboard_undo_one_and_sides_are_recorded(tmp_path):
    import db

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    _seed(url, 10)
    actions = {"1": "left", "2": "right", "0": "tie", "s": "skip"}
    pressed: dict[int, tuple[str, str, str]] = {}  # id -> (action, left text, right text)
    with harness.running_app(_app_env(url, tmp_path), log_path=tmp_path / "streamlit.log") as base:
        with harness.chromium_page() as page:
            sign_in_to_compare(page, base, "browser-tester")
            current = current_pair_id(page)
            assert current is not None
            for i in range(8):
                key = "1201s"[i % 5]
                left, right = shown_completion(page, LEFT_TEXT), shown_completion(page, RIGHT_TEXT)
                if NASTY in (left, right):  # generated text is shown literally, never run or rendered
                    assert page.title() != "pwned"
                pressed[current] = (actions[key], left, right)
                current = press_and_wait_next(page, key, current)
            assert current is not None
            # a reload resumes the same pair with the same sides
            sides = (shown_completion(page, LEFT_TEXT), shown_completion(page, RIGHT_TEXT))
            page.reload()
            page.get_by_text(READY).wait_for(timeout=30_000)
            assert current_pair_id(page) == current
            assert (shown_completion(page, LEFT_TEXT), shown_completion(page, RIGHT_TEXT)) == sides
            # undo the last choice: that pair comes back on screen
            last = list(pressed)[-1]
            assert press_and_wait_next(page, "u", current) == last
            del pressed[last]

    rows = db.pair_judgement_rows(db.connect(url))
    assert {r["comparison_id"] for r in rows} == set(pressed) and len(rows) == 7
    for r in rows:
        action, left, right = pressed[r["comparison_id"]]
        other = "b" if r["left_side"] == "a" else "a"
        assert (r[r["left_side"]], r[other]) == (left, right)  # the side recorded is the side shown
        expected = {"left": r["left_side"], "right": other, "tie": "tie", "skip": "skip"}[action]
        assert r["choice"] == expected and r["labeler"] == "browser-tester" and r["seconds"] is not None
