"""The feedback database, on SQLite and on a real PostgreSQL server (parametrised `backend_url`)."""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

import db
from common.errors import UserError
from db.models import Judgement, utcnow

REPO = Path(__file__).resolve().parent.parent


def _completions(engine, n: int, prompt: str = "The movie was", model_version_id=None) -> list[int]:
    return db.add_completions(
        engine, [db.NewCompletion(prompt, f" number {i}.", model_version_id, {"top_k": 0}) for i in range(n)]
    )


def _run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "db", *args], cwd=cwd, env=full_env, capture_output=True, text=True)


# ---------------------------------------------------------------------------------------------
# connect, migrations, bad databases


def test_connect_migrates_empty_database_to_head(db_engine):
    assert db.current_revision(db_engine) == db.head_revision()
    tables = set(inspect(db_engine).get_table_names())
    assert {"labelers", "prompts", "completions", "judgements", "model_versions", "leases", "alembic_version"} <= tables
    db.connect(str(db_engine.url.render_as_string(hide_password=False))).dispose()  # second connect: no-op upgrade


def test_models_and_migrations_agree(db_engine):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with db_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), db.Base.metadata)
    assert diff == []


def test_sqlite_settings_on_every_connection(tmp_path):
    engine = db.connect(f"sqlite:///{tmp_path / 'f.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_missing_directory_is_created(tmp_path):
    target = tmp_path / "a" / "b" / "feedback.sqlite"
    db.connect(f"sqlite:///{target}").dispose()
    assert target.is_file()


def test_not_a_sqlite_file_names_the_file(tmp_path):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(db.DatabaseError, match="notes.sqlite.*not a SQLite database"):
        db.connect(f"sqlite:///{bad}")
    assert bad.read_text().startswith("these are my notes")  # left as it was


def test_newer_schema_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "f.sqlite"
    db.connect(f"sqlite:///{path}").dispose()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(db.DatabaseError, match=r"f\.sqlite.*newer than this code.*Fix: update") as err:
        db.connect(f"sqlite:///{path}")
    assert "9999_from_the_future" in str(err.value)


def test_upgrade_false_on_an_empty_database_asks_for_upgrade(tmp_path):
    with pytest.raises(db.DatabaseError, match="python -m db upgrade"):
        db.connect(f"sqlite:///{tmp_path / 'empty.sqlite'}", upgrade=False)


@pytest.mark.parametrize(
    "url", ["data/feedback.sqlite", "sqlite//x", "mysql://u@h/db", "postgresql+psycopg://u@h:notaport/db"]
)
def test_bad_env_url_names_the_variable(monkeypatch, url):
    monkeypatch.setenv("RLHF_DB_URL", url)
    with pytest.raises(db.DatabaseError, match="RLHF_DB_URL"):
        db.connect()


def test_unreachable_postgres_names_url_and_masks_password():
    with pytest.raises(
        db.DatabaseError, match=r"cannot reach the PostgreSQL server at postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1:9/x"
    ) as err:
        db.connect("postgresql://u:hunter2@127.0.0.1:9/x")
    assert "hunter2" not in str(err.value)


def test_folder_as_database_is_refused(tmp_path):
    with pytest.raises(db.DatabaseError, match="is a folder"):
        db.connect(f"sqlite:///{tmp_path}")


def test_cli_upgrade_works_from_any_directory(tmp_path):
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    res = _run_cli("upgrade", cwd=elsewhere, env={"RLHF_DB_URL": "sqlite:///rel/feedback.sqlite"})
    assert res.returncode == 0, res.stderr
    assert (elsewhere / "rel" / "feedback.sqlite").is_file()
    assert db.head_revision() in res.stdout


# ---------------------------------------------------------------------------------------------
# writes


def test_add_prompts_keeps_order_and_reuses_existing(db_engine):
    ids = db.add_prompts(db_engine, ["b", "a", "b", "c"])
    assert ids[0] == ids[2] and len(set(ids)) == 3
    again = db.add_prompts(db_engine, ["c", "new", "a"], source="custom")
    assert again[0] == ids[3] and again[2] == ids[1] and again[1] not in ids
    assert db.stats(db_engine)["prompts"] == 4
    with pytest.raises(UserError, match="empty"):
        db.add_prompts(db_engine, ["ok", "   "])


def test_add_completions_creates_prompts_and_keeps_order(db_engine):
    mv = db.register_model_version(db_engine, kind="policy", name="base", path="/p")
    items = [
        db.NewCompletion("P1", " one", mv, {"temperature": 1.0, "nan": float("nan")}),
        db.NewCompletion("P2", " two", None, {}),
        db.NewCompletion("P1", " three", mv, {}),
    ]
    ids = db.add_completions(db_engine, items)
    assert len(ids) == 3 and ids == sorted(ids)
    got = [db.get_item(db_engine, i) for i in ids]
    assert [(g.prompt, g.completion, g.model_version_id) for g in got] == [
        ("P1", " one", mv),
        ("P2", " two", None),
        ("P1", " three", mv),
    ]
    assert db.stats(db_engine)["prompts"] == 2
    with pytest.raises(UserError, match="model version"):
        db.add_completions(db_engine, [db.NewCompletion("P", " x", 999, {})])
    assert db.add_completions(db_engine, []) == []


def test_model_versions(db_engine):
    assert db.latest_model_version(db_engine, "reward") is None
    r1 = db.register_model_version(
        db_engine, kind="reward", name="rm-1", path="/r1", metrics={"acc": 0.8, "bad": math.inf}
    )
    r2 = db.register_model_version(
        db_engine, kind="reward", name="rm-2", path="/r2", parent_id=r1, metrics={"acc": 0.9}
    )
    db.register_model_version(db_engine, kind="policy", name="pi", path="/pi")
    latest = db.latest_model_version(db_engine, "reward")
    assert latest.id == r2 and latest.parent_id == r1 and latest.metrics == {"acc": 0.9}
    assert db.get_model_version(db_engine, r1).metrics == {"acc": 0.8, "bad": None}
    assert [m.name for m in db.list_model_versions(db_engine, "reward")] == ["rm-1", "rm-2"]
    assert len(db.list_model_versions(db_engine)) == 3
    with pytest.raises(UserError, match="kind"):
        db.register_model_version(db_engine, kind="critic", name="x", path="/x")
    with pytest.raises(UserError, match="parent"):
        db.register_model_version(db_engine, kind="reward", name="x", path="/x", parent_id=12345)


def test_get_or_create_labeler(db_engine):
    a = db.get_or_create_labeler(db_engine, "  Ana María 🎬 ")
    assert db.get_or_create_labeler(db_engine, "Ana María 🎬") == a
    assert db.get_or_create_labeler(db_engine, "bob") != a


@pytest.mark.parametrize("name", ["", "   ", "x" * 65, "tab\there", "new\nline", None])
def test_bad_labeler_names(db_engine, name):
    with pytest.raises(UserError, match="labeller name"):
        db.get_or_create_labeler(db_engine, name)


def test_record_judgement_is_an_idempotent_upsert(db_engine):
    (c,) = _completions(db_engine, 1)
    lab = db.get_or_create_labeler(db_engine, "ann")
    db.record_judgement(db_engine, labeler_id=lab, completion_id=c, label="good", seconds=2.5)
    db.record_judgement(db_engine, labeler_id=lab, completion_id=c, label="good", seconds=9.0)  # double click
    rows = db.judgement_rows(db_engine)
    assert len(rows) == 1 and rows[0]["label"] == "good" and rows[0]["seconds"] == 2.5
    db.record_judgement(db_engine, labeler_id=lab, completion_id=c, label="bad", seconds=1.0)  # changed mind
    rows = db.judgement_rows(db_engine)
    assert len(rows) == 1 and rows[0]["label"] == "bad" and rows[0]["updated_at"] >= rows[0]["created_at"]
    other = db.get_or_create_labeler(db_engine, "ben")
    db.record_judgement(db_engine, labeler_id=other, completion_id=c, label="good")
    assert len(db.judgement_rows(db_engine)) == 2
    with pytest.raises(UserError, match="label"):
        db.record_judgement(db_engine, labeler_id=lab, completion_id=c, label="meh")
    with pytest.raises(UserError, match="completion 424242 does not exist"):
        db.record_judgement(db_engine, labeler_id=lab, completion_id=424242, label="good")


def test_foreign_keys_and_unique_judgement_are_enforced_by_the_database(db_engine):
    (c,) = _completions(db_engine, 1)
    lab = db.get_or_create_labeler(db_engine, "ann")
    with pytest.raises(sa_exc.IntegrityError), Session(db_engine) as s, s.begin():
        s.add(Judgement(completion_id=999_999, labeler_id=lab, label="good"))
    with pytest.raises(sa_exc.IntegrityError), Session(db_engine) as s, s.begin():
        s.add(Judgement(completion_id=c, labeler_id=999_999, label="good"))
    with pytest.raises(sa_exc.IntegrityError), Session(db_engine) as s, s.begin():
        s.add_all([Judgement(completion_id=c, labeler_id=lab, label="good")])
        s.flush()
        s.add(Judgement(completion_id=c, labeler_id=lab, label="bad"))
    with pytest.raises(sa_exc.IntegrityError), Session(db_engine) as s, s.begin():
        s.add(Judgement(completion_id=c, labeler_id=lab, label="maybe"))
    assert db.judgement_rows(db_engine) == []


def _judge(engine, lab: int, key: str, label: str = "good") -> int:
    item = db.next_item(engine, lab, session_key=key)
    db.record_judgement(engine, labeler_id=lab, completion_id=item.completion_id, label=label, session_key=key)
    return item.completion_id


def test_undo_last_reaches_only_this_sessions_judgements(db_engine):
    _completions(db_engine, 5)
    lab = db.get_or_create_labeler(db_engine, "ann")
    other = db.get_or_create_labeler(db_engine, "ben")
    assert db.undo_last(db_engine, lab, session_key="tab1") is None
    yesterday = _judge(db_engine, lab, "tab0")  # an older session of the same labeller
    c1, c2 = _judge(db_engine, lab, "tab1"), _judge(db_engine, lab, "tab1", "bad")
    c3 = _judge(db_engine, other, "tab1", "bad")  # another labeller, same session key
    assert db.undo_last(db_engine, lab, session_key="tab1") == c2
    assert db.undo_last(db_engine, lab, session_key="tab1") == c1
    assert db.undo_last(db_engine, lab, session_key="tab1") is None  # tab0's judgement is out of reach
    assert {(r["labeler"], r["completion_id"]) for r in db.judgement_rows(db_engine)} == {
        ("ann", yesterday),
        ("ben", c3),
    }


def test_a_judgement_of_an_item_the_session_no_longer_holds_is_refused(db_engine):
    _completions(db_engine, 4)
    ann, ben = (db.get_or_create_labeler(db_engine, n) for n in ("ann", "ben"))
    # two tabs sharing one session key: both show x; the first judges it, the stale one is refused
    x = db.next_item(db_engine, ann, session_key="shared").completion_id
    db.record_judgement(db_engine, labeler_id=ann, completion_id=x, label="good", session_key="shared")
    db.next_item(db_engine, ann, session_key="shared")
    with pytest.raises(db.LeaseLost) as err:
        db.record_judgement(db_engine, labeler_id=ann, completion_id=x, label="bad", session_key="shared")
    assert err.value.reason == "judged"
    assert [r["label"] for r in db.judgement_rows(db_engine)] == ["good"]  # never a silent overwrite
    # a lease that ran out and went to someone else: the late judgement is refused, not a second label
    y = db.next_item(db_engine, ann, session_key="t2", lease_seconds=0.2).completion_id
    time.sleep(0.3)
    assert db.extend_lease(db_engine, ann, "t2", 600, completion_id=y) is True  # ran out, but nobody took it
    db.release_leases(db_engine, ann, "t2")
    y = db.next_item(db_engine, ann, session_key="t3", lease_seconds=0.2).completion_id
    time.sleep(0.3)
    got = {db.next_item(db_engine, ben, session_key=f"b{i}") for i in range(3)}
    assert y in {item.completion_id for item in got if item is not None}
    assert db.extend_lease(db_engine, ann, "t3", 600, completion_id=y) is False  # the heartbeat cannot revive it
    with pytest.raises(db.LeaseLost) as err:
        db.record_judgement(db_engine, labeler_id=ann, completion_id=y, label="good", session_key="t3")
    assert err.value.reason == "taken"
    assert db.get_item(db_engine, y).n_labels == 0


def test_undo_last(db_engine):
    c1, c2, c3 = _completions(db_engine, 3)
    lab = db.get_or_create_labeler(db_engine, "ann")
    other = db.get_or_create_labeler(db_engine, "ben")
    # judgements without a lease (scripts) belong to no session: undo in the app cannot reach them
    db.record_judgement(db_engine, labeler_id=lab, completion_id=c1, label="good")
    db.record_judgement(db_engine, labeler_id=other, completion_id=c3, label="bad")
    assert db.undo_last(db_engine, lab, session_key="tab") is None
    item = db.next_item(db_engine, lab, session_key="tab")
    assert item.completion_id == c2
    db.record_judgement(db_engine, labeler_id=lab, completion_id=c2, label="bad")  # stored under the lease's session
    assert db.undo_last(db_engine, lab, session_key="tab") == c2
    assert {(r["labeler"], r["completion_id"]) for r in db.judgement_rows(db_engine)} == {("ann", c1), ("ben", c3)}


def test_undo_with_session_shows_the_item_again(db_engine):
    _completions(db_engine, 5)
    lab = db.get_or_create_labeler(db_engine, "ann")
    first = db.next_item(db_engine, lab, session_key="tab")
    db.record_judgement(db_engine, labeler_id=lab, completion_id=first.completion_id, label="good")
    second = db.next_item(db_engine, lab, session_key="tab")
    assert second.completion_id != first.completion_id
    db.record_judgement(db_engine, labeler_id=lab, completion_id=second.completion_id, label="bad")
    assert db.undo_last(db_engine, lab, session_key="tab") == second.completion_id
    assert db.next_item(db_engine, lab, session_key="tab").completion_id == second.completion_id
    # while it is shown again, nobody else gets it (overlap 1)
    ben = db.get_or_create_labeler(db_engine, "ben")
    seen = {db.next_item(db_engine, ben, session_key=f"b{i}").completion_id for i in range(3)}
    assert second.completion_id not in seen


def test_set_reward_scores(db_engine):
    c1, c2 = _completions(db_engine, 2)
    rm = db.register_model_version(db_engine, kind="reward", name="rm", path="/rm")
    db.set_reward_scores(db_engine, {c1: 0.7, c2: 0.1}, rm)
    assert db.stats(db_engine)["scored_completions"] == 2
    frame_scores = {u.completion_id for u in db.unlabelled_completions(db_engine, 10)}
    assert frame_scores == {c1, c2}
    with pytest.raises(UserError, match="NaN|nan"):
        db.set_reward_scores(db_engine, {c1: float("nan")}, rm)
    with pytest.raises(UserError, match="does not exist"):
        db.set_reward_scores(db_engine, {c1: 0.5}, 9999)


# ---------------------------------------------------------------------------------------------
# the queue


def test_next_item_never_gives_one_item_to_two_sessions_and_reload_resumes(db_engine):
    _completions(db_engine, 4)
    lab = db.get_or_create_labeler(db_engine, "ann")
    a = db.next_item(db_engine, lab, session_key="tab-a")
    b = db.next_item(db_engine, lab, session_key="tab-b")
    assert a.completion_id != b.completion_id
    # a page reload in either tab resumes its item
    assert db.next_item(db_engine, lab, session_key="tab-a") == a
    assert db.next_item(db_engine, lab, session_key="tab-b") == b
    assert db.queue_size(db_engine, lab) == 4
    db.record_judgement(db_engine, labeler_id=lab, completion_id=a.completion_id, label="good")
    a2 = db.next_item(db_engine, lab, session_key="tab-a")
    assert a2.completion_id not in (a.completion_id, b.completion_id)
    assert db.queue_size(db_engine, lab) == 3


def test_overlap_one_hands_each_item_to_one_labeller(db_engine):
    _completions(db_engine, 3)
    labs = [db.get_or_create_labeler(db_engine, n) for n in ("a", "b", "c", "d")]
    got = [db.next_item(db_engine, lab, session_key="s") for lab in labs]
    assert len({g.completion_id for g in got[:3]}) == 3
    assert got[3] is None  # all three are leased
    assert db.queue_size(db_engine, labs[3]) == 0
    db.record_judgement(db_engine, labeler_id=labs[0], completion_id=got[0].completion_id, label="good")
    assert db.next_item(db_engine, labs[3], session_key="s") is None  # labelled once = done at overlap 1
    db.record_judgement(db_engine, labeler_id=labs[1], completion_id=got[1].completion_id, label="skip")
    # a skip is not a label: someone else may take it, but not the one who skipped
    assert db.next_item(db_engine, labs[3], session_key="s").completion_id == got[1].completion_id
    assert db.next_item(db_engine, labs[1], session_key="s") is None


def test_overlap_k_and_fewest_labels_first(db_engine):
    c1, c2, c3 = _completions(db_engine, 3)
    labs = [db.get_or_create_labeler(db_engine, f"l{i}") for i in range(4)]
    # two labels on c1, one on c2, none on c3
    for lab in labs[:2]:
        db.record_judgement(db_engine, labeler_id=lab, completion_id=c1, label="good")
    db.record_judgement(db_engine, labeler_id=labs[0], completion_id=c2, label="bad")
    item = db.next_item(db_engine, labs[3], session_key="s", overlap=2)
    assert item.completion_id == c3 and item.n_labels == 0
    db.record_judgement(db_engine, labeler_id=labs[3], completion_id=c3, label="good")
    item = db.next_item(db_engine, labs[3], session_key="s", overlap=2)
    assert item.completion_id == c2 and item.n_labels == 1
    # c2 now has 1 label + 1 lease = 2 = overlap: labs[2] gets nothing (c1 full, c3 has 1 label... )
    other = db.next_item(db_engine, labs[2], session_key="s", overlap=2)
    assert other.completion_id == c3
    assert db.next_item(db_engine, labs[1], session_key="s", overlap=2) is None
    assert db.next_item(db_engine, labs[1], session_key="s", overlap=3).completion_id in (c2, c3)


def test_expired_lease_is_offered_again(db_engine):
    (c,) = _completions(db_engine, 1)
    a = db.get_or_create_labeler(db_engine, "a")
    b = db.get_or_create_labeler(db_engine, "b")
    assert db.next_item(db_engine, a, session_key="s", lease_seconds=0.2).completion_id == c
    assert db.next_item(db_engine, b, session_key="s") is None
    time.sleep(0.4)
    assert db.next_item(db_engine, b, session_key="s").completion_id == c
    # a's reload now finds its lease gone and the item taken
    assert db.next_item(db_engine, a, session_key="s") is None


def test_uncertain_first_order(db_engine):
    ids = _completions(db_engine, 5)
    rm = db.register_model_version(db_engine, kind="reward", name="rm", path="/rm")
    db.set_reward_scores(db_engine, {ids[0]: 0.95, ids[1]: 0.45, ids[2]: 0.1, ids[3]: 0.58}, rm)  # ids[4] unscored
    lab = db.get_or_create_labeler(db_engine, "ann")
    order = []
    while (item := db.next_item(db_engine, lab, session_key="s", order="uncertain")) is not None:
        order.append(item.completion_id)
        db.record_judgement(db_engine, labeler_id=lab, completion_id=item.completion_id, label="skip")
    assert order == [ids[1], ids[3], ids[2], ids[0], ids[4]]


def test_random_order_covers_everything_once(db_engine):
    ids = _completions(db_engine, 12)
    lab = db.get_or_create_labeler(db_engine, "ann")
    seen = []
    while (item := db.next_item(db_engine, lab, session_key="s")) is not None:
        seen.append(item.completion_id)
        db.record_judgement(db_engine, labeler_id=lab, completion_id=item.completion_id, label="good")
    assert sorted(seen) == ids


@pytest.mark.parametrize("kwargs", [{"overlap": 0}, {"order": "newest"}, {"session_key": ""}, {"lease_seconds": 0}])
def test_next_item_bad_arguments(db_engine, kwargs):
    lab = db.get_or_create_labeler(db_engine, "ann")
    with pytest.raises(UserError):
        db.next_item(db_engine, lab, **{"session_key": "s", **kwargs})


# ---------------------------------------------------------------------------------------------
# reads


def test_labelled_dataset_majority_and_soft(db_engine):
    c1, c2, c3, c4 = _completions(db_engine, 4, prompt="Great")
    labs = [db.get_or_create_labeler(db_engine, f"l{i}") for i in range(3)]
    votes = {c1: ["good", "good", "bad"], c2: ["good", "bad"], c3: ["bad", "skip"], c4: ["skip"]}
    for cid, labels in votes.items():
        for lab, label in zip(labs, labels):
            db.record_judgement(db_engine, labeler_id=lab, completion_id=cid, label=label)
    maj = {e.completion_id: e for e in db.labelled_dataset(db_engine)}
    assert set(maj) == {c1, c3}  # c2 is a tie, c4 only skipped
    assert maj[c1].label == 1.0 and maj[c1].n_labels == 3 and maj[c1].n_good == 2
    assert maj[c3].label == 0.0 and maj[c3].n_labels == 1
    assert maj[c1].text == "Great number 0." and maj[c1].prompt == "Great" and maj[c1].completion == " number 0."
    soft = {e.completion_id: e.label for e in db.labelled_dataset(db_engine, combine="soft")}
    assert soft == {c1: pytest.approx(2 / 3), c2: 0.5, c3: 0.0}


def test_stats_and_frame(db_engine):
    c1, c2, c3 = _completions(db_engine, 3)
    a = db.get_or_create_labeler(db_engine, "ann")
    b = db.get_or_create_labeler(db_engine, "ben")
    db.record_judgement(db_engine, labeler_id=a, completion_id=c1, label="good", seconds=1.5)
    db.record_judgement(db_engine, labeler_id=a, completion_id=c2, label="skip")
    db.record_judgement(db_engine, labeler_id=b, completion_id=c1, label="bad")
    st = db.stats(db_engine)
    json.dumps(st)
    assert st["completions"] == 3 and st["labelers"] == 2 and st["judgements"] == 3
    assert st["judgements_by_label"] == {"good": 1, "bad": 1, "skip": 1}
    assert st["per_labeler"]["ann"] == {"good": 1, "bad": 0, "skip": 1, "total": 2}
    assert st["labelled_completions"] == 1 and st["unlabelled_completions"] == 2
    frame = db.judgements_frame(db_engine)
    assert len(frame) == 3 and set(frame["labeler"]) == {"ann", "ben"}
    assert frame.loc[frame["label"] == "good", "seconds"].item() == 1.5
    assert [u.completion_id for u in db.unlabelled_completions(db_engine, 10)] == [c2, c3]
    assert len(db.unlabelled_completions(db_engine, 1)) == 1


# ---------------------------------------------------------------------------------------------
# export / import


TRICKY = ' said "hi", then\nleft; <script>alert(1)</script> **bold** 🎬 שלום'


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "hf"])
def test_export_round_trip(db_engine, tmp_path, fmt):
    c1, c2 = db.add_completions(
        db_engine, [db.NewCompletion("She", TRICKY, None, {}), db.NewCompletion("He", " left.", None, {})]
    )
    a = db.get_or_create_labeler(db_engine, "ann")
    db.record_judgement(db_engine, labeler_id=a, completion_id=c1, label="good", seconds=3.25)
    db.record_judgement(db_engine, labeler_id=a, completion_id=c2, label="skip")
    out = db.export_labels(db_engine, fmt, tmp_path / "out" / f"labels.{fmt}")
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    elif fmt == "csv":
        with open(out, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh, quoting=csv.QUOTE_NONNUMERIC))
    else:
        from datasets import load_from_disk

        rows = load_from_disk(str(out)).to_list()
    assert [r["completion_id"] for r in rows] == [c1, c2]
    assert rows[0]["completion"] == TRICKY and rows[0]["prompt"] == "She" and rows[0]["text"] == "She" + TRICKY
    assert rows[0]["label"] == "good" and rows[0]["seconds"] == 3.25 and rows[0]["labeler"] == "ann"
    assert rows[1]["label"] == "skip"
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary leftovers


def test_export_into_existing_folder_and_empty_database(db_engine, tmp_path):
    out = db.export_labels(db_engine, "jsonl", tmp_path)
    assert out == tmp_path / "labels.jsonl" and out.read_text() == ""
    from datasets import load_from_disk

    assert len(load_from_disk(str(db.export_labels(db_engine, "hf", tmp_path / "hf")))) == 0
    with pytest.raises(UserError, match="format"):
        db.export_labels(db_engine, "xlsx", tmp_path / "x")


def test_import_prompts(db_engine, tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("I watched this film\n\n   \nThe acting was\nI watched this film\nשלום 🎬\n", encoding="utf-8")
    assert db.import_prompts(db_engine, f) == 3
    assert db.import_prompts(db_engine, f) == 0  # nothing new the second time
    assert db.stats(db_engine)["prompts"] == 3
    with pytest.raises(UserError, match="does not exist"):
        db.import_prompts(db_engine, tmp_path / "missing.txt")


def test_cli_stats_export_import_and_errors(tmp_path, monkeypatch, capsys):
    from db.__main__ import main

    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{tmp_path / 'cli.sqlite'}")
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\ntwo\n\none\n")
    assert main(["import-prompts", str(prompts)]) == 0
    assert "added 2" in capsys.readouterr().out
    assert main(["stats"]) == 0
    assert json.loads(capsys.readouterr().out)["prompts"] == 2
    assert main(["export", "--format", "csv", str(tmp_path / "l.csv")]) == 0
    assert (tmp_path / "l.csv").is_file()
    (tmp_path / "junk.sqlite").write_bytes(b"\x00garbage" * 200)
    monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{tmp_path / 'junk.sqlite'}")
    with pytest.raises(SystemExit) as exit_:
        main(["stats"])
    assert exit_.value.code == 2 and "junk.sqlite" in capsys.readouterr().err
    monkeypatch.setenv("RLHF_DB_URL", "nonsense")
    with pytest.raises(SystemExit) as exit_:
        main(["stats"])
    assert exit_.value.code == 2 and "RLHF_DB_URL" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# schema upgrades and the maintained label count


def test_upgrade_from_0001_backfills_label_counts(backend_url):
    """A database created at revision 0001 (before completions.n_labels) with judgements in it is
    upgraded by connect() and its label counts are filled in from the judgements."""
    from db.engine import make_engine, migrate, resolve_url

    url = resolve_url(backend_url)[0]
    if url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url)
    migrate(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO prompts (id, text, text_sha256, source, created_at) "
                "VALUES (1, 'P', 'x', 'imdb', '2026-01-01 00:00:00')"
            )
        )
        for cid in (1, 2):
            conn.execute(
                text(
                    "INSERT INTO completions (id, prompt_id, text, gen_params, created_at) "
                    "VALUES (:c, 1, ' t', '{}', '2026-01-01 00:00:00')"
                ),
                {"c": cid},
            )
        for lid, name in ((1, "a"), (2, "b")):
            conn.execute(
                text("INSERT INTO labelers (id, name, created_at) VALUES (:i, :n, '2026-01-01 00:00:00')"),
                {"i": lid, "n": name},
            )
        for cid, lid, label in ((1, 1, "good"), (1, 2, "bad"), (2, 1, "skip")):
            conn.execute(
                text(
                    "INSERT INTO judgements (completion_id, labeler_id, label, created_at, updated_at) "
                    "VALUES (:c, :l, :lab, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"c": cid, "l": lid, "lab": label},
            )
    engine.dispose()
    upgraded = db.connect(backend_url)
    assert db.current_revision(upgraded) == db.head_revision()
    assert db.get_item(upgraded, 1).n_labels == 2 and db.get_item(upgraded, 2).n_labels == 0
    upgraded.dispose()


def test_label_counts_stay_in_step(db_engine):
    from tests.support.drill import count_drift

    c1, c2 = _completions(db_engine, 2)
    a, b = (db.get_or_create_labeler(db_engine, n) for n in ("a", "b"))
    steps = [(a, c1, "good"), (a, c1, "good"), (a, c1, "skip"), (a, c1, "bad"), (b, c1, "good"), (b, c2, "skip")]
    for lab, cid, label in steps:
        db.record_judgement(db_engine, labeler_id=lab, completion_id=cid, label=label)
        assert count_drift(db_engine) == 0
    assert db.get_item(db_engine, c1).n_labels == 2 and db.get_item(db_engine, c2).n_labels == 0
    with db_engine.begin() as conn:  # attribute b's judgements to a session, as the app records them
        conn.execute(db.Judgement.__table__.update().where(db.Judgement.labeler_id == b).values(session_key="s"))
    db.undo_last(db_engine, b, session_key="s")  # the skip on c2
    db.undo_last(db_engine, b, session_key="s")  # the good on c1
    assert db.get_item(db_engine, c1).n_labels == 1 and count_drift(db_engine) == 0


def test_in_memory_sqlite_works_for_quick_scripts():
    engine = db.connect("sqlite://")
    (c,) = _completions(engine, 1)
    lab = db.get_or_create_labeler(engine, "ann")
    assert db.next_item(engine, lab, session_key="s").completion_id == c


@pytest.mark.postgres
def test_missing_postgres_database_is_named(postgres_server):
    url = postgres_server.url("no_such_db")
    with pytest.raises(db.DatabaseError, match="no database 'no_such_db'.*createdb"):
        db.connect(url)


def test_retrying_hides_transient_locks_and_names_the_database_when_it_gives_up(tmp_path):
    from db.engine import retrying

    engine = db.connect(f"sqlite:///{tmp_path / 'r.sqlite'}")
    locked = sa_exc.OperationalError("UPDATE ...", {}, sqlite3.OperationalError("database is locked"))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise locked
        return "done"

    assert retrying(flaky, what="test", engine=engine, base_delay=0.001) == "done" and len(calls) == 3

    def always():
        raise locked

    with pytest.raises(db.DatabaseError, match=r"r\.sqlite.*stayed busy"):
        retrying(always, what="test", engine=engine, attempts=3, base_delay=0.001)
    with pytest.raises(sa_exc.OperationalError):  # other errors are not retried
        retrying(
            lambda: (_ for _ in ()).throw(sa_exc.OperationalError("x", {}, sqlite3.OperationalError("no such table"))),
            what="test",
            engine=engine,
        )


def test_a_writer_waits_for_another_process_holding_the_write_lock(tmp_path):
    import threading

    path = tmp_path / "lock.sqlite"
    engine = db.connect(f"sqlite:///{path}")
    (c,) = _completions(engine, 1)
    lab = db.get_or_create_labeler(engine, "ann")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    db.record_judgement(engine, labeler_id=lab, completion_id=c, label="good")  # ...and we wait, not fail
    release.join()
    other.close()
    assert len(db.judgement_rows(engine)) == 1


def test_extend_and_release_leases(db_engine):
    c1, c2 = _completions(db_engine, 2)
    a = db.get_or_create_labeler(db_engine, "a")
    b = db.get_or_create_labeler(db_engine, "b")
    assert db.extend_lease(db_engine, a, "s") is False  # holds nothing yet
    first = db.next_item(db_engine, a, session_key="s", lease_seconds=0.3)
    assert db.extend_lease(db_engine, a, "s", lease_seconds=600) is True
    time.sleep(0.5)  # the original lease would have run out; the extended one has not
    other = db.next_item(db_engine, b, session_key="s")
    assert other.completion_id != first.completion_id
    db.release_leases(db_engine, b, "s")
    assert db.release_leases(db_engine, a) == 1  # tab closed: a's item goes back to the queue
    assert db.next_item(db_engine, b, session_key="t").completion_id in (c1, c2)
    assert db.stats(db_engine)["active_leases"] == 1


def test_csv_export_neutralises_formulas(db_engine, tmp_path):
    import csv

    (c,) = _completions(db_engine, 1)
    evil = '=HYPERLINK("http://evil.example","x")'
    with db_engine.begin() as conn:  # a name stored before names were checked, and a formula completion
        conn.execute(db.Labeler.__table__.insert().values(name=evil, created_at=utcnow()))
        conn.execute(db.Completion.__table__.update().values(text="-1+2 @cmd"))
    lab = db.get_or_create_labeler(db_engine, evil)
    db.record_judgement(db_engine, labeler_id=lab, completion_id=c, label="good")
    out = db.export_labels(db_engine, "csv", tmp_path / "labels.csv")
    (row,) = list(csv.DictReader(out.open(encoding="utf-8")))
    assert row["labeler"] == "'" + evil  # the written cell is text a spreadsheet shows, not a formula
    assert row["completion"] == "'-1+2 @cmd" and row["label"] == "good"
    from db.transfer import csv_safe

    for start in "=+-@\t\r":
        assert csv_safe(start + "x") == "'" + start + "x"
    assert csv_safe("fine") == "fine" and csv_safe(-1.5) == -1.5
    # the CLI writes the same file
    res = _run_cli(
        "export",
        "--format",
        "csv",
        str(tmp_path / "cli.csv"),
        cwd=tmp_path,
        env={"RLHF_DB_URL": str(db_engine.url.render_as_string(hide_password=False))},
    )
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "cli.csv").read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "given, same_as",
    [("Alice", "alice"), ("ALICE ", "alice"), ("\uff41lice", "alice")],  # case, spaces, fullwidth (NFKC)
)
def test_labeller_names_are_compared_case_insensitively(db_engine, given, same_as):
    first = db.get_or_create_labeler(db_engine, same_as)
    assert db.get_or_create_labeler(db_engine, given) == first
    assert db.stats(db_engine)["labelers"] == 1


@pytest.mark.parametrize("name", ["\u0430lice", "p\u0430ypal", "\u03b1lpha"])  # Cyrillic a, Greek alpha among Latin
def test_mixed_script_names_are_refused(db_engine, name):
    with pytest.raises(UserError, match="alphabets"):
        db.get_or_create_labeler(db_engine, name)
    assert db.get_or_create_labeler(db_engine, "Анна") and db.get_or_create_labeler(db_engine, "山田 はなこ")


def test_a_deleted_database_file_is_noticed(tmp_path):
    path = tmp_path / "f.sqlite"
    engine = db.connect(f"sqlite:///{path}")
    ident = db.database_file_id(engine)
    db.check_database_file(engine, ident)  # the same file: fine
    moved = tmp_path / "moved.sqlite"
    path.rename(moved)
    with pytest.raises(db.DatabaseGone, match="deleted or moved"):
        db.check_database_file(engine, ident)
    db.connect(f"sqlite:///{path}")  # someone starts a new, empty one at the path
    with pytest.raises(db.DatabaseGone, match="replaced"):
        db.check_database_file(engine, ident)
    assert db.database_file_id(db.connect("sqlite://")) is None


# ---------------------------------------------------------------------------------------------
# a flag and a comment with the judgement (migration 0004), the session's count, missing files


def test_a_flag_and_comment_are_written_with_the_judgement_and_undone_with_it(db_engine):
    c1, c2 = _completions(db_engine, 2)
    ann = db.get_or_create_labeler(db_engine, "ann")
    item = db.next_item(db_engine, ann, session_key="tab")
    db.record_judgement(
        db_engine,
        labeler_id=ann,
        completion_id=item.completion_id,
        label="bad",
        session_key="tab",
        flag="offensive",
        comment="  slurs in the second sentence \n",
    )
    (row,) = db.judgement_rows(db_engine)
    assert (row["label"], row["flag"], row["comment"]) == ("bad", "offensive", "slurs in the second sentence")
    # a repeat (a double click) changes nothing; a new flag or comment alone updates the row, once
    db.record_judgement(
        db_engine,
        labeler_id=ann,
        completion_id=item.completion_id,
        label="bad",
        flag="offensive",
        comment="slurs in the second sentence",
    )
    db.record_judgement(
        db_engine, labeler_id=ann, completion_id=item.completion_id, label="bad", flag="broken_text", comment="   "
    )
    (row,) = db.judgement_rows(db_engine)
    assert (row["flag"], row["comment"]) == ("broken_text", None)  # a blank comment is none
    assert db.get_item(db_engine, item.completion_id).n_labels == 1
    assert db.session_judgement_count(db_engine, ann, "tab") == 1
    assert db.undo_last(db_engine, ann, session_key="tab") == item.completion_id  # the row goes, flag and all
    assert db.judgement_rows(db_engine) == [] and db.session_judgement_count(db_engine, ann, "tab") == 0
    for bad in ({"flag": "rude"}, {"comment": "nul\x00"}, {"comment": "x" * (db.COMMENT_MAX + 1)}):
        with pytest.raises(UserError):
            db.record_judgement(db_engine, labeler_id=ann, completion_id=c2, label="good", **bad)
    assert db.judgement_rows(db_engine) == []
    with db_engine.connect() as conn:  # nothing written half-way either
        assert conn.execute(text("SELECT count(*) FROM judgements")).scalar() == 0


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "hf"])
def test_flags_and_comments_are_exported(db_engine, tmp_path, fmt):
    c1, c2 = _completions(db_engine, 2)
    ann = db.get_or_create_labeler(db_engine, "ann")
    db.record_judgement(
        db_engine,
        labeler_id=ann,
        completion_id=c1,
        label="bad",
        flag="offensive",
        comment='=HYPERLINK("http://evil.example","x") and "quotes", commas\nnewline',
    )
    db.record_judgement(db_engine, labeler_id=ann, completion_id=c2, label="good")
    out = db.export_labels(db_engine, fmt, tmp_path / f"labels.{fmt}")
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    elif fmt == "csv":
        with open(out, encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        from datasets import load_from_disk

        rows = load_from_disk(str(out)).to_list()
    comment = '=HYPERLINK("http://evil.example","x") and "quotes", commas\nnewline'
    if fmt == "csv":  # neutralised as every other CSV cell; a missing flag is an empty cell
        assert (rows[0]["flag"], rows[0]["comment"]) == ("offensive", "'" + comment)
        assert (rows[1]["flag"], rows[1]["comment"]) == ("", "")
    else:  # JSONL and datasets keep the text exact
        assert (rows[0]["flag"], rows[0]["comment"]) == ("offensive", comment)
        assert (rows[1]["flag"], rows[1]["comment"]) == (None, None)
    if fmt == "csv":  # python -m db export writes the same file
        res = _run_cli(
            "export",
            "--format",
            "csv",
            str(tmp_path / "cli.csv"),
            cwd=tmp_path,
            env={"RLHF_DB_URL": str(db_engine.url.render_as_string(hide_password=False))},
        )
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "cli.csv").read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_upgrade_from_0003_adds_empty_flags_and_comments(tmp_path):
    from db.engine import make_engine, migrate, resolve_url

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    old = make_engine(resolve_url(url)[0])
    migrate(old, "0003")
    (cid,) = _completions(old, 1)
    with old.begin() as conn:
        conn.execute(text("INSERT INTO labelers (name, created_at) VALUES ('ann', '2026-11-30 10:00:00')"))
        conn.execute(
            text(
                "INSERT INTO judgements (completion_id, labeler_id, label, created_at, updated_at) "
                "VALUES (:c, (SELECT id FROM labelers WHERE name = 'ann'), 'good', '2026-11-30 10:00:00', "
                "'2026-11-30 10:00:00')"
            ),
            {"c": cid},
        )
    old.dispose()
    engine = db.connect(url)
    assert db.current_revision(engine) == db.head_revision()
    (row,) = db.judgement_rows(engine)
    assert (row["label"], row["flag"], row["comment"]) == ("good", None, None)
    from alembic import command

    from db.engine import alembic_config

    with engine.begin() as conn:  # and back down
        command.downgrade(alembic_config(conn), "0003")
    assert "flag" not in {c["name"] for c in inspect(engine).get_columns("judgements")}


def test_missing_database_file_names_only_missing_sqlite_files(tmp_path):
    path = tmp_path / "sub" / "f.sqlite"
    assert db.missing_database_file(f"sqlite:///{path}") == path
    db.connect(f"sqlite:///{path}")
    assert db.missing_database_file(f"sqlite:///{path}") is None
    assert db.missing_database_file("sqlite://") is None and db.missing_database_file("sqlite:///:memory:") is None
    assert db.missing_database_file("postgresql+psycopg://u:pw@h/db") is None
