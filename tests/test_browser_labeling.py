"""The labelling app in a real browser: Debian's chromium driven by Playwright, keyboard only."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import harness

pytestmark = harness.BROWSER_MARKS
pytest.importorskip("playwright")

REPO = Path(__file__).resolve().parent.parent
NASTY = "<script>document.title='pwned'</script> **bold** [link](http://x)"


def _app_env(url: str, tmp_path: Path, profile: Path | None = None) -> dict[str, str]:
    """The app's environment: this database, the smoke profile (or ``profile``), artefacts under ``tmp_path``."""
    return {
        "RLHF_DB_URL": url,
        "RLHF_CONFIG": str(profile or REPO / "configs" / "smoke.yaml"),
        "RLHF_ARTIFACTS": str(tmp_path / "artifacts"),
    }


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
    env = _app_env(url, tmp_path)
    keys = {"g": "good", "b": "bad", "s": "skip"}
    pressed: list[tuple[int, str]] = []
    with harness.running_app(env, log_path=tmp_path / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "browser-tester")
        current = harness.current_completion_id(page)
        assert current is not None
        for i in range(20):
            key = "gbgs"[i % 4]
            text = harness.completion_part(page.locator(harness.COMPLETION_TEXT).inner_text())
            if "<script>" in text:  # generated text is shown literally, never run or rendered
                assert text == NASTY and page.title() != "pwned"
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
    env = _app_env(url, tmp_path)
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


def _profile(tmp_path: Path, **label) -> Path:
    import yaml

    cfg = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    cfg["label"].update(label)
    out = tmp_path / "profile.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_the_lease_is_renewed_while_shown_and_freed_when_the_tab_closes(tmp_path):
    """lease_seconds 9: the browser's heartbeat renews it every 3 s. Held for longer than the lease,
    the item stays this tab's; once the tab is closed, it is free again within the lease."""
    import time

    import db

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    _seed(url, 3)
    env = _app_env(url, tmp_path, _profile(tmp_path, lease_seconds=9))
    engine = db.connect(url)
    ben = db.get_or_create_labeler(engine, "ben")
    with harness.running_app(env, log_path=tmp_path / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "ann")
        shown = _settle(page)
        time.sleep(12)  # longer than the lease: only the heartbeat keeps it
        items = [db.next_item(engine, ben, session_key=f"b{i}") for i in range(3)]
        taken = {item.completion_id for item in items if item is not None}
        assert shown not in taken and len(taken) == 2  # ben gets the two others, never ann's
        db.release_leases(engine, ben)
        after = harness.press_and_wait_next(page, "g", shown)  # the judgement still counts
        assert _judged(url) == [(shown, "good")]
        assert after is not None
        page.close()  # the tab goes away with `after` on screen
        time.sleep(11)
        taken = {db.next_item(engine, ben, session_key=f"c{i}") for i in range(2)}
        assert after in {item.completion_id for item in taken if item is not None}


def test_a_comment_typed_then_a_click_on_good_is_stored_with_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    _seed(url, 4)
    env = _app_env(url, tmp_path)
    import db

    with harness.running_app(env, log_path=tmp_path / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "commenter")
        first = _settle(page)
        page.get_by_text("Broken text", exact=True).click()
        box = page.get_by_role("textbox", name="Comment (optional)")
        box.click()
        box.type("gets cut off, then repeats")  # "g", "b", "s" typed here never judge
        assert _judged(url) == []
        page.get_by_role("button", name="Good").click()  # no Enter: the click commits the box first
        page.wait_for_function(
            "([sel, prev]) => { const el = document.querySelector(sel);"
            " const m = el && el.textContent.match(/#(\\d+)/); return m && Number(m[1]) !== prev; }",
            arg=[harness.COMPLETION_CAPTION, first],
        )
        # the next item starts with an empty comment: the caption can change a frame before Streamlit
        # re-renders the text area, so wait for it (Playwright's expect retries up to 10 s)
        from playwright.sync_api import expect

        expect(box).to_have_value("", timeout=10_000)
    (row,) = db.judgement_rows(db.connect(url))
    assert (row["completion_id"], row["label"], row["flag"], row["comment"]) == (
        first,
        "good",
        "broken_text",
        "gets cut off, then repeats",
    )


def test_the_first_key_after_a_page_load_counts_and_a_too_quick_one_says_so(tmp_path):
    """A labeller who reloads the tab and presses a key the moment the item is readable: the press
    counts (the item had been on screen long before the reload, and its buttons take keys by the time
    its text shows). A press on a new item before the dwell time is refused with a message."""
    import time

    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    _seed(url, 12)
    env = _app_env(url, tmp_path)
    judged = []
    with harness.running_app(env, log_path=tmp_path / "streamlit.log") as base, harness.chromium_page() as page:
        harness.sign_in(page, base, "reloader")
        current = _settle(page)
        for _ in range(4):
            time.sleep(0.5)  # reading it
            page.reload()
            page.locator(harness.COMPLETION_TEXT).wait_for()  # readable: press at once
            assert harness.current_completion_id(page) == current
            judged.append(current)
            current = harness.press_and_wait_next(page, "g", current, timeout_ms=5_000, dwell_s=0)
            assert page.get_by_text("Too quick").count() == 0
        assert _judged(url) == sorted((cid, "good") for cid in judged)
        page.keyboard.press("b")  # the next item, pressed the moment it appeared: too quick, and it says so
        page.get_by_text("Too quick").wait_for(timeout=5_000)
        assert harness.current_completion_id(page) == current
    assert _judged(url) == sorted((cid, "good") for cid in judged)
