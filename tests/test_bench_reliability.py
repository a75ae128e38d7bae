"""benchmarks/bench_reliability.py end to end on the smoke profile with a tiny reward backbone: three
simulated labellers on every item, majority vs reliability-weighted training, scored against gold."""

from __future__ import annotations

import hashlib
import importlib.util
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
    assert setup["reliability_items"] == 60 and setup["majority_items"] == 60  # three votes: no ties

    rel = {r["labeller"]: r for r in fig["reliability"]["labellers"]}
    assert [rel[k]["true_accuracy"] for k in ("sim-ann", "sim-ben", "sim-noisy")] == [0.95, 0.9, 0.65]
    assert all(0 < r["estimated_accuracy"] < 1 and r["n_shared"] == 60 for r in rel.values())
    assert rel["sim-noisy"]["estimated_accuracy"] < min(rel["sim-ann"]["estimated_accuracy"], 0.85)
    assert rel["sim-noisy"]["gold_agreement"] < rel["sim-ann"]["gold_agreement"]

    quality = fig["label_quality"]
    assert quality["majority"]["n"] == quality["reliability"]["n"] == 60
    assert all(0.5 < quality[c]["agree_with_gold"] <= 1 for c in ("majority", "reliability"))

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
