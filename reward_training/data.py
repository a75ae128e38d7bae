"""Training data: IMDB reviews shaped like our completions, and the human labels from ``db/``.

Pure functions over plain lists, so the tests can feed them small synthetic sets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from common.errors import UserError
from common.imdb import clean_review

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One training or evaluation text with its target probability of 'good' (0, 1 or a soft value).

    ``group`` keeps the copies of one item together when splitting (the completion id for
    human labels); ``source`` is 'imdb' or 'human'.
    """

    text: str
    label: float
    group: str
    source: str = "human"


# ----------------------------------------------------------------------------- IMDB snippets


def make_snippet(
    review: str,
    rng: np.random.Generator,
    *,
    prompt_words: tuple[int, int],
    span_words: tuple[int, int],
    follow: bool,
) -> str:
    """A prompt-length opening plus a continuation-length span of one review.

    With ``follow`` the span directly continues the opening (the shape of a real completion);
    otherwise it comes from a random place further on, where reviews state their verdict more often.
    """
    words = clean_review(review).split()
    k = min(int(rng.integers(prompt_words[0], prompt_words[1] + 1)), len(words))
    m = int(rng.integers(span_words[0], span_words[1] + 1))
    rest = words[k:]
    start = 0
    if not follow and len(rest) > m:
        start = int(rng.integers(0, len(rest) - m + 1))
    return " ".join(words[:k] + rest[start : start + m])


def imdb_snippets(
    texts: Sequence[str],
    labels: Sequence[int],
    n: int,
    *,
    prompt_words: tuple[int, int],
    span_words: tuple[int, int],
    follow_fraction: float,
    seed: int,
    tag: str = "imdb",
) -> list[Example]:
    """``n`` snippets, one per randomly chosen review (label 1 = positive = good)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))[: min(n, len(texts))]
    out = []
    for i in order:
        follow = bool(rng.random() < follow_fraction)
        text = make_snippet(texts[int(i)], rng, prompt_words=prompt_words, span_words=span_words, follow=follow)
        out.append(Example(text=text, label=float(labels[int(i)]), group=f"{tag}:{int(i)}", source="imdb"))
    return out


def seed_and_eval_snippets(cfg, data_cfg) -> tuple[list[Example], list[Example]]:
    """Seed snippets from the IMDB train split and evaluation snippets from the test split."""
    from common.imdb import load_imdb

    dd = load_imdb(data_cfg)
    prompt_words = (data_cfg.prompt_min_words, data_cfg.prompt_max_words)
    span_words = (cfg.span_min_words, cfg.span_max_words)
    train = dd["train"]
    test = dd["test"]
    seed = imdb_snippets(
        train["text"],
        train["label"],
        cfg.seed_examples,
        prompt_words=prompt_words,
        span_words=span_words,
        follow_fraction=cfg.follow_fraction,
        seed=cfg.random_seed,
        tag="imdb-train",
    )
    evals = imdb_snippets(
        test["text"],
        test["label"],
        cfg.eval_snippets,
        prompt_words=prompt_words,
        span_words=span_words,
        follow_fraction=cfg.follow_fraction,
        seed=cfg.random_seed + 1,
        tag="imdb-test",
    )
    return seed, evals


# ----------------------------------------------------------------------------- human labels


def human_examples(records: Iterable[Any]) -> list[Example]:
    """Turn ``db.LabelledExample``-like records (attributes or dict keys ``completion_id``, ``text``,
    ``label``) into examples; records without a usable label are dropped."""
    out = []
    for r in records:
        get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
        label = get("label")
        if label is None:
            continue
        label = float(label)
        if not 0.0 <= label <= 1.0:
            raise UserError(
                f"human label {label!r} for completion {get('completion_id')} is not in [0, 1].",
                "labels must be good=1, bad=0 or a fraction good.",
            )
        out.append(Example(text=str(get("text")), label=label, group=f"c:{get('completion_id')}", source="human"))
    return out


def reliability_examples(records: Iterable[Any], judgements: Iterable[dict]) -> list[Example]:
    """``combine: reliability``: the records (as for :func:`human_examples`) with their label replaced
    by the Dawid–Skene posterior P(good) from ``judgements`` (``db.judgement_rows``-like dicts with
    ``completion_id``, ``labeler``, ``label``); see ``reward_training.reliability``."""
    from reward_training.reliability import dawid_skene

    post = dawid_skene((j["completion_id"], j["labeler"], j["label"]) for j in judgements).posterior
    out = []
    for r in records:
        get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
        cid = get("completion_id")
        if cid in post:
            out.append({"completion_id": cid, "text": get("text"), "label": post[cid]})
    return human_examples(out)


def load_human_examples(engine, combine: str = "majority") -> list[Example]:
    """The combined human judgements from the database (skips excluded, text = ``db.shown_text``)."""
    import db

    if combine == "reliability":
        return reliability_examples(db.labelled_dataset(engine, combine="soft"), db.judgement_rows(engine))
    return human_examples(db.labelled_dataset(engine, combine=combine))


def label_counts(examples: Sequence[Example]) -> dict[str, int]:
    good = sum(1 for e in examples if e.label > 0.5)
    bad = sum(1 for e in examples if e.label < 0.5)
    return {"n": len(examples), "good": good, "bad": bad, "undecided": len(examples) - good - bad}


def check_two_classes(examples: Sequence[Example]) -> None:
    """Fail with the counts when the human labels hold only one class."""
    c = label_counts(examples)
    if c["good"] == 0 or c["bad"] == 0:
        only = "good" if c["good"] else "bad"
        raise UserError(
            f"all usable human labels say {only!r} ({c['good']} good, {c['bad']} bad, {c['undecided']} undecided): "
            "a reward model cannot learn from one class.",
            "label more items of the other kind (the app shows both), or train the seed-only model by "
            "pointing RLHF_DB_URL at an empty database.",
        )


def split_heldout(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Split into (train, held-out), stratified by label (good/bad) and grouped by ``group`` so
    that no completion ends up on both sides. Each class keeps at least one training group
    and, when it has two or more groups, at least one held-out group."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.group, []).append(e)
    by_class: dict[bool, list[str]] = {True: [], False: []}
    for g, items in groups.items():
        by_class[float(np.mean([e.label for e in items])) > 0.5].append(g)
    held: set[str] = set()
    for names in by_class.values():
        names = sorted(names)
        rng.shuffle(names)
        k = int(round(len(names) * fraction))
        if len(names) >= 2:
            k = min(max(k, 1), len(names) - 1)
        else:
            k = 0
        held.update(names[:k])
    train = [e for e in examples if e.group not in held]
    heldout = [e for e in examples if e.group in held]
    return train, heldout


def stratified_subset(examples: Sequence[Example], n: int, seed: int) -> list[Example]:
    """``n`` examples keeping the share of good labels (for learning curves)."""
    if n >= len(examples):
        return list(examples)
    rng = np.random.default_rng(seed)
    good = [e for e in examples if e.label > 0.5]
    bad = [e for e in examples if e.label <= 0.5]
    n_good = int(round(n * len(good) / len(examples)))
    n_good = min(max(n_good, 1 if good else 0), len(good), n)
    n_bad = min(n - n_good, len(bad))
    pick = [good[i] for i in rng.permutation(len(good))[:n_good]] + [bad[i] for i in rng.permutation(len(bad))[:n_bad]]
    return [pick[i] for i in rng.permutation(len(pick))]


def mix_in_seed(human: Sequence[Example], seed_pool: Sequence[Example], ratio: float, seed: int) -> list[Example]:
    """The human examples plus ``ratio`` seed snippets per human example, shuffled."""
    rng = np.random.default_rng(seed)
    k = min(int(round(len(human) * ratio)), len(seed_pool))
    extra = [seed_pool[i] for i in rng.permutation(len(seed_pool))[:k]]
    mixed = list(human) + extra
    return [mixed[i] for i in rng.permutation(len(mixed))]


# ----------------------------------------------------------------------------- preference pairs


@dataclass(frozen=True)
class Pair:
    """One preference: the text (prompt + completion, ``db.shown_text``) the labeller chose over the other.

    ``group`` keeps the pairs of one prompt together when splitting (no prompt on both sides)."""

    chosen: str
    rejected: str
    group: str


def pair_examples(records: Iterable[Any]) -> list[Pair]:
    """Turn ``db.types.PreferencePair``-like records (attributes or dict keys ``prompt``, ``chosen``,
    ``rejected``: TRL's explicit-prompt format, completions without the prompt) into pairs. A pair whose
    two texts are the same says nothing and is dropped."""
    from db.types import shown_text

    out, same = [], 0
    for r in records:
        get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
        prompt, chosen, rejected = get("prompt"), get("chosen"), get("rejected")
        if not all(isinstance(x, str) for x in (prompt, chosen, rejected)):
            raise UserError(
                f"preference record {r!r} is not text (prompt, chosen, rejected).",
                "pass records with string fields prompt, chosen and rejected (TRL's preference format).",
            )
        if chosen == rejected:
            same += 1
            continue
        out.append(Pair(shown_text(prompt, chosen), shown_text(prompt, rejected), group=f"p:{prompt}"))
    if same:
        log.warning("dropped %d preference pair(s) whose chosen and rejected texts are the same", same)
    return out


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) pairs, grouped by prompt; with two or more prompts each side gets at least one."""
    names = sorted({p.group for p in pairs})
    rng = np.random.default_rng(seed)
    rng.shuffle(names)
    k = int(round(len(names) * fraction))
    k = min(max(k, 1), len(names) - 1) if len(names) >= 2 else 0
    held = set(names[:k])
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]


def pair_counts(pairs: Sequence[Pair]) -> dict[str, int]:
    return {"n": len(pairs), "prompts": len({p.group for p in pairs})}
