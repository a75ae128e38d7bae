"""The labelling app, headless: Streamlit's AppTest runs the real pages against a temporary database."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

import db
from labeling_app import display
from tests.support import harness

APP = str(Path(__file__).resolve().parent.parent / "labeling_app" / "app.py")
TIMEOUT = 60
NASTY = "<script>alert('x')</script> **bold** [link](http://x) <b>tag</b> # not a heading"


def profile(tmp_path: Path, **label) -> Path:
    """A copy of the smoke profile with ``label`` settings changed."""
    import yaml

    cfg = yaml.safe_load(Path(harness.__file__).resolve().parents[2].joinpath("configs", "smoke.yaml").read_text())
    cfg["label"].update(label)
    out = tmp_path / "profile.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


@pytest.fixture(autouse=True)
def no_dwell(smoke_env, tmp_path, monkeypatch):
    """AppTest clicks come faster than any person: tests that check the dwell time turn it back on."""
    monkeypatch.setenv("RLHF_CONFIG", str(profile(tmp_path, min_dwell_ms=0)))


def seed(url: str, n: int = 5, texts: list[str] | None = None) -> list[int]:
    engine = db.connect(url)
    texts = texts or [f" and it was number {i}, a fine film." for i in range(n)]
    return db.add_completions(
        engine,
        [
            db.NewCompletion(prompt=f"This movie {i}", text=t, model_version_id=None, gen_params={})
            for i, t in enumerate(texts)
        ],
    )


def start(name: str | None = "alice", token: str | None = None) -> AppTest:
    return harness.apptest_signed_in(name, token, timeout=TIMEOUT)


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def shown_passage(at: AppTest) -> tuple[str, str] | None:
    """(prompt, completion) as the page shows them: the one passage, decoded back (``display``)."""
    for t in at.text:
        if display.OPEN in t.value and t.value.endswith(display.CLOSE):
            return display.parse_passage(t.value)
    return None


def shown_id(at: AppTest) -> int | None:
    for c in at.caption:
        if c.value.startswith("COMPLETION #"):
            return int(c.value.split("#")[1].split()[0])
    return None


def judgements(url: str) -> list[tuple[int, str, str]]:
    frame = db.judgements_frame(db.connect(url))
    return sorted(zip(frame["completion_id"], frame["labeler"], frame["label"]))


def test_sign_in_then_item_shown(smoke_env):
    seed(smoke_env["db_url"], 3)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Sign in to label"
    assert shown_id(at) is None  # nothing shown before sign-in
    at.text_input(key="sign_in_name").input("alice")
    at.button[0].click().run()
    assert not at.exception
    assert shown_id(at) is not None
    assert "Good = a positive, coherent movie-review continuation" in texts(at)
    assert any("Keys:" in m.value and "**G**" in m.value for m in at.caption)
    assert at.query_params["u"] == "alice" and at.query_params["s"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "bad\x07name"])
def test_invalid_name_is_refused(smoke_env, name):
    seed(smoke_env["db_url"], 1)
    at = start(name)
    assert at.error, "an invalid name must show an error"
    assert shown_id(at) is None
    assert db.stats(db.connect(smoke_env["db_url"]))["labelers"] == 0


def test_good_bad_skip_are_committed_and_next_item_differs(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 4)
    at = start()
    seen = []
    for label in ("good", "bad", "skip"):
        cid = shown_id(at)
        seen.append((cid, label))
        at.button(key=f"{label}-{cid}").click().run()
        assert not at.exception
        assert shown_id(at) != cid
    assert judgements(url) == sorted((cid, "alice", label) for cid, label in seen)
    assert any("You today: 3" in c.value for c in at.caption)


def test_stale_double_click_does_not_judge_twice(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 3)
    at = start()
    first = shown_id(at)
    old_button = at.button(key=f"good-{first}")
    old_button.click().run()
    second = shown_id(at)
    old_button.click().run()  # the same click arriving again after the next item is shown
    assert not at.exception
    assert judgements(url) == [(first, "alice", "good")]
    assert shown_id(at) == second


def test_undo_restores_the_item(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 3)
    at = start()
    first = shown_id(at)
    at.button(key=f"good-{first}").click().run()
    assert len(judgements(url)) == 1
    second = shown_id(at)
    at.button(key=f"undo-{second}").click().run()
    assert not at.exception
    assert judgements(url) == []
    assert shown_id(at) == first
    assert any(f"Undone #{first} (was good)" in i.value for i in at.info)
    at.button(key=f"bad-{first}").click().run()
    assert judgements(url) == [(first, "alice", "bad")]
    assert shown_id(at) == second  # the item on screen before the undo comes back next
    at.button(key=f"undo-{second}").click().run()
    at.button(key=f"undo-{first}").click().run()  # nothing left to undo: a message, no error
    assert not at.exception
    assert any("Nothing to undo" in i.value for i in at.info)


def test_empty_queue_message(smoke_env):
    db.connect(smoke_env["db_url"])
    at = start()
    assert not at.exception
    assert any("Nothing left for you to label" in s.value for s in at.success)
    assert shown_id(at) is None
    # no policy exists: the refill degrades to a log line; the labeller is given no operator's command
    assert not any("python -m" in c.value or "make " in c.value for c in at.caption)


def test_queue_runs_out_after_last_item(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 2)
    at = start()
    for _ in range(2):
        at.button(key=f"good-{shown_id(at)}").click().run()
    assert any("Nothing left for you to label" in s.value for s in at.success)
    assert len(judgements(url)) == 2


def test_generated_text_is_plain_text(smoke_env):
    seed(smoke_env["db_url"], texts=[NASTY])
    at = start()
    assert shown_passage(at) == ("This movie 0", NASTY)  # st.text: shown literally
    assert display.passage("This movie 0", NASTY) in texts(at)
    for element in list(at.markdown) + list(at.caption) + list(at.info) + list(at.success):
        assert "<script>" not in element.value and "**bold**" not in element.value
    assert not at.get("html")


def test_wrong_token_shows_nothing(smoke_env, monkeypatch):
    monkeypatch.setenv("RLHF_LABEL_TOKEN", "s3cret-token")
    seed(smoke_env["db_url"], 2)
    at = start("alice", token="wrong")
    assert any("Wrong access token" in e.value for e in at.error)
    assert shown_id(at) is None
    assert db.stats(db.connect(smoke_env["db_url"]))["labelers"] == 0
    at.text_input(key="sign_in_token").input("s3cret-token")
    at.button[0].click().run()
    assert shown_id(at) is not None


def test_reload_resumes_the_same_item(smoke_env):
    seed(smoke_env["db_url"], 5)
    at = start()
    shown = shown_id(at)
    key = at.query_params["s"]
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)
    again.query_params["u"] = "alice"
    again.query_params["s"] = key
    again.run()
    assert not again.exception
    assert shown_id(again) == shown  # signed back in, same lease
    other = start("alice")  # a second tab: its own session key, another item
    assert shown_id(other) not in (None, shown)


def test_unopenable_database_shows_error_page(smoke_env, monkeypatch, tmp_path):
    bogus = tmp_path / "not-a-db.sqlite"
    bogus.write_bytes(b"this is not a SQLite database, just text" * 100)
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{bogus}")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Database error"
    # the labeller reads plain words; the file and the fix are on the operator's line
    assert str(bogus) not in at.error[0].value and "tell whoever runs this app" in at.error[0].value
    assert any(str(bogus) in c.value and "For whoever runs this app" in c.value for c in at.caption)


def test_missing_database_is_created_only_at_the_default_path(smoke_env, monkeypatch, tmp_path):
    # smoke_env's database is data/feedback.sqlite under the working directory: the default path
    assert not smoke_env["db_file"].exists()
    at = start()
    assert not at.exception
    assert smoke_env["db_file"].exists()
    # anywhere else, a missing database (deleted, moved, mistyped) is refused, never created empty
    elsewhere = tmp_path / "team" / "labels.sqlite"
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{elsewhere}")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert at.title[0].value == "Database error"
    assert any("python -m db upgrade" in c.value and str(elsewhere) in c.value for c in at.caption)
    assert not elsewhere.exists() and not elsewhere.parent.exists()
    db.connect(f"sqlite:///{elsewhere}")  # python -m db upgrade
    at = start()
    assert not at.exception and not any(t.value == "Database error" for t in at.title)


def test_stats_page_with_data(smoke_env):
    url = smoke_env["db_url"]
    ids = seed(url, 6)
    engine = db.connect(url)
    a, b = db.get_or_create_labeler(engine, "ann"), db.get_or_create_labeler(engine, "ben")
    for i, cid in enumerate(ids):
        db.record_judgement(engine, labeler_id=a, completion_id=cid, label="good" if i % 2 else "bad", seconds=2.0)
        db.record_judgement(engine, labeler_id=b, completion_id=cid, label="good" if i % 3 else "bad", seconds=3.0)
    db.register_model_version(engine, kind="reward", name="rm-1", path="/nowhere", metrics={"accuracy": 0.7})
    db.register_model_version(engine, kind="reward", name="rm-2", path="/nowhere", metrics={"accuracy": 0.8})
    at = start()
    at.switch_page("views/stats.py").run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "12"
    frames = [d.value for d in at.dataframe]
    per = frames[0]
    assert set(per["labeller"]) == {"ann", "ben"} and per["judgements"].tolist() == [6, 6]
    kappa = frames[1]
    assert kappa["shared_items"].tolist() == [6]
    assert list(frames[2]["accuracy"]) == [0.7, 0.8]


def test_stats_page_shows_labeller_reliability(smoke_env):
    url = smoke_env["db_url"]
    ids = seed(url, 7)
    engine = db.connect(url)
    for name, wrong in (("ann", set()), ("ben", {0}), ("cat", {1, 2, 3})):
        who = db.get_or_create_labeler(engine, name)
        for i, cid in enumerate(ids[:6]):
            label = "good" if (i % 2 == 0) != (i in wrong) else "bad"
            db.record_judgement(engine, labeler_id=who, completion_id=cid, label=label, seconds=1.0)
    solo = db.get_or_create_labeler(engine, "dan")  # labels an item nobody else sees
    db.record_judgement(engine, labeler_id=solo, completion_id=ids[6], label="good", seconds=1.0)
    at = start()
    at.switch_page("views/stats.py").run()
    assert not at.exception, at.exception
    per = at.dataframe[0].value.set_index("labeller")
    assert per.loc["dan", "reliability"] == "unknown"
    acc = {n: float(per.loc[n, "reliability"]) for n in ("ann", "ben", "cat")}
    assert acc["ann"] > acc["ben"] > acc["cat"], acc


def test_data_page_exports_and_imports(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 2)
    at = start()
    at.button(key=f"good-{shown_id(at)}").click().run()
    at.switch_page("views/data.py").run()
    assert not at.exception, at.exception
    at.button(key="export").click().run()
    assert not at.exception, at.exception
    file_name, data, _ = at.session_state["export_file"]
    assert file_name == "labels.jsonl" and data.count(b"\n") >= 1
    at.radio(key="export_fmt").set_value("csv").run()
    at.button(key="export").click().run()
    assert at.session_state["export_file"][0] == "labels.csv"
    at.radio(key="export_fmt").set_value("hf").run()
    at.button(key="export").click().run()
    assert not at.exception, at.exception
    name, data, mime = at.session_state["export_file"]
    import io
    import zipfile

    assert name == "labels_dataset.zip" and mime == "application/zip"
    assert zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_data_page_imports_prompts(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 1)
    at = start()
    at.switch_page("views/data.py").run()
    at.file_uploader(key="prompt_file").upload(
        "p.txt", b"A custom opening\n\nA custom opening\nSecond one\n", "text/plain"
    ).run()
    at.button(key="import").click().run()
    assert not at.exception, at.exception
    assert any("Imported 2 new prompt(s)" in s.value for s in at.success)
    assert db.stats(db.connect(url))["prompts"] == 3
    # no policy in this environment: the refill for the new prompts says so instead of failing
    assert any("No policy" in c.value for c in at.caption)


@pytest.mark.parametrize(
    "text",
    [
        "مرحبا بالعالم — שלום 🎬🍿 ünïcödé",
        "x" * 100_000,
        "   leading spaces\nand\ttabs  \n",
        "est film\u200b ever\u202e",  # continues the prompt's word; zero-width space, right-to-left override
        "",
    ],
)
def test_unusual_completions_are_shown_verbatim(smoke_env, text):
    seed(smoke_env["db_url"], texts=[text])
    at = start()
    assert shown_passage(at) == ("This movie 0", text)  # nothing trimmed, nothing hidden
    at.button(key=f"good-{shown_id(at)}").click().run()
    assert not at.exception
    assert judgements(smoke_env["db_url"])[0][2] == "good"


def test_label_flow_on_both_backends(smoke_env, monkeypatch, backend_url):
    monkeypatch.setenv("RLHF_DB_URL", backend_url)
    seed(backend_url, 3)
    at = start()
    first = shown_id(at)
    at.button(key=f"good-{first}").click().run()
    second = shown_id(at)
    at.button(key=f"bad-{second}").click().run()
    at.button(key=f"undo-{shown_id(at)}").click().run()
    assert shown_id(at) == second
    at.button(key=f"skip-{second}").click().run()
    assert not at.exception, at.exception
    assert judgements(backend_url) == sorted([(first, "alice", "good"), (second, "alice", "skip")])
    at.switch_page("views/stats.py").run()
    assert not at.exception, at.exception


def test_a_press_too_soon_is_ignored_with_feedback(smoke_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CONFIG", str(profile(tmp_path, min_dwell_ms=5000)))
    url = smoke_env["db_url"]
    seed(url, 2)
    at = start()
    cid = shown_id(at)
    at.button(key=f"good-{cid}").click().run()
    assert not at.exception
    assert shown_id(at) == cid and judgements(url) == []
    assert any("Too quick" in w.value for w in at.warning)


def test_a_refused_name_in_the_url_shows_why(smoke_env):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["u"] = "\u0430lice"  # a Cyrillic a among Latin letters
    at.run()
    assert not at.exception
    assert at.title[0].value == "Sign in to label"
    assert any("alphabets" in e.value for e in at.error)


def test_names_differing_in_case_are_one_labeller(smoke_env):
    seed(smoke_env["db_url"], 2)
    start("alice")
    at = start("Alice")
    assert not at.exception
    assert db.stats(db.connect(smoke_env["db_url"]))["labelers"] == 1


def test_a_duplicated_tab_cannot_overwrite(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 4)
    one = start()
    key = one.query_params["s"]
    two = AppTest.from_file(APP, default_timeout=TIMEOUT)  # the full URL copied into a second tab
    two.query_params["u"] = "alice"
    two.query_params["s"] = key
    two.run()
    shown = shown_id(one)
    assert shown_id(two) == shown
    one.button(key=f"good-{shown}").click().run()
    two.button(key=f"bad-{shown}").click().run()  # the stale tab
    assert not two.exception
    assert judgements(url) == [(shown, "alice", "good")]
    assert any("already judged" in w.value for w in two.warning)
    assert shown_id(two) != shown


def test_a_deleted_database_stops_writing_and_says_so(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 3)
    at = start()
    cid = shown_id(at)
    moved = smoke_env["db_file"].with_name("moved.sqlite")
    smoke_env["db_file"].rename(moved)
    at.button(key=f"good-{cid}").click().run()
    assert not at.exception
    assert any("gone missing" in e.value for e in at.error)
    assert any("put the database file back" in c.value for c in at.caption)  # the operator's recovery
    assert not smoke_env["db_file"].exists()  # nothing was written elsewhere
    assert moved.exists()


# ---------------------------------------------------------------------------- issue 20: the rest


def progress_text(at: AppTest) -> str | None:
    """The session-goal line ("12 of 50 this session")."""
    bars = at.get("progress")
    return bars[0].proto.text if bars else None


def test_progress_toward_the_session_goal_survives_undo_and_reload(smoke_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CONFIG", str(profile(tmp_path, min_dwell_ms=0, session_goal=3)))
    url = smoke_env["db_url"]
    seed(url, 6)
    at = start()
    assert progress_text(at) == "0 of 3 this session"
    for label in ("good", "bad"):
        at.button(key=f"{label}-{shown_id(at)}").click().run()
    assert progress_text(at) == "2 of 3 this session"
    at.button(key=f"undo-{shown_id(at)}").click().run()
    assert progress_text(at) == "1 of 3 this session"
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a reload of the tab: same session key
    again.query_params["u"] = "alice"
    again.query_params["s"] = at.query_params["s"]
    again.run()
    assert progress_text(again) == "1 of 3 this session"
    for _ in range(2):
        again.button(key=f"good-{shown_id(again)}").click().run()
    assert progress_text(again) == "3 of 3 this session: goal reached, thank you!"
    other = start()  # another tab starts its own count; the day's count is the labeller's
    assert progress_text(other) == "0 of 3 this session"
    assert any("You today: 3" in c.value for c in other.caption)


def test_a_flag_and_comment_are_stored_with_the_judgement_undone_with_it_and_exported(smoke_env, tmp_path):
    url = smoke_env["db_url"]
    seed(url, 3)
    at = start()
    first = shown_id(at)
    at.pills(key="note_flag").set_value("offensive")
    at.text_input(key="note_comment").input('  =HYPERLINK("http://evil.example") rude  ')
    at.button(key=f"bad-{first}").click().run()
    assert not at.exception, at.exception
    (row,) = db.judgement_rows(db.connect(url))
    assert (row["completion_id"], row["label"], row["flag"], row["comment"]) == (
        first,
        "bad",
        "offensive",
        '=HYPERLINK("http://evil.example") rude',
    )
    assert any("flagged offensive, with a comment" in c.value for c in at.caption)
    # the next item starts with no flag and no comment
    second = shown_id(at)
    assert at.pills(key="note_flag").value is None and at.text_input(key="note_comment").value == ""
    at.button(key=f"good-{second}").click().run()
    assert db.judgement_rows(db.connect(url))[1]["flag"] is None
    # undo twice: the first item is back, with what was given with it, to keep or change
    at.button(key=f"undo-{shown_id(at)}").click().run()
    at.button(key=f"undo-{second}").click().run()
    assert shown_id(at) == first and judgements(url) == []
    assert any("was bad, flagged offensive, with a comment" in i.value for i in at.info)
    assert at.pills(key="note_flag").value == "offensive"
    assert at.text_input(key="note_comment").value == '=HYPERLINK("http://evil.example") rude'
    at.pills(key="note_flag").set_value("broken_text")
    at.text_input(key="note_comment").input("")
    at.button(key=f"skip-{first}").click().run()
    (row,) = db.judgement_rows(db.connect(url))
    assert (row["label"], row["flag"], row["comment"]) == ("skip", "broken_text", None)
    # the Data page's CSV carries them, neutralised like every other cell
    at.button(key=f"bad-{shown_id(at)}").click().run()
    at.switch_page("views/data.py").run()
    at.radio(key="export_fmt").set_value("csv").run()
    at.button(key="export").click().run()
    assert not at.exception, at.exception
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(at.session_state["export_file"][1].decode("utf-8"))))
    assert {r["flag"] for r in rows} == {"broken_text", ""}


def test_a_comment_that_cannot_be_stored_is_refused_in_plain_words(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 2)
    at = start()
    cid = shown_id(at)
    at.text_input(key="note_comment").input("nul \x00 inside")
    at.button(key=f"good-{cid}").click().run()
    assert not at.exception
    assert shown_id(at) == cid and judgements(url) == []
    assert any("Not saved" in e.value and "NUL" in e.value for e in at.error)


def test_leaving_the_label_page_gives_the_item_back(smoke_env):
    url = smoke_env["db_url"]
    seed(url, 3)
    at = start()
    shown = shown_id(at)
    engine = db.connect(url)
    assert db.stats(engine)["active_leases"] == 1
    at.switch_page("views/stats.py").run()
    assert not at.exception, at.exception
    assert db.stats(engine)["active_leases"] == 0  # free for others at once, not after the lease runs out
    at.switch_page("views/label.py").run()
    assert shown_id(at) == shown  # nobody took it meanwhile: the same item comes back
    at.switch_page("views/data.py").run()
    ben = db.get_or_create_labeler(engine, "ben")
    for i in range(50):  # ben's queue is random: he takes items until he has that one
        if db.next_item(engine, ben, session_key=f"b{i}").completion_id == shown:
            break
        db.release_leases(engine, ben, f"b{i}")
    else:
        raise AssertionError("the released item never reached another labeller")
    at.switch_page("views/label.py").run()
    assert shown_id(at) not in (None, shown)  # ben holds it now: alice gets another


def test_a_judgement_after_the_lease_ran_out_and_went_to_another_labeller_is_refused(smoke_env, tmp_path, monkeypatch):
    """No heartbeat in AppTest: the lease is not renewed, as in a tab that slept past it."""
    monkeypatch.setenv("RLHF_CONFIG", str(profile(tmp_path, min_dwell_ms=0, lease_seconds=3)))
    url = smoke_env["db_url"]
    seed(url, 2)
    at = start()
    shown = shown_id(at)
    import time

    time.sleep(3.2)
    engine = db.connect(url)
    ben = db.get_or_create_labeler(engine, "ben")
    taken = {db.next_item(engine, ben, session_key=f"b{i}", lease_seconds=600).completion_id for i in range(2)}
    assert shown in taken
    at.button(key=f"good-{shown}").click().run()
    assert not at.exception
    assert judgements(url) == []  # never a second label when overlap does not ask for one
    assert any("went to another labeller" in w.value for w in at.warning)
    assert shown_id(at) is None  # ben holds both items


def test_the_dwell_time_counts_from_the_first_showing_not_from_a_reload(smoke_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CONFIG", str(profile(tmp_path, min_dwell_ms=400)))
    url = smoke_env["db_url"]
    seed(url, 3)
    at = start()
    shown = shown_id(at)
    import time

    time.sleep(0.5)  # the labeller reads it, then reloads the tab
    again = AppTest.from_file(APP, default_timeout=TIMEOUT)
    again.query_params["u"] = "alice"
    again.query_params["s"] = at.query_params["s"]
    again.run()
    assert shown_id(again) == shown
    again.button(key=f"good-{shown}").click().run()  # the first key after the reload counts
    assert judgements(url) == [(shown, "alice", "good")]
    assert not any("Too quick" in w.value for w in again.warning)
    nxt = shown_id(again)
    again.button(key=f"bad-{nxt}").click().run()  # a new item pressed at once: refused, with a message
    assert len(judgements(url)) == 1 and shown_id(again) == nxt
    assert any("Too quick" in w.value for w in again.warning)


def test_good_is_green_and_the_passage_marks_the_models_part(smoke_env):
    seed(smoke_env["db_url"], texts=[" was great."])
    at = start()
    cid = shown_id(at)
    assert at.button(key=f"good-{cid}").label == ":green[Good]"
    assert all(at.button(key=f"{a}-{cid}").proto.type != "primary" for a in ("good", "bad", "skip", "undo"))
    assert "This movie 0⟦␣was great.⟧" in texts(at)
