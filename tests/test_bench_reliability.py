"""benchmarks/bench_reliability.py end to end on the smoke profile with a tiny reward backbone: three
simulated labellers on every item or two per item in rotation, majority vs reliability-weighted training,
scored against gold; the rotation alone; the --overlap check."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"


def bench():
    spec = importlib.util.spec_from_file_location("bench_reliability", REPO / "benchmarks" / "bench_reliability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def review_db(path: Path, n: int) -> None:
    """A feedback database with ``n`` unlabelled completions cut from IMDB reviews (smoke data):
    a 4-word prompt and the next 25 words, English text of both sentiments."""
    import db
    from common.config import load_config
    from common.imdb import DataConfig, load_imdb

    train = load_imdb(load_config(DataConfig, "data", profile=SMOKE))["train"]
    rows = []
    for text in train["text"]:
        words = text.split()
        if len(words) >= 29:
            rows.append(db.NewCompletion(prompt=" ".join(words[:4]), text=" " + " ".join(words[4:29]), gen_params={}))
        if len(rows) == n:
            break
    engine = db.connect(f"sqlite:///{path}")
    db.add_completions(engine, rows)
    engine.dispose()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_weighted_and_majority_training_scored_on_gold(smoke_env, tiny_reward_dir, tmp_path, capsys):
    import db

    source = tmp_path / "queue.sqlite"
    review_db(source, 100)
    before = digest(source)
    code = bench().main(
        ["--db", str(source), "--config", str(SMOKE), "--set", f"backbone={tiny_reward_dir}"]
        + ["--heldout", "30", "--labels", "60", "--noisy", "0.35"]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    fig = {d["figure"]: d for d in lines}
    assert set(fig) >= {"setup", "reliability", "label_quality", "heldout_accuracy"}
    assert all(d["command"].startswith("python benchmarks/bench_reliability.py --db") for d in lines)

    setup = fig["setup"]
    assert (setup["completions"], setup["heldout"], setup["labelled_items"]) == (100, 30, 60)
    assert setup["judgements"] == 180 and set(setup["per_labeller"].values()) == {60}  # all three on every item
    assert setup["overlap"] == 3 and setup["items_by_judgements"] == {"3": 60}
    assert set(setup["shared_items"].values()) == {60}
    assert setup["reliability_items"] == 60 and setup["majority_items"] == 60  # three votes: no ties

    rel = {r["labeller"]: r for r in fig["reliability"]["labellers"]}
    assert [rel[k]["true_accuracy"] for k in ("sim-ann", "sim-ben", "sim-noisy")] == [0.95, 0.9, 0.65]
    assert all(0 < r["estimated_accuracy"] < 1 and r["n_shared"] == 60 for r in rel.values())
    assert rel["sim-noisy"]["estimated_accuracy"] < min(rel["sim-ann"]["estimated_accuracy"], 0.85)
    assert rel["sim-noisy"]["gold_agreement"] < rel["sim-ann"]["gold_agreement"]

    quality = fig["label_quality"]
    assert quality["majority"]["n"] == quality["reliability"]["n"] == 60
    assert all(0.5 < quality[c]["agree_with_gold"] <= 1 for c in ("majority", "reliability"))
    assert quality["ties_dropped_by_majority"] == 0 and quality["reliability_on_ties"]["n"] == 0
    assert quality["reliability_on_majority_items"] == quality["reliability"]

    acc = fig["heldout_accuracy"]
    assert set(acc["accuracy"]) == {"seed_only", "majority", "reliability"}
    for d in (*acc["accuracy"].values(), acc["reliability_minus_majority"]):
        assert finite(d["points"]) and all(finite(x) for x in d["ci95"]) and d["n"] == 30
        assert d["ci95"][0] <= d["points"] <= d["ci95"][1]
    assert acc["reliability_minus_majority"]["points"] == pytest.approx(
        acc["accuracy"]["reliability"]["points"] - acc["accuracy"]["majority"]["points"], abs=0.01
    )
    assert {r["combine"] for r in acc["rows"]} == {"majority", "reliability"}
    assert finite(acc["wall_seconds"])

    # the original database was only read
    assert digest(source) == before
    assert len(db.unlabelled_completions(db.connect(f"sqlite:///{source}"))) == 100


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_a_database_without_completions_is_one_line(smoke_env, tmp_path, capsys, kind):
    import db

    source = tmp_path / "queue.sqlite"
    if kind == "empty":
        db.connect(f"sqlite:///{source}").dispose()
    with pytest.raises(SystemExit) as exc:
        bench().main(["--db", str(source), "--config", str(SMOKE), "--quick"])
    assert exc.value.code == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert ("no unlabelled completions" if kind == "empty" else "not a SQLite database file") in err[0]
    assert out.out == ""


@pytest.mark.parametrize("n_labellers", [2, 3, 4, 5])
def test_the_rotation_is_balanced_and_every_pair_shares_items(n_labellers):
    rotation = bench().rotation
    for overlap in range(2, n_labellers + 1):
        cycle = math.comb(n_labellers, overlap)
        for n_items in range(1, 3 * cycle + 7):
            groups = rotation(n_labellers, overlap, n_items)
            assert len(groups) == n_items and all(len(set(g)) == overlap for g in groups)
            counts = [sum(i in g for g in groups) for i in range(n_labellers)]
            assert max(counts) - min(counts) <= 1, (overlap, n_items, counts)
            if n_items >= cycle:
                for a, b in itertools.combinations(range(n_labellers), 2):
                    assert any(a in g and b in g for g in groups), (overlap, n_items, a, b)
    assert rotation(3, 3, 4) == [(0, 1, 2)] * 4  # full overlap: everyone on everything


def test_at_full_overlap_the_rotation_records_the_labels_simulate_gives(tmp_path):
    """The benchmark's own judging (hold_item + record_judgement in rotation) against the app's queue loop
    (labeling_app.simulate: next_item + record_judgement): the same labeller says the same on the same item."""
    import numpy as np

    import db
    from labeling_app.simulate import SimulateConfig, simulate

    module = bench()
    items = [db.Item(i, f"prompt {i}", f" completion {i}", None, 0) for i in range(30)]
    rng = np.random.default_rng(1)
    gold = {db.shown_text(it.prompt, it.completion): float(rng.random()) for it in items}
    specs = module.labeller_specs([0.05, 0.10], 0.35)
    cfg = SimulateConfig(n_labels=90, labelers=specs, overlap=3, order="random", seed=7)

    engine, result, by_id = module.judge_items(items, cfg, gold, tmp_path / "rotation.sqlite")
    mine = {(j["labeler"], j["completion_id"]): j["label"] for j in db.judgement_rows(engine)}
    engine.dispose()

    other = db.connect(f"sqlite:///{tmp_path / 'queue.sqlite'}")
    db.add_completions(other, [db.NewCompletion(prompt=it.prompt, text=it.completion, gen_params={}) for it in items])
    reference = simulate(other, cfg, lambda texts: np.array([gold[t] for t in texts]), progress=False)
    theirs = {(j["labeler"], j["completion_id"]): j["label"] for j in db.judgement_rows(other)}
    other.dispose()

    assert len(mine) == 90 and mine == theirs
    assert result.per_labeler == reference.per_labeler == {s.name: 30 for s in specs}
    assert result.label_counts == reference.label_counts and result.gold_agreement == reference.gold_agreement
    assert set(by_id) == {cid for _, cid in mine}


def test_two_labellers_per_item_in_rotation(smoke_env, tiny_reward_dir, tmp_path, capsys):
    source = tmp_path / "queue.sqlite"
    review_db(source, 100)
    code = bench().main(
        ["--db", str(source), "--config", str(SMOKE), "--set", f"backbone={tiny_reward_dir}"]
        + ["--heldout", "30", "--labels", "60", "--overlap", "2", "--repeats", "2"]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    fig = {d["figure"]: d for d in lines}

    setup = fig["setup"]
    assert setup["overlap"] == 2 and setup["judgements"] == 120
    assert setup["items_by_judgements"] == {"2": 60}  # every item exactly twice
    assert set(setup["per_labeller"].values()) == {40}  # 60 items x 2 / 3 labellers
    assert set(setup["shared_items"]) == {"sim-ann+sim-ben", "sim-ann+sim-noisy", "sim-ben+sim-noisy"}
    assert set(setup["shared_items"].values()) == {20}  # every pair shares a third of the items
    assert setup["reliability_items"] == 60 and setup["majority_items"] < 60  # two votes: ties dropped

    rel = [d for d in lines if d["figure"] == "reliability"]
    assert [d["repeat"] for d in rel] == [0, 1]
    for row in rel[0]["labellers"]:
        assert row["n_labels"] == row["n_shared"] == 40 and 0 < row["estimated_accuracy"] < 1

    quality = [d for d in lines if d["figure"] == "label_quality"]
    assert len(quality) == 2
    for q in quality:
        ties = q["ties_dropped_by_majority"]
        assert ties > 0 and q["majority"]["n"] == 60 - ties and q["reliability"]["n"] == 60
        assert q["reliability_on_ties"]["n"] == ties and q["reliability_on_majority_items"]["n"] == 60 - ties
        for block in ("majority", "reliability", "reliability_on_majority_items", "reliability_on_ties"):
            assert finite(q[block]["brier_vs_gold"])
            assert q[block]["agree_with_gold"] is None or 0 <= q[block]["agree_with_gold"] <= 1
        assert 0 <= q["hard_labels_differ"] <= 60 - ties
    assert quality[0]["ties_dropped_by_majority"] == 60 - setup["majority_items"]

    repeats = [d for d in lines if d["figure"] == "repeat"]
    assert [d["repeat"] for d in repeats] == [0, 1]
    acc = fig["heldout_accuracy"]
    assert acc["repeats"] == 2 and len(acc["rows"]) == 4
    for d in (*acc["accuracy"].values(), acc["reliability_minus_majority"]):
        assert finite(d["points"]) and all(finite(x) for x in d["ci95"]) and d["n"] == 30
    # the pooled difference is the per-item difference averaged over the repeats: the repeats' mean
    per_repeat = [d["reliability_minus_majority"]["points"] for d in repeats]
    assert acc["reliability_minus_majority"]["points"] == pytest.approx(sum(per_repeat) / 2, abs=0.02)
    for combine in ("majority", "reliability"):
        rows = [r["accuracy"] for r in acc["rows"] if r["combine"] == combine]
        assert acc["accuracy"][combine]["points"] == pytest.approx(sum(rows) / 2, abs=0.02)


@pytest.mark.parametrize("overlap", ["1", "4"])
def test_an_overlap_outside_two_to_the_labellers_is_one_line(smoke_env, tmp_path, capsys, overlap):
    with pytest.raises(SystemExit) as exc:
        bench().main(["--db", str(tmp_path / "missing.sqlite"), "--config", str(SMOKE), "--overlap", overlap])
    assert exc.value.code == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and f"--overlap {overlap}" in err[0]
    assert out.out == ""
