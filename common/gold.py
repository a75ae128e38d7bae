"""The "gold" judge: the labelling guidelines (``configs/guidelines.md``) as a score the reward model never sees.

Score = P(positive) x on_topic x fluency (below). In the demo, simulated labellers judge completions
with it (plus noise and bias per labeller), and PPO logs its score
beside the learned reward, so reward hacking shows up as the learned reward rising while the
gold score stalls or falls (Gao, Schulman, Hilton 2022). It is deliberately a different kind of
model from the reward model: TF-IDF over word 1-2-grams and a logistic regression, trained on
all 25,000 IMDB reviews plus the 8,530 short Rotten Tomatoes sentences.

Why the Rotten Tomatoes sentences: completions are short, and adding the sentences lifts the
judge's accuracy on short sentences while keeping it on full reviews and snippets. Training on
random windows of the reviews instead (labelled with the review's label) did not help and fits
more slowly, so it is off by default (``snippets_per_review``). The measurements are in the gold
judge section of ``docs/demo.md``.

    judge = GoldJudge.load_or_fit(GoldConfig())
    judge.score(["What a wonderful film.", "Dull and far too long."])  # -> array([0.9.., 0.0..])

Coherence. The labelling instructions say "Good = a positive, *coherent* movie-review continuation",
and a bag of words cannot see coherence: without a KL leash PPO drives the policy to word salad of
positive words ("best also also's best really also ...") that a TF-IDF judge scores as high as the
reward model does, so reward hacking never showed as a falling gold curve. The judge therefore
multiplies P(positive) by a coherence factor, the smaller of two linear ramps:
- repetition: the share of distinct word bigrams in the text (distinct-2), from ``distinct2_low``
  (factor 0) to ``distinct2_high`` (factor 1): repeated words ("great great great ...") fall below it;
- grammar: the share of English function words ("the", "was", "it", ...), from ``function_words_low``
  (0) to ``function_words_high`` (1): a salad of varied adjectives, which the repetition ramp misses,
  falls below it.
Both ramps sit below what real review spans score (``docs/demo.md`` has their distribution), so
real review text keeps a factor of 1 (rarely a little less). ``coherence: false`` gives the plain
sentiment classifier.

The guidelines (``configs/guidelines.md``) ask for more than coherence: a positive review that *stays
about the film* and *reads as fluent English*. SmolLM2-135M's samples mostly fail the first, not the
sentiment: "This movie was awesome... founded your career in an easy cupcakes way" drifts off. So the
score is

    P(positive) x on_topic x fluency

each part from something the reward model never sees:
- ``on_topic`` (``topic: true``): over the last ``topic_tail`` of the text's content words (the part
  a continuation writes), the larger of two ramps: hits in a curated film lexicon (``FILM_WORDS``: 0
  hits -> 0, ``topic_hits_high`` -> 1), and the mean *film-review lift* of the words, log(web rank /
  IMDB rank), where the IMDB rank comes from the judge's IMDB reviews and the web rank from GPT-2's
  BPE vocabulary order (a web-English frequency order that ships offline); from ``topic_lift_low``
  (0) to ``topic_lift_high`` (1). Plot narration ("his wife finds the killer") has few lexicon
  words but a high lift; drift to investing, hotels or anatomy has neither.
- ``fluency``: the coherence factor above, and the share of tokens that are known words (in the
  IMDB vocabulary, ASCII letters) or numbers, from ``known_words_low`` (0) to ``known_words_high`` (1):
  markup, hashtags, made-up words and other scripts fall below it.
Measured in ``docs/reward_model.md``: real review text keeps a factor near 1; SmolLM2's queue does not.

The fitted judge is cached under ``$RLHF_ARTIFACTS/gold/<key>.joblib``, keyed by its config, so
the fit happens once per machine and config.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import ConfigError
from common.paths import artifacts_root

log = logging.getLogger(__name__)

#: Bump when the fitting code changes in a way that makes old caches wrong.
_CACHE_VERSION = 3  # 2: the judge stores the word ranks of the topic and fluency parts; 3: of all reviews
_SCORING_ONLY = (
    "coherence",
    "distinct2_low",
    "distinct2_high",
    "function_words_low",
    "function_words_high",
    "topic",
    "topic_tail",
    "topic_hits_high",
    "topic_lift_low",
    "topic_lift_high",
    "known_words_low",
    "known_words_high",
)
_LETTERS = re.compile(r"[a-z']+")
_WORDS = re.compile(r"[\w']+|[^\w\s]")


def distinct2(text: str) -> float:
    """Distinct word bigrams / word bigrams in one text (lower-cased, punctuation as words); 1.0 below 3 words."""
    words = _WORDS.findall(text.lower())
    bigrams = list(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams) if len(bigrams) >= 2 else 1.0


def function_word_share(text: str) -> float:
    """Share of the words that are English function words (scikit-learn's stop-word list); 1.0 below 4 words."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = _LETTERS.findall(text.lower())
    return sum(w in ENGLISH_STOP_WORDS for w in words) / len(words) if len(words) >= 4 else 1.0


#: Words that say a text talks about a film (the topic part's lexicon; lower case).
FILM_WORDS = frozenset(
    """
    film films filmed filming filmmaker filmmakers movie movies cinema cinematic cinematography cinematographer
    actor actors actress actresses acting acted cast casting character characters characterization
    plot plots story stories storyline storytelling script scripted screenplay screenwriter writer writers
    scene scenes director directors directed directing direction directorial performance performances performer
    role roles star stars starring starred costar lead protagonist hero heroes heroine villain villains
    screen camera shot shots editing edited dialogue dialog ending endings finale climax twist twists
    sequel sequels prequel remake remakes trilogy franchise series episode episodes season tv television
    genre comedy comedies comedic drama dramas dramatic horror thriller thrillers documentary documentaries
    animation animated cartoon cartoons musical musicals western westerns romance romantic sci-fi fantasy
    mystery noir satire parody soundtrack score music songs effects cgi visuals
    audience audiences viewer viewers viewing watch watched watching watchable rewatch theater theatre theaters
    hollywood bollywood oscar oscars award awards nominated festival premiere released release box-office
    producer producers production produced studio studios version adaptation adapted novel book
    classic masterpiece flick flicks picture feature blockbuster indie
    funny hilarious boring entertaining entertainment suspense suspenseful predictable
    portrayal portrays portrayed portray plays played playing
    imdb rating rated review reviews reviewer critics critic minutes dvd vhs rent rented
    """.split()
)
_CONTENT = re.compile(r"[a-z]+(?:-[a-z]+)*")
_EDGE_PUNCT = re.compile(r"^\W+|\W+$")
#: GPT-2 vocabulary ids above this count as "rare on the web" for words it has no token for.
_WEB_UNKNOWN_RANK = 60_000
_IMDB_UNKNOWN_RANK = 1_000_000
_RANK_OFFSET = 200  # keeps the lift of the very commonest words from swinging on a few ranks
_KNOWN_MAX_RANK = 60_000  # IMDB words this common or more count as known words


def _ramp(x, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(x, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def web_ranks() -> dict[str, int]:
    """Lower-case whole words of GPT-2's BPE vocabulary ("Ġword" tokens) and their ids: the order in which
    byte-pair encoding learned them on web text, a frequency order of web English (offline, no corpus)."""
    from common.assets import _gpt2_vocab_merges

    vocab, _ = _gpt2_vocab_merges()
    out: dict[str, int] = {}
    for token, i in vocab:
        word = token[1:]
        if token.startswith("\u0120") and word.isalpha() and word.islower() and word.isascii():
            out.setdefault(word, int(i))
    return out


def imdb_ranks(texts) -> dict[str, int]:
    """Rank (0 = commonest) of every lower-case word in ``texts``."""
    from collections import Counter

    counts: Counter = Counter()
    for t in texts:
        counts.update(_CONTENT.findall(t.lower()))
    return {w: i for i, (w, _) in enumerate(counts.most_common())}


@functools.lru_cache(maxsize=1)
def all_review_ranks() -> dict[str, int]:
    """:func:`imdb_ranks` of all 25,000 IMDB reviews (about 3 s), whatever ``max_reviews`` the classifier
    uses: the topic and fluency parts should not get worse because a small profile fits on fewer reviews."""
    import pandas as pd

    from common.assets import imdb_csv
    from common.imdb import clean_review

    df = pd.read_csv(imdb_csv())
    return imdb_ranks(clean_review(t) for t in df[df.source == "imdb"].text)


def _content_words(text: str) -> list[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in _CONTENT.findall(text.lower()) if len(w) > 2 and w not in ENGLISH_STOP_WORDS]


def topic_factor(texts: list[str], ranks: dict, cfg: GoldConfig | None = None) -> np.ndarray:
    """Per text, how much its last ``topic_tail`` of content words stay about films (0-1): the larger of
    the film-lexicon ramp and the film-review-lift ramp (see the module doc). ``ranks`` = ``GoldJudge.ranks``."""
    cfg = cfg or GoldConfig()
    imdb, web = ranks["imdb"], ranks["web"]
    out = np.ones(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        words = _content_words(t)
        if len(words) < 3:
            continue  # too short to drift anywhere
        tail = words[-max(1, int(np.ceil(len(words) * cfg.topic_tail))) :]
        hits = sum(w in FILM_WORDS for w in tail)
        lift = np.mean(
            [
                np.clip(
                    np.log(
                        (web.get(w, _WEB_UNKNOWN_RANK) + _RANK_OFFSET)
                        / (imdb.get(w, _IMDB_UNKNOWN_RANK) + _RANK_OFFSET)
                    ),
                    -3.0,
                    3.0,
                )
                for w in tail
            ]
        )
        out[i] = max(
            float(_ramp(hits, 0.0, cfg.topic_hits_high)), float(_ramp(lift, cfg.topic_lift_low, cfg.topic_lift_high))
        )
    return out


def known_word_share(text: str, ranks: dict) -> float:
    """Share of the whitespace tokens (edge punctuation stripped) that are numbers or known ASCII words
    (among the IMDB vocabulary's ``_KNOWN_MAX_RANK`` commonest); 1.0 below 4 tokens."""
    imdb = ranks["imdb"]
    tokens = [x for x in (_EDGE_PUNCT.sub("", tok) for tok in text.split()) if x]
    if len(tokens) < 4:
        return 1.0

    def known(tok: str) -> bool:
        if tok.isdigit():
            return True
        low = tok.lower()
        stem = low.split("'")[0].split("\u2019")[0]
        return (
            low.isascii()
            and low.replace("'", "").replace("-", "").isalpha()
            and imdb.get(stem, _IMDB_UNKNOWN_RANK) < _KNOWN_MAX_RANK
        )

    return sum(known(t) for t in tokens) / len(tokens)


def coherence_factor(texts: list[str], cfg: GoldConfig | None = None) -> np.ndarray:
    """Per text, the smaller of two ramps (bounds from ``cfg``): distinct-2 from ``distinct2_low`` (0) to
    ``distinct2_high`` (1), and the share of function words from ``function_words_low`` (0) to ``function_words_high`` (1)."""
    cfg = cfg or GoldConfig()

    def ramp(x: np.ndarray, low: float, high: float) -> np.ndarray:
        return np.clip((x - low) / (high - low), 0.0, 1.0)

    d2 = np.array([distinct2(t) for t in texts], dtype=np.float64)
    fw = np.array([function_word_share(t) for t in texts], dtype=np.float64)
    return np.minimum(
        ramp(d2, cfg.distinct2_low, cfg.distinct2_high), ramp(fw, cfg.function_words_low, cfg.function_words_high)
    )


@dataclass
class GoldConfig:
    """How the gold judge is built (the ``gold`` key of the ``demo`` section)."""

    ngram_max: int = field(default=2, metadata={"help": "word n-grams from 1 to ngram_max"})
    min_df: int = field(default=2, metadata={"help": "drop n-grams seen in fewer documents"})
    max_features: int = field(default=200_000, metadata={"help": "vocabulary cap (most frequent n-grams)"})
    C: float = field(default=8.0, metadata={"help": "inverse L2 strength of the logistic regression"})
    max_reviews: int | None = field(
        default=None, metadata={"help": "use only this many IMDB reviews (small profiles); None = all 25,000"}
    )
    include_rotten_tomatoes: bool = field(
        default=True,
        metadata={"help": "also train on the 8,530 short Rotten Tomatoes sentences (better on short text)"},
    )
    snippets_per_review: int = field(
        default=0, metadata={"help": "extra random 10-40-word windows per review, labelled like the review"}
    )
    seed: int = field(default=0, metadata={"help": "seed for subsampling and snippets"})
    coherence: bool = field(
        default=True,
        metadata={
            "help": "multiply P(positive) by a coherence factor: the smaller of a repetition ramp (distinct-2) and a grammar ramp (share of function words); see the module doc"
        },
    )
    distinct2_low: float = field(
        default=0.5, metadata={"help": "distinct-2 at or below which the coherence factor is 0"}
    )
    distinct2_high: float = field(
        default=0.8, metadata={"help": "distinct-2 at or above which the coherence factor is 1"}
    )
    function_words_low: float = field(
        default=0.15, metadata={"help": "share of English function words at or below which the coherence factor is 0"}
    )
    function_words_high: float = field(
        default=0.30, metadata={"help": "share of English function words at or above which the coherence factor is 1"}
    )

    topic: bool = field(
        default=True,
        metadata={
            "help": "multiply by the on-topic part (film lexicon and film-review lift of the text's tail) and the known-word part of fluency; see the module doc"
        },
    )
    topic_tail: float = field(
        default=0.6,
        metadata={"help": "share of the text's content words, from the end, that must stay about the film"},
    )
    topic_hits_high: float = field(
        default=1.0, metadata={"help": "film-lexicon words in the tail for an on-topic factor of 1 (0 hits: 0)"}
    )
    topic_lift_low: float = field(
        default=0.4, metadata={"help": "mean film-review lift of the tail at or below which that ramp is 0"}
    )
    topic_lift_high: float = field(
        default=0.9, metadata={"help": "mean film-review lift of the tail at or above which that ramp is 1"}
    )
    known_words_low: float = field(
        default=0.7, metadata={"help": "share of known words or numbers at or below which the fluency factor is 0"}
    )
    known_words_high: float = field(
        default=0.88, metadata={"help": "share of known words or numbers at or above which the fluency factor is 1"}
    )

    def validate(self) -> None:
        if self.ngram_max < 1:
            raise ConfigError(f"gold.ngram_max={self.ngram_max} must be >= 1.", "use 1 or 2.")
        if self.C <= 0:
            raise ConfigError(f"gold.C={self.C} must be positive.", "use e.g. 8.0.")
        if self.max_reviews is not None and self.max_reviews < 10:
            raise ConfigError(
                f"gold.max_reviews={self.max_reviews} is too small to fit a classifier.", "use >= 10 or null for all."
            )
        if not 0.0 <= self.function_words_low < self.function_words_high <= 1.0:
            raise ConfigError(
                f"gold.function_words_low={self.function_words_low} and gold.function_words_high="
                f"{self.function_words_high} must satisfy 0 <= low < high <= 1.",
                "use e.g. 0.15 and 0.30.",
            )
        if not 0.0 <= self.distinct2_low < self.distinct2_high <= 1.0:
            raise ConfigError(
                f"gold.distinct2_low={self.distinct2_low} and gold.distinct2_high={self.distinct2_high} must satisfy "
                "0 <= low < high <= 1.",
                "use e.g. distinct2_low=0.5, distinct2_high=0.8.",
            )

        if not 0.0 < self.topic_tail <= 1.0:
            raise ConfigError(f"gold.topic_tail={self.topic_tail} must be in (0, 1].", "use e.g. 0.6.")
        if self.topic_hits_high <= 0:
            raise ConfigError(f"gold.topic_hits_high={self.topic_hits_high} must be positive.", "use e.g. 1.")
        for lo, hi, hint in (
            ("topic_lift_low", "topic_lift_high", "0.4 and 0.9"),
            ("known_words_low", "known_words_high", "0.7 and 0.88"),
        ):
            a, b = getattr(self, lo), getattr(self, hi)
            if not a < b or (lo.startswith("known") and not 0.0 <= a < b <= 1.0):
                raise ConfigError(f"gold.{lo}={a} and gold.{hi}={b} must satisfy low < high.", f"use e.g. {hint}.")

    @property
    def key(self) -> str:
        """A short hash of the fitting settings: the cache file name (the coherence settings only act at
        scoring time, so they share the fitted classifier)."""
        fit = {k: v for k, v in dataclasses.asdict(self).items() if k not in _SCORING_ONLY}
        blob = json.dumps({**fit, "v": _CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def training_texts(cfg: GoldConfig) -> tuple[list[str], np.ndarray]:
    """The gold judge's training set: every IMDB review (not just the train split), optionally
    the Rotten Tomatoes sentences and review snippets. Label 1 = positive."""
    import pandas as pd

    from common.assets import imdb_csv
    from common.imdb import clean_review

    df = pd.read_csv(imdb_csv())
    imdb = df[df.source == "imdb"]
    rng = np.random.default_rng(cfg.seed)
    if cfg.max_reviews is not None and cfg.max_reviews < len(imdb):
        imdb = imdb.iloc[rng.permutation(len(imdb))[: cfg.max_reviews]]
    texts = [clean_review(t) for t in imdb.text]
    labels = imdb.label.astype(int).tolist()
    for _ in range(cfg.snippets_per_review):
        for t, y in zip(list(texts[: len(imdb)]), list(labels[: len(imdb)])):
            words = t.split()
            k = int(rng.integers(10, 41))
            start = int(rng.integers(0, max(1, len(words) - k + 1)))
            texts.append(" ".join(words[start : start + k]))
            labels.append(y)
    if cfg.include_rotten_tomatoes:
        rt = df[df.source == "rotten_tomatoes"]
        if cfg.max_reviews is not None:
            rt = rt.iloc[rng.permutation(len(rt))[: cfg.max_reviews]]
        texts += rt.text.astype(str).tolist()
        labels += rt.label.astype(int).tolist()
    return texts, np.asarray(labels, dtype=np.int64)


class GoldJudge:
    """TF-IDF + logistic regression, and the word ranks of the topic and fluency parts.
    ``score(texts)`` is P(positive) x on_topic x fluency per text; ``parts(texts)`` gives each."""

    def __init__(self, cfg: GoldConfig, pipeline, info: dict, ranks: dict | None = None):
        self.cfg = cfg
        self.pipeline = pipeline
        self.info = info
        self.ranks = ranks if ranks is not None else {"imdb": {}, "web": web_ranks()}

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(cls, cfg: GoldConfig | None = None) -> GoldJudge:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        cfg = cfg or GoldConfig()
        cfg.validate()
        t0 = time.perf_counter()
        texts, labels = training_texts(cfg)
        vec = TfidfVectorizer(
            ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df, max_features=cfg.max_features, sublinear_tf=True
        )
        clf = LogisticRegression(C=cfg.C, max_iter=1000)
        pipe = make_pipeline(vec, clf).fit(texts, labels)
        ranks = {"imdb": all_review_ranks(), "web": web_ranks()}
        info = {
            "n_train": len(texts),
            "positive_rate": float(labels.mean()),
            "train_accuracy": float((pipe.predict(texts) == labels).mean()),
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "config": dataclasses.asdict(cfg),
        }
        log.info("gold judge fitted on %d texts in %.1f s", len(texts), info["fit_seconds"])
        return cls(cfg, pipe, info, ranks)

    @classmethod
    def load_or_fit(cls, cfg: GoldConfig | None = None, cache_dir: Path | None = None) -> GoldJudge:
        """Load the cached judge for this config, or fit it and cache it (atomically)."""
        import joblib

        cfg = cfg or GoldConfig()
        cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        path = cache_dir / f"{cfg.key}.joblib"
        if path.is_file():
            try:
                pipe, info, ranks = joblib.load(path)
                return cls(cfg, pipe, info, ranks)
            except Exception as err:  # a stale or foreign pickle: refit
                log.warning("ignoring unreadable gold cache %s (%s); refitting", path, err)
        judge = cls.fit(cfg)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
        joblib.dump((judge.pipeline, judge.info, judge.ranks), tmp)
        os.replace(tmp, path)
        (cache_dir / f"{cfg.key}.json").write_text(json.dumps(judge.info, indent=2) + "\n")
        return judge

    # ------------------------------------------------------------------ using
    def sentiment(self, texts: list[str]) -> np.ndarray:
        """The classifier's P(positive) for each text, shape (len(texts),), float64."""
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return self.pipeline.predict_proba(texts)[:, 1].astype(np.float64)

    def parts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Per text: ``sentiment`` (P(positive)), ``on_topic`` and ``fluency`` (factors in [0, 1], 1 when
        switched off) and ``score``, their product. ``coherence: false`` switches both factors off."""
        texts = list(texts)
        ones = np.ones(len(texts), dtype=np.float64)
        p = self.sentiment(texts)
        fluency, topic = ones, ones
        if self.cfg.coherence and texts:
            fluency = coherence_factor(texts, self.cfg)
            if self.cfg.topic:
                known = np.array([known_word_share(t, self.ranks) for t in texts], dtype=np.float64)
                fluency = np.minimum(fluency, _ramp(known, self.cfg.known_words_low, self.cfg.known_words_high))
                topic = topic_factor(texts, self.ranks, self.cfg)
        return {"sentiment": p, "on_topic": topic, "fluency": fluency, "score": p * topic * fluency}

    def score(self, texts: list[str]) -> np.ndarray:
        """The gold score of each text: P(positive) x on_topic x fluency (the guidelines' three parts)."""
        return self.parts(texts)["score"]

    __call__ = score

    def labels(self, texts: list[str], threshold: float = 0.5) -> np.ndarray:
        """1 (good = positive) where the score is above ``threshold``, else 0."""
        return (self.score(texts) > threshold).astype(np.int64)

    def accuracy(self, texts: list[str], labels) -> float:
        return float((self.labels(texts) == np.asarray(labels)).mean()) if len(texts) else float("nan")


def cache_root() -> Path:
    """``$RLHF_ARTIFACTS/gold``."""
    return artifacts_root() / "gold"


__all__ = [
    "GoldConfig",
    "GoldJudge",
    "training_texts",
    "cache_root",
    "distinct2",
    "function_word_share",
    "coherence_factor",
    "topic_factor",
    "known_word_share",
    "FILM_WORDS",
]
