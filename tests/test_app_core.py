"""The labelling app's pure parts: config, token check, refill guard, stats-page numbers."""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from common.config import load_config
from common.errors import ConfigError
from labeling_app import metrics, runtime
from labeling_app.config import DEFAULT_INSTRUCTIONS, LabelConfig


@pytest.mark.parametrize("profile", ["default", "smoke", "hub", "tiny"])
def test_profiles_load(profile):
    from tests.conftest import REPO

    cfg = load_config(LabelConfig, "label", profile=REPO / "configs" / f"{profile}.yaml")
    assert cfg.overlap >= 1 and cfg.instructions
    assert cfg.min_dwell_ms == 300 and cfg.session_goal == 50


@pytest.mark.parametrize(
    "override, word",
    [
        ({"overlap": 0}, "overlap"),
        ({"order": "fifo"}, "order"),
        ({"instructions": "  "}, "instructions"),
        ({"refill_batch": 0}, "refill_batch"),
        ({"overlapp": 2}, "overlapp"),
        ({"session_goal": -1}, "session_goal"),
        ({"lease_seconds": 2}, "lease_seconds"),
        ({"min_dwell_ms": 20_000}, "min_dwell_ms"),
    ],
)
def test_bad_label_config_names_the_key(smoke_env, override, word):
    with pytest.raises(ConfigError, match=word):
        load_config(LabelConfig, "label", overrides=override)


def test_default_instructions():
    assert LabelConfig().instructions == DEFAULT_INSTRUCTIONS


def test_token_check(monkeypatch):
    monkeypatch.delenv("RLHF_LABEL_TOKEN", raising=False)
    assert runtime.required_token() is None and runtime.token_ok("", None)
    monkeypatch.setenv("RLHF_LABEL_TOKEN", "tök3n")
    expected = runtime.required_token()
    assert runtime.token_ok("tök3n", expected)
    assert not runtime.token_ok("tök3", expected) and not runtime.token_ok(None, expected)


def test_session_keys():
    key = runtime.new_session_key()
    assert runtime.valid_session_key(key) and key != runtime.new_session_key()
    assert not runtime.valid_session_key("x") and not runtime.valid_session_key("<script>abcdefgh")


def test_refiller_runs_one_job_at_a_time():
    refiller = runtime.Refiller()
    gate = threading.Event()
    assert refiller.start(lambda: gate.wait(5) and 7)
    assert not refiller.start(lambda: 1), "a second refill must not start while one runs"
    gate.set()
    refiller.wait(5)
    assert not refiller.running() and refiller.status.added_total == 7
    assert refiller.recently_tried()

    def boom():
        raise RuntimeError("no model")

    assert refiller.start(boom)
    refiller.wait(5)
    assert "no model" in refiller.status.message and refiller.status.last_error


def test_maybe_refill_without_policy_degrades(smoke_env):
    import db

    engine = db.connect(smoke_env["db_url"])
    refiller = runtime.Refiller()
    cfg = LabelConfig(prefetch=10)
    assert runtime.maybe_refill(refiller, engine, cfg, queue_left=50) is None  # enough left
    msg = runtime.maybe_refill(refiller, engine, cfg, queue_left=0)
    assert "No policy" in msg and not refiller.running()
    assert runtime.maybe_refill(refiller, engine, cfg, queue_left=0) == msg  # not retried at once, still said


def _frame():
    t0 = datetime(2026, 1, 1, 12, 0)
    rows = []
    # ann and ben judge the same 6 items; cat judges 2 others; one skip
    a = ["good", "good", "bad", "bad", "good", "bad"]
    b = ["good", "bad", "bad", "bad", "good", "bad"]
    for i in range(6):
        rows.append(dict(completion_id=i, labeler="ann", label=a[i], seconds=2.0, created_at=t0 + timedelta(minutes=i)))
        rows.append(
            dict(completion_id=i, labeler="ben", label=b[i], seconds=4.0, created_at=t0 + timedelta(minutes=2 * i))
        )
    rows.append(dict(completion_id=10, labeler="cat", label="good", seconds=1.0, created_at=t0))
    rows.append(dict(completion_id=11, labeler="cat", label="skip", seconds=1.0, created_at=t0 + timedelta(minutes=30)))
    return pd.DataFrame(rows)


def test_per_labeller_counts_and_rates():
    table = metrics.per_labeller(_frame()).set_index("labeller")
    assert table.loc["ann", "judgements"] == 6 and table.loc["ann", "good_rate"] == 0.5
    assert table.loc["cat", "skip"] == 1 and table.loc["cat", "good_rate"] == 1.0
    assert table.loc["ann", "labels_per_hour"] == pytest.approx(6 / (5 / 60), rel=1e-3)
    assert table.loc["ben", "median_seconds"] == 4.0
    assert metrics.per_labeller(_frame().iloc[:0]).empty


def test_labels_over_time_is_cumulative():
    table = metrics.labels_over_time(_frame())
    assert list(table.columns) == ["ann", "ben", "cat"]
    assert table.iloc[-1].tolist() == [6, 6, 2]
    assert (table.diff().dropna() >= 0).all().all()


def test_pairwise_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    pairs = metrics.pairwise_kappa(_frame())
    assert len(pairs) == 1  # cat shares no item with anyone
    row = pairs.iloc[0]
    a = ["good", "good", "bad", "bad", "good", "bad"]
    b = ["good", "bad", "bad", "bad", "good", "bad"]
    assert (row.labeller_a, row.labeller_b, row.shared_items) == ("ann", "ben", 6)
    assert row.agreement == pytest.approx(5 / 6, abs=1e-3)
    assert row.kappa == pytest.approx(cohen_kappa_score(a, b), abs=1e-3)
    assert metrics.mean_kappa(pairs) == pytest.approx(row.kappa)


def test_kappa_undefined_when_everyone_says_the_same():
    f = pd.DataFrame(
        [
            dict(completion_id=i, labeler=n, label="good", created_at=datetime(2026, 1, 1))
            for i in range(3)
            for n in ("a", "b")
        ]
    )
    pairs = metrics.pairwise_kappa(f)
    assert pairs.iloc[0].agreement == 1.0 and np.isnan(pairs.iloc[0].kappa)
    assert metrics.mean_kappa(pairs) is None


def test_reward_accuracy_reads_metrics_oldest_first():
    v = [
        SimpleNamespace(
            created_at=datetime(2026, 1, 2), name="new", metrics={"eval": {"accuracy": 0.8, "roc_auc": 0.9}}
        ),
        SimpleNamespace(created_at=datetime(2026, 1, 1), name="old", metrics={"accuracy": 0.6}),
        SimpleNamespace(created_at=datetime(2026, 1, 3), name="none", metrics=None),
    ]
    table = metrics.reward_accuracy(v)
    assert table["name"].tolist() == ["old", "new", "none"]
    assert table["accuracy"].tolist()[:2] == [0.6, 0.8] and np.isnan(table["accuracy"].iloc[2])
    assert table["roc_auc"].iloc[1] == 0.9
    assert np.isnan(table["tfidf_accuracy"].iloc[0]) and table["vs_tfidf"].tolist() == [
        "",
        "",
        "",
    ]  # no baseline recorded


def test_reward_accuracy_shows_the_baseline_as_reward_training_registers_it():
    from reward_training.training import headline

    run = {
        "seed_only": False,
        "counts": {"human_total": {"n": 2000}},
        "model": {
            "human_heldout": {"accuracy": 0.783, "roc_auc": 0.866, "n": 1000},
            "imdb_snippets": {"accuracy": 0.756},
        },
        "tfidf": {"human_heldout": {"accuracy": 0.725, "n": 1000}, "imdb_snippets": {"accuracy": 0.725}},
        "model_minus_tfidf": {"human_heldout": {"points": 5.8, "ci95": [2.6, 9.1], "n": 1000}, "imdb_snippets": None},
    }
    table = metrics.reward_accuracy(
        [SimpleNamespace(created_at=datetime(2026, 1, 1), name="rm", metrics=headline(run))]
    )
    row = table.iloc[0]
    assert row["metric"] == "model/human_heldout/accuracy" and row["accuracy"] == 0.783 and row["roc_auc"] == 0.866
    assert row["tfidf_accuracy"] == 0.725 and row["vs_tfidf"] == "+5.8 points (95% CI +2.6 to +9.1)"


def test_background_refill_writes_completions(smoke_env, tiny_policy_dir):
    import db

    engine = db.connect(smoke_env["db_url"])
    refiller = runtime.Refiller()
    cfg = LabelConfig(prefetch=4, refill_batch=3, policy=str(tiny_policy_dir))
    msg = runtime.maybe_refill(refiller, engine, cfg, queue_left=0)
    assert "generating" in msg
    assert not refiller.start(lambda: 0), "only one refill at a time"
    refiller.wait(120)
    assert refiller.status.last_error is None, refiller.status.message
    assert db.stats(engine)["completions"] == 3
    # imported prompts get one completion each
    runtime.maybe_refill(refiller, engine, cfg, queue_left=99, force=True, prompts=["My own prompt", "Another one"])
    refiller.wait(120)
    items = db.unlabelled_completions(engine)
    assert {"My own prompt", "Another one"} <= {it.prompt for it in items} and len(items) == 5


def test_cli_help_and_bad_port(capsys):
    from labeling_app.__main__ import main, streamlit_args

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "refill_batch" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "70000"])
    assert exit_info.value.code == 2
    assert "--port 70000" in capsys.readouterr().err
    args = streamlit_args(8765, "127.0.0.1")
    assert args[args.index("--server.port") + 1] == "8765" and args[3] == "run"


# ---------------------------------------------------------------------------- key integrity (labeling_app.keys)


def test_key_gate_held_key_judges_once():
    """A key held down: one press, 500 ms of nothing (the OS's repeat delay), then one repeat every 33 ms."""
    from labeling_app.keys import KeyGate

    gate = KeyGate(min_dwell=0.3)
    shown = -1.0  # the first item has been on screen for a second
    first = gate.press("good", now=0.0, shown_at=shown)
    assert first.accept
    shown = 0.06  # the next item is drawn
    verdicts = [gate.press("good", now=0.5 + 0.033 * i, shown_at=shown) for i in range(30)]
    assert verdicts[0].accept  # the first repeat looks like a press...
    assert verdicts[1].retract and not verdicts[1].accept  # ...until the next one 33 ms later: taken back
    assert not any(v.accept or v.retract for v in verdicts[2:])
    assert {v.reason for v in verdicts[1:]} == {"held"}
    # released, then pressed again: a fresh press counts
    assert gate.press("good", now=0.5 + 0.033 * 30 + 0.4, shown_at=shown).accept


def test_key_gate_dwell_and_stale_presses():
    from labeling_app.keys import KeyGate

    gate = KeyGate(min_dwell=0.3)
    assert gate.press("bad", now=10.1, shown_at=10.0).reason == "too_soon"
    assert gate.press("bad", now=10.5, shown_at=10.0).accept
    assert gate.press("skip", now=11.0, shown_at=10.6, current=False).reason == "stale"
    assert gate.press("good", now=11.0, shown_at=10.6).accept  # another key is its own press
    off = KeyGate(min_dwell=0.0)  # 0 turns the gate off
    assert all(off.press("good", now=i * 0.01, shown_at=i * 0.01).accept for i in range(5))


def test_key_gate_fast_taps_give_one_action():
    from labeling_app.keys import KeyGate

    gate = KeyGate(min_dwell=0.3)
    verdicts = [gate.press("undo", now=5.0 + 0.06 * i, shown_at=0.0) for i in range(5)]  # 60 ms apart
    assert verdicts[0].accept and not any(v.accept or v.retract for v in verdicts[1:])


# ---------------------------------------------------------------------------- how an item is shown (display)


def test_the_passage_shows_where_the_model_starts_and_every_space_that_matters():
    from labeling_app.display import passage

    assert passage("This movie", " was great.") == "This movie⟦␣was great.⟧"
    assert passage("This movie ", "was great.") == "This movie␣⟦was great.⟧"
    assert passage("Great", "est film ever") == "Great⟦est film ever⟧"  # continues the word: no gap
    assert passage("A", "  two  spaces \n end\t") == "A⟦␣␣two␣␣spaces␣↵\n␣end⇥⟧"
    assert passage("A", "") == "A⟦⟧"
    assert passage("A", "zero\u200bwidth, rtl\u202e, nbsp\u00a0.") == "A⟦zero⟨U+200B⟩width, rtl⟨U+202E⟩, nbsp⟨U+00A0⟩.⟧"
    assert passage("A", "looks like ⟦ a ␣ marker ⟧") == "A⟦looks like ⟨U+27E6⟩ a ⟨U+2423⟩ marker ⟨U+27E7⟩⟧"
    assert passage("👨\u200d👩\u200d👧", " x") == "👨\u200d👩\u200d👧⟦␣x⟧"  # emoji joiners stay


def test_the_passage_is_exactly_the_stored_text():
    """Whatever the texts, the passage decodes back to them, and st.text (strip + dedent) leaves it as it is."""
    import random
    import textwrap

    from labeling_app.display import parse_passage, passage

    alphabet = list("ab ,.\n\t\r\x0b\x00\u00a0\u2028\u200b\u200d\u202e⟦⟧␣⇥↵⟨⟩U+0041é😀")
    rng = random.Random(20)
    for _ in range(5000):
        prompt = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 10)))
        completion = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        shown = passage(prompt, completion)
        assert parse_passage(shown) == (prompt, completion), (prompt, completion, shown)
        assert textwrap.dedent(shown).strip() == shown


# ---------------------------------------------------------------------------- dwell across reloads, database on start


def test_shown_times_survive_a_reload_and_restart_for_a_new_or_undone_item():
    times = runtime.ShownTimes(max_sessions=2)
    assert times.shown(1, "tab", 10, now=100.0) == 100.0
    assert times.shown(1, "tab", 10, now=105.0) == 100.0  # a reload resumes the same item: first showing
    assert times.shown(1, "tab", 11, now=106.0) == 106.0  # the next item
    assert times.shown(1, "tab", 11, now=107.0, fresh=True) == 107.0  # shown again after an undo
    assert times.shown(2, "tab", 11, now=108.0) == 108.0  # another labeller's session
    times.shown(3, "tab", 12, now=109.0)  # at most two sessions are kept: the oldest goes
    assert times.shown(1, "tab", 11, now=110.0) == 110.0
    times.forget(3, "tab")
    assert times.shown(3, "tab", 12, now=111.0) == 111.0


def test_a_missing_database_is_created_only_at_the_default_path(tmp_path, monkeypatch):
    from common.errors import UserError

    monkeypatch.chdir(tmp_path)
    assert (
        runtime.check_database_may_be_created("sqlite:///data/feedback.sqlite") == tmp_path / "data" / "feedback.sqlite"
    )
    other = tmp_path / "team.sqlite"
    with pytest.raises(UserError, match="does not exist") as err:
        runtime.check_database_may_be_created(f"sqlite:///{other}")
    assert "python -m db upgrade" in err.value.fix and "--create-db" in err.value.fix
    assert runtime.check_database_may_be_created(f"sqlite:///{other}", create=True) == other
    other.write_bytes(b"")
    assert runtime.check_database_may_be_created(f"sqlite:///{other}") is None  # exists: opened as it is
    assert runtime.check_database_may_be_created("postgresql+psycopg://u@h/db") is None


@pytest.fixture
def no_exec(monkeypatch):
    """``python -m labeling_app`` up to the point where it would become Streamlit. (The tests chdir, and the
    start reads the profile: a relative ``RLHF_CONFIG``, as ``make test`` exports it, is made absolute first.)"""
    import labeling_app.__main__ as cli

    profile = os.environ.get("RLHF_CONFIG")
    if profile and not Path(profile).is_absolute():
        monkeypatch.setenv("RLHF_CONFIG", str(Path(profile).resolve()))

    class Exec(Exception):
        pass

    def fake_execv(*_args):
        raise Exec

    monkeypatch.setattr(cli.os, "execv", fake_execv)
    return cli, Exec


def test_the_app_start_refuses_a_missing_database_unless_asked_to_create_it(tmp_path, monkeypatch, capsys, no_exec):
    import db

    cli, Exec = no_exec
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "elsewhere" / "labels.sqlite"
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{path}")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--port", "8599"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: ") and str(path) in err[0] and "Fix:" in err[0] and "db upgrade" in err[0]
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(Exec):  # asked for: created, migrated, then Streamlit starts
        cli.main(["--port", "8599", "--create-db"])
    assert "created a new, empty database" in capsys.readouterr().err
    assert db.current_revision(db.connect(f"sqlite:///{path}", upgrade=False)) == db.head_revision()


def test_the_app_start_never_replaces_an_existing_database(tmp_path, monkeypatch, capsys, no_exec):
    import db

    cli, Exec = no_exec
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "labels.sqlite"
    engine = db.connect(f"sqlite:///{path}")
    (cid,) = db.add_completions(engine, [db.NewCompletion("p", " c", None, {})])
    db.record_judgement(engine, labeler_id=db.get_or_create_labeler(engine, "ann"), completion_id=cid, label="good")
    ident = db.database_file_id(engine)
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{path}")
    with pytest.raises(Exec):
        cli.main(["--port", "8599", "--create-db"])  # the flag never touches an existing one
    assert "created" not in capsys.readouterr().err
    db.check_database_file(engine, ident)  # the same file
    assert len(db.judgement_rows(engine)) == 1
    notes = tmp_path / "notes.sqlite"  # not a database: refused, left as it is
    notes.write_bytes(b"my notes, not a database" * 50)
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{notes}")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--port", "8599", "--create-db"])
    assert exit_.value.code == 2 and "not a SQLite database" in capsys.readouterr().err
    assert notes.read_bytes() == b"my notes, not a database" * 50
