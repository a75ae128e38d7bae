"""The Compare page, headless (Streamlit's AppTest against a temporary database): each button records
its choice with the side shown on the left, undo, skip and tie, and the texts as plain text."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")

import db
from labeling_app import display
from labeling_app.keys import PAIR_SHORTCUTS, pair_action, pair_choice
from tests.support import harness

TIMEOUT = 60
NASTY = "<script>alert('x')</script> **bold** [link](http://x) <b>tag</b> # not a heading"


def profile(tmp_path: Path, **label) -> Path:
    import yaml

    cfg = yaml.safe_load(Path(harness.__file__).resolve().parents[2].joinpath("configs", "smoke.yaml").read_text())
    cfg["label"].update(label)
    out = tmp_path / "profile.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


@pytest.fixture(autouse=True)
def no_dwell(smoke_env, tmp_path, monkeypatch):
    """AppTest clicks come faster than any person: the dwell time is off here (the browser test keeps it)."""
    monkeypatch.setenv("RLHF_CONFIG", str(profile(tmp_path, min_dwell_ms=0)))


def seed_pairs(url: str, n: int = 3, texts: tuple[str, str] | None = None) -> list[int]:
    """``n`` prompts with two completions each, made into ``n`` comparisons; returns their ids."""
    engine = db.connect(url)
    for i in range(n):
        a, b = texts or (f" was film {i}, the first take.", f" was film {i}, the second take.")
        db.add_completions(engine, [db.NewCompletion(f"This movie {i}", a), db.NewCompletion(f"This movie {i}", b)])
    assert db.make_comparisons(engine) == n
    return [r.comparison_id for r in (db.get_pair(engine, c) for c in range(1, n + 1)) if r is not None]


def start():
    at = harness.apptest_signed_in("alice", timeout=TIMEOUT)
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception
    return at


def shown_id(at) -> int | None:
    for c in at.caption:
        if c.value.startswith("COMPARISON #"):
            return int(c.value.split("#")[1].split()[0])
    return None


def shown_sides(at) -> tuple[str, str]:
    """(left completion, right completion) exactly as stored, decoded from the page's plain texts."""
    passages = [t.value for t in at.text if t.value.startswith(display.OPEN) and t.value.endswith(display.CLOSE)]
    assert len(passages) == 2, passages
    left, right = (display.parse_passage(p)[1] for p in passages)
    return left, right


def rows(url: str) -> list[dict]:
    return db.pair_judgement_rows(db.connect(url))


def test_pair_keys_map_to_choices_both_ways():
    assert PAIR_SHORTCUTS == {"left": "1", "right": "2", "tie": "0", "skip": "S", "undo": "U"}
    for left in ("a", "b"):
        for action in ("left", "right", "tie", "skip"):
            assert pair_action(pair_choice(action, left), left) == action
    assert pair_choice("left", "b") == "b" and pair_choice("right", "b") == "a"


@pytest.mark.parametrize("action", ["left", "right", "tie", "skip"])
def test_each_button_records_its_choice_and_the_side_shown(smoke_env, action):
    url = smoke_env["db_url"]
    seed_pairs(url, 2)
    at = start()
    cid = shown_id(at)
    left_text, right_text = shown_sides(at)
    at.button(key=f"pair-{action}-{cid}").click().run()
    assert not at.exception
    assert shown_id(at) not in (None, cid)  # the next pair
    (row,) = rows(url)
    assert row["comparison_id"] == cid and row["labeler"] == "alice"
    assert row[row["left_side"]] == left_text  # the side recorded is the one the page showed on the left
    other = "b" if row["left_side"] == "a" else "a"
    assert row[other] == right_text
    expected = {"left": row["left_side"], "right": other, "tie": "tie", "skip": "skip"}[action]
    assert row["choice"] == expected
    assert row["seconds"] is not None and row["seconds"] >= 0


def test_undo_deletes_the_choice_and_shows_the_pair_again(smoke_env):
    url = smoke_env["db_url"]
    seed_pairs(url, 3)
    at = start()
    first = shown_id(at)
    sides = shown_sides(at)
    at.button(key=f"pair-left-{first}").click().run()
    second = shown_id(at)
    assert len(rows(url)) == 1 and second != first
    at.button(key=f"pair-undo-{second}").click().run()
    assert not at.exception
    assert rows(url) == []
    assert shown_id(at) == first and shown_sides(at) == sides  # the same layout again
    assert any("Undone #" in i.value and "(was left)" in i.value for i in at.info)
    at.button(key=f"pair-right-{first}").click().run()  # compared anew, then the pair that was on screen
    assert shown_id(at) == second
    (row,) = rows(url)
    assert row["comparison_id"] == first and row["choice"] != row["left_side"]
    assert db.get_pair(db.connect(url), first).n_labels == 1


def test_texts_are_plain_text_never_markdown(smoke_env):
    url = smoke_env["db_url"]
    seed_pairs(url, 1, texts=(" " + NASTY, " fine."))
    at = start()
    assert NASTY in " ".join(shown_sides(at))
    assert " " + NASTY in shown_sides(at)  # exactly as stored, the leading space included
    assert not any(NASTY in m.value for m in at.markdown)
    assert any(t.value == display.visible("This movie 0") for t in at.text)  # the prompt above


def test_nothing_left_then_undo_brings_the_last_pair_back(smoke_env):
    url = smoke_env["db_url"]
    seed_pairs(url, 1)
    at = start()
    cid = shown_id(at)
    at.button(key=f"pair-tie-{cid}").click().run()
    assert shown_id(at) is None
    assert any("Nothing left for you to compare" in s.value for s in at.success)
    assert any("Compared this session: 1" in c.value for c in at.caption)
    at.button(key="pair-undo-none").click().run()
    assert shown_id(at) == cid and rows(url) == []


def test_two_labellers_see_different_pairs(smoke_env):
    seed_pairs(smoke_env["db_url"], 2)
    first = start()
    other = harness.apptest_signed_in("bob", timeout=TIMEOUT)
    other.switch_page("views/compare.py").run()
    assert {shown_id(first), shown_id(other)} == {1, 2}


def test_stats_page_shows_the_comparison_figures(smoke_env):
    url = smoke_env["db_url"]
    seed_pairs(url, 3)
    engine = db.connect(url)
    ann = db.get_or_create_labeler(engine, "ann")  # the stats page needs one good/bad judgement to draw
    db.record_judgement(engine, labeler_id=ann, completion_id=1, label="good")
    at = start()
    for action in ("left", "tie"):
        at.button(key=f"pair-{action}-{shown_id(at)}").click().run()
    at.switch_page("views/stats.py").run()
    assert not at.exception, at.exception
    figures = {m.label: m.value for m in at.metric}
    assert figures["Pair judgements"] == "2" and figures["Compared pairs"] == "2 of 3"
    assert figures["Share of 'left'"] == "100%"  # the one decisive choice was "left"


def test_win_rate_rows_name_the_versions():
    from labeling_app.pair_stats import win_rate_rows

    wr = {"version": 2, "other": 1, "n": 4, "wins": 2, "losses": 1, "ties": 1, "win_rate": 0.625}
    (row,) = win_rate_rows([{**wr, "interval": [0.3, 0.9]}], {1: "base", 2: "tuned"})
    assert (row["version"], row["against"], row["win rate"], row["95% interval"]) == ("tuned", "base", "62%", "30–90%")
