"""reward_training.reliability: Dawid–Skene on small synthetic label sets that can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from reward_training import data as D
from reward_training.reliability import dawid_skene

NOISE = {"ann": 0.05, "ben": 0.15, "cat": 0.35}  # cat flips 35% of her labels: accuracy 0.65


def synthetic(n: int = 3000, seed: int = 0):
    """``n`` items (half good), each labelled by all three labellers with their own flip rate,
    plus 'solo', who labels 20 other items that nobody else sees."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.5
    rows = []
    for who, noise in NOISE.items():
        flips = rng.random(n) < noise
        rows += [(i, who, "good" if t != f else "bad") for i, (t, f) in enumerate(zip(truth, flips))]
    rows += [(n + k, "solo", "good" if k % 2 else "bad") for k in range(20)]
    rows += [(0, "ann", "skip")]  # skips are ignored... and do not replace ann's label on item 0
    return truth, rows


def test_accuracies_match_the_flip_rates():
    _, rows = synthetic()
    rel = dawid_skene(rows)
    for who, noise in NOISE.items():
        r = rel.labellers[who]
        assert r.accuracy == pytest.approx(1 - noise, abs=0.03), (who, r)
        assert r.sensitivity == pytest.approx(1 - noise, abs=0.04) and r.specificity == pytest.approx(
            1 - noise, abs=0.04
        )
        assert r.n_labels == r.n_shared == 3000
    assert rel.prevalence == pytest.approx(0.5, abs=0.03)


def test_posterior_beats_majority_vote():
    """By hand: majority is right when two of three are, 0.95*0.85 + 0.95*0.15*0.65 + 0.05*0.85*0.65
    + ... = 0.928; the weighted vote follows ann (log-odds 2.9 > 1.7 + 0.6), so it is right 0.95
    (0.942 on this sample: the estimated weights are a little off)."""
    truth, rows = synthetic()
    rel = dawid_skene(rows)
    n = len(truth)
    votes = np.zeros(n)
    for i, _who, label in rows:
        if i < n and label != "skip":
            votes[i] += 1 if label == "good" else -1
    majority = float(np.mean((votes > 0) == truth))
    posterior = float(np.mean(np.array([rel.posterior[i] > 0.5 for i in range(n)]) == truth))
    assert majority == pytest.approx(0.928, abs=0.015)
    assert posterior == pytest.approx(0.95, abs=0.015)
    assert posterior > majority + 0.01


def test_labeller_without_overlap_is_unknown_and_keeps_the_default_weight():
    _, rows = synthetic()
    rel = dawid_skene(rows)
    solo = rel.labellers["solo"]
    assert solo.n_labels == 20 and solo.n_shared == 0
    assert solo.accuracy is None and solo.sensitivity is None and solo.specificity is None
    assert rel.default_accuracy == pytest.approx(2 / 3)
    # solo's items: logit(pi) + log(2) for good / - log(2) for bad, i.e. about 2/3 and 1/3 at pi = 0.5
    assert rel.posterior[3001] == pytest.approx(2 / 3, abs=0.02)
    assert rel.posterior[3000] == pytest.approx(1 / 3, abs=0.02)


def test_tiny_cases():
    rel = dawid_skene([])
    assert rel.labellers == {} and rel.posterior == {}
    rel = dawid_skene([(1, "a", "good"), (2, "b", "bad"), (3, "b", "skip")])
    assert all(r.accuracy is None for r in rel.labellers.values())
    assert rel.posterior[1] > 0.5 > rel.posterior[2] and 3 not in rel.posterior
    with pytest.raises(ValueError):
        dawid_skene([], prior=(0, 1))


def test_reliability_soft_labels_from_records_and_judgements():
    records = [
        {"completion_id": 1, "text": "one", "label": 2 / 3},
        {"completion_id": 2, "text": "two", "label": 1 / 3},
    ]
    judgements = [
        {"completion_id": 1, "labeler": "a", "label": "good"},
        {"completion_id": 1, "labeler": "b", "label": "good"},
        {"completion_id": 1, "labeler": "c", "label": "bad"},
        {"completion_id": 2, "labeler": "a", "label": "bad"},
        {"completion_id": 2, "labeler": "b", "label": "bad"},
        {"completion_id": 2, "labeler": "c", "label": "good"},
    ]
    ex = D.reliability_examples(records, judgements)
    assert [e.group for e in ex] == ["c:1", "c:2"] and [e.text for e in ex] == ["one", "two"]
    assert ex[0].label > 0.5 > ex[1].label and all(0 < e.label < 1 for e in ex)
    assert ex[0].label == pytest.approx(
        dawid_skene([(j["completion_id"], j["labeler"], j["label"]) for j in judgements]).posterior[1]
    )
