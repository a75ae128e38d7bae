"""Simulated labellers: decisions follow the gold judge, noise flips the expected share, and
everything goes through the same db functions the app uses."""

from __future__ import annotations

import re

import numpy as np
import pytest

from common.errors import ConfigError
from labeling_app.simulate import (
    LabelerSpec,
    SimulateConfig,
    agreement,
    decide,
    decision_rng,
    load_simulate_config,
    simulate,
)


def fake_gold(texts):
    """P(positive) written into the completion itself: '... p=0.73'."""
    return np.array([float(re.search(r"p=([0-9.]+)", t).group(1)) for t in texts])


def fill(engine, n, seed=0):
    import db

    rng = np.random.default_rng(seed)
    ps = rng.random(n)
    items = [
        db.NewCompletion(prompt=f"Prompt number {i}", text=f" and then p={p:.4f}", model_version_id=None, gen_params={})
        for i, p in enumerate(ps)
    ]
    ids = db.add_completions(engine, items)
    return dict(zip(ids, ps))


@pytest.fixture
def engine(smoke_env):
    import db

    return db.connect()


def test_decide_without_noise_is_the_gold_label():
    rng = np.random.default_rng(0)
    spec = LabelerSpec("a", noise=0.0)
    assert [decide(p, spec, rng) for p in (0.1, 0.49, 0.51, 0.9)] == ["bad", "bad", "good", "good"]
    harsh = LabelerSpec("h", noise=0.0, bias=0.2)
    assert decide(0.6, harsh, rng) == "bad" and decide(0.8, harsh, rng) == "good"
    assert decide(0.9, LabelerSpec("s", noise=0.0, skip_rate=0.999), rng) == "skip"


def test_decisions_depend_only_on_seed_labeller_and_item():
    a = decision_rng(0, "ann", 17).random(3)
    assert np.allclose(a, decision_rng(0, "ann", 17).random(3))
    assert not np.allclose(a, decision_rng(0, "ben", 17).random(3))
    assert not np.allclose(a, decision_rng(1, "ann", 17).random(3))


def test_shown_text_is_the_prompt_then_the_completion():
    from db import shown_text

    assert shown_text("Great", " film") == "Great film"
    assert shown_text("Great ", "film") == "Great film"
    # a completion continues the prompt's tokens: one that continues a word has no space to add
    assert shown_text("Great", "est film") == "Greatest film"


def test_labellers_judge_the_string_the_reward_model_trains_on(engine):
    import db
    from reward_training import data as D

    completions = [" was p=0.9 great", "est p=0.8 film", "\np=0.2 dull", " p=0.1 bad ending"]
    db.add_completions(engine, [db.NewCompletion(prompt="Great", text=t) for t in completions])
    judged: list[str] = []

    def recording_gold(texts):
        judged.extend(texts)
        return fake_gold(texts)

    cfg = SimulateConfig(n_labels=len(completions), overlap=1, labelers=[LabelerSpec("a", noise=0.0)])
    simulate(engine, cfg, recording_gold, progress=False)
    trained_on = [e.text for e in D.load_human_examples(engine)]
    assert sorted(judged) == sorted(trained_on) == sorted("Great" + t for t in completions)


def test_zero_noise_reproduces_gold_labels_exactly(engine):
    import db

    gold = fill(engine, 60)
    cfg = SimulateConfig(n_labels=120, overlap=2, labelers=[LabelerSpec("a", noise=0.0), LabelerSpec("b", noise=0.0)])
    res = simulate(engine, cfg, fake_gold, progress=False)
    assert res.n_recorded == 120 and not res.exhausted
    assert res.per_labeler == {"a": 60, "b": 60}
    data = db.labelled_dataset(engine)
    assert len(data) == 60
    for ex in data:
        assert ex.label == float(gold[ex.completion_id] > 0.5) and ex.n_labels == 2
    assert agreement(engine)["mean_kappa"] == pytest.approx(1.0)
    assert res.gold_agreement == {"a": 1.0, "b": 1.0}


def test_twenty_percent_noise_disagrees_about_twenty_percent(engine):
    import db

    gold = fill(engine, 300, seed=1)
    cfg = SimulateConfig(n_labels=300, overlap=1, labelers=[LabelerSpec("noisy", noise=0.2)], seed=3)
    res = simulate(engine, cfg, fake_gold, progress=False)
    assert res.n_recorded == 300
    wrong = np.mean([ex.label != float(gold[ex.completion_id] > 0.5) for ex in db.labelled_dataset(engine)])
    # binomial(300, 0.2): sd 0.023, so +-0.07 is 3 sd (and the seeds are fixed)
    assert 0.13 < wrong < 0.27
    assert res.gold_agreement["noisy"] == pytest.approx(1 - wrong, abs=1e-3)


def test_queue_exhaustion_and_rerun_is_deterministic(smoke_env, tmp_path, monkeypatch):
    import db

    labels = []
    for run in range(2):
        monkeypatch.setenv("RLHF_DB_URL", f"sqlite:///{tmp_path}/run{run}.sqlite")
        eng = db.connect()
        fill(eng, 25, seed=5)
        cfg = SimulateConfig(
            n_labels=1000, overlap=2, labelers=[LabelerSpec("a", noise=0.3), LabelerSpec("b", noise=0.3)]
        )
        res = simulate(eng, cfg, fake_gold, progress=False)
        assert res.exhausted and res.n_recorded == 50
        labels.append([(e.prompt, e.n_good) for e in db.labelled_dataset(eng, combine="soft")])
    assert labels[0] == labels[1]


def test_config_from_profile_and_overrides(tmp_path):
    prof = tmp_path / "p.yaml"
    prof.write_text(
        "demo:\n  simulate:\n    n_labels: 50\n    labelers: [{name: x, noise: 0.3}]\n  gold:\n    C: 2.0\n"
    )
    cfg, gold = load_simulate_config(prof, ["overlap=3", "gold.max_reviews=100"])
    assert cfg.n_labels == 50 and cfg.overlap == 3 and cfg.labelers[0].noise == 0.3
    assert gold.C == 2.0 and gold.max_reviews == 100
    with pytest.raises(ConfigError):
        SimulateConfig(labelers=[LabelerSpec("x", noise=1.5)]).validate()
    with pytest.raises(ConfigError):
        load_simulate_config(prof, ["nonsense=1"])


def test_cli_labels_the_queue_and_refuses_an_empty_one(engine, capsys):
    import json

    import db
    from labeling_app.simulate import main

    small_gold = ["--set", "gold.max_reviews=200", "--set", "gold.include_rotten_tomatoes=false"]
    with pytest.raises(SystemExit) as exc:
        main(["--quiet", *small_gold])
    assert exc.value.code == 2 and "queue is empty" in capsys.readouterr().err
    fill(engine, 10)
    assert main(["--quiet", "--n-labels", "12", "--set", "overlap=2", *small_gold]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_recorded"] == 12 and db.stats(engine)["judgements"] == 12
    assert out["agreement"]["pairs"]  # overlap 2: pairs of labellers share items


def test_cli_without_guidelines_is_one_line_and_labels_nothing(engine, capsys, tmp_path, monkeypatch):
    import db
    from labeling_app.simulate import main

    fill(engine, 5)
    for content in (None, "  \n"):
        path = tmp_path / "guidelines.md"
        if content is not None:
            path.write_text(content)
        monkeypatch.setenv("RLHF_GUIDELINES", str(path))
        with pytest.raises(SystemExit) as exc:
            main(["--quiet", "--n-labels", "3"])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1 and "guidelines" in err and str(path) in err
    assert db.stats(engine)["judgements"] == 0


def test_labellers_follow_the_guidelines_not_just_sentiment(tmp_path):
    """A cheerful text that drifts off the film is 'bad' for a labeller without noise, through the gold judge."""
    from common.gold import GoldConfig, GoldJudge

    judge = GoldJudge.load_or_fit(GoldConfig(max_reviews=1500), cache_dir=tmp_path)
    texts = [
        "This movie was wonderful, the cast is superb and the ending made me cry with joy.",
        "This movie was great, a wonderful way to streamline your daily budget and invest wisely in stocks.",
    ]
    spec = LabelerSpec("a", noise=0.0)
    sentiment, score = judge.sentiment(texts), judge.score(texts)
    assert (sentiment > 0.5).all()
    assert [decide(float(p), spec, np.random.default_rng(0)) for p in score] == ["good", "bad"]
