"""Pairwise comparisons in the database: making pairs, the pair queue, exactly-once writes, undo,
the figures (agreement, position bias, win rate) and the preference-format export."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

import db
from common.errors import UserError
from db.pairs import agreement_of, plan_pairs, position_bias_of, shown_left, wilson_interval, win_rate_of


def _completions(engine, prompt: str, texts: list[str], version: int | None = None) -> list[int]:
    return db.add_completions(engine, [db.NewCompletion(prompt, t, version) for t in texts])


def _policy(engine, name: str) -> int:
    return db.register_model_version(engine, kind="policy", name=name, path=f"/m/{name}")


def _count(engine, entity) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(entity)).scalar_one()


def _two_pairs(engine) -> list[int]:
    """Two prompts with two completions each, made into two comparisons; returns their ids."""
    _completions(engine, "The film", [" was great.", " was dull."])
    _completions(engine, "The plot", [" made sense.", " fell apart."])
    assert db.make_comparisons(engine) == 2
    return _comparison_ids(engine)


def _comparison_ids(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(db.models.Comparison.id).order_by(db.models.Comparison.id)).scalars())


def _rows(engine) -> list[dict]:
    return db.pair_judgement_rows(engine)


# --------------------------------------------------------------------------------------------
# the migration


@pytest.mark.parametrize("target", ["0006", "head"])
def test_upgrade_from_0004_keeps_judgements_and_adds_empty_comparison_tables(tmp_path, target):
    """A database at revision 0004 with prompts, completions and judgements in it is upgraded (past
    the comparisons revision 0005, and on to the newest) and loses nothing; the comparison tables
    start empty and take pairs at once."""
    from db.engine import make_engine, migrate, resolve_url

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    old = make_engine(resolve_url(url)[0])
    migrate(old, "0004")
    c1, c2 = _completions(old, "The film", [" was great.", " was dull."])
    with old.begin() as conn:
        conn.execute(text("INSERT INTO labelers (name, created_at) VALUES ('ann', '2026-11-30 10:00:00')"))
        for cid, label in ((c1, "good"), (c2, "bad")):
            conn.execute(
                text(
                    "INSERT INTO judgements (completion_id, labeler_id, label, comment, created_at, updated_at) "
                    "VALUES (:c, (SELECT id FROM labelers WHERE name = 'ann'), :l, 'kept', "
                    "'2026-11-30 10:00:00', '2026-11-30 10:00:00')"
                ),
                {"c": cid, "l": label},
            )
        conn.execute(text("UPDATE completions SET n_labels = 1"))
    before = db.judgement_rows(old)
    old.dispose()

    if target == "head":
        engine = db.connect(url)
        assert db.current_revision(engine) == db.head_revision()
    else:
        engine = make_engine(resolve_url(url)[0])
        migrate(engine, target)
    assert db.judgement_rows(engine) == before
    assert [db.get_item(engine, c).n_labels for c in (c1, c2)] == [1, 1]
    assert _count(engine, db.models.Comparison) == 0 and _count(engine, db.models.PairJudgement) == 0
    assert db.make_comparisons(engine) == 1
    engine.dispose()


# --------------------------------------------------------------------------------------------
# making comparisons


def test_plan_pairs_same_policy_and_versions():
    rows = [(1, 10, 7), (2, 10, 7), (3, 10, 7), (4, 10, 8), (5, 11, 7), (6, 10, 8), (7, 11, 8)]
    assert plan_pairs(rows, mode="same_policy") == [(1, 2), (4, 6)]
    assert plan_pairs(rows, mode="versions", versions=(7, 8)) == [(1, 4), (2, 6), (5, 7)]


def test_make_comparisons_pairs_only_completions_of_one_prompt_and_is_idempotent(db_engine):
    base, tuned = _policy(db_engine, "base"), _policy(db_engine, "tuned")
    b1, b2, b3 = _completions(db_engine, "The film", [" a", " b", " c"], base)
    (t1,) = _completions(db_engine, "The film", [" d"], tuned)
    (other,) = _completions(db_engine, "The plot", [" e"], base)

    assert db.make_comparisons(db_engine) == 1  # b1-b2 (b3 has no partner of its version)
    assert db.make_comparisons(db_engine) == 0  # nothing new
    assert db.make_comparisons(db_engine, mode="versions", versions=[base, tuned]) == 1  # b1-t1
    pairs = {(p.a_id, p.b_id, p.source) for p in (db.get_pair(db_engine, i) for i in _comparison_ids(db_engine))}
    assert pairs == {(b1, b2, "same_policy"), (b1, t1, "versions")}
    assert other not in {x for p in pairs for x in p[:2]} and b3 not in {x for p in pairs for x in p[:2]}
    (b4,) = _completions(db_engine, "The film", [" f"], base)  # a partner for b3 arrives later
    assert db.make_comparisons(db_engine, limit=5) == 1
    assert db.get_pair(db_engine, _comparison_ids(db_engine)[-1]).a_id == b3


@pytest.mark.parametrize(
    "pairs, message",
    [
        ("self", "the same completion on both sides"),
        ("prompts", "continue different prompts"),
        ("missing", "do not exist"),
    ],
)
def test_bad_comparisons_are_refused_and_nothing_is_written(db_engine, pairs, message):
    c1, c2 = _completions(db_engine, "The film", [" a", " b"])
    (c3,) = _completions(db_engine, "The plot", [" c"])
    bad = {"self": (c1, c1), "prompts": (c1, c3), "missing": (c1, 999)}[pairs]
    with pytest.raises(UserError, match=message) as err:
        db.add_comparisons(db_engine, [(c1, c2), bad])  # one good pair first: refused with it
    assert "\n" not in str(err.value)
    assert _count(db_engine, db.models.Comparison) == 0


def test_make_comparisons_bad_arguments(db_engine):
    base = _policy(db_engine, "base")
    for kwargs, message in [
        ({"mode": "versions"}, "two different model version ids"),
        ({"mode": "versions", "versions": [base, base]}, "two different model version ids"),
        ({"mode": "versions", "versions": [base, 99]}, "do not exist"),
        ({"mode": "pairs"}, "is not one of"),
        ({"limit": 0}, "must be a whole number"),
    ]:
        with pytest.raises(UserError, match=message):
            db.make_comparisons(db_engine, **kwargs)


# --------------------------------------------------------------------------------------------
# the pair queue


def test_two_labellers_never_get_the_same_pair_at_the_same_time(db_engine):
    for i in range(4):
        _completions(db_engine, f"Prompt {i}", [" a", " b"])
    assert db.make_comparisons(db_engine) == 4
    ann, bob = (db.get_or_create_labeler(db_engine, n) for n in ("ann", "bob"))
    held = {}
    for lab, key in ((ann, "s1"), (bob, "s2"), (ann, "s3"), (bob, "s4")):
        pair = db.next_pair(db_engine, lab, session_key=key)
        held[(lab, key)] = pair.comparison_id
    assert len(set(held.values())) == 4  # four sessions, four different pairs
    assert db.next_pair(db_engine, ann, session_key="s5") is None  # all taken
    assert db.next_pair(db_engine, ann, session_key="s1").comparison_id == held[(ann, "s1")]  # reload resumes
    assert db.pair_queue_size(db_engine, ann) == 2  # the two ann holds


def test_overlap_two_gives_one_pair_to_two_labellers_and_fewest_labels_first(db_engine):
    _completions(db_engine, "The film", [" a", " b"])
    _completions(db_engine, "The plot", [" c", " d"])
    db.make_comparisons(db_engine)
    ann, bob, cy, dan = (db.get_or_create_labeler(db_engine, n) for n in ("ann", "bob", "cy", "dan"))
    first = db.next_pair(db_engine, ann, session_key="a", overlap=2)
    db.record_pair_judgement(
        db_engine, labeler_id=ann, comparison_id=first.comparison_id, choice="a", left_side="a", session_key="a"
    )
    other = db.next_pair(db_engine, bob, session_key="b", overlap=2)
    assert other.comparison_id != first.comparison_id  # the unlabelled one first
    assert db.next_pair(db_engine, cy, session_key="c", overlap=2).comparison_id == other.comparison_id  # room: 2
    assert db.next_pair(db_engine, dan, session_key="d", overlap=2).comparison_id == first.comparison_id
    assert db.next_pair(db_engine, ann, session_key="a2", overlap=2) is None  # two on each: nothing left


def test_an_expired_pair_lease_frees_the_pair(db_engine):
    _completions(db_engine, "The film", [" a", " b"])
    db.make_comparisons(db_engine)
    ann, bob = (db.get_or_create_labeler(db_engine, n) for n in ("ann", "bob"))
    pair = db.next_pair(db_engine, ann, session_key="a", lease_seconds=0.001)
    import time

    time.sleep(0.01)
    assert db.next_pair(db_engine, bob, session_key="b").comparison_id == pair.comparison_id
    assert not db.extend_pair_lease(db_engine, ann, "a", comparison_id=pair.comparison_id)
    with pytest.raises(db.LeaseLost) as err:  # ann's late choice is refused: bob holds it now
        db.record_pair_judgement(
            db_engine, labeler_id=ann, comparison_id=pair.comparison_id, choice="a", left_side="b", session_key="a"
        )
    assert err.value.reason == "taken"
    assert db.release_pair_leases(db_engine, bob) == 1


# --------------------------------------------------------------------------------------------
# exactly-once writes and undo


def test_pair_judgements_are_written_exactly_once_and_counts_stay_in_step(db_engine):
    (cid,) = _two_pairs(db_engine)[:1]
    ann, bob = (db.get_or_create_labeler(db_engine, n) for n in ("ann", "bob"))

    def n_labels():
        return db.get_pair(db_engine, cid).n_labels

    for _ in range(2):  # a double click
        db.record_pair_judgement(db_engine, labeler_id=ann, comparison_id=cid, choice="a", left_side="b")
    assert _count(db_engine, db.models.PairJudgement) == 1 and n_labels() == 1
    db.record_pair_judgement(db_engine, labeler_id=ann, comparison_id=cid, choice="tie", left_side="b")
    assert [r["choice"] for r in _rows(db_engine)] == ["tie"] and n_labels() == 1
    db.record_pair_judgement(db_engine, labeler_id=ann, comparison_id=cid, choice="skip", left_side="b")
    assert n_labels() == 0
    db.record_pair_judgement(db_engine, labeler_id=bob, comparison_id=cid, choice="b", left_side="a")
    db.record_pair_judgement(db_engine, labeler_id=ann, comparison_id=cid, choice="b", left_side="a")
    assert n_labels() == 2 and _count(db_engine, db.models.PairJudgement) == 2
    for kwargs, message in [({"choice": "left"}, "is not one of"), ({"left_side": "c"}, "is not 'a' or 'b'")]:
        with pytest.raises(UserError, match=message):
            db.record_pair_judgement(
                db_engine, labeler_id=ann, comparison_id=cid, **{"choice": "a", "left_side": "a", **kwargs}
            )
    with pytest.raises(UserError, match="comparison 999 does not exist"):
        db.record_pair_judgement(db_engine, labeler_id=ann, comparison_id=999, choice="a", left_side="a")


def test_a_session_may_judge_only_the_pair_it_holds(db_engine):
    _two_pairs(db_engine)
    ann = db.get_or_create_labeler(db_engine, "ann")
    held = db.next_pair(db_engine, ann, session_key="tab1").comparison_id
    other = next(c for c in _comparison_ids(db_engine) if c != held)
    with pytest.raises(db.LeaseLost) as err:
        db.record_pair_judgement(
            db_engine, labeler_id=ann, comparison_id=other, choice="a", left_side="a", session_key="tab1"
        )
    assert err.value.reason == "moved_on" and _count(db_engine, db.models.PairJudgement) == 0
    db.record_pair_judgement(
        db_engine, labeler_id=ann, comparison_id=held, choice="a", left_side="a", session_key="tab1"
    )
    with pytest.raises(db.LeaseLost) as err:  # the same press again, from a second tab of the session
        db.record_pair_judgement(
            db_engine, labeler_id=ann, comparison_id=held, choice="b", left_side="a", session_key="tab1"
        )
    assert err.value.reason == "judged" and [r["choice"] for r in _rows(db_engine)] == ["a"]


def test_undo_reaches_only_this_sessions_pair_judgements_and_shows_the_pair_again(db_engine):
    _two_pairs(db_engine)
    ann = db.get_or_create_labeler(db_engine, "ann")
    p1 = db.next_pair(db_engine, ann, session_key="old")
    db.record_pair_judgement(
        db_engine, labeler_id=ann, comparison_id=p1.comparison_id, choice="a", left_side="a", session_key="old"
    )
    p2 = db.next_pair(db_engine, ann, session_key="new")
    db.record_pair_judgement(
        db_engine, labeler_id=ann, comparison_id=p2.comparison_id, choice="tie", left_side="b", session_key="new"
    )
    assert db.session_pair_count(db_engine, ann, "new") == 1
    assert db.undo_last_pair(db_engine, ann, session_key="new") == p2.comparison_id
    assert db.undo_last_pair(db_engine, ann, session_key="new") is None  # "old"'s judgement is out of reach
    assert [r["comparison_id"] for r in _rows(db_engine)] == [p1.comparison_id]
    assert db.get_pair(db_engine, p2.comparison_id).n_labels == 0
    assert db.next_pair(db_engine, ann, session_key="new").comparison_id == p2.comparison_id  # leased back


def test_shown_left_is_a_stable_fair_coin():
    sides = [shown_left(i, "session") for i in range(400)]
    assert sides == [shown_left(i, "session") for i in range(400)]
    assert 160 < sides.count("a") < 240


# --------------------------------------------------------------------------------------------
# the figures, on hand-made rows


def _row(cid, labeler, choice, left, a_version=1, b_version=2):
    return {
        "comparison_id": cid,
        "labeler": labeler,
        "choice": choice,
        "left_side": left,
        "a_model_version_id": a_version,
        "b_model_version_id": b_version,
    }


def test_wilson_interval_matches_hand_computed_values():
    lo, hi = wilson_interval(8, 10)  # p = 0.8, n = 10, z = 1.96: (0.4902, 0.9433)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_position_bias_counts_decisive_choices_for_the_left_side():
    rows = [
        _row(1, "ann", "a", "a"),  # left
        _row(2, "ann", "b", "b"),  # left
        _row(3, "ann", "a", "b"),  # right
        _row(4, "ann", "b", "b"),  # left
        _row(5, "ann", "tie", "a"),  # not decisive
        _row(6, "ann", "skip", "a"),  # not decisive
    ]
    bias = position_bias_of(rows)
    assert (bias["n"], bias["left"], bias["share_left"]) == (4, 3, 0.75)
    assert bias["interval"] == pytest.approx(list(wilson_interval(3, 4)))


def test_win_rate_of_one_version_over_another_with_ties_as_half():
    rows = [
        _row(1, "ann", "b", "a"),  # version 2 (b) wins
        _row(2, "ann", "b", "b"),  # version 2 wins
        _row(3, "ann", "a", "a"),  # version 1 wins
        _row(4, "ann", "tie", "a"),  # half each
        _row(5, "ann", "a", "a", a_version=2, b_version=1),  # version 2 is a here, and wins
        _row(6, "ann", "skip", "a"),  # left out
        _row(7, "ann", "a", "a", a_version=1, b_version=1),  # same version: left out
    ]
    wr = win_rate_of(rows, 2, 1)
    assert (wr["n"], wr["wins"], wr["losses"], wr["ties"]) == (5, 3, 1, 1)
    assert wr["win_rate"] == pytest.approx(3.5 / 5)
    assert wr["interval"] == pytest.approx(list(wilson_interval(3.5, 5)))
    assert win_rate_of(rows, 1, 2)["win_rate"] == pytest.approx(1.5 / 5)


def test_agreement_between_labellers_on_shared_comparisons():
    rows = [
        _row(1, "ann", "a", "a"),
        _row(1, "bob", "a", "b"),  # agree
        _row(1, "cy", "b", "a"),  # disagrees with both
        _row(2, "ann", "tie", "a"),
        _row(2, "bob", "tie", "a"),  # agree
        _row(3, "ann", "a", "a"),
        _row(3, "bob", "skip", "a"),  # a skip is no opinion
    ]
    ag = agreement_of(rows)
    assert (ag["comparisons"], ag["n"], ag["agree"]) == (2, 4, 2) and ag["agreement"] == 0.5


def test_pair_stats_from_the_database(db_engine):
    base, tuned = _policy(db_engine, "base"), _policy(db_engine, "tuned")
    for i in range(3):
        _completions(db_engine, f"Prompt {i}", [" base"], base)
        _completions(db_engine, f"Prompt {i}", [" tuned"], tuned)
    assert db.make_comparisons(db_engine, mode="versions", versions=(base, tuned)) == 3
    ann = db.get_or_create_labeler(db_engine, "ann")
    for cid, choice in zip(_comparison_ids(db_engine), ("b", "b", "a")):  # b = tuned (higher id)
        db.record_pair_judgement(db_engine, labeler_id=ann, comparison_id=cid, choice=choice, left_side="a")
    st = db.pair_stats(db_engine)
    json.dumps(st)
    assert st["comparisons"] == 3 and st["by_choice"] == {"a": 1, "b": 2, "tie": 0, "skip": 0}
    (wr,) = st["win_rates"]
    assert (wr["version"], wr["other"], wr["wins"], wr["n"]) == (tuned, base, 2, 3)
    assert st["position_bias"]["share_left"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------------------------
# preference pairs and the export


def _judged_pairs(engine) -> list[int]:
    """Three comparisons judged a, b and tie (and one skip), by two labellers."""
    _completions(engine, "The film", [" was great.", '=HYPERLINK("x")'])
    _completions(engine, "The plot", [" made sense.", " fell apart."])
    _completions(engine, "The cast", [" shone.", " slept."])
    assert db.make_comparisons(engine) == 3
    ann, bob = (db.get_or_create_labeler(engine, n) for n in ("ann", "bob"))
    c1, c2, c3 = _comparison_ids(engine)
    for lab, cid, choice, left in [
        (ann, c1, "a", "b"),
        (ann, c2, "b", "a"),
        (ann, c3, "tie", "a"),
        (bob, c1, "skip", "a"),
        (bob, c2, "b", "b"),
    ]:
        db.record_pair_judgement(engine, labeler_id=lab, comparison_id=cid, choice=choice, left_side=left)
    return [c1, c2, c3]


def test_preference_pairs_leave_out_ties_and_skips(db_engine):
    c1, c2, _ = _judged_pairs(db_engine)
    assert db.preference_pairs(db_engine) == [
        db.PreferencePair("The film", " was great.", '=HYPERLINK("x")', c1, "ann"),
        db.PreferencePair("The plot", " fell apart.", " made sense.", c2, "ann"),
        db.PreferencePair("The plot", " fell apart.", " made sense.", c2, "bob"),
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "hf"])
def test_pairs_export_reads_back_as_the_preference_pairs(db_engine, tmp_path, fmt):
    _judged_pairs(db_engine)
    out = db.export_pairs(db_engine, fmt, tmp_path / ("pairs.jsonl" if fmt == "jsonl" else "pairs_hf"))
    assert db.read_preference_file(out) == db.preference_pairs(db_engine)
    if fmt == "hf":
        from datasets import load_from_disk

        ds = load_from_disk(str(out))
        assert {"prompt", "chosen", "rejected", "labeler", "left_side", "choice"} <= set(ds.column_names)
        assert ds[0]["left_side"] == "b" and ds[0]["choice"] == "a"


def test_pairs_csv_export_neutralises_formulas(db_engine, tmp_path):
    _judged_pairs(db_engine)
    out = db.export_pairs(db_engine, "csv", tmp_path)  # a folder: gets pairs.csv
    assert out == tmp_path / "pairs.csv"
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and rows[0]["rejected"] == '\'=HYPERLINK("x")' and rows[0]["left_side"] == "b"


def test_a_pairs_export_with_no_comparisons_is_refused_and_writes_nothing(db_engine, tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    for fmt, dest in (("jsonl", tmp_path / "p.jsonl"), ("hf", tmp_path / "p_hf")):
        with pytest.raises(UserError, match="a pairs export with no comparisons") as err:
            db.export_pairs(db_engine, fmt, dest)
        assert "\n" not in str(err.value) and not dest.exists()
    _two_pairs(db_engine)  # comparisons, but only a tie: still no preference to export
    ann = db.get_or_create_labeler(db_engine, "ann")
    db.record_pair_judgement(
        db_engine, labeler_id=ann, comparison_id=_comparison_ids(db_engine)[0], choice="tie", left_side="a"
    )
    with pytest.raises(UserError, match="no comparisons"):
        db.export_pairs(db_engine, "jsonl", tmp_path / "p.jsonl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "P", "chosen": "x"}\n', "no text field"),
        ('{"prompt": "P", "chosen": "x", "rejected": 3}\n', "no text field"),
        ("not json\n", "is not JSON"),
        ("[1, 2]\n", "is not an object"),
        ("\n", "holds no pairs"),
    ],
)
def test_read_preference_file_refuses_bad_files_in_one_line(tmp_path, content, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message) as err:
        db.read_preference_file(path)
    assert "\n" not in str(err.value)


def test_read_preference_file_refuses_missing_csv_and_non_dataset_folders(tmp_path):
    (tmp_path / "p.csv").write_text("prompt,chosen,rejected\n", encoding="utf-8")
    (tmp_path / "folder").mkdir()
    for path, message in [
        (tmp_path / "nope.jsonl", "does not exist"),
        (tmp_path / "p.csv", "is CSV"),
        (tmp_path / "folder", "is not a saved datasets folder"),
    ]:
        with pytest.raises(UserError, match=message):
            db.read_preference_file(path)


def test_read_preference_file_reads_trl_style_jsonl_without_metadata(tmp_path):
    path = tmp_path / "trl.jsonl"
    path.write_text(json.dumps({"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}) + "\n")
    assert db.read_preference_file(path) == [db.PreferencePair("The sky is", " blue.", " green.")]


# --------------------------------------------------------------------------------------------
# the CLI


def test_cli_pairs_make_stats_and_export(tmp_path, monkeypatch, capsys):
    from db.__main__ import main

    url = f"sqlite:///{tmp_path / 'f.sqlite'}"
    engine = db.connect(url)
    base, tuned = _policy(engine, "base"), _policy(engine, "tuned")
    _completions(engine, "The film", [" a", " b"], base)
    _completions(engine, "The film", [" c"], tuned)
    assert main(["--url", url, "pairs", "make"]) == 0
    assert "made 1 new comparison(s) (same_policy)" in capsys.readouterr().out
    assert main(["--url", url, "pairs", "make", "--versions", str(base), str(tuned)]) == 0
    assert "made 1 new comparison(s) (versions)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:  # nothing judged yet
        main(["--url", url, "export", "--pairs", str(tmp_path / "p.jsonl")])
    assert exit_.value.code == 2
    assert "no comparisons" in capsys.readouterr().err
    ann = db.get_or_create_labeler(engine, "ann")
    db.record_pair_judgement(
        engine, labeler_id=ann, comparison_id=_comparison_ids(engine)[1], choice="b", left_side="a"
    )
    assert main(["--url", url, "export", "--pairs", "--format", "jsonl", str(tmp_path / "p.jsonl")]) == 0
    (pair,) = db.read_preference_file(Path(capsys.readouterr().out.strip()))
    assert (pair.chosen, pair.rejected) == (" c", " a")
    assert main(["--url", url, "pairs", "stats"]) == 0
    assert json.loads(capsys.readouterr().out)["win_rates"][0]["win_rate"] == 1.0
    engine.dispose()


# --------------------------------------------------------------------------------------------
# simulated comparisons


def _gold_from_text(texts):
    """The gold score written into each completion: '... p=0.73'."""
    import re

    import numpy as np

    return np.array([float(re.search(r"p=([0-9.]+)", t).group(1)) for t in texts])


def _gold_pairs(engine, n: int, seed: int = 0) -> dict[int, tuple[float, float]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    for i in range(n):
        pa, pb = rng.random(2)
        _completions(engine, f"Prompt number {i}", [f" then p={pa:.4f}", f" then p={pb:.4f}"])
    db.make_comparisons(engine)
    return {
        p.comparison_id: tuple(_gold_from_text([p.a, p.b]))
        for p in (db.get_pair(engine, c) for c in _comparison_ids(engine))
    }


def test_decide_pair_follows_the_gold_judge_and_position_bias():
    import numpy as np

    from labeling_app.simulate import LabelerSpec, decide_pair

    rng = np.random.default_rng(0)
    exact = LabelerSpec("exact", noise=0.0)
    assert decide_pair(0.9, 0.2, "b", exact, rng) == "a" and decide_pair(0.1, 0.6, "a", exact, rng) == "b"
    assert decide_pair(0.50, 0.51, "a", exact, rng, tie_margin=0.02) == "tie"
    assert decide_pair(0.9, 0.2, "b", LabelerSpec("flip", noise=1.0), rng) == "b"
    assert decide_pair(0.9, 0.2, "b", LabelerSpec("lefty", noise=0.0, position_bias=1.0), rng) == "b"
    assert decide_pair(0.9, 0.2, "b", LabelerSpec("skipper", skip_rate=0.999), rng) == "skip"


def test_simulated_comparisons_agree_with_gold_and_show_their_position_bias(db_engine):
    from labeling_app.simulate import LabelerSpec, SimulateConfig, simulate_comparisons

    gold = _gold_pairs(db_engine, 200, seed=1)
    cfg = SimulateConfig(
        n_labels=400,
        overlap=2,
        tie_margin=0.0,
        labelers=[LabelerSpec("exact", noise=0.0), LabelerSpec("lefty", noise=0.0, position_bias=0.6)],
        seed=3,
    )
    res = simulate_comparisons(db_engine, cfg, _gold_from_text)
    assert res.n_recorded == 400 and not res.exhausted and res.per_labeler == {"exact": 200, "lefty": 200}
    rows = db.pair_judgement_rows(db_engine)
    exact = [r for r in rows if r["labeler"] == "exact"]
    assert all(
        r["choice"] == ("a" if gold[r["comparison_id"]][0] > gold[r["comparison_id"]][1] else "b") for r in exact
    )
    assert res.gold_agreement["exact"] == 1.0
    # lefty picks the left side 60% of the time, and judges (picking left half the time) otherwise: 0.8
    lefty = position_bias_of([r for r in rows if r["labeler"] == "lefty"])
    assert 0.72 < lefty["share_left"] < 0.88  # binomial(200, 0.8): sd 0.028
    assert 0.35 < position_bias_of(exact)["share_left"] < 0.65  # no bias: about half
    assert len(db.preference_pairs(db_engine)) == 400
    again = simulate_comparisons(db_engine, cfg, _gold_from_text)  # every pair has its two labels
    assert again.n_recorded == 0 and again.exhausted
