"""Plain, immutable records that db functions take and return (no ORM objects leave the package)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Label = Literal["good", "bad", "skip"]
Order = Literal["random", "uncertain"]
Combine = Literal["majority", "soft"]
ModelKind = Literal["policy", "reward"]
ExportFormat = Literal["jsonl", "csv", "hf"]


def shown_text(prompt: str, completion: str) -> str:
    """The one text of an item that is judged and learned from: the prompt, then the completion.

    Plain concatenation, because that is the text the policy wrote: a completion is sampled as a
    continuation of the prompt's tokens and decoded on its own, so it carries its own leading space
    (``"This movie" + " was great"``), and a completion that continues a word has none (``"Great" +
    "est"``). The simulated labellers judge this string and the reward model trains on it.
    """
    return prompt + completion


@dataclass(frozen=True)
class NewCompletion:
    """A completion to store: the prompt text (created if new), the generated text, the model that wrote it."""

    prompt: str
    text: str
    model_version_id: int | None = None
    gen_params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    """One completion as a labeller sees it. ``n_labels`` counts good/bad judgements (not skips)."""

    completion_id: int
    prompt: str
    completion: str
    model_version_id: int | None
    n_labels: int


@dataclass(frozen=True)
class LabelledExample:
    """A completion with its combined label, for reward-model training.

    ``text`` is :func:`shown_text` of the prompt and completion, as the labeller saw them; ``label`` is
    1.0 (good) / 0.0 (bad) under ``majority``, or the share of good labels under ``soft``."""

    completion_id: int
    prompt: str
    completion: str
    text: str
    label: float
    n_labels: int
    n_good: int


@dataclass(frozen=True)
class ModelVersionInfo:
    id: int
    kind: str
    name: str
    path: str
    parent_id: int | None
    metrics: dict[str, Any] | None
    created_at: datetime


@dataclass(frozen=True)
class PreferencePair:
    """One preference in TRL's explicit-prompt preference format: ``prompt``, then the ``chosen`` and the
    ``rejected`` completion (each a continuation of the prompt, as :func:`shown_text` joins them).

    ``comparison_id`` and ``labeler`` say where it came from (None when read back from a file)."""

    prompt: str
    chosen: str
    rejected: str
    comparison_id: int | None = None
    labeler: str | None = None


@dataclass(frozen=True)
class PairItem:
    """One comparison as a labeller sees it: the prompt and its two completions ``a`` and ``b``
    (``a_id < b_id``). ``n_labels`` counts non-skip pair judgements."""

    comparison_id: int
    prompt: str
    a_id: int
    a: str
    b_id: int
    b: str
    a_model_version_id: int | None
    b_model_version_id: int | None
    source: str
    n_labels: int
