"""The reward ensemble: heads on one encoder, their spread, scoring into the database, the queue's
"uncertain first" order, the conservative reward, and bad input.

A tiny random BERT (``tiny_reward_dir``) stands in for MiniLM.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from common.config import load_config
from common.errors import ConfigError, UserError
from common.imdb import DataConfig
from reward_training import data as D
from reward_training.config import RewardConfig
from tests.support.reward import one_thread  # noqa: F401  (module fixture)
from tests.support.reward import tiny_cfg as support_tiny_cfg

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"
WORD = "banana"


def tiny_cfg(backbone: Path, **over) -> RewardConfig:
    """The shared tiny config with an ensemble of 5 unless told otherwise."""
    return support_tiny_cfg(backbone, **{"ensemble_size": 5, **over})


def data_cfg() -> DataConfig:
    return load_config(DataConfig, "data", profile=SMOKE)


def banana_records(n: int = 240, seed: int = 0) -> list[dict]:
    """IMDB-snippet records that are good iff they contain WORD (one kind of text, a rule that is not sentiment)."""
    from common.imdb import load_imdb

    dd = load_imdb(data_cfg())
    exs = D.imdb_snippets(
        dd["train"]["text"], dd["train"]["label"], n, prompt_words=(3, 5), span_words=(8, 16), follow_fraction=1.0,
        seed=seed + 7,
    )  # fmt: skip
    out = []
    for i, ex in enumerate(exs):
        words = ex.text.split()
        if i % 2 == 0:
            words.insert(len(words) // 2, WORD)
        out.append({"completion_id": i, "text": " ".join(words), "label": float(i % 2 == 0)})
    return out


# ----------------------------------------------------------------------------- the heads


def test_heads_mean_is_the_saved_classifier_and_spread_is_their_std(tiny_reward_dir, tmp_path):
    from reward_training.model import (
        attach_heads,
        ensemble_heads,
        heads_detached,
        load_backbone,
        load_heads,
        predict_logits,
        predict_mean_spread,
        save_heads,
    )

    model, tok = load_backbone(str(tiny_reward_dir))
    heads = attach_heads(model, 4, seed=1)
    assert heads.size == 4 and heads.weight.shape[0] == 4
    texts = ["a fine film", "dull and long", "1 2 3 4"]
    per_head = predict_logits(model, tok, texts, max_length=32, bf16=False, members=True)  # (K, N, 2)
    mean_logits = predict_logits(model, tok, texts, max_length=32, bf16=False)  # the model's own classifier
    assert per_head.shape == (4, 3, 2)
    assert torch.allclose(per_head.mean(0), mean_logits, atol=1e-5)  # linear heads: mean head = mean logits
    p, spread = predict_mean_spread(model, tok, texts, max_length=32, bf16=False)
    assert np.allclose(spread, torch.softmax(per_head, -1)[..., 1].std(0, unbiased=False).numpy(), atol=1e-6)
    assert (spread > 0).all() and np.allclose(p, torch.softmax(mean_logits, -1)[:, 1].numpy(), atol=1e-5)
    # saving: a plain HF folder (no heads inside) plus the heads file
    with heads_detached(model):
        assert ensemble_heads(model) is None
        model.save_pretrained(tmp_path)
    save_heads(model, tmp_path)
    assert ensemble_heads(model) is not None
    again, _ = load_backbone(str(tmp_path))
    assert ensemble_heads(again) is None and load_heads(again, tmp_path).size == 4
    assert torch.allclose(
        predict_logits(again, tok, texts, max_length=32, bf16=False, members=True), per_head, atol=1e-5
    )
    # one head: no spread
    single, _ = load_backbone(str(tiny_reward_dir))
    assert attach_heads(single, 1) is None and predict_mean_spread(single, tok, texts, max_length=32)[1] is None


def marked_records(n: int) -> list[dict]:
    """One kind of text (IMDB snippets): good ones carry WORD, bad ones "cherry"."""
    recs = banana_records(n)
    for r in recs:
        if not r["label"]:
            words = r["text"].split()
            words.insert(len(words) // 2, "cherry")
            r["text"] = " ".join(words)
    return recs


def test_spread_is_larger_off_distribution_than_on_it(tiny_reward_dir):
    """Trained on IMDB snippets marked good or bad, the members agree on held-out snippets of that kind and
    disagree on text unlike it: the same snippets without either mark, and digit strings."""
    from reward_training.model import attach_members, ensemble_size, load_backbone, predict_mean_spread
    from reward_training.training import run_human_phase, train_members

    cfg = tiny_cfg(tiny_reward_dir, ensemble_size=4)
    recs = D.human_examples(marked_records(300))
    train, held = recs[:240], recs[240:]
    torch.manual_seed(0)
    model, tok = load_backbone(str(tiny_reward_dir), freeze_embeddings=False)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    res = run_human_phase(model, tok, cfg, train, [], mix_ratio=0.0, progress=False)
    assert np.mean(res.losses[-5:]) < np.mean(res.losses[:5])
    attach_members(model, train_members(cfg, start, train, [], progress=False))
    assert ensemble_size(model) == 4
    rng = np.random.default_rng(0)
    unmarked = [e.text.replace(f" {WORD}", "").replace(" cherry", "") for e in held]
    digits = [" ".join(str(x) for x in rng.integers(0, 10_000, 24)) for _ in range(60)]
    kw = {"max_length": cfg.max_length, "bf16": False}
    p_on, s_on = predict_mean_spread(model, tok, [e.text for e in held], **kw)
    assert np.mean((p_on > 0.5) == np.array([e.label > 0.5 for e in held])) >= 0.9
    for off in (unmarked, digits):
        _, s_off = predict_mean_spread(model, tok, off, **kw)
        assert np.median(s_off) > 5 * np.median(s_on) and np.mean(s_off) > 2 * np.mean(s_on)


# ----------------------------------------------------------------------------- the database and the queue


def add_items(engine, n: int) -> list[int]:
    import db

    return db.add_completions(engine, [db.NewCompletion(prompt=f"Prompt {i}", text=f" text {i}") for i in range(n)])


def reward_version(engine) -> int:
    import db

    return db.register_model_version(engine, kind="reward", name="rm", path="/nowhere")


def test_set_reward_scores_stores_and_clears_the_spread(db_engine):
    import db

    ids = add_items(db_engine, 3)
    v = reward_version(db_engine)
    db.set_reward_scores(db_engine, dict(zip(ids, (0.2, 0.5, 0.9))), v, spreads=dict(zip(ids, (0.01, 0.2, 0.05))))

    def spreads():
        with Session(db_engine) as s:
            return dict(s.execute(select(db.Completion.id, db.Completion.reward_spread)).all())

    assert spreads() == pytest.approx(dict(zip(ids, (0.01, 0.2, 0.05))))
    db.set_reward_scores(db_engine, {ids[0]: 0.3}, v)  # a single-head model: no spread
    assert spreads()[ids[0]] is None and spreads()[ids[1]] == pytest.approx(0.2)
    for bad in ({ids[0]: -0.1}, {ids[0]: float("nan")}, {ids[2]: 0.1}):
        with pytest.raises(UserError, match="spread"):
            db.set_reward_scores(db_engine, {ids[0]: 0.5}, v, spreads=bad)


def test_uncertain_first_takes_the_largest_spread_then_falls_back_to_the_score(db_engine):
    import db

    ids = add_items(db_engine, 5)
    v = reward_version(db_engine)
    # ids[0] is the closest to 0.5 but the ensemble agrees on it; ids[3] has the largest spread
    db.set_reward_scores(
        db_engine,
        dict(zip(ids[:4], (0.5, 0.9, 0.1, 0.95))),
        v,
        spreads=dict(zip(ids[:4], (0.001, 0.05, 0.02, 0.3))),
    )
    who = db.get_or_create_labeler(db_engine, "ann")
    order = []
    for _ in range(4):
        item = db.next_item(db_engine, who, session_key="s", order="uncertain")
        order.append(item.completion_id)
        db.record_judgement(db_engine, labeler_id=who, completion_id=item.completion_id, label="good")
    assert order == [ids[3], ids[1], ids[2], ids[0]]
    # without spreads (a single-head model): closest to 0.5 first, unscored last
    more = add_items(db_engine, 3)
    db.set_reward_scores(db_engine, {more[0]: 0.9, more[1]: 0.45}, v)
    got = []
    for _ in range(4):
        item = db.next_item(db_engine, who, session_key="s", order="uncertain")
        got.append(item.completion_id)
        db.record_judgement(db_engine, labeler_id=who, completion_id=item.completion_id, label="bad")
    assert got == [more[1], more[0], ids[4], more[2]]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, tiny_reward_dir):
    """A 5-head reward model trained from a database, registered, with unlabelled completions beside it."""
    import db
    from reward_training.training import train

    root = tmp_path_factory.mktemp("ensemble_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_ARTIFACTS", str(root / "artifacts"))
        mp.setenv("RLHF_CONFIG", str(SMOKE))
        engine = db.connect(f"sqlite:///{root / 'feedback.sqlite'}")
        recs = banana_records(120)
        split = [r["text"].split(" ", 2) for r in recs]  # prompt = the first two words, as shown_text joins them
        ids = db.add_completions(engine, [db.NewCompletion(prompt=f"{a} {b}", text=f" {rest}") for a, b, rest in split])
        ann = db.get_or_create_labeler(engine, "ann")
        for cid, r in zip(ids, recs):
            db.record_judgement(engine, labeler_id=ann, completion_id=cid, label="good" if r["label"] else "bad")
        extra = db.add_completions(
            engine, [db.NewCompletion(prompt="Unlabelled ", text=t) for t in ("a banana film", "7 7 7 7", "dull")]
        )
        cfg = tiny_cfg(tiny_reward_dir, human_epochs=3, ensemble_size=3)
        out = train(cfg, engine, data_cfg=data_cfg(), run_id="ens", progress=False)
        yield {"engine": engine, "out": out, "extra": extra, "root": root}
        engine.dispose()


def test_scoring_writes_mean_and_spread(ensemble_run, monkeypatch):
    import db
    from reward_training.api import score_completions

    monkeypatch.setenv("RLHF_ARTIFACTS", str(ensemble_run["root"] / "artifacts"))
    out, engine = ensemble_run["out"], ensemble_run["engine"]
    assert sorted(p.name for p in (out / "ensemble_members").iterdir()) == [
        "member_1.safetensors",
        "member_2.safetensors",
    ]
    info = json.loads((out / "reward_config.json").read_text())
    assert info["ensemble"] == "members" and info["ensemble_size"] == 3 and info["conservative_k"] == 0
    assert json.loads((out / "metrics.json").read_text())["ensemble"]["size"] == 3
    assert score_completions(engine, out) == 3
    with Session(engine) as s:
        rows = s.execute(
            select(db.Completion.reward_score, db.Completion.reward_spread)
            .where(db.Completion.id.in_(ensemble_run["extra"]))
            .order_by(db.Completion.id)
        ).all()
    assert all(0 <= p <= 1 and sp is not None and 0 < sp < 0.5 for p, sp in rows)
    # the saved folder is still a plain classifier (member 0); the score written is the ensemble mean
    from transformers import pipeline

    from reward_training import reward_model
    from reward_training.api import _load, _weights_mtime
    from reward_training.model import predict_logits

    clf = pipeline("text-classification", model=str(out))
    assert {d["label"] for d in clf(["Unlabelled dull"], top_k=None)[0]} == {"POSITIVE", "NEGATIVE"}
    p_mean = reward_model(["Unlabelled dull"], out)["Unlabelled dull"]
    assert p_mean == pytest.approx(rows[2][0], abs=1e-5)
    model, tok, settings = _load(str(out.resolve()), "cpu", _weights_mtime(out.resolve()))
    each = predict_logits(model, tok, ["Unlabelled dull"], max_length=settings["max_length"], members=True)
    assert each.shape == (3, 1, 2) and p_mean == pytest.approx(torch.softmax(each.mean(0), -1)[0, 1].item(), abs=1e-5)


def test_conservative_reward_is_mean_minus_k_spread(ensemble_run):
    from reward_training import load_reward_fn
    from reward_training.model import predict_logits

    out = ensemble_run["out"]
    texts = ["a banana film", "7 7 7 7", "dull", "banana"]
    for kind in ("prob", "logit_diff"):
        mean = load_reward_fn(out, kind=kind)(texts)
        cons = load_reward_fn(out, kind=kind, conservative_k=2.0)
        assert cons.conservative_k == 2.0
        got = cons(texts)
        assert (got <= mean + 1e-6).all() and (got < mean).any()
        from reward_training.api import _load, _weights_mtime, kind_scores

        model, tok, settings = _load(str(out.resolve()), "cpu", _weights_mtime(out.resolve()))
        per = kind_scores(
            predict_logits(model, tok, texts, max_length=settings["max_length"], bf16=settings["bf16"], members=True),
            kind,
        )
        assert torch.allclose(got, mean - 2.0 * per.std(0, unbiased=False), atol=1e-4)
    with pytest.raises(UserError, match="conservative_k"):
        load_reward_fn(out, conservative_k=-1)


def test_ppo_trains_on_the_conservative_reward_and_logs_the_mean(ensemble_run):
    """``ppo.reward_conservative_k`` reaches the reward PPO trains on; the logged p_good stays the mean."""
    from reward_training import load_reward_fn
    from rl_finetune.ppo.config import PPOConfig
    from rl_finetune.ppo.stage import reward_fns

    out, texts = ensemble_run["out"], ["a banana film", "7 7 7 7", "dull", "banana"]
    mean = load_reward_fn(out, kind="prob", conservative_k=0.0)(texts)
    for kind in ("prob", "logit_diff"):
        train_fn, evals = reward_fns(out, PPOConfig(reward_kind=kind, reward_conservative_k=2.0))
        assert train_fn.conservative_k == 2.0 and evals["p_good"].conservative_k == 0.0
        assert torch.allclose(evals["p_good"](texts), mean)
        assert torch.allclose(train_fn(texts), load_reward_fn(out, kind=kind, conservative_k=2.0)(texts))
    plain, evals = reward_fns(out, PPOConfig(reward_kind="prob"))  # null: the model's saved k (0)
    assert plain.conservative_k == 0.0 and evals["p_good"] is plain
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="reward_conservative_k"):
            PPOConfig(reward_conservative_k=bad).validate()


# ----------------------------------------------------------------------------- bad input


def test_ensemble_size_zero_is_a_one_line_config_error(smoke_env, capsys):
    with pytest.raises(ConfigError, match="ensemble_size=0") as err:
        load_config(RewardConfig, "reward", profile=SMOKE, overrides={"ensemble_size": 0})
    assert "\n" not in str(err.value)
    from reward_training.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["--no-progress", "--set", "ensemble_size=0"])
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "ensemble_size" in lines[0]
    with pytest.raises(ConfigError, match="conservative_k"):
        load_config(RewardConfig, "reward", profile=SMOKE, overrides={"conservative_k": -0.5})


def test_member_bootstrap_gives_each_member_its_own_resample_of_the_fit_labels(monkeypatch):
    from reward_training import training
    from reward_training.model import FitResult

    seen = []
    monkeypatch.setattr(
        training, "human_phase", lambda model, tok, cfg, fit, *a, **k: seen.append(list(fit)) or FitResult(best_epoch=1)
    )
    train = [D.Example(text=f"text {i}", label=float(i % 2), group=f"c:{i}") for i in range(200)]
    base = RewardConfig(ensemble="members", ensemble_size=3, val_fraction=0.15)
    for cfg in (base, RewardConfig(ensemble="members", ensemble_size=3, val_fraction=0.15, member_bootstrap=True)):
        for member in range(2):
            training.run_human_phase(None, None, dataclasses.replace(cfg, random_seed=member), train, [])
    plain0, plain1, boot0, boot1 = seen
    assert len({e.group for e in plain0}) == len(plain0)  # without it: every fit label once
    for boot in (boot0, boot1):
        assert len(boot) == len(plain0) and len({e.group for e in boot}) < 0.8 * len(boot)  # drawn with replacement
    assert [e.group for e in boot0] != [e.group for e in boot1]  # each member its own draw
    alone = dataclasses.replace(RewardConfig(ensemble_size=1, member_bootstrap=True), val_fraction=0.15)
    training.run_human_phase(None, None, alone, train, [])
    assert len({e.group for e in seen[-1]}) == len(seen[-1])  # one model: nothing to bag
