"""The labelling app's pure parts: config, token check, refill guard, stats-page numbers."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from common.config import load_config
from common.errors import ConfigError
from labeling_app import metrics, runtime
from labeling_app.config import DEFAULT_INSTRUCTIONS, LabelConfig


@pytest.mark.parametrize("profile", ["default", "smoke", "hub"])
def test_profiles_load(profile):
    from tests.conftest import REPO

    cfg = load_config(LabelConfig, "label", profile=REPO / "configs" / f"{profile}.yaml")
    assert cfg.overlap >= 1 and cfg.instructions


@pytest.mark.parametrize(
    "override, word",
    [
        ({"overlap": 0}, "overlap"),
        ({"order": "fifo"}, "order"),
        ({"instructions": "  "}, "instructions"),
        ({"refill_batch": 0}, "refill_batch"),
        ({"overlapp": 2}, "overlapp"),
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
