"""The labelling app in a real browser: Debian's chromium driven by Playwright, keyboard only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import harness

# CI sets RLHF_REQUIRE_BROWSER=1: there a missing chromium fails the run instead of skipping it.
_MISSING = not harness.CHROMIUM.exists() and os.environ.get("RLHF_REQUIRE_BROWSER") != "1"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(_MISSING, reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"),
]
pytest.importorskip("playwright")

REPO = Path(__file__).resolve().parent.parent
NASTY = "<script>document.title='pwned'</script> **bold** [link](http://x)"


def _seed(url: str, n: int) -> list[int]:
    import db

    engine = db.connect(url)
    texts = [f" and the acting was fine, item {i}." for i in range(n - 1)] + [NASTY]
    return db.add_completions(
        engine,
        [
            db.NewCompletion(prompt=f"I watched film {i}", text=t, model_version_id=None, gen_params={})
            for i, t in enumerate(texts)
        ],
    )


def test_label_20_items_with_the_keyboard_and_undo_one(tmp_path):
    import db

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    _seed(url, 25)
    env = {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    keys = {"g": "good", "b": "bad", "s": "skip"}
    pressed: list[tuple[int, str]] = []
    with harness.running_app(env, log_path=tmp_path / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "browser-tester")
        current = harness.current_completion_id(page)
        assert current is not None
        for i in range(20):
            key = "gbgs"[i % 4]
            text = page.locator(harness.COMPLETION_TEXT).inner_text()
            if "<script>" in text:  # generated text is shown literally, never run or rendered
                assert text.strip() == NASTY and page.title() != "pwned"
            pressed.append((current, keys[key]))
            current = harness.press_and_wait_next(page, key, current)
        assert current is not None
        # a reload resumes the same item, and keys work at once (no click into the page)
        page.reload()
        harness.wait_ready(page)
        assert harness.current_completion_id(page) == current
        assert page.get_by_text("Keys:").count() == 1
        # undo the last judgement: that item comes back on screen
        undone = pressed.pop()
        harness.press_and_wait_next(page, "u", current)
        assert harness.current_completion_id(page) == undone[0]

    frame = db.judgements_frame(db.connect(url))
    got = sorted(zip(frame["completion_id"].tolist(), frame["label"].tolist()))
    assert len(frame) == 19
    assert got == sorted(pressed)
    assert set(frame["labeler"]) == {"browser-tester"}
    assert frame["seconds"].notna().all()


def _judged(url: str) -> list[tuple[int, str]]:
    import db

    frame = db.judgements_frame(db.connect(url))
    return sorted(zip(frame["completion_id"].tolist(), frame["label"].tolist()))


def _settle(page, seconds: float = 1.0) -> int | None:
    import time

    time.sleep(seconds)
    return harness.current_completion_id(page)


def test_held_and_rapid_keys_do_exactly_what_the_labeller_saw(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    _seed(url, 30)
    env = {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    with harness.running_app(env, log_path=tmp_path / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "holder")
        first = _settle(page)
        # 1. G held for 1.5 s (auto-repeat after 0.5 s): one judgement, of the item that was on screen
        sent = harness.hold_key(page, "g", 1.5)
        assert sent > 15
        now = _settle(page)
        assert _judged(url) == [(first, "good")]
        assert now != first and page.get_by_text("held down").count() >= 1
        # three deliberate judgements
        judged = [first]
        for key in "bgs":
            judged.append(now)
            now = harness.press_and_wait_next(page, key, now)
        assert len(_judged(url)) == 4
        # 2. U held for 1.5 s: one undo (the newest judgement), and that item is on screen
        _settle(page, harness.DWELL_S)
        harness.hold_key(page, "u", 1.5)
        shown = _settle(page)
        assert [cid for cid, _ in _judged(url)] == sorted(judged[:3])
        assert shown == judged[3]
        assert page.get_by_text(f"Undone #{judged[3]}").count() == 1
        # 3. five U presses 60 ms apart: one undo, the rest ignored with a message
        _settle(page, harness.DWELL_S)
        harness.tap_keys(page, "u", 5, 0.06)
        shown = _settle(page)
        assert [cid for cid, _ in _judged(url)] == sorted(judged[:2])
        assert shown == judged[2]
        # 4. deliberate undos in a row show each item again, newest first ...
        for expected in (judged[1], judged[0]):
            shown = harness.press_and_wait_next(page, "u", shown)
            assert shown == expected
            assert page.get_by_text(f"Undone #{expected}").count() == 1
        assert _judged(url) == []
        # ... and judging them again brings back the next ones, in order
        for expected in (judged[1], judged[2], judged[3]):
            shown = harness.press_and_wait_next(page, "g", shown)
            assert shown == expected
        harness.press_and_wait_next(page, "g", shown)
    assert _judged(url) == sorted((cid, "good") for cid in judged)
