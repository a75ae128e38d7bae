"""The gold judge: fits, scores sentiment the obvious way, caches by config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from common.errors import ConfigError
from common.gold import (
    GoldConfig,
    GoldJudge,
    coherence_factor,
    distinct2,
    function_word_share,
    known_word_share,
    training_texts,
)

SMALL = GoldConfig(max_reviews=1500, include_rotten_tomatoes=True)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return GoldJudge.load_or_fit(SMALL, cache_dir=tmp_path_factory.mktemp("gold"))


def test_scores_obvious_sentiment(judge):
    s = judge.score(
        [
            "A wonderful, moving film with great acting. I loved it.",
            "Terrible, boring and a waste of time. The worst movie ever.",
        ]
    )
    assert s.shape == (2,) and s.dtype == np.float64
    assert s[0] > 0.6 > 0.4 > s[1]
    assert list(judge.labels(["It was great fun, with a great cast.", "It was an awful plot and an awful cast."])) == [
        1,
        0,
    ]
    assert judge.score([]).shape == (0,)


def test_repetition_lowers_the_gold_score(judge):
    """Word salad of positive words fools the classifier but not the gold score (the instructions ask for
    coherent text); ordinary sentences keep their sentiment score."""
    salad = "best also also's best really also best also also's best really also great best also"
    prose = "A wonderful, moving film with great acting. I loved it."
    assert distinct2(prose) == 1.0 and distinct2("great great great great great") == 0.25
    assert distinct2("two words") == 1.0
    assert judge.sentiment([salad])[0] > 0.8
    assert judge.score([salad])[0] < 0.35 * judge.sentiment([salad])[0]
    np.testing.assert_allclose(judge.score([prose]), judge.sentiment([prose]))
    np.testing.assert_allclose(
        coherence_factor(["a b a b a b a b a", prose], GoldConfig(distinct2_low=0.5, distinct2_high=0.8)), [0.0, 1.0]
    )
    adjectives = (
        "great novel and superb superb romance complex and great superb family great family great "
        "particular journey romance and superb journey stunning superb childhood great mystery tale"
    )
    assert distinct2(adjectives) > 0.8 and function_word_share(adjectives) < 0.15  # only the grammar ramp sees it
    assert judge.score([adjectives])[0] == 0.0 < 0.8 < judge.sentiment([adjectives])[0]
    assert function_word_share("It was the best film of the year.") == pytest.approx(5 / 8)
    plain = GoldJudge(dataclasses.replace(judge.cfg, coherence=False), judge.pipeline, judge.info)
    np.testing.assert_allclose(plain.score([salad]), judge.sentiment([salad]))
    assert GoldConfig(coherence=False).key == GoldConfig().key  # scoring-only: same fitted classifier


def test_held_out_accuracy_beats_chance(judge):
    texts, labels = training_texts(GoldConfig(max_reviews=300, seed=7, include_rotten_tomatoes=False))
    assert judge.accuracy(texts, labels) > 0.7


def test_cache_is_reused_and_keyed_by_config(tmp_path, monkeypatch):
    cfg = GoldConfig(max_reviews=200, include_rotten_tomatoes=False)
    first = GoldJudge.load_or_fit(cfg, cache_dir=tmp_path)
    assert (tmp_path / f"{cfg.key}.joblib").is_file()
    monkeypatch.setattr(GoldJudge, "fit", classmethod(lambda cls, c=None: pytest.fail("refitted")))
    again = GoldJudge.load_or_fit(cfg, cache_dir=tmp_path)
    np.testing.assert_allclose(first.score(["fine film"]), again.score(["fine film"]))
    assert GoldConfig(max_reviews=200, C=1.0).key != cfg.key


def test_cache_defaults_under_artifacts(smoke_env):
    judge = GoldJudge.load_or_fit(GoldConfig(max_reviews=100, include_rotten_tomatoes=False))
    assert list((smoke_env["artifacts"] / "gold").glob("*.joblib"))
    assert judge.info["n_train"] == 100


def test_bad_config():
    with pytest.raises(ConfigError):
        GoldConfig(C=0).validate()
    with pytest.raises(ConfigError, match="distinct2_low"):
        GoldConfig(distinct2_low=0.9, distinct2_high=0.8).validate()
    with pytest.raises(ConfigError, match="function_words_low"):
        GoldConfig(function_words_low=0.5, function_words_high=0.3).validate()


# ----------------------------------------------------------------------------- the guidelines' parts

OFF_TOPIC = [
    "This movie was a great start: with a minimal budget and a basic package with meals, opt for a cabin at a "
    "mid-range hotel with free breakfast and a lovely spa.",
    "I loved this film and you will love our new range of kitchen knives, available now at a great price with "
    "free delivery and a wonderful warranty.",
    "This movie can be a great way to significantly streamline your daily budget, reduce stress and invest "
    "wisely in a wonderful portfolio of stocks.",
]


def guideline_examples() -> dict[str, list[str]]:
    """The example texts of configs/guidelines.md by heading ('Good', 'Bad: ...'), italics removed."""
    from common.guidelines import load_guidelines

    out: dict[str, list[str]] = {}
    head = None
    for block in load_guidelines().split("\n- "):
        lines = block.splitlines()
        if head is not None and lines:
            item = " ".join(x.strip() for x in lines if not x.startswith("#")).replace("*", "").strip()
            out.setdefault(head, []).append(item)
        heads = [x for x in lines if x.startswith("### ")]
        if heads:
            head = heads[-1][4:].strip()
    return out


def test_off_topic_cheer_is_bad_while_real_reviews_keep_their_score(judge):
    parts = judge.parts(OFF_TOPIC)
    assert set(parts) == {"sentiment", "on_topic", "fluency", "score"}
    assert (parts["sentiment"] > 0.5).all()  # cheerful: plain sentiment says good
    assert (parts["on_topic"] < 0.5).all() and (parts["score"] < 0.5).all()  # the guidelines say bad
    real = training_texts(GoldConfig(max_reviews=400, seed=3, include_rotten_tomatoes=False))[0]
    cut = [" ".join(t.split()[:30]) for t in real]
    factor = judge.parts(cut)["on_topic"] * judge.parts(cut)["fluency"]
    assert factor.mean() > 0.95 and (factor < 0.5).mean() < 0.03
    off = GoldJudge(dataclasses.replace(judge.cfg, topic=False), judge.pipeline, judge.info, judge.ranks)
    np.testing.assert_allclose(off.parts(OFF_TOPIC)["on_topic"], 1.0)


def test_non_words_lower_fluency(judge):
    markup = "The film starts #InvitadaboWorkers xlylarrv selwenchell ||| click [here](http://x.y) pyadrilla jarenuma"
    assert known_word_share(markup, judge.ranks) < 0.5 and judge.parts([markup])["fluency"][0] == 0.0
    assert known_word_share("It was the best film of 1999, and I saw it 3 times.", judge.ranks) == 1.0


def test_the_guidelines_examples_are_judged_as_the_guidelines_say(judge):
    """Good examples score good, negative and non-fluent ones bad; the off-topic ones are marked down by the
    topic part (a lexical judge misses some drift: docs/reward_model.md has what it gets wrong)."""
    examples = guideline_examples()
    assert examples["Good"] and len(examples) >= 4
    for head, texts in examples.items():
        parts = judge.parts(texts)
        if head == "Good":
            assert (parts["score"] > 0.5).all(), (head, parts)
        elif head.startswith("Bad: off the topic"):
            assert (parts["on_topic"] < 0.7).all() and (parts["sentiment"] > 0.5).all(), (head, parts)
        else:
            assert (parts["score"] < 0.5).all(), (head, parts)
