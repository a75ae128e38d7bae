"""The reward model from preference pairs: the Bradley-Terry loss, training on pairs (alone and mixed with
good/bad labels), pairwise accuracy with its interval, and bad input.

A tiny random BERT (``tiny_reward_dir``) stands in for MiniLM; the pairs follow a rule the IMDB seed cannot
know (the chosen continuation contains a word), so only the pairs can teach it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from common.config import load_config
from common.errors import ConfigError, UserError
from common.imdb import DataConfig
from reward_training import data as D
from reward_training.config import RewardConfig
from tests.support.reward import (
    one_thread,  # noqa: F401  (module fixture)
    tiny_cfg,
)

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.yaml"
WORD = "banana"


@dataclass(frozen=True)
class Pref:
    """Shaped like ``db.types.PreferencePair`` (prompt, chosen, rejected; completions without the prompt)."""

    prompt: str
    chosen: str
    rejected: str
    comparison_id: int | None = None
    labeler: str | None = None


def data_cfg() -> DataConfig:
    return load_config(DataConfig, "data", profile=SMOKE)


def snippets(n: int, seed: int) -> list[str]:
    from common.imdb import load_imdb

    dd = load_imdb(data_cfg())
    exs = D.imdb_snippets(
        dd["train"]["text"], dd["train"]["label"], n, prompt_words=(3, 5), span_words=(8, 16), follow_fraction=1.0,
        seed=seed,
    )  # fmt: skip
    return [e.text for e in exs]


def banana_pairs(n: int = 180, seed: int = 0) -> list[Pref]:
    """Pairs of two continuations of one prompt: the chosen one has WORD in it, the rejected one has not."""
    rng = np.random.default_rng(seed)
    texts = snippets(2 * n, seed + 11)
    out = []
    for i in range(n):
        a, b = texts[2 * i].split(), texts[2 * i + 1].split()
        prompt = " ".join(a[:3])
        good = a[3:]
        good.insert(int(rng.integers(0, len(good) + 1)), WORD)
        out.append(Pref(prompt=prompt, chosen=" " + " ".join(good), rejected=" " + " ".join(b[3:]), comparison_id=i))
    return out


def banana_labels(n: int = 200, seed: int = 5) -> list[dict]:
    out = []
    for i, text in enumerate(snippets(n, seed)):
        words = text.split()
        if i % 2 == 0:
            words.insert(len(words) // 2, WORD)
        out.append({"completion_id": 10_000 + i, "text": " ".join(words), "label": float(i % 2 == 0)})
    return out


# ----------------------------------------------------------------------------- the loss, by hand


def test_bradley_terry_loss_matches_hand_computed_values():
    from reward_training.model import bradley_terry_each, bradley_terry_loss, reward_score

    s_c = torch.tensor([2.0, 0.0, -1.0], requires_grad=True)
    s_r = torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + e^-d): d = 2, 0, -2
    expected = [math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.exp(2))]
    assert bradley_terry_each(s_c, s_r).tolist() == pytest.approx(expected, abs=1e-6)
    loss = bradley_terry_loss(s_c, s_r)
    assert loss.item() == pytest.approx(sum(expected) / 3, abs=1e-6)  # 0.98233
    loss.backward()
    # d/ds_c of mean -log sigmoid(s_c - s_r) = -(1 - sigmoid(d)) / 3
    assert s_c.grad.tolist() == pytest.approx([-(1 - 1 / (1 + math.exp(-d))) / 3 for d in (2, 0, -2)], abs=1e-6)
    # the score is the good-minus-bad logit, so P(good) = sigmoid(score) = softmax(logits)[1]
    logits = torch.tensor([[0.5, 2.0], [1.0, -1.0]])
    assert reward_score(logits).tolist() == [1.5, -2.0]
    assert torch.sigmoid(reward_score(logits)).tolist() == pytest.approx(torch.softmax(logits, -1)[:, 1].tolist())


def test_pairwise_accuracy_has_an_interval_and_counts_ties_half():
    from reward_training.evaluate import pairwise_difference, pairwise_metrics

    m = pairwise_metrics([1.0, 2.0, 0.0, 3.0], [0.0, 3.0, 0.0, 1.0])
    assert m["n"] == 4 and m["accuracy"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert m["bt_loss"] == pytest.approx(np.mean([math.log1p(math.exp(-d)) for d in (1, -1, 0, 2)]))
    rng = np.random.default_rng(0)
    s_c, s_r = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 400)
    m = pairwise_metrics(s_c, s_r)
    assert m["ci95"][0] < m["accuracy"] < m["ci95"][1] and m["ci95"][1] - m["ci95"][0] < 0.12
    d = pairwise_difference((s_c, s_r), (s_r, s_c))  # a model against its mirror image
    assert d["points"] == pytest.approx(100 * (2 * m["accuracy"] - 1), abs=0.01) and d["ci95"][0] > 0
    assert pairwise_metrics([], []) == {"n": 0} and pairwise_difference(([], []), ([], [])) is None


# ----------------------------------------------------------------------------- data


def test_pair_records_become_shown_texts_grouped_by_prompt():
    pairs = D.pair_examples([Pref("A film", " good", " bad"), {"prompt": "B", "chosen": "x", "rejected": "y"}])
    assert pairs[0] == D.Pair("A film good", "A film bad", group="p:A film")
    assert pairs[1].chosen == "Bx"
    assert D.pair_examples([Pref("same", " a", " a")]) == []  # says nothing: dropped
    with pytest.raises(UserError, match="not text"):
        D.pair_examples([{"prompt": "p", "chosen": None, "rejected": "r"}])
    many = D.pair_examples(banana_pairs(40))
    train, held = D.split_pairs(many, 0.25, 0)
    assert {p.group for p in train}.isdisjoint({p.group for p in held}) and len(train) + len(held) == len(many)
    assert 5 <= len(held) <= 15


def test_fit_on_pairs_alone_lowers_the_bradley_terry_loss(tiny_reward_dir):
    from reward_training.model import fit, load_backbone

    torch.manual_seed(0)
    model, tok = load_backbone(str(tiny_reward_dir))
    pairs = [(p.prompt + p.chosen, p.prompt + p.rejected) for p in banana_pairs(96)]
    res = fit(
        model, tok, [], [], pairs=pairs, epochs=6, lr=3e-3, batch_size=16, max_length=48, bf16=False, progress=False
    )
    assert res.steps == 36 and res.examples == 6 * 96
    assert np.mean(res.losses[-6:]) < 0.5 * np.mean(res.losses[:3])


# ----------------------------------------------------------------------------- the whole run


def test_training_on_pairs_raises_pairwise_accuracy(smoke_env, tiny_reward_dir):
    from reward_training.training import train

    cfg = tiny_cfg(tiny_reward_dir, pairs="only", ensemble_size=1)
    out = train(cfg, examples=[], pairs=banana_pairs(), data_cfg=data_cfg(), run_id="pairs", progress=False)
    m = json.loads((out / "metrics.json").read_text())
    p = m["pairs"]
    assert p["counts"]["heldout"]["n"] >= 30 and p["counts"]["train"]["n"] + p["counts"]["heldout"]["n"] == 180
    assert p["model"]["accuracy"] >= 0.85 and p["model"]["ci95"][0] <= p["model"]["accuracy"] <= p["model"]["ci95"][1]
    assert p["model"]["accuracy"] > p["seed_model"]["accuracy"] + 0.2  # the seed model cannot know the rule
    assert p["model_minus_seed"]["ci95"][0] > 0
    assert m["seed_only"] is False and m["counts"]["human_total"]["n"] == 0
    assert m["human_phase"]["validation"]["pairs"] > 0  # a part of the training pairs picked the epoch
    card = (out / "README.md").read_text()
    assert "Held-out preference pairs" in card
    # P(good) = sigmoid(score): the chosen text of a held-out-like pair scores higher with the saved model
    from reward_training import load_reward_fn

    fn = load_reward_fn(out, kind="logit_diff")
    fresh = D.pair_examples(banana_pairs(30, seed=9))
    s = fn([q.chosen for q in fresh] + [q.rejected for q in fresh])
    assert (s[:30] > s[30:]).float().mean() >= 0.8


def test_mixing_labels_and_pairs_trains_on_both(smoke_env, tiny_reward_dir):
    from reward_training.training import train

    cfg = tiny_cfg(
        tiny_reward_dir, pairs="auto", pair_weight=0.5, ensemble="heads", ensemble_size=3, human_epochs=3, patience=3
    )
    out = train(
        cfg, examples=banana_labels(), pairs=banana_pairs(120), data_cfg=data_cfg(), run_id="mix", progress=False
    )
    m = json.loads((out / "metrics.json").read_text())
    hp = m["human_phase"]
    assert hp["examples"] > 0 and hp["best_epoch"] >= 1
    # both kinds taught the rule: held-out labels and held-out pairs, each against the seed model
    assert m["model"]["human_heldout"]["accuracy"] > m["seed_model"]["human_heldout"]["accuracy"] + 0.2
    assert m["pairs"]["model"]["accuracy"] > m["pairs"]["seed_model"]["accuracy"] + 0.2
    assert m["model"]["human_heldout"]["n"] > 0 and m["pairs"]["model"]["n"] > 0
    assert m["pairs"]["pair_weight"] == 0.5 and m["ensemble"] == {**m["ensemble"], "kind": "heads", "size": 3}
    assert (out / "ensemble_heads.safetensors").is_file() and m["ensemble"]["spread_mean"]["human_heldout"] > 0
    # every epoch was judged on both validation parts
    assert all("accuracy" in ev and "pair_accuracy" in ev for ev in hp["evals"])
    # pairs: off ignores the pairs
    cfg_off = tiny_cfg(tiny_reward_dir, pairs="off", ensemble_size=1, human_epochs=1)
    out = train(
        cfg_off, examples=banana_labels(), pairs=banana_pairs(40), data_cfg=data_cfg(), run_id="off", progress=False
    )
    assert json.loads((out / "metrics.json").read_text())["pairs"]["counts"]["total"]["n"] == 0


# ----------------------------------------------------------------------------- bad input


def test_pairs_only_without_pairs_is_one_clear_error(smoke_env, tiny_reward_dir):
    from reward_training.training import train

    cfg = tiny_cfg(tiny_reward_dir, pairs="only")
    with pytest.raises(UserError, match="reward.pairs=only but there are no preference pairs") as err:
        train(cfg, examples=banana_labels(20), pairs=[], data_cfg=data_cfg(), run_id="none", progress=False)
    assert "\n" not in str(err.value.problem)
    assert not (smoke_env["artifacts"] / "reward_models" / "none").exists()


def test_pairs_only_from_an_empty_database_exits_2(smoke_env, capsys):
    from reward_training.__main__ import main

    with pytest.raises(SystemExit) as err:
        main(["--no-progress", "--set", "pairs=only"])
    assert err.value.code == 2
    assert "pairs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [("pairs", "sometimes", "pairs"), ("pair_weight", "-1", "pair_weight"), ("pair_weight", "nan", "pair_weight")],
)
def test_bad_pair_settings_are_config_errors(key, value, match):
    with pytest.raises(ConfigError, match=match):
        load_config(RewardConfig, "reward", profile=SMOKE, overrides={key: value})
